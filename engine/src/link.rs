//! One connection to the master: a DEALER socket, the session handshake, a
//! reader task that opens sealed messages, and a send with a timeout. zmq.rs
//! does not reconnect by itself, so the engine's loop drops a `Link` and makes
//! a new one (with a new handshake) whenever the master falls silent. This is
//! the only module that knows the socket library.
//!
//! Trust runs both ways. The master admits the engine's key (or keeps it
//! pending); the engine talks only to the master whose key it trusts: the
//! key pinned in its state dir at first admission, or before that the
//! fingerprint inside its join token. With neither, the first master that
//! admits it is trusted and pinned.

use bytes::Bytes;
use drqueue_common::keys::{self, fingerprint, hex, token_fingerprint, unhex, KeyPair};
use drqueue_common::model::EngineId;
use drqueue_common::protocol::{FromEngine, ToEngine};
use drqueue_common::session::{self, EngineHello, Initiator, Kind, Sealer};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeromq::{
    DealerRecvHalf, DealerSendHalf, DealerSocket, Socket, SocketOptions, SocketRecv, SocketSend,
    ZmqMessage,
};

const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Roughly how much one sealed batch carries: well under the message cap,
/// so a resent log never makes a batch the master refuses.
const BATCH_BYTES: usize = 1 << 20;

/// A message's size on the wire, near enough to cut batches by: only logs
/// (and a Register's results) are ever large.
fn approx_size(msg: &FromEngine) -> usize {
    match msg {
        FromEngine::Log { data, .. } => data.len() + 64,
        FromEngine::Register(r) => 4096 + r.finished.len() * 128 + r.held.len() * 16,
        _ => 256,
    }
}

/// Who this engine is, and whom it trusts.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub keys: KeyPair,
    pub engine: EngineId,
    pub name: String,
    pub join_token: Option<String>,
    /// The trusted master's public key, pinned at first admission.
    pub master_pin: PathBuf,
    /// The master was found on the network (DNS SRV or mDNS), not named by
    /// a user: with no pinned key and no join token it is not trusted on
    /// sight, unless it is on this machine's loopback.
    pub discovered: bool,
}

/// The key pinned in `path`, if any.
fn read_pin(path: &std::path::Path) -> Option<[u8; 32]> {
    let text = std::fs::read_to_string(path).ok()?;
    unhex(text.trim()).and_then(|b| b.try_into().ok())
}

/// The fingerprint of the master key an engine trusts, if it knows one
/// yet: the key pinned in `master_pin`, else the one its join token names.
/// Discovery looks for a master with this key.
pub fn trusted_fingerprint(
    master_pin: &std::path::Path,
    join_token: Option<&str>,
) -> Option<String> {
    read_pin(master_pin)
        .map(|k| fingerprint(&k))
        .or_else(|| join_token.and_then(|t| token_fingerprint(t).ok()))
}

impl Credentials {
    fn pinned(&self) -> Option<[u8; 32]> {
        read_pin(&self.master_pin)
    }

    /// Refuses a master whose key this engine does not trust.
    fn check_master(&self, endpoint: &str, key: &[u8; 32]) -> Result<(), LinkError> {
        let got = fingerprint(key);
        if let Some(pinned) = self.pinned() {
            if &pinned != key {
                return Err(LinkError::WrongMaster(format!(
                    "its key {got} is not the one this engine trusts ({}, pinned in {}); if that master's key was really replaced, delete the file and enroll the engine again",
                    fingerprint(&pinned),
                    self.master_pin.display()
                )));
            }
        } else if let Some(token) = &self.join_token {
            let want = token_fingerprint(token).map_err(LinkError::Refused)?;
            if want != got {
                return Err(LinkError::WrongMaster(format!(
                    "its key {got} is not the one the join token names ({want})"
                )));
            }
        } else if self.discovered && !drqueue_discovery::advert::is_loopback(endpoint) {
            return Err(LinkError::WrongMaster(format!(
                "it was found on the network, and this engine has no join token and no pinned key to check its key {got} against; give the engine a join token (`drqueue engine join-token`) or its address (--master)"
            )));
        }
        Ok(())
    }

    fn pin(&self, key: &[u8; 32]) {
        if self.pinned().is_none() {
            match keys::write_private(&self.master_pin, format!("{}\n", hex(key)).as_bytes()) {
                Ok(()) => {
                    tracing::info!(master_key = %fingerprint(key), "trusting this master's key from now on")
                }
                Err(e) => tracing::warn!(
                    "cannot pin the master's key in {}: {e}",
                    self.master_pin.display()
                ),
            }
        }
    }
}

/// Why no link was made.
#[derive(Debug)]
pub enum LinkError {
    /// No answer, or the connection broke: try again (or the next master).
    Unreachable(String),
    /// The master holds this engine's key for acceptance.
    Pending { fingerprint: String },
    /// The master is not the one this engine trusts.
    WrongMaster(String),
    /// The master (or a bad join token) said no.
    Refused(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Unreachable(e) | LinkError::Refused(e) => f.write_str(e),
            LinkError::Pending { fingerprint } => {
                write!(f, "waiting to be accepted (key {fingerprint})")
            }
            LinkError::WrongMaster(e) => write!(f, "not trusting this master: {e}"),
        }
    }
}

pub struct Link {
    send: DealerSendHalf,
    sealer: Sealer,
    incoming: mpsc::UnboundedReceiver<ToEngine>,
    reader: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn recv_frames(
    recv: &mut DealerRecvHalf,
    timeout: Duration,
) -> Result<Vec<Bytes>, LinkError> {
    match tokio::time::timeout(timeout, recv.recv()).await {
        Ok(Ok(m)) => Ok(m.into_vec()),
        Ok(Err(e)) => Err(LinkError::Unreachable(format!(
            "the master closed the connection: {e}"
        ))),
        Err(_) => Err(LinkError::Unreachable(format!(
            "no handshake answer within {timeout:?}"
        ))),
    }
}

async fn send_frames(send: &mut DealerSendHalf, frames: Vec<Bytes>) -> anyhow::Result<()> {
    let mut frames = frames.into_iter();
    let mut zm = ZmqMessage::from(frames.next().unwrap_or_default());
    for f in frames {
        zm.push_back(f);
    }
    tokio::time::timeout(SEND_TIMEOUT, send.send(zm))
        .await
        .map_err(|_| anyhow::anyhow!("send to the master timed out"))?
        .map_err(|e| anyhow::anyhow!("send to the master failed: {e}"))
}

impl Link {
    /// Connects, runs the handshake and waits for the master's verdict: a
    /// `Link` only for an engine the master admitted.
    pub async fn connect(
        endpoint: &str,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<Link, LinkError> {
        let unreachable = |e: anyhow::Error| LinkError::Unreachable(e.to_string());
        let mut options = SocketOptions::default();
        options
            .connect_timeout(timeout)
            .max_message_size(drqueue_common::protocol::MAX_WIRE_BYTES);
        let mut socket = DealerSocket::with_options(options);
        tokio::time::timeout(timeout, socket.connect(endpoint))
            .await
            .map_err(|_| {
                LinkError::Unreachable(format!("no answer from {endpoint} within {timeout:?}"))
            })?
            .map_err(|e| LinkError::Unreachable(format!("cannot connect to {endpoint}: {e}")))?;
        let (mut send, mut recv) = socket.split();

        let handshake = |e: session::HandshakeError| {
            LinkError::Unreachable(format!("handshake with {endpoint}: {e}"))
        };
        let (mut initiator, hello) = Initiator::start(&creds.keys).map_err(handshake)?;
        send_frames(&mut send, hello).await.map_err(unreachable)?;
        let reply = recv_frames(&mut recv, timeout).await?;
        if session::kind(&reply) == Ok(Kind::Refused) {
            return Err(LinkError::Refused(session::refusal_reason(&reply)));
        }
        let master_key = initiator.read_reply(&reply).map_err(handshake)?;
        creds.check_master(endpoint, &master_key)?;
        let (finish, channel) = initiator
            .finish(&EngineHello {
                engine: creds.engine.clone(),
                name: creds.name.clone(),
                join_token: creds.join_token.clone(),
            })
            .map_err(handshake)?;
        send_frames(&mut send, finish).await.map_err(unreachable)?;
        let (sealer, mut opener) = channel.split();
        let verdict = recv_frames(&mut recv, timeout).await?;
        match opener.open::<ToEngine>(&verdict) {
            Ok(ToEngine::Admitted) => creds.pin(&master_key),
            Ok(ToEngine::Pending { fingerprint }) => {
                return Err(LinkError::Pending { fingerprint })
            }
            Ok(ToEngine::Refused { reason }) => return Err(LinkError::Refused(reason)),
            Ok(other) => {
                return Err(LinkError::Unreachable(format!(
                    "unexpected {other:?} for a handshake's verdict"
                )))
            }
            Err(_) if session::kind(&verdict) == Ok(Kind::Refused) => {
                return Err(LinkError::Refused(session::refusal_reason(&verdict)))
            }
            Err(e) => return Err(LinkError::Unreachable(format!("handshake verdict: {e}"))),
        }

        let (tx, incoming) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                let frames: Vec<Bytes> = match recv.recv().await {
                    Ok(m) => m.into_vec(),
                    Err(e) => {
                        tracing::debug!("master socket closed: {e}");
                        return;
                    }
                };
                let msg = match session::kind(&frames) {
                    Ok(Kind::Sealed) => match opener.open::<ToEngine>(&frames) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("dropping a message from the master: {e}");
                            continue;
                        }
                    },
                    // The master lost the session (it restarted): handshake
                    // again. Unauthenticated, but all it can cause is that.
                    Ok(Kind::NoSession) => ToEngine::Reregister,
                    Ok(other) => {
                        tracing::warn!("dropping an unexpected {other:?} from the master");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("dropping a message from the master: {e}");
                        continue;
                    }
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
        Ok(Link {
            send,
            sealer,
            incoming,
            reader,
        })
    }

    pub async fn send(&mut self, msg: &FromEngine) -> anyhow::Result<()> {
        self.send_all(std::slice::from_ref(msg)).await
    }

    /// Sends messages sealed together, as few as fit in [`BATCH_BYTES`]:
    /// a burst of results costs one seal and one ZeroMQ message, not one each.
    pub async fn send_all(&mut self, msgs: &[FromEngine]) -> anyhow::Result<()> {
        let mut start = 0;
        while start < msgs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < msgs.len()
                && (end == start || bytes + approx_size(&msgs[end]) <= BATCH_BYTES)
            {
                bytes += approx_size(&msgs[end]);
                end += 1;
            }
            let frames = self.sealer.seal(&msgs[start..end]);
            send_frames(&mut self.send, frames).await?;
            start = end;
        }
        Ok(())
    }

    /// The next message, or None when the connection's reader has stopped.
    pub async fn recv(&mut self) -> Option<ToEngine> {
        self.incoming.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(dir: &std::path::Path, discovered: bool, join_token: Option<String>) -> Credentials {
        Credentials {
            keys: KeyPair::generate().unwrap(),
            engine: "e".into(),
            name: "e".into(),
            join_token,
            master_pin: dir.join("master.pub"),
            discovered,
        }
    }

    #[test]
    fn a_discovered_master_needs_a_key_to_check_unless_it_is_on_loopback() {
        let dir = std::env::temp_dir().join(format!("drqueue-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let master = KeyPair::generate().unwrap();
        let named = creds(&dir, false, None);
        assert!(
            named
                .check_master("tcp://10.0.0.1:5555", &master.public)
                .is_ok(),
            "named by a user: trusted on first use"
        );
        let found = creds(&dir, true, None);
        let err = found
            .check_master("tcp://10.0.0.1:5555", &master.public)
            .unwrap_err();
        assert!(err.to_string().contains("join token"), "{err}");
        assert!(
            found
                .check_master("tcp://127.0.0.1:5555", &master.public)
                .is_ok(),
            "loopback: the single-machine rule"
        );
        // With its key pinned, a discovered master with that key is trusted,
        // and one with another key is not.
        std::fs::write(dir.join("master.pub"), hex(&master.public)).unwrap();
        assert!(found
            .check_master("tcp://10.0.0.1:5555", &master.public)
            .is_ok());
        let other = KeyPair::generate().unwrap();
        assert!(found
            .check_master("tcp://127.0.0.1:5555", &other.public)
            .is_err());
        assert_eq!(
            trusted_fingerprint(&dir.join("master.pub"), None),
            Some(fingerprint(&master.public))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
