//! When a file has stopped changing: its size and modification time the
//! same in observations spanning at least the settle time. Pure: the folder
//! passes what it saw and when.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime_ns: i128,
}

#[derive(Debug, Default)]
pub struct Settle {
    /// Per name: what was seen, and since when (ms) it has looked so.
    files: HashMap<String, (Seen, u64)>,
    settle_ms: u64,
}

impl Settle {
    pub fn new(settle_ms: u64) -> Settle {
        Settle {
            files: HashMap::new(),
            settle_ms,
        }
    }

    /// Records one scan (every candidate present, at `now_ms`); returns the
    /// names that have stopped changing, in name order. Names no longer
    /// present are forgotten.
    pub fn observe(&mut self, present: &[(String, Seen)], now_ms: u64) -> Vec<String> {
        self.files
            .retain(|name, _| present.iter().any(|(n, _)| n == name));
        let mut ready = Vec::new();
        for (name, seen) in present {
            let entry = self.files.entry(name.clone()).or_insert((*seen, now_ms));
            if entry.0 != *seen {
                *entry = (*seen, now_ms);
            } else if now_ms.saturating_sub(entry.1) >= self.settle_ms {
                ready.push(name.clone());
            }
        }
        ready.sort();
        ready
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file was taken: a file of the same name dropped later starts over.
    pub fn forget(&mut self, name: &str) {
        self.files.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(size: u64, mtime_ns: i128) -> Seen {
        Seen { size, mtime_ns }
    }

    #[test]
    fn a_file_is_ready_only_after_it_stops_changing_for_the_settle_time() {
        let mut s = Settle::new(2000);
        let f = |seen| vec![("a.toml".to_string(), seen)];
        assert!(s.observe(&f(at(10, 1)), 0).is_empty());
        assert!(s.observe(&f(at(20, 2)), 1500).is_empty(), "it grew");
        assert!(s.observe(&f(at(20, 2)), 3000).is_empty(), "1.5 s unchanged");
        assert_eq!(s.observe(&f(at(20, 2)), 3500), vec!["a.toml"]);
        assert!(s.observe(&f(at(20, 3)), 3600).is_empty(), "touched again");
        s.forget("a.toml");
        assert!(
            s.observe(&f(at(20, 3)), 9000).is_empty(),
            "a new drop starts over"
        );
        assert!(s.observe(&[], 9100).is_empty());
        assert!(s.files.is_empty(), "gone files are forgotten");
    }
}
