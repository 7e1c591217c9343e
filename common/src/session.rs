//! The encrypted, mutually authenticated session between an engine and the
//! master, sans I/O: bytes in, bytes out, no sockets.
//!
//! Every connection opens with a Noise `XX` handshake (X25519, ChaCha20-Poly1305,
//! BLAKE2s, through the `snow` crate): both sides prove their static key, and
//! each connection gets fresh session keys. Nothing recorded from one
//! connection decrypts in another, so a replayed stream is refused even by a
//! master that restarted meanwhile; no sequence state needs to survive.
//!
//! On the wire (after the ROUTER's identity frame), frame 0 is a header:
//!
//! ```text
//! +---------+------+-------------------------------------------------------+
//! | version | kind | rest                                                  |
//! | u16 LE  | u8   |                                                       |
//! +---------+------+-------------------------------------------------------+
//! kind 1  Hello       engine → master   Noise message 1
//! kind 2  HelloReply  master → engine   Noise message 2 (carries the master's key)
//! kind 3  HelloFinish engine → master   Noise message 3 + sealed [`EngineHello`]
//! kind 4  Sealed      either way        nonce u64 LE; frames 1..n: ciphertext chunks
//! kind 5  Refused     master → engine   UTF-8 reason, in clear (before any session)
//! kind 6  NoSession   master → engine   "unknown session: handshake again"
//! ```
//!
//! A sealed message is cut into chunks of at most 65,535 bytes (Noise's
//! limit); chunk `i` is sealed under nonce `nonce + i`, and a receiver takes
//! only nonces above every one it has used, so nothing is replayed within a
//! connection either. Sizes are checked before anything is allocated.

use crate::keys::KeyPair;
use crate::model::EngineId;
use crate::protocol::{DecodeError, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use snow::{HandshakeState, StatelessTransportState};
use std::sync::Arc;

const PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Binds the handshake to this protocol: a different version never completes.
const PROLOGUE: &[u8] = b"drqueue engine link v4";
const NOISE_MAX: usize = 65_535;
const TAG: usize = 16;
const CHUNK: usize = NOISE_MAX - TAG;
/// Enough chunks for the largest message, and no more.
const MAX_CHUNKS: usize = MAX_MESSAGE_BYTES / CHUNK + 1;
const HEADER: usize = 3;
const SEALED_HEADER: usize = HEADER + 8;
/// Room for an [`EngineHello`]: ids, a name and a join token.
const MAX_HELLO: usize = 2048;

/// What frame 0 says a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hello = 1,
    HelloReply = 2,
    HelloFinish = 3,
    Sealed = 4,
    Refused = 5,
    NoSession = 6,
}

/// Reads a message's header: its kind, after the version and size checks.
pub fn kind(frames: &[Bytes]) -> Result<Kind, DecodeError> {
    let head = frames.first().ok_or(DecodeError::Empty)?;
    if frames.len() > MAX_CHUNKS + 1 {
        return Err(DecodeError::TooManyFrames(frames.len()));
    }
    if head.len() < HEADER {
        return Err(DecodeError::Truncated(head.len()));
    }
    let version = u16::from_le_bytes([head[0], head[1]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::WrongVersion { got: version });
    }
    Ok(match head[2] {
        1 => Kind::Hello,
        2 => Kind::HelloReply,
        3 => Kind::HelloFinish,
        4 => Kind::Sealed,
        5 => Kind::Refused,
        6 => Kind::NoSession,
        other => {
            return Err(DecodeError::Malformed(format!(
                "unknown message kind {other}"
            )))
        }
    })
}

fn frame(kind: Kind, rest: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(HEADER + rest.len());
    buf.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(rest);
    Bytes::from(buf)
}

/// A refusal in clear, for a peer that has no session (a wrong version).
/// Unauthenticated, so an engine treats it as a hint, never as final.
pub fn refusal(reason: &str) -> Vec<Bytes> {
    vec![frame(Kind::Refused, reason.as_bytes())]
}

/// The reason inside a [`Kind::Refused`] message.
pub fn refusal_reason(frames: &[Bytes]) -> String {
    let head = frames
        .first()
        .map(|f| &f[HEADER.min(f.len())..])
        .unwrap_or(&[]);
    String::from_utf8_lossy(&head[..head.len().min(500)]).into_owned()
}

/// "I have no session for you": the engine handshakes again.
pub fn no_session() -> Vec<Bytes> {
    vec![frame(Kind::NoSession, &[])]
}

pub(crate) fn params() -> snow::params::NoiseParams {
    PATTERN.parse().expect("a valid Noise pattern")
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("handshake failed: {0}")]
    Noise(String),
    #[error("expected a {expected:?} message, got {got:?}")]
    OutOfTurn { expected: Kind, got: Kind },
}

fn noise(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

fn expect(frames: &[Bytes], expected: Kind) -> Result<&[u8], HandshakeError> {
    let got = kind(frames)?;
    if got != expected {
        return Err(HandshakeError::OutOfTurn { expected, got });
    }
    if frames.len() != 1 {
        return Err(DecodeError::TooManyFrames(frames.len()).into());
    }
    let body = &frames[0][HEADER..];
    if body.len() > NOISE_MAX {
        return Err(DecodeError::Oversized(body.len()).into());
    }
    Ok(body)
}

/// What an engine tells the master inside the last handshake message, where
/// only the master can read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineHello {
    pub engine: EngineId,
    /// The engine's name, for `drqueue engines` and `engine accept NAME`.
    pub name: String,
    /// A join token given at install (`DRQUEUE_JOIN_TOKEN`), if any.
    pub join_token: Option<String>,
}

/// The engine's half of a handshake.
pub struct Initiator(HandshakeState);

impl Initiator {
    /// Starts a handshake; returns the first message to send.
    pub fn start(keys: &KeyPair) -> Result<(Initiator, Vec<Bytes>), HandshakeError> {
        let mut hs = snow::Builder::new(params())
            .local_private_key(&keys.private)
            .prologue(PROLOGUE)
            .build_initiator()
            .map_err(noise)?;
        let mut buf = [0u8; 128];
        let n = hs.write_message(&[], &mut buf).map_err(noise)?;
        Ok((Initiator(hs), vec![frame(Kind::Hello, &buf[..n])]))
    }

    /// Reads the master's answer; returns the master's public key, which the
    /// caller checks against the key it trusts before going on.
    pub fn read_reply(&mut self, frames: &[Bytes]) -> Result<[u8; 32], HandshakeError> {
        let body = expect(frames, Kind::HelloReply)?;
        let mut payload = vec![0u8; NOISE_MAX];
        self.0.read_message(body, &mut payload).map_err(noise)?;
        remote_key(&self.0)
    }

    /// Sends who the engine is; the session is open from here on.
    pub fn finish(mut self, hello: &EngineHello) -> Result<(Vec<Bytes>, Channel), HandshakeError> {
        let payload = postcard::to_allocvec(hello)
            .map_err(|e| HandshakeError::Noise(format!("cannot encode the hello: {e}")))?;
        if payload.len() > MAX_HELLO {
            return Err(DecodeError::Oversized(payload.len()).into());
        }
        let mut buf = vec![0u8; payload.len() + 256];
        let n = self.0.write_message(&payload, &mut buf).map_err(noise)?;
        let frames = vec![frame(Kind::HelloFinish, &buf[..n])];
        Ok((frames, Channel::from_handshake(self.0)?))
    }
}

/// The master's half of a handshake.
pub struct Responder(HandshakeState);

impl Responder {
    /// Answers an engine's first message.
    pub fn answer(
        keys: &KeyPair,
        frames: &[Bytes],
    ) -> Result<(Responder, Vec<Bytes>), HandshakeError> {
        let body = expect(frames, Kind::Hello)?;
        let mut hs = snow::Builder::new(params())
            .local_private_key(&keys.private)
            .prologue(PROLOGUE)
            .build_responder()
            .map_err(noise)?;
        let mut payload = [0u8; 64];
        hs.read_message(body, &mut payload).map_err(noise)?;
        let mut buf = [0u8; 256];
        let n = hs.write_message(&[], &mut buf).map_err(noise)?;
        Ok((Responder(hs), vec![frame(Kind::HelloReply, &buf[..n])]))
    }

    /// Reads the engine's last message: who it says it is, the key it
    /// proved, and the open session.
    pub fn finish(
        mut self,
        frames: &[Bytes],
    ) -> Result<(EngineHello, [u8; 32], Channel), HandshakeError> {
        let body = expect(frames, Kind::HelloFinish)?;
        if body.len() > MAX_HELLO + 256 {
            return Err(DecodeError::Oversized(body.len()).into());
        }
        let mut payload = vec![0u8; body.len()];
        let n = self.0.read_message(body, &mut payload).map_err(noise)?;
        let hello: EngineHello = postcard::from_bytes(&payload[..n])
            .map_err(|e| DecodeError::Malformed(format!("engine hello: {e}")))?;
        let key = remote_key(&self.0)?;
        Ok((hello, key, Channel::from_handshake(self.0)?))
    }
}

fn remote_key(hs: &HandshakeState) -> Result<[u8; 32], HandshakeError> {
    hs.get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| HandshakeError::Noise("the peer sent no static key".into()))
}

/// An open session. Split it into the halves the send and receive paths own.
pub struct Channel(Arc<StatelessTransportState>);

impl Channel {
    fn from_handshake(hs: HandshakeState) -> Result<Channel, HandshakeError> {
        Ok(Channel(Arc::new(
            hs.into_stateless_transport_mode().map_err(noise)?,
        )))
    }

    pub fn split(self) -> (Sealer, Opener) {
        (
            Sealer {
                state: self.0.clone(),
                next: 0,
            },
            Opener {
                state: self.0,
                next: 0,
            },
        )
    }
}

/// Seals outgoing messages of one session.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    next: u64,
}

impl Sealer {
    pub fn seal<T: Serialize + ?Sized>(&mut self, msg: &T) -> Vec<Bytes> {
        // Serialising our own in-memory types cannot fail.
        let body = postcard::to_allocvec(msg).expect("protocol types serialise");
        let mut head = Vec::with_capacity(SEALED_HEADER);
        head.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        head.push(Kind::Sealed as u8);
        head.extend_from_slice(&self.next.to_le_bytes());
        let mut frames = vec![Bytes::from(head)];
        for chunk in body.chunks(CHUNK) {
            let mut out = vec![0u8; chunk.len() + TAG];
            // A chunk within Noise's limit always seals.
            let n = self
                .state
                .write_message(self.next, chunk, &mut out)
                .expect("a chunk within the Noise limit seals");
            out.truncate(n);
            frames.push(Bytes::from(out));
            self.next += 1;
        }
        frames
    }
}

/// Opens incoming messages of one session.
pub struct Opener {
    state: Arc<StatelessTransportState>,
    /// The lowest nonce not yet used: anything below is a replay.
    next: u64,
}

impl Opener {
    pub fn open<T: DeserializeOwned>(&mut self, frames: &[Bytes]) -> Result<T, DecodeError> {
        let got = kind(frames)?;
        if got != Kind::Sealed {
            return Err(DecodeError::Malformed(format!(
                "expected a sealed message, got {got:?}"
            )));
        }
        let head = &frames[0];
        if head.len() != SEALED_HEADER {
            return Err(DecodeError::Truncated(head.len()));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&head[HEADER..]);
        let nonce = u64::from_le_bytes(n);
        if nonce < self.next {
            return Err(DecodeError::Replayed);
        }
        let chunks = &frames[1..];
        if chunks.is_empty() {
            return Err(DecodeError::Truncated(0));
        }
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        if total > MAX_MESSAGE_BYTES + chunks.len() * TAG {
            return Err(DecodeError::Oversized(total));
        }
        // Opened in place, straight into the body: no scratch buffer to
        // zero per message on the hot path.
        let mut body = Vec::with_capacity(total);
        for (i, chunk) in chunks.iter().enumerate() {
            if chunk.len() > NOISE_MAX || chunk.len() < TAG {
                return Err(DecodeError::Malformed(format!(
                    "sealed chunk of {} bytes",
                    chunk.len()
                )));
            }
            let start = body.len();
            body.resize(start + chunk.len(), 0);
            let len = self
                .state
                .read_message(nonce + i as u64, chunk, &mut body[start..])
                .map_err(|_| DecodeError::Unsealed)?;
            body.truncate(start + len);
        }
        self.next = nonce + chunks.len() as u64;
        postcard::from_bytes(&body).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FromEngine, ToEngine};

    /// Both ends of one session, and what the engine said in it.
    type Session = ((Sealer, Opener), (Sealer, Opener), EngineHello);

    fn handshake() -> Session {
        let engine = KeyPair::generate().unwrap();
        let master = KeyPair::generate().unwrap();
        let (mut ini, m1) = Initiator::start(&engine).unwrap();
        let (resp, m2) = Responder::answer(&master, &m1).unwrap();
        assert_eq!(ini.read_reply(&m2).unwrap(), master.public);
        let hello = EngineHello {
            engine: EngineId::from("e1"),
            name: "node1".into(),
            join_token: Some("tok".into()),
        };
        let (m3, e_chan) = ini.finish(&hello).unwrap();
        let (got, key, m_chan) = resp.finish(&m3).unwrap();
        assert_eq!(key, engine.public);
        (e_chan.split(), m_chan.split(), got)
    }

    #[test]
    fn handshake_proves_both_keys_and_carries_the_hello() {
        let (_, _, hello) = handshake();
        assert_eq!(hello.name, "node1");
        assert_eq!(hello.join_token.as_deref(), Some("tok"));
    }

    #[test]
    fn sealed_messages_round_trip_and_replays_are_refused() {
        let ((mut e_seal, _), (_, mut m_open), ..) = handshake();
        let big = FromEngine::Log {
            attempt: crate::protocol::AttemptKey {
                task: crate::model::TaskKey {
                    job: crate::model::JobId(1),
                    index: 2,
                },
                attempt: 1,
            },
            offset: 0,
            data: vec![7u8; 200_000],
        };
        let frames = e_seal.seal(&big);
        assert!(frames.len() > 3, "a big message is cut into chunks");
        assert_eq!(m_open.open::<FromEngine>(&frames).unwrap(), big);
        assert_eq!(
            m_open.open::<FromEngine>(&frames).unwrap_err(),
            DecodeError::Replayed
        );
        let next = e_seal.seal(&FromEngine::Release(vec![]));
        assert!(m_open.open::<FromEngine>(&next).is_ok());
    }

    #[test]
    fn another_sessions_messages_do_not_open() {
        let ((mut a_seal, _), ..) = handshake();
        let (_, (_, mut b_open), ..) = handshake();
        let frames = a_seal.seal(&ToEngine::Pong);
        assert_eq!(
            b_open.open::<ToEngine>(&frames).unwrap_err(),
            DecodeError::Unsealed
        );
    }

    #[test]
    fn tampered_messages_do_not_open() {
        let (_, (mut m_seal, _), ..) = handshake();
        let ((_, mut e_open), ..) = handshake();
        let mut frames = m_seal.seal(&ToEngine::Pong);
        let mut c = frames[1].to_vec();
        c[0] ^= 1;
        frames[1] = Bytes::from(c);
        assert!(e_open.open::<ToEngine>(&frames).is_err());
    }

    #[test]
    fn out_of_turn_and_garbage_are_errors_not_panics() {
        let master = KeyPair::generate().unwrap();
        assert!(Responder::answer(&master, &[]).is_err());
        assert!(Responder::answer(&master, &refusal("x")).is_err());
        assert!(Responder::answer(&master, &[frame(Kind::Hello, &[1, 2, 3])]).is_err());
        let mut wrong = frame(Kind::Hello, &[0; 32]).to_vec();
        wrong[0] = 99;
        assert!(matches!(
            kind(&[Bytes::from(wrong)]),
            Err(DecodeError::WrongVersion { got: 99 })
        ));
    }

    proptest::proptest! {
        #[test]
        fn opening_garbage_never_panics(frames in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..100), 0..4)) {
            let (_, (_, mut open), ..) = handshake();
            let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
            let _ = open.open::<FromEngine>(&frames);
            let _ = kind(&frames);
        }
    }
}
