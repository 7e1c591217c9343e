//! `GET /metrics`: the farm's numbers in Prometheus text format.
//!
//! Three sources feed one registry. The scheduler's [`Observation`]s (task
//! starts, ends, stalls, requeues) are counted by the core as each round
//! hands them out; the store writer times its commits ([`WriterStats`]);
//! and the farm's state (slots, tasks, engines, jobs) is read from the
//! core at each scrape ([`FarmGauges`]), so a gauge is never stale.

use crate::store::writer::WriterStats;
use drqueue_scheduler::Observation;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Latency buckets (seconds): from a loopback dispatch to a long queue.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
];

/// The farm's state at one instant, as the core reads it for a scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FarmGauges {
    /// Per pool: slots of connected engines, and those busy.
    pub slots: BTreeMap<String, (u64, u64)>,
    pub tasks: BTreeMap<&'static str, u64>,
    pub engines: BTreeMap<&'static str, u64>,
    pub jobs: BTreeMap<&'static str, u64>,
}

pub struct Metrics {
    registry: Registry,
    submit_to_start: Histogram,
    dispatch_latency: Histogram,
    tasks_finished: IntCounterVec,
    tasks_failed: IntCounterVec,
    stalls: IntCounter,
    requeues: IntCounter,
    slots: IntGaugeVec,
    slots_busy: IntGaugeVec,
    tasks: IntGaugeVec,
    engines: IntGaugeVec,
    jobs: IntGaugeVec,
    store_round_trips: IntGauge,
    store: Arc<WriterStats>,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("a valid histogram definition")
}

fn counters(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid counter definition")
}

fn gauges(name: &str, help: &str, label: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &[label]).expect("a valid gauge definition")
}

impl Metrics {
    pub fn new(store: Arc<WriterStats>) -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            submit_to_start: histogram(
                "drqueue_submit_to_start_seconds",
                "From a job's submission to each of its attempts' process start",
                LATENCY_BUCKETS.to_vec(),
            ),
            dispatch_latency: histogram(
                "drqueue_dispatch_latency_seconds",
                "From the master assigning an attempt to its engine starting the process",
                LATENCY_BUCKETS.to_vec(),
            ),
            tasks_finished: counters(
                "drqueue_tasks_finished_total",
                "Attempts that succeeded (tasks done), by the job's pool",
                "pool",
            ),
            tasks_failed: counters(
                "drqueue_tasks_failed_total",
                "Attempts that failed (retried or not), by the job's pool",
                "pool",
            ),
            stalls: IntCounter::new(
                "drqueue_stalls_total",
                "Running attempts stopped for printing nothing for their job's stall_after",
            )
            .expect("a valid counter definition"),
            requeues: IntCounter::new(
                "drqueue_requeues_total",
                "Tasks put back in the queue because their engine was lost",
            )
            .expect("a valid counter definition"),
            slots: gauges(
                "drqueue_slots",
                "Slots of connected engines, by pool",
                "pool",
            ),
            slots_busy: gauges(
                "drqueue_slots_busy",
                "Slots running an attempt, by pool",
                "pool",
            ),
            tasks: gauges(
                "drqueue_tasks",
                "Tasks the master holds, by status",
                "status",
            ),
            engines: gauges("drqueue_engines", "Engines known, by state", "state"),
            jobs: gauges("drqueue_jobs", "Jobs the master holds, by status", "status"),
            store_round_trips: IntGauge::new(
                "drqueue_store_round_trips",
                "Requests the store writer has made to its database since the master started",
            )
            .expect("a valid gauge definition"),
            store,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.submit_to_start.clone()),
            Box::new(m.dispatch_latency.clone()),
            Box::new(m.tasks_finished.clone()),
            Box::new(m.tasks_failed.clone()),
            Box::new(m.stalls.clone()),
            Box::new(m.requeues.clone()),
            Box::new(m.slots.clone()),
            Box::new(m.slots_busy.clone()),
            Box::new(m.tasks.clone()),
            Box::new(m.engines.clone()),
            Box::new(m.jobs.clone()),
            Box::new(m.store_round_trips.clone()),
            Box::new(m.store.commit_seconds.clone()),
            Box::new(m.store.commit_records.clone()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }
        m
    }

    /// Counts one of the scheduler's observations.
    pub fn observe(&self, o: &Observation) {
        match o {
            Observation::Started {
                since_submit_ms,
                since_assign_ms,
                ..
            } => {
                self.submit_to_start
                    .observe(*since_submit_ms as f64 / 1000.0);
                self.dispatch_latency
                    .observe(*since_assign_ms as f64 / 1000.0);
            }
            Observation::Ended { pool, ok: true } => {
                self.tasks_finished.with_label_values(&[pool]).inc()
            }
            Observation::Ended { pool, ok: false } => {
                self.tasks_failed.with_label_values(&[pool]).inc()
            }
            Observation::Stalled => self.stalls.inc(),
            Observation::Requeued => self.requeues.inc(),
        }
    }

    /// The text a scrape answers, with the gauges set from `farm`.
    pub fn render(&self, farm: &FarmGauges) -> String {
        // Reset first: a pool or state that is gone must not linger.
        for g in [
            &self.slots,
            &self.slots_busy,
            &self.tasks,
            &self.engines,
            &self.jobs,
        ] {
            g.reset();
        }
        for (pool, (total, busy)) in &farm.slots {
            self.slots.with_label_values(&[pool]).set(*total as i64);
            self.slots_busy.with_label_values(&[pool]).set(*busy as i64);
        }
        for (gauge, values) in [
            (&self.tasks, &farm.tasks),
            (&self.engines, &farm.engines),
            (&self.jobs, &farm.jobs),
        ] {
            for (label, n) in values {
                gauge.with_label_values(&[label]).set(*n as i64);
            }
        }
        self.store_round_trips
            .set(self.store.round_trips.load(Ordering::Relaxed) as i64);
        let mut out = Vec::new();
        // Encoding into memory cannot fail for these metric types.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A store commit's histograms, kept by the writer thread.
pub fn commit_histograms() -> (Histogram, Histogram) {
    (
        histogram(
            "drqueue_store_commit_seconds",
            "How long each store commit took",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ],
        ),
        histogram(
            "drqueue_store_commit_records",
            "Records written per store commit (the group commit's batch size)",
            vec![
                1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0, 100000.0,
            ],
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_and_gauges_come_out_as_prometheus_text() {
        let m = Metrics::new(Arc::new(WriterStats::default()));
        m.observe(&Observation::Started {
            pool: "gpu".into(),
            since_submit_ms: 1500,
            since_assign_ms: 2,
        });
        m.observe(&Observation::Ended {
            pool: "gpu".into(),
            ok: true,
        });
        m.observe(&Observation::Ended {
            pool: "gpu".into(),
            ok: false,
        });
        m.observe(&Observation::Requeued);
        let mut farm = FarmGauges::default();
        farm.slots.insert("gpu".into(), (8, 3));
        farm.tasks.insert("done", 4);
        let text = m.render(&farm);
        for line in [
            "drqueue_submit_to_start_seconds_count 1",
            "drqueue_submit_to_start_seconds_sum 1.5",
            "drqueue_dispatch_latency_seconds_bucket{le=\"0.0025\"} 1",
            "drqueue_tasks_finished_total{pool=\"gpu\"} 1",
            "drqueue_tasks_failed_total{pool=\"gpu\"} 1",
            "drqueue_requeues_total 1",
            "drqueue_stalls_total 0",
            "drqueue_slots{pool=\"gpu\"} 8",
            "drqueue_slots_busy{pool=\"gpu\"} 3",
            "drqueue_tasks{status=\"done\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        // A pool that went away is not reported at the next scrape.
        let text = m.render(&FarmGauges::default());
        assert!(!text.contains("drqueue_slots{"), "{text}");
    }
}
