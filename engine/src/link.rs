//! One connection to the master: a DEALER socket, a reader task that decodes
//! and authenticates, and a send with a timeout. zmq.rs does not reconnect by
//! itself, so the engine's loop drops a `Link` and makes a new one whenever
//! the master falls silent. This is the only module that knows the socket
//! library.

use bytes::Bytes;
use drqueue_common::protocol::{
    decode, encode, FarmKey, FromEngine, ReplayGuard, SeqCounter, ToEngine,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeromq::{
    DealerSendHalf, DealerSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage,
};

const SEND_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Link {
    send: DealerSendHalf,
    incoming: mpsc::UnboundedReceiver<ToEngine>,
    reader: JoinHandle<()>,
    key: Option<FarmKey>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    pub async fn connect(
        endpoint: &str,
        key: Option<FarmKey>,
        timeout: Duration,
    ) -> anyhow::Result<Link> {
        let mut options = SocketOptions::default();
        options
            .connect_timeout(timeout)
            .max_message_size(drqueue_common::protocol::MAX_WIRE_BYTES);
        let mut socket = DealerSocket::with_options(options);
        tokio::time::timeout(timeout, socket.connect(endpoint))
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {endpoint} within {timeout:?}"))?
            .map_err(|e| anyhow::anyhow!("cannot connect to {endpoint}: {e}"))?;
        let (send, mut recv) = socket.split();
        let (tx, incoming) = mpsc::unbounded_channel();
        let reader_key = key.clone();
        let reader = tokio::spawn(async move {
            let mut guard = ReplayGuard::default();
            loop {
                let frames: Vec<Bytes> = match recv.recv().await {
                    Ok(m) => m.into_vec(),
                    Err(e) => {
                        tracing::debug!("master socket closed: {e}");
                        return;
                    }
                };
                match decode::<ToEngine>(&frames, reader_key.as_ref()) {
                    Ok((seq, msg)) => {
                        if !guard.accept(seq) {
                            tracing::warn!(seq, "dropping a replayed message from the master");
                            continue;
                        }
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!("dropping a message from the master: {e}"),
                }
            }
        });
        Ok(Link {
            send,
            incoming,
            reader,
            key,
        })
    }

    pub async fn send(&mut self, msg: &FromEngine, seq: &mut SeqCounter) -> anyhow::Result<()> {
        let mut frames = encode(msg, seq.advance(), self.key.as_ref()).into_iter();
        let mut zm = ZmqMessage::from(frames.next().unwrap_or_default());
        for f in frames {
            zm.push_back(f);
        }
        tokio::time::timeout(SEND_TIMEOUT, self.send.send(zm))
            .await
            .map_err(|_| anyhow::anyhow!("send to the master timed out"))?
            .map_err(|e| anyhow::anyhow!("send to the master failed: {e}"))
    }

    /// The next message, or None when the connection's reader has stopped.
    pub async fn recv(&mut self) -> Option<ToEngine> {
        self.incoming.recv().await
    }
}
