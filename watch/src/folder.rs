//! The watch folder's I/O. Each [`Watcher::turn`] finishes unfinished
//! takes, scans the folder, and takes every file that has settled. The
//! caller decides the pace and reports the [`Outcome`]s.

use crate::ledger::{Ledger, Take};
use crate::rules::{self, Dropped, Rules};
use crate::settle::{Seen, Settle};
use crate::{names, Farm, SubmitError};
use drqueue_common::graph::Graph;
use drqueue_common::model::JobId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub struct Options {
    pub dir: PathBuf,
    /// Who the jobs belong to (`--watch-as`).
    pub owner: String,
    /// How long a file must stay unchanged before it is taken.
    pub settle_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Submitted {
        file: String,
        dest: PathBuf,
        jobs: Vec<JobId>,
    },
    Rejected {
        file: String,
        dest: PathBuf,
        error: String,
    },
    /// The master could not be asked; tried again next turn.
    Waiting { file: String, why: String },
}

pub struct Watcher<F: Farm> {
    opts: Options,
    farm: F,
    settle: Settle,
    ledger: Ledger,
    /// Takes whose submission may have reached the master (resumed from
    /// the ledger, or tried before): asked about before submitting again.
    tried: HashSet<String>,
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

impl<F: Farm> Watcher<F> {
    pub fn open(opts: Options, farm: F) -> Result<Watcher<F>, String> {
        for sub in ["submitted", "rejected"] {
            let d = opts.dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
        }
        let ledger = Ledger::open(&opts.dir.join(".drqueue-watch"))?;
        let tried = ledger.pending().into_iter().map(|t| t.dest).collect();
        let settle = Settle::new(opts.settle_ms);
        Ok(Watcher {
            opts,
            farm,
            settle,
            ledger,
            tried,
        })
    }

    /// Nothing is settling and nothing is unfinished.
    pub fn idle(&self) -> bool {
        self.settle.is_empty() && self.ledger.pending().is_empty()
    }

    pub fn turn(&mut self, now_ms: u64) -> Result<Vec<Outcome>, String> {
        let mut out = Vec::new();
        for take in self.ledger.pending() {
            out.extend(self.finish(take, now_ms)?);
        }
        let present = self.scan()?;
        for name in self.settle.observe(&present, now_ms) {
            self.settle.forget(&name);
            let dest = unique(&self.opts.dir.join("submitted"), &name);
            let take = Take {
                file: name.clone(),
                dest,
                at: now_ms,
            };
            let ledger_dir = self.opts.dir.join(".drqueue-watch");
            self.ledger
                .take(take.clone())
                .map_err(|e| io(&ledger_dir, e))?;
            out.extend(self.finish(take, now_ms)?);
        }
        Ok(out)
    }

    /// The candidate files in the folder, with their size and time.
    fn scan(&self) -> Result<Vec<(String, Seen)>, String> {
        let mut present = Vec::new();
        let entries = std::fs::read_dir(&self.opts.dir).map_err(|e| io(&self.opts.dir, e))?;
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            if !names::is_candidate(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            present.push((
                name,
                Seen {
                    size: meta.len(),
                    mtime_ns,
                },
            ));
        }
        Ok(present)
    }

    /// Moves a taken file into `submitted/` (if not yet), submits it (if the
    /// master has not got it already) and records the outcome.
    fn finish(&mut self, take: Take, now_ms: u64) -> Result<Option<Outcome>, String> {
        let submitted = self.opts.dir.join("submitted").join(&take.dest);
        if !submitted.exists() {
            let src = self.opts.dir.join(&take.file);
            if let Err(e) = std::fs::rename(&src, &submitted) {
                // Taken, then removed by someone before the move: nothing to do.
                self.done(&take.dest)?;
                return Ok(Some(Outcome::Rejected {
                    file: take.file,
                    dest: src.clone(),
                    error: io(&src, e),
                }));
            }
        }
        let graph = match self.graph(&take, &submitted, now_ms) {
            Ok(g) => g,
            Err(error) => return self.reject(take, &submitted, error).map(Some),
        };
        let first = graph
            .jobs
            .first()
            .map(|j| j.spec.name.clone())
            .unwrap_or_default();
        if self.tried.contains(&take.dest) {
            match self.farm.submitted_since(&self.opts.owner, &first, take.at) {
                Ok(jobs) if !jobs.is_empty() => {
                    return self.record(take, submitted, jobs).map(Some)
                }
                Ok(_) => {}
                Err(SubmitError::Unavailable(why) | SubmitError::Refused(why)) => {
                    return Ok(Some(Outcome::Waiting {
                        file: take.file,
                        why,
                    }));
                }
            }
        }
        self.tried.insert(take.dest.clone());
        match self.farm.submit(graph) {
            Ok(jobs) => self.record(take, submitted, jobs).map(Some),
            Err(SubmitError::Refused(error)) => self.reject(take, &submitted, error).map(Some),
            Err(SubmitError::Unavailable(why)) => Ok(Some(Outcome::Waiting {
                file: take.file,
                why,
            })),
        }
    }

    /// The jobs a taken file asks for: a job file as it is, anything else
    /// through the first rule that matches it.
    fn graph(&self, take: &Take, path: &Path, now_ms: u64) -> Result<Graph, String> {
        let owner = &self.opts.owner;
        if rules::is_job_file(&take.file) {
            let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
            return drqueue_common::graph::parse(&take.file, &text, owner, now_ms)
                .map_err(|e| e.to_string());
        }
        let rules_path = self.opts.dir.join(rules::FILE_NAME);
        let rules = match std::fs::read_to_string(&rules_path) {
            Ok(text) => Rules::parse(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Rules::default(),
            Err(e) => return Err(io(&rules_path, e)),
        };
        let stem = take
            .file
            .rsplit_once('.')
            .map_or(take.file.as_str(), |(s, _)| s);
        let (file, folder) = (
            path.display().to_string(),
            self.opts.dir.display().to_string(),
        );
        let dropped = Dropped {
            file: &file,
            stem,
            folder: &folder,
        };
        let text = rules.job_for(&take.file, &dropped).ok_or_else(|| {
            format!(
                "{}: not a job file (.toml, .json) and no rule in {} matches it; add one, e.g. [[rule]] glob = \"*.{}\" preset = \"…\" scene = \"{{file}}\"",
                take.file,
                rules::FILE_NAME,
                take.file.rsplit_once('.').map_or("ext", |(_, x)| x)
            )
        })?;
        drqueue_common::graph::parse(
            &format!("{} (by its rule)", take.file),
            &text,
            owner,
            now_ms,
        )
        .map_err(|e| e.to_string())
    }

    fn record(&mut self, take: Take, dest: PathBuf, jobs: Vec<JobId>) -> Result<Outcome, String> {
        let list: String = jobs.iter().map(|j| format!("{j}\n")).collect();
        write_atomic(&with_suffix(&dest, ".jobs"), list.as_bytes())?;
        self.done(&take.dest)?;
        Ok(Outcome::Submitted {
            file: take.file,
            dest,
            jobs,
        })
    }

    fn reject(&mut self, take: Take, from: &Path, error: String) -> Result<Outcome, String> {
        let rejected_dir = self.opts.dir.join("rejected");
        let dest = rejected_dir.join(unique(&rejected_dir, &take.dest));
        std::fs::rename(from, &dest).map_err(|e| io(from, e))?;
        write_atomic(
            &with_suffix(&dest, ".error"),
            format!("{error}\n").as_bytes(),
        )?;
        self.done(&take.dest)?;
        Ok(Outcome::Rejected {
            file: take.file,
            dest,
            error,
        })
    }

    fn done(&mut self, dest: &str) -> Result<(), String> {
        self.tried.remove(dest);
        let dir = self.opts.dir.join(".drqueue-watch");
        self.ledger.done(dest).map_err(|e| io(&dir, e))
    }
}

/// `name`, or `name.2`, `name.3` …: the first not in `dir` (nor any of its
/// `.jobs` / `.error` notes).
fn unique(dir: &Path, name: &str) -> String {
    let free = |n: &str| {
        !dir.join(n).exists()
            && !dir.join(format!("{n}.jobs")).exists()
            && !dir.join(format!("{n}.error")).exists()
    };
    if free(name) {
        return name.to_string();
    }
    (2..)
        .map(|i| format!("{name}.{i}"))
        .find(|n| free(n))
        .unwrap_or_else(|| name.to_string())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Take;

    /// A farm that remembers what it was asked (a stand-in inside a unit test).
    #[derive(Default)]
    struct Recorder {
        submitted: Vec<String>,
        already: Vec<JobId>,
    }

    impl Farm for &mut Recorder {
        fn submit(&mut self, graph: Graph) -> Result<Vec<JobId>, SubmitError> {
            self.submitted.push(graph.jobs[0].spec.name.clone());
            Ok(vec![JobId::from(self.submitted.len() as u64)])
        }
        fn submitted_since(&mut self, _: &str, _: &str, _: u64) -> Result<Vec<JobId>, SubmitError> {
            Ok(self.already.clone())
        }
    }

    fn folder(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("drqueue-watcher-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn options(dir: &Path) -> Options {
        Options {
            dir: dir.to_path_buf(),
            owner: "w".into(),
            settle_ms: 1000,
        }
    }

    const JOB: &str = "name = \"a\"\ncommand = [\"true\"]\nframes = \"1\"\n";

    #[test]
    fn a_take_left_unfinished_by_a_crash_is_not_submitted_twice() {
        for (tag, already, submits) in [
            ("went-through", vec![JobId::from(7)], 0),
            ("never-sent", vec![], 1),
        ] {
            let dir = folder(tag);
            std::fs::create_dir_all(dir.join("submitted")).unwrap();
            std::fs::write(dir.join("submitted/a.toml"), JOB).unwrap();
            let mut ledger = Ledger::open(&dir.join(".drqueue-watch")).unwrap();
            ledger
                .take(Take {
                    file: "a.toml".into(),
                    dest: "a.toml".into(),
                    at: 5,
                })
                .unwrap();
            drop(ledger);
            let mut farm = Recorder {
                already: already.clone(),
                ..Recorder::default()
            };
            let mut w = Watcher::open(options(&dir), &mut farm).unwrap();
            let out = w.turn(10).unwrap();
            assert!(matches!(&out[..], [Outcome::Submitted { .. }]), "{out:?}");
            assert!(w.idle());
            drop(w);
            assert_eq!(farm.submitted.len(), submits, "{tag}");
            let jobs = std::fs::read_to_string(dir.join("submitted/a.toml.jobs")).unwrap();
            assert_eq!(jobs.trim(), if submits == 0 { "7" } else { "1" });
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_settled_file_is_taken_once() {
        let dir = folder("once");
        std::fs::write(dir.join("a.toml"), JOB).unwrap();
        let mut farm = Recorder::default();
        let mut w = Watcher::open(options(&dir), &mut farm).unwrap();
        assert!(w.turn(0).unwrap().is_empty());
        assert!(w.turn(500).unwrap().is_empty(), "not settled yet");
        assert_eq!(w.turn(1200).unwrap().len(), 1);
        assert!(w.turn(5000).unwrap().is_empty());
        drop(w);
        assert_eq!(farm.submitted, vec!["a"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
