//! Exactly once, across restarts: before a file is moved into `submitted/`
//! a `take` line is appended and synced; once its jobs are recorded (or it
//! is rejected) a `done` line follows. A `take` with no `done` is work a
//! previous run began: the next run finishes it. The file is
//! `.drqueue-watch/ledger.jsonl` in the watched folder, compacted to the
//! unfinished takes on open; a torn last line (a crash mid-write) is
//! dropped, which is safe because nothing was moved before its sync.

use drqueue_common::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Line {
    /// `file` in the folder becomes `submitted/dest`, taken at `at`.
    Take {
        file: String,
        dest: String,
        at: Millis,
    },
    /// `dest` is finished: submitted and recorded, or rejected.
    Done { dest: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    pub file: String,
    pub dest: String,
    pub at: Millis,
}

pub struct Ledger {
    path: PathBuf,
    pending: BTreeMap<String, Take>,
}

impl Ledger {
    /// Reads the ledger in `state_dir` (made if missing) and compacts it.
    pub fn open(state_dir: &Path) -> Result<Ledger, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
        let path = state_dir.join("ledger.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut pending = BTreeMap::new();
        for line in text.lines() {
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Take { file, dest, at }) => {
                    pending.insert(dest.clone(), Take { file, dest, at });
                }
                Ok(Line::Done { dest }) => {
                    pending.remove(&dest);
                }
                Err(_) => {} // a torn line: its move never happened
            }
        }
        let ledger = Ledger { path, pending };
        ledger
            .rewrite()
            .map_err(|e| format!("{}: {e}", ledger.path.display()))?;
        Ok(ledger)
    }

    fn rewrite(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for t in self.pending.values() {
            let line = Line::Take {
                file: t.file.clone(),
                dest: t.dest.clone(),
                at: t.at,
            };
            writeln!(f, "{}", serde_json::to_string(&line).unwrap_or_default())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    fn append(&self, line: &Line) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(line).unwrap_or_default())?;
        f.sync_data()
    }

    pub fn take(&mut self, take: Take) -> std::io::Result<()> {
        self.append(&Line::Take {
            file: take.file.clone(),
            dest: take.dest.clone(),
            at: take.at,
        })?;
        self.pending.insert(take.dest.clone(), take);
        Ok(())
    }

    pub fn done(&mut self, dest: &str) -> std::io::Result<()> {
        self.append(&Line::Done {
            dest: dest.to_string(),
        })?;
        self.pending.remove(dest);
        Ok(())
    }

    pub fn pending(&self) -> Vec<Take> {
        self.pending.values().cloned().collect()
    }

    pub fn is_pending(&self, dest: &str) -> bool {
        self.pending.contains_key(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_takes_survive_a_reopen_and_a_torn_line_is_dropped() {
        let dir = std::env::temp_dir().join(format!("drqueue-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut l = Ledger::open(&dir).unwrap();
        l.take(Take {
            file: "a.toml".into(),
            dest: "a.toml".into(),
            at: 1,
        })
        .unwrap();
        l.take(Take {
            file: "b.toml".into(),
            dest: "b.toml".into(),
            at: 2,
        })
        .unwrap();
        l.done("a.toml").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("ledger.jsonl"))
            .unwrap();
        write!(f, "{{\"op\":\"take\",\"file\":\"c.to").unwrap();
        drop(f);
        let l = Ledger::open(&dir).unwrap();
        assert_eq!(
            l.pending(),
            vec![Take {
                file: "b.toml".into(),
                dest: "b.toml".into(),
                at: 2
            }]
        );
        let text = std::fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted: {text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
