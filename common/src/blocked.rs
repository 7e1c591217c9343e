//! "Why isn't it running?": the reasons a job's ready tasks are not on
//! engines, typed, and how they read for a person in a given time zone.

use crate::model::{JobId, JobView};
use crate::Millis;
use serde::{Deserialize, Serialize};

impl JobView {
    /// The blocked reasons with times in this machine's time zone: for a
    /// person at a terminal. Falls back to the master's UTC wording.
    pub fn blocked_here(&self, now: Millis) -> Vec<String> {
        if self.blocked_by.is_empty() {
            return self.blocked.clone();
        }
        self.blocked_by
            .iter()
            .map(|b| b.text(now, &chrono::Local))
            .collect()
    }
}

/// Why a job's ready tasks are not running: typed, with instants in UTC
/// milliseconds, so the scheduler's answer does not depend on where the
/// master runs. [`Blocked::text`] renders it in the viewer's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Blocked {
    Paused,
    WaitingFor {
        job: JobId,
    },
    StartsAt {
        at_ms: Millis,
    },
    /// The master restarted and waits for engines to come back.
    Recovering,
    NoEngineInPool {
        pool: String,
    },
    NoOnlineEngineInPool {
        pool: String,
        offline: u32,
    },
    NoUsableEngineInPool {
        pool: String,
        disabled: u32,
        sick: u32,
    },
    NeedsOs {
        os: String,
        pool: String,
    },
    NeedsCores {
        need: u32,
        largest: u32,
    },
    NeedsRam {
        need_mb: u64,
        largest_mb: u64,
    },
    LacksCapability {
        capability: String,
        engines: u32,
    },
    LimitInUse {
        limit: String,
        in_use: u32,
        count: u32,
    },
    MaxEngines {
        max: u32,
    },
    NeedsFreeRam {
        need_mb: u64,
        most_free_mb: u64,
    },
    AllBusy {
        engines: u32,
    },
    /// A running task printed nothing and reported no progress for a while
    /// (with `--on-stall warn`; `requeue` kills it and runs it again).
    Stalled {
        task: u32,
        quiet_s: u64,
    },
    /// A running task is taking far longer than the job's finished ones.
    Outlier {
        task: u32,
        running_s: u64,
        median_s: u64,
    },
}

impl Blocked {
    /// No engine the master knows could run the job (pool, state, OS,
    /// cores, RAM, capability), as opposed to waiting its turn.
    pub fn is_engine_gap(&self) -> bool {
        matches!(
            self,
            Blocked::NoEngineInPool { .. }
                | Blocked::NoOnlineEngineInPool { .. }
                | Blocked::NoUsableEngineInPool { .. }
                | Blocked::NeedsOs { .. }
                | Blocked::NeedsCores { .. }
                | Blocked::NeedsRam { .. }
                | Blocked::LacksCapability { .. }
        )
    }

    /// The reason as a sentence, with times in `tz` relative to `now`.
    pub fn text<Tz: chrono::TimeZone>(&self, now: Millis, tz: &Tz) -> String
    where
        Tz::Offset: std::fmt::Display,
    {
        use crate::display::{clock_time, duration};
        match self {
            Blocked::Paused => "paused".into(),
            Blocked::WaitingFor { job } => format!("waiting for job {job}"),
            Blocked::StartsAt { at_ms } => format!(
                "starts at {} (in {})",
                clock_time(*at_ms, now, tz),
                duration(at_ms.saturating_sub(now))
            ),
            Blocked::Recovering => {
                "the master restarted and is waiting for engines to reconnect".into()
            }
            Blocked::NoEngineInPool { pool } => format!("no engine in pool `{pool}`"),
            Blocked::NoOnlineEngineInPool { pool, offline } => {
                format!("no online engine in pool `{pool}` ({offline} offline)")
            }
            Blocked::NoUsableEngineInPool {
                pool,
                disabled,
                sick,
            } => format!(
                "every online engine in pool `{pool}` is disabled ({disabled}) or sick ({sick}): `drqueue engine enable ENGINE`"
            ),
            Blocked::NeedsOs { os, pool } => {
                format!("needs OS `{os}`; no engine in pool `{pool}` runs it")
            }
            Blocked::NeedsCores { need, largest } => {
                format!("needs {need} cores, the largest engine has {largest}")
            }
            Blocked::NeedsRam {
                need_mb,
                largest_mb,
            } => format!("needs {need_mb} MB RAM, the largest engine has {largest_mb} MB"),
            Blocked::LacksCapability {
                capability,
                engines,
            } => {
                let noun = if *engines == 1 {
                    "engine lacks"
                } else {
                    "engines lack"
                };
                format!("{engines} {noun} capability `{capability}`")
            }
            Blocked::LimitInUse {
                limit,
                in_use,
                count,
            } => format!("limit `{limit}` {in_use}/{count} in use"),
            Blocked::MaxEngines { max } => format!("max_engines {max} reached"),
            Blocked::NeedsFreeRam {
                need_mb,
                most_free_mb,
            } => format!(
                "needs {need_mb} MB RAM free; the most free on an eligible engine is {most_free_mb} MB"
            ),
            Blocked::AllBusy { engines } => format!(
                "all {engines} eligible engine{} busy",
                if *engines == 1 { " is" } else { "s are" }
            ),
            Blocked::Stalled { task, quiet_s } => format!(
                "task {task} has printed nothing for {}",
                crate::display::duration(quiet_s * 1000)
            ),
            Blocked::Outlier {
                task,
                running_s,
                median_s,
            } => format!(
                "task {task} is an outlier: running {}, where the median task took {}",
                crate::display::duration(running_s * 1000),
                crate::display::duration(median_s * 1000)
            ),
        }
    }
}
