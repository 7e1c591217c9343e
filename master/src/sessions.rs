//! The master's table of engine sessions, sans I/O: each message from the
//! engines' socket goes in with its ZeroMQ identity, and what to do comes out.
//!
//! A connection first completes a Noise handshake ([`drqueue_common::session`]),
//! which proves the engine's key; [`Enrollment`] then admits it or keeps it
//! pending. Only an admitted session's messages reach the core, and only as
//! the engine it proved: a Register naming another engine is dropped. When a
//! second connection proves an identity that already has a session, it takes
//! over, and the first is told [`ToEngine::TakenOver`].

use crate::enroll::{Enrollment, Verdict};
use bytes::Bytes;
use drqueue_common::keys::KeyPair;
use drqueue_common::model::EngineId;
use drqueue_common::protocol::{DecodeError, FromEngine, ToEngine};
use drqueue_common::session::{self, Kind, Opener, Responder, Sealer};
use drqueue_common::Millis;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A handshake not finished in this time is forgotten.
const HANDSHAKE_TTL_MS: Millis = 10_000;
/// At most this many handshakes are in flight; the oldest go first.
const MAX_HANDSHAKES: usize = 4096;
/// A session silent this long is forgotten (engines heartbeat every second).
const SESSION_TTL_MS: Millis = 10 * 60_000;

/// The send side's half of every open session, shared with the send loop.
pub type Sealers = Arc<Mutex<HashMap<Bytes, Sealer>>>;

/// What to do with one incoming message.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send these frames as they are (handshake replies, clear refusals).
    Raw(Vec<Bytes>),
    /// Seal and send this to the engine behind `identity`.
    Send(Bytes, ToEngine),
    /// Hand this to the core, from the engine behind `identity`.
    Deliver(Bytes, Box<FromEngine>),
    /// Drop the message; the reason goes to the rate-limited log.
    Drop(String),
}

struct Open {
    engine: EngineId,
    opener: Opener,
    last_ms: Millis,
}

pub struct Sessions {
    keys: KeyPair,
    enrollment: Arc<Mutex<Enrollment>>,
    sealers: Sealers,
    handshakes: HashMap<Bytes, (Responder, Millis)>,
    open: HashMap<Bytes, Open>,
    by_engine: HashMap<EngineId, Bytes>,
}

impl Sessions {
    pub fn new(keys: KeyPair, enrollment: Arc<Mutex<Enrollment>>, sealers: Sealers) -> Sessions {
        Sessions {
            keys,
            enrollment,
            sealers,
            handshakes: HashMap::new(),
            open: HashMap::new(),
            by_engine: HashMap::new(),
        }
    }

    pub fn on_message(&mut self, identity: &Bytes, frames: &[Bytes], now: Millis) -> Vec<Action> {
        let kind = match session::kind(frames) {
            Ok(k) => k,
            // Tell a mismatched engine why; garbage gets silence.
            Err(e @ DecodeError::WrongVersion { .. }) => {
                return vec![
                    Action::Raw(session::refusal(&e.to_string())),
                    Action::Drop(e.to_string()),
                ]
            }
            Err(e) => return vec![Action::Drop(e.to_string())],
        };
        match kind {
            Kind::Hello => self.on_hello(identity, frames, now),
            Kind::HelloFinish => self.on_finish(identity, frames, now),
            Kind::Sealed => self.on_sealed(identity, frames, now),
            other => vec![Action::Drop(format!(
                "an engine does not send {other:?} messages"
            ))],
        }
    }

    fn on_hello(&mut self, identity: &Bytes, frames: &[Bytes], now: Millis) -> Vec<Action> {
        match Responder::answer(&self.keys, frames) {
            Ok((responder, reply)) => {
                if self.handshakes.len() >= MAX_HANDSHAKES {
                    self.drop_oldest_handshake();
                }
                self.handshakes.insert(identity.clone(), (responder, now));
                vec![Action::Raw(reply)]
            }
            Err(e) => vec![Action::Drop(e.to_string())],
        }
    }

    fn on_finish(&mut self, identity: &Bytes, frames: &[Bytes], now: Millis) -> Vec<Action> {
        let Some((responder, _)) = self.handshakes.remove(identity) else {
            return vec![
                Action::Raw(session::no_session()),
                Action::Drop("a handshake's end without its start".into()),
            ];
        };
        let (hello, key, channel) = match responder.finish(frames) {
            Ok(done) => done,
            Err(e) => return vec![Action::Drop(e.to_string())],
        };
        let verdict = self
            .enrollment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decide(
                &hello.engine,
                &hello.name,
                &key,
                hello.join_token.as_deref(),
                now,
            );
        let (sealer, opener) = channel.split();
        self.sealers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.clone(), sealer);
        let mut actions = Vec::new();
        match verdict {
            Verdict::Pending { fingerprint } => {
                // Nothing more is read from it; it tries again later.
                actions.push(Action::Send(
                    identity.clone(),
                    ToEngine::Pending { fingerprint },
                ));
            }
            Verdict::Admit => {
                if let Some(old) = self
                    .by_engine
                    .insert(hello.engine.clone(), identity.clone())
                {
                    if old != identity && self.open.remove(&old).is_some() {
                        // Also the ordinary reconnect, whose old connection
                        // is already gone: hence info, not a warning.
                        tracing::info!(engine = %hello.engine, "a new connection proved this engine's key and takes over from the previous one, which is told to stop if it still listens");
                        actions.push(Action::Send(old, ToEngine::TakenOver));
                    }
                }
                self.open.insert(
                    identity.clone(),
                    Open {
                        engine: hello.engine,
                        opener,
                        last_ms: now,
                    },
                );
                actions.push(Action::Send(identity.clone(), ToEngine::Admitted));
            }
        }
        actions
    }

    fn on_sealed(&mut self, identity: &Bytes, frames: &[Bytes], now: Millis) -> Vec<Action> {
        let Some(open) = self.open.get_mut(identity) else {
            // A restarted master, a forgotten session, or a replay: only a
            // fresh handshake gets anywhere.
            return vec![
                Action::Raw(session::no_session()),
                Action::Drop("a sealed message without a session".into()),
            ];
        };
        // Engines seal a loop turn's messages together: one seal, one open.
        let batch: Vec<FromEngine> = match open.opener.open(frames) {
            Ok(m) => m,
            Err(e) => return vec![Action::Drop(e.to_string())],
        };
        open.last_ms = now;
        batch
            .into_iter()
            .map(|msg| match &msg {
                FromEngine::Register(r) if r.engine != open.engine => Action::Drop(format!(
                    "a Register for engine {} on a session that proved engine {}",
                    r.engine, open.engine
                )),
                _ => Action::Deliver(identity.clone(), Box::new(msg)),
            })
            .collect()
    }

    fn drop_oldest_handshake(&mut self) {
        if let Some(oldest) = self
            .handshakes
            .iter()
            .min_by_key(|(_, (_, t))| *t)
            .map(|(id, _)| id.clone())
        {
            self.handshakes.remove(&oldest);
        }
    }

    /// Forgets stalled handshakes and silent sessions.
    pub fn expire(&mut self, now: Millis) {
        self.handshakes
            .retain(|_, (_, t)| now.saturating_sub(*t) < HANDSHAKE_TTL_MS);
        let stale: Vec<Bytes> = self
            .open
            .iter()
            .filter(|(_, o)| now.saturating_sub(o.last_ms) >= SESSION_TTL_MS)
            .map(|(id, _)| id.clone())
            .collect();
        let mut sealers = self.sealers.lock().unwrap_or_else(|p| p.into_inner());
        for id in stale {
            if let Some(o) = self.open.remove(&id) {
                if self.by_engine.get(&o.engine) == Some(&id) {
                    self.by_engine.remove(&o.engine);
                }
            }
            sealers.remove(&id);
        }
        // Sealers of sessions that never opened (pending ones) go too.
        let open = &self.open;
        sealers.retain(|id, _| open.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drqueue_common::session::{EngineHello, Initiator};

    struct FakeEngine {
        keys: KeyPair,
        id: EngineId,
    }

    fn table(auto: bool) -> (Sessions, KeyPair) {
        let master = KeyPair::generate().unwrap();
        let sessions = Sessions::new(
            master.clone(),
            Arc::new(Mutex::new(Enrollment::in_memory(auto))),
            Sealers::default(),
        );
        (sessions, master)
    }

    /// Runs a handshake for `who` at `identity`; returns its sealer and the
    /// table's last actions.
    fn connect(
        t: &mut Sessions,
        who: &FakeEngine,
        identity: &Bytes,
    ) -> (session::Sealer, Vec<Action>) {
        let (mut ini, m1) = Initiator::start(&who.keys).unwrap();
        let reply = t.on_message(identity, &m1, 1);
        let Action::Raw(m2) = &reply[0] else {
            panic!("{reply:?}")
        };
        ini.read_reply(m2).unwrap();
        let (m3, chan) = ini
            .finish(&EngineHello {
                engine: who.id.clone(),
                name: "n".into(),
                join_token: None,
            })
            .unwrap();
        let actions = t.on_message(identity, &m3, 2);
        (chan.split().0, actions)
    }

    fn engine(id: &str) -> FakeEngine {
        FakeEngine {
            keys: KeyPair::generate().unwrap(),
            id: EngineId::from(id),
        }
    }

    #[test]
    fn unenrolled_engines_are_kept_pending_and_heard_no_further() {
        let (mut t, _) = table(false);
        let e = engine("e1");
        let id = Bytes::from_static(b"i1");
        let (mut seal, actions) = connect(&mut t, &e, &id);
        assert!(matches!(
            &actions[0],
            Action::Send(_, ToEngine::Pending { .. })
        ));
        let hb = seal.seal(&vec![FromEngine::Release(vec![])]);
        let out = t.on_message(&id, &hb, 3);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Deliver(..))),
            "{out:?}"
        );
    }

    #[test]
    fn admitted_sessions_deliver_and_replays_do_not() {
        let (mut t, _) = table(true);
        let e = engine("e1");
        let id = Bytes::from_static(b"i1");
        let (mut seal, actions) = connect(&mut t, &e, &id);
        assert_eq!(actions, vec![Action::Send(id.clone(), ToEngine::Admitted)]);
        let msg = seal.seal(&vec![FromEngine::Release(vec![])]);
        assert!(matches!(t.on_message(&id, &msg, 3)[0], Action::Deliver(..)));
        assert!(matches!(t.on_message(&id, &msg, 4)[0], Action::Drop(_)));
        // The same bytes on a new connection, or to a restarted master.
        let other = Bytes::from_static(b"i2");
        assert!(matches!(t.on_message(&other, &msg, 5)[0], Action::Raw(_)));
        let (mut fresh, _) = table(true);
        assert!(!fresh
            .on_message(&id, &msg, 5)
            .iter()
            .any(|a| matches!(a, Action::Deliver(..))));
    }

    #[test]
    fn a_second_connection_takes_over() {
        let (mut t, _) = table(true);
        let e = engine("e1");
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        connect(&mut t, &e, &a);
        let (_, actions) = connect(&mut t, &e, &b);
        assert!(actions.contains(&Action::Send(a.clone(), ToEngine::TakenOver)));
        assert!(actions.contains(&Action::Send(b, ToEngine::Admitted)));
    }

    #[test]
    fn an_id_enrolled_with_another_key_is_not_admitted() {
        let (mut t, _) = table(true);
        connect(&mut t, &engine("e1"), &Bytes::from_static(b"a"));
        let (_, actions) = connect(&mut t, &engine("e1"), &Bytes::from_static(b"b"));
        assert!(
            matches!(&actions[0], Action::Send(_, ToEngine::Pending { .. })),
            "{actions:?}"
        );
    }

    #[test]
    fn stale_handshakes_and_sessions_expire() {
        let (mut t, _) = table(true);
        let e = engine("e1");
        connect(&mut t, &e, &Bytes::from_static(b"a"));
        let (_, m1) = Initiator::start(&e.keys).unwrap();
        t.on_message(&Bytes::from_static(b"half"), &m1, 1);
        t.expire(SESSION_TTL_MS + 10);
        assert!(t.handshakes.is_empty() && t.open.is_empty());
        assert!(t.sealers.lock().unwrap().is_empty());
    }
}
