//! The engines' side of the master: one ZeroMQ ROUTER socket, split in two.
//!
//! The receive task authenticates and decodes each message before it reaches
//! the core, so garbage (random bytes, wrong versions, oversized or forged
//! messages) is logged and dropped here. The send task encodes, signs and
//! sends, each send under a timeout so one stuck engine cannot stall the master.
//! This is the only module that knows the socket library.

use crate::events::{Event, Outgoing};
use bytes::Bytes;
use drqueue_common::protocol::{
    decode, encode, DecodeError, FarmKey, FromEngine, SeqCounter, ToEngine,
};
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

pub fn spawn(
    socket: RouterSocket,
    key: Option<FarmKey>,
    events: mpsc::UnboundedSender<Event>,
    out_tx: mpsc::UnboundedSender<Outgoing>,
    out_rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let (send, recv) = socket.split();
    tokio::spawn(receive_loop(recv, key.clone(), events, out_tx));
    tokio::spawn(send_loop(send, key, out_rx));
}

/// Logs dropped messages at most once a second, with a count, so a flood of
/// garbage cannot flood the log too.
struct DropLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl DropLog {
    fn note(&mut self, peer: &Bytes, e: &DecodeError) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(peer = %hex(peer), suppressed = self.suppressed, "dropping a message from the engines' socket: {e}");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

async fn receive_loop(
    mut recv: RouterRecvHalf,
    key: Option<FarmKey>,
    events: mpsc::UnboundedSender<Event>,
    out: mpsc::UnboundedSender<Outgoing>,
) {
    let mut drops = DropLog {
        last: None,
        suppressed: 0,
    };
    loop {
        let msg = match recv.recv().await {
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
        match decode::<FromEngine>(&frames, key.as_ref()) {
            Ok((seq, msg)) => {
                if events
                    .send(Event::FromEngine {
                        identity,
                        seq,
                        msg: Box::new(msg),
                    })
                    .is_err()
                {
                    return; // the core has stopped
                }
            }
            Err(e) => {
                drops.note(&identity, &e);
                // Tell a misconfigured engine why it is ignored; stay silent
                // to garbage, which would not understand an answer anyway.
                if matches!(
                    e,
                    DecodeError::WrongVersion { .. }
                        | DecodeError::Unauthenticated
                        | DecodeError::BadMac
                ) {
                    let _ = out.send((
                        identity,
                        ToEngine::Refused {
                            reason: e.to_string(),
                        },
                    ));
                }
            }
        }
    }
}

async fn send_loop(
    mut send: RouterSendHalf,
    key: Option<FarmKey>,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut seq = SeqCounter::from_clock();
    while let Some((identity, msg)) = out.recv().await {
        let mut zm = ZmqMessage::from(identity.clone());
        for frame in encode(&msg, seq.advance(), key.as_ref()) {
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
