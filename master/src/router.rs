//! The engines' side of the master: one ZeroMQ ROUTER socket, split in two.
//!
//! The receive task passes each message through the session table
//! ([`Sessions`]: handshakes, enrollment, decryption), so garbage (random
//! bytes, wrong versions, oversized, forged or replayed messages) is logged
//! and dropped here and only admitted engines reach the core. The send task
//! seals and sends, each send under a timeout so one stuck engine cannot
//! stall the master. Blob chunks go to [`Transfers`], beside the core. This is the only module that knows the socket library.

use crate::events::{Event, Outgoing};
use crate::sessions::{Action, Sealers, Sessions};
use crate::transfer::Transfers;
use bytes::Bytes;
use drqueue_common::now_millis;
use drqueue_common::protocol::ToEngine;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zeromq::{
    RouterRecvHalf, RouterSendHalf, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage,
};

const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds the ROUTER; returns it with the endpoint actually bound (port 0 and
/// `*` resolved).
pub async fn bind(endpoint: &str) -> anyhow::Result<(RouterSocket, String)> {
    // A peer announcing more than a message may hold is dropped at the frame
    // header, before anything is allocated for it.
    let mut options = zeromq::SocketOptions::default();
    options.max_message_size(drqueue_common::protocol::MAX_WIRE_BYTES);
    let mut socket = RouterSocket::with_options(options);
    let bound = socket
        .bind(endpoint)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the engines' socket on {endpoint}: {e} (is another master running? use --engines to pick another address)"))?;
    Ok((socket, bound.to_string()))
}

/// Runs the socket: a receive task that feeds [`Sessions`], and a send task
/// that seals what the core (and the session table) send.
pub fn spawn(
    socket: RouterSocket,
    (sessions, sealers): (Sessions, Sealers),
    transfers: Transfers,
    events: mpsc::UnboundedSender<Event>,
    (out_tx, out_rx): (
        mpsc::UnboundedSender<Outgoing>,
        mpsc::UnboundedReceiver<Outgoing>,
    ),
) {
    let (send, recv) = socket.split();
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    tokio::spawn(receive_loop(
        recv,
        (sessions, transfers),
        events,
        out_tx,
        raw_tx,
    ));
    tokio::spawn(send_loop(send, sealers, out_rx, raw_rx));
}

/// Logs dropped messages at most once a second, with a count, so a flood of
/// garbage cannot flood the log too.
struct DropLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl DropLog {
    fn note(&mut self, peer: &Bytes, why: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(peer = %hex(peer), suppressed = self.suppressed, "dropping a message from the engines' socket: {why}");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// How often stalled handshakes and silent sessions are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

async fn receive_loop(
    mut recv: RouterRecvHalf,
    (mut sessions, transfers): (Sessions, Transfers),
    events: mpsc::UnboundedSender<Event>,
    out: mpsc::UnboundedSender<Outgoing>,
    raw: mpsc::UnboundedSender<(Bytes, Vec<Bytes>)>,
) {
    let mut drops = DropLog {
        last: None,
        suppressed: 0,
    };
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    loop {
        let msg = tokio::select! {
            m = recv.recv() => m,
            _ = expire.tick() => {
                sessions.expire(now_millis());
                continue;
            }
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("engines' socket receive error: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut frames = msg.into_vec();
        if frames.is_empty() {
            continue;
        }
        let identity = frames.remove(0);
        for action in sessions.on_message(&identity, &frames, now_millis()) {
            let sent = match action {
                Action::Raw(frames) => raw.send((identity.clone(), frames)).is_ok(),
                Action::Send(to, msg) => out.send((to, msg)).is_ok(),
                // Blob chunks go to the transfers, not through the core.
                Action::Deliver(identity, msg) => {
                    match transfers.handle(identity.clone(), msg, &out) {
                        Some(msg) => events.send(Event::FromEngine { identity, msg }).is_ok(),
                        None => true,
                    }
                }
                Action::Drop(why) => {
                    drops.note(&identity, &why);
                    true
                }
            };
            if !sent {
                return; // the master is stopping
            }
        }
    }
}

async fn send_loop(
    mut send: RouterSendHalf,
    sealers: Sealers,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    mut raw: mpsc::UnboundedReceiver<(Bytes, Vec<Bytes>)>,
) {
    loop {
        let (identity, frames) = tokio::select! {
            Some((identity, frames)) = raw.recv() => (identity, frames),
            Some((identity, msg)) = out.recv() => {
                let mut sealers = sealers.lock().unwrap_or_else(|p| p.into_inner());
                let Some(sealer) = sealers.get_mut(&identity) else {
                    tracing::debug!(peer = %hex(&identity), "no session to send on: the engine is gone");
                    continue;
                };
                let frames = sealer.seal(&msg);
                // A connection told it was taken over or is pending hears
                // nothing more.
                if matches!(msg, ToEngine::TakenOver | ToEngine::Pending { .. }) {
                    sealers.remove(&identity);
                }
                (identity, frames)
            }
            else => return,
        };
        let mut zm = ZmqMessage::from(identity.clone());
        for frame in frames {
            zm.push_back(frame);
        }
        match tokio::time::timeout(SEND_TIMEOUT, send.send(zm)).await {
            Ok(Ok(())) => {}
            // Unknown identity: the engine is gone; heartbeats will tell the core.
            Ok(Err(e)) => tracing::debug!(peer = %hex(&identity), "send failed: {e}"),
            Err(_) => {
                tracing::warn!(peer = %hex(&identity), "send timed out: the engine is not reading")
            }
        }
    }
}

fn hex(b: &Bytes) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}
