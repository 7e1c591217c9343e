//! A hand-made engine that speaks the protocol itself, for tests that play
//! an attacker: it runs the real handshake (so the master may admit it) and
//! keeps every message it sends, so a test can replay them.

use bytes::Bytes;
use drqueue_common::keys::KeyPair;
use drqueue_common::model::EngineFacts;
use drqueue_common::protocol::{Finished, FromEngine, Register, ToEngine};
use drqueue_common::session::{self, EngineHello, Initiator, Opener, Sealer};
use std::time::Duration;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend};

pub struct RawEngine {
    socket: DealerSocket,
    sealer: Sealer,
    opener: Opener,
    /// Every message sent, as it went on the wire.
    pub sent: Vec<Vec<Bytes>>,
}

const WAIT: Duration = Duration::from_secs(10);

impl RawEngine {
    /// Connects as `id` with a fresh key; returns the engine and the
    /// master's verdict (`Admitted` or `Pending`).
    pub async fn connect(endpoint: &str, id: &str) -> (RawEngine, ToEngine) {
        let keys = KeyPair::generate().expect("key pair");
        let mut socket = DealerSocket::new();
        socket.connect(endpoint).await.expect("connect");
        let mut sent = Vec::new();
        let (mut ini, hello) = Initiator::start(&keys).expect("handshake start");
        socket
            .send(crate::zmq_message(hello.clone()))
            .await
            .expect("send");
        sent.push(hello);
        let reply = recv_frames(&mut socket).await;
        ini.read_reply(&reply).expect("master's reply");
        let (finish, channel) = ini
            .finish(&EngineHello {
                engine: id.into(),
                name: id.into(),
                join_token: None,
            })
            .expect("handshake finish");
        socket
            .send(crate::zmq_message(finish.clone()))
            .await
            .expect("send");
        sent.push(finish);
        let (sealer, mut opener) = channel.split();
        let verdict = opener
            .open(&recv_frames(&mut socket).await)
            .expect("verdict");
        let raw = RawEngine {
            socket,
            sealer,
            opener,
            sent,
        };
        (raw, verdict)
    }

    pub async fn send(&mut self, msg: &FromEngine) {
        let frames = self.sealer.seal(std::slice::from_ref(msg));
        self.socket
            .send(crate::zmq_message(frames.clone()))
            .await
            .expect("send");
        self.sent.push(frames);
    }

    /// Sends frames again, as they are, on this connection.
    pub async fn resend(&mut self, frames: Vec<Bytes>) {
        self.socket
            .send(crate::zmq_message(frames))
            .await
            .expect("send");
    }

    pub async fn recv(&mut self) -> ToEngine {
        let frames = recv_frames(&mut self.socket).await;
        self.opener
            .open(&frames)
            .expect("a sealed message from the master")
    }
}

/// Sends recorded messages, exactly as they were, on a new connection.
pub async fn replay(endpoint: &str, recorded: &[Vec<Bytes>]) -> Vec<Vec<Bytes>> {
    let mut socket = DealerSocket::new();
    socket.connect(endpoint).await.expect("connect");
    let mut answers = Vec::new();
    for frames in recorded {
        socket
            .send(crate::zmq_message(frames.clone()))
            .await
            .expect("send");
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), socket.recv()).await {
            answers.push(m.into_vec());
        }
    }
    answers
}

async fn recv_frames(socket: &mut DealerSocket) -> Vec<Bytes> {
    tokio::time::timeout(WAIT, socket.recv())
        .await
        .expect("an answer from the master in time")
        .expect("a message")
        .into_vec()
}

/// A Register from a hand-made engine in a pool no job uses, delivering
/// `finished`.
pub fn register_as(name: &str, finished: Vec<Finished>) -> FromEngine {
    FromEngine::Register(Register {
        engine: name.into(),
        session: 1,
        time_ms: drqueue_common::now_millis(),
        facts: EngineFacts {
            name: name.into(),
            pools: vec!["nowhere".into()],
            ..Default::default()
        },
        slots: 1,
        hwm: 1,
        held: vec![],
        finished,
    })
}

/// What kind of message the master sent, for clear-text answers.
pub fn kind_of(frames: &[Bytes]) -> Option<session::Kind> {
    session::kind(frames).ok()
}
