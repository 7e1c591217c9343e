//! One connection's life (`session`: register, then serve until the
//! master is lost) and the goodbye at shutdown (`shutdown_gracefully`):
//! the part of the engine loop that talks to one master over one link.

use super::{Background, SessionEnd, State, STARTED_DELAY};
use crate::link::{Link, LinkError};
use drqueue_common::protocol::{AttemptKey, FromEngine, ToEngine, IDLE_BEATS};
use drqueue_runner::RunnerEvent;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long the master may be silent before the engine reconnects, at
/// least: an idle engine hears the master only when it beats, so it allows
/// its idle interval and two beats more (see [`silence_limit`]).
const MASTER_SILENCE: Duration = Duration::from_secs(4);
/// How long one connection attempt may take; short, so that a dead master in
/// a list of several costs little before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long the master may be silent on a link beating every `beat`: an
/// idle engine's beat (and so the master's Pong) comes once in
/// [`IDLE_BEATS`], and one late Pong must not end the session.
fn silence_limit(beat: Duration) -> Duration {
    MASTER_SILENCE.max(beat * (IDLE_BEATS + 2))
}

/// One connection's life: register, then serve until the master is lost.
pub(super) async fn session(
    st: &mut State,
    endpoint: &str,
    runner_rx: &mut mpsc::UnboundedReceiver<RunnerEvent>,
    (background_rx, blob_rx): (
        &mut mpsc::UnboundedReceiver<Background>,
        &mut mpsc::UnboundedReceiver<FromEngine>,
    ),
) -> SessionEnd {
    let mut link = match Link::connect(endpoint, &st.creds, CONNECT_TIMEOUT).await {
        Ok(l) => l,
        Err(LinkError::Unreachable(e)) => {
            tracing::warn!("{e}");
            return SessionEnd::Silent;
        }
        Err(LinkError::Pending { fingerprint }) => return SessionEnd::Pending(fingerprint),
        Err(LinkError::WrongMaster(e)) => return SessionEnd::WrongMaster(e),
        Err(LinkError::Refused(e)) => return SessionEnd::Refused(e),
    };
    let reg = st.register();
    if let Err(e) = link.send(&reg).await {
        tracing::warn!("{e}");
        return SessionEnd::Silent;
    }
    // Wait for the Welcome, still running tasks meanwhile.
    let deadline = tokio::time::sleep(MASTER_SILENCE);
    tokio::pin!(deadline);
    let mut outbox = Vec::new();
    let beat;
    let silence;
    loop {
        tokio::select! {
            _ = &mut deadline => return SessionEnd::Silent,
            // Results that arrive now were not in the Register: they go
            // out right after the Welcome.
            Some(ev) = runner_rx.recv() => outbox.extend(st.on_runner(ev)),
            msg = link.recv() => match msg {
                Some(ToEngine::Welcome { heartbeat_ms, cancel }) => {
                    tracing::info!(master = %endpoint, held = st.held(), unacked = st.unacked.len(), heartbeat_ms, "registered with the master");
                    st.cancel(&cancel, &mut outbox);
                    beat = Duration::from_millis(u64::from(heartbeat_ms).clamp(100, 1000));
                    silence = silence_limit(beat);
                    break;
                }
                Some(ToEngine::Refused { reason }) => return SessionEnd::Refused(reason),
                Some(ToEngine::Revoked) => return SessionEnd::Revoked,
                Some(_) => {}
                None => return SessionEnd::Silent,
            }
        }
    }
    outbox.extend(st.resend_logs());
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(beat);
    let mut last_beat = Instant::now();
    // Only while something runs: an idle engine wakes for its heartbeat alone.
    let mut timeouts = tokio::time::interval(STARTED_DELAY);
    timeouts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval_at(
        tokio::time::Instant::now() + st.opts.facts_refresh,
        st.opts.facts_refresh,
    );
    loop {
        if !outbox.is_empty() {
            if let Err(e) = link.send_all(&outbox).await {
                tracing::warn!("{e}");
                return SessionEnd::Silent;
            }
            outbox.clear();
        }
        tokio::select! {
            msg = link.recv() => match msg {
                Some(m) => {
                    last_heard = Instant::now();
                    if let Err(end) = st.on_master(m, &mut outbox) {
                        return end;
                    }
                }
                None => return SessionEnd::Silent,
            },
            Some(ev) = runner_rx.recv() => {
                if let Some(m) = st.on_runner(ev) {
                    outbox.push(m);
                }
                // Coalesce a burst of runner events into one round of sends.
                while let Ok(ev) = runner_rx.try_recv() {
                    if let Some(m) = st.on_runner(ev) {
                        outbox.push(m);
                    }
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > silence {
                    return SessionEnd::Silent;
                }
                if !st.is_idle() || last_beat.elapsed() >= beat * IDLE_BEATS - beat / 10 {
                    outbox.push(st.heartbeat());
                    last_beat = Instant::now();
                }
            }
            _ = timeouts.tick(), if !st.running.is_empty() || !st.unreported_starts.is_empty() => {
                st.check_timeouts();
                outbox.extend(st.due_starts());
            }
            _ = refresh.tick() => st.refresh_facts(),
            Some(done) = background_rx.recv() => outbox.push(st.on_background(done)),
            // A slot thread's blob request (it asks again if this session
            // ends before the answer).
            Some(m) = blob_rx.recv() => outbox.push(m),
        }
    }
}

/// On SIGTERM: hand back queued attempts, stop running ones and hand them
/// back too (they are not failures), and give unacknowledged results a last
/// chance to be acknowledged.
pub(super) async fn shutdown_gracefully(
    st: &mut State,
    link: Option<&mut Link>,
    runner_rx: &mut mpsc::UnboundedReceiver<RunnerEvent>,
) {
    st.releasing = true;
    let mut handed_back: Vec<AttemptKey> = st.queue.drain(..).map(|(k, ..)| k).collect();
    for r in st.running.values() {
        r.control.cancel();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !st.running.is_empty() && Instant::now() < deadline {
        if let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(100), runner_rx.recv()).await
        {
            st.on_runner(ev);
        }
    }
    handed_back.append(&mut st.released);
    tracing::info!(
        handed_back = handed_back.len(),
        unacked = st.unacked.len(),
        "engine stopping"
    );
    let mut own_link;
    let link = match link {
        Some(l) => Some(l),
        None => {
            let endpoint = st.opts.masters[0].clone();
            own_link = Link::connect(&endpoint, &st.creds, Duration::from_secs(2))
                .await
                .ok();
            if let Some(l) = own_link.as_mut() {
                let reg = st.register();
                let _ = l.send(&reg).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), l.recv()).await;
            }
            own_link.as_mut()
        }
    };
    if let Some(link) = link {
        let mut msgs = st.resend_logs();
        if !handed_back.is_empty() {
            msgs.push(FromEngine::Release(handed_back));
        }
        let _ = link.send_all(&msgs).await;
        let until = Instant::now() + Duration::from_secs(2);
        while !st.unacked.is_empty() && Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(200), link.recv()).await {
                Ok(Some(m)) => {
                    let _ = st.on_master(m, &mut Vec::new());
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }
}
