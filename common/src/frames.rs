//! Frame sets and their cutting into tasks.
//!
//! A frame set is written `1-100`, `1-100x5` (every 5th frame), `1,3,7-9` or
//! `-10--1`. Internally it is a sorted list of disjoint arithmetic runs, so a
//! set of ten million frames costs a few bytes, and each task is one contiguous
//! piece of one run: `{start}`, `{end}` and `{step}` then describe it exactly.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The most frames one job may hold. Beyond it a set is refused rather than
/// expanded, so a typo such as `1-1000000000` cannot exhaust the master's memory.
pub const MAX_FRAMES: u64 = 10_000_000;

/// The most tasks one job may be cut into.
pub const MAX_TASKS: u64 = 1_000_000;

/// One arithmetic run of frames: `first, first+step, …, last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub first: i64,
    pub last: i64,
    pub step: i64,
}

impl Run {
    /// How many frames the run holds.
    pub fn len(&self) -> u64 {
        ((self.last - self.first) / self.step) as u64 + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frames of the run, in order.
    pub fn frames(&self) -> impl Iterator<Item = i64> {
        let step = self.step;
        let first = self.first;
        (0..self.len()).map(move |i| first + i as i64 * step)
    }
}

/// A normalised, non-empty set of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSet {
    runs: Vec<Run>,
}

/// Why a frame set (or its cutting into tasks) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameSetError {
    #[error("empty frame set: give frames such as 1-100, 1-100x5 or 1,3,7-9")]
    Empty,
    #[error("malformed frame set {text:?} at {part:?}: {why}; write frames such as 1-100, 1-100x5 or 1,3,7-9")]
    Malformed {
        text: String,
        part: String,
        why: &'static str,
    },
    #[error("frame set has {count} frames; the limit is {MAX_FRAMES} per job: split the job")]
    TooManyFrames { count: u64 },
    #[error(
        "the job would have {count} tasks; the limit is {MAX_TASKS} per job: raise --blocksize"
    )]
    TooManyTasks { count: u64 },
    #[error("blocksize must be at least 1")]
    ZeroBlocksize,
}

/// One task's share of a frame set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub first: i64,
    pub last: i64,
    pub step: i64,
}

impl Block {
    pub fn frames(&self) -> impl Iterator<Item = i64> {
        Run {
            first: self.first,
            last: self.last,
            step: self.step,
        }
        .frames()
    }
    pub fn len(&self) -> u64 {
        Run {
            first: self.first,
            last: self.last,
            step: self.step,
        }
        .len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FrameSet {
    /// Parses and normalises a frame set: duplicates removed, runs sorted.
    pub fn parse(text: &str) -> Result<FrameSet, FrameSetError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(FrameSetError::Empty);
        }
        let mut runs = Vec::new();
        let mut total: u64 = 0;
        for part in trimmed.split(',') {
            let part = part.trim();
            let bad = |why| FrameSetError::Malformed {
                text: text.to_string(),
                part: part.to_string(),
                why,
            };
            if part.is_empty() {
                return Err(bad("empty item between commas"));
            }
            let (range, step) = match part.split_once(['x', ':']) {
                Some((r, s)) => {
                    let step: i64 = s.trim().parse().map_err(|_| bad("step is not a number"))?;
                    if step < 1 {
                        return Err(bad("step must be at least 1"));
                    }
                    (r.trim(), step)
                }
                None => (part, 1),
            };
            let (first, last) = parse_range(range).ok_or_else(|| bad("not a frame or a range"))?;
            if last < first {
                return Err(bad("range ends before it starts"));
            }
            // Align `last` on the step so that runs are exact.
            let span = (last as i128 - first as i128) / step as i128;
            let count = span as u128 + 1;
            if count > MAX_FRAMES as u128 || total + count as u64 > MAX_FRAMES {
                return Err(FrameSetError::TooManyFrames {
                    count: (total as u128 + count).min(u64::MAX as u128) as u64,
                });
            }
            total += count as u64;
            let last = first + (span as i64) * step;
            runs.push(Run { first, last, step });
        }
        Ok(FrameSet {
            runs: normalise(runs),
        })
    }

    /// The runs, sorted and disjoint.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The number of frames.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(Run::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The lowest and highest frame: a renderer's animation range (POV-Ray's
    /// clock runs from the first to the last frame of the whole job).
    pub fn bounds(&self) -> (i64, i64) {
        let first = self.runs.first().map_or(0, |r| r.first);
        let last = self.runs.last().map_or(0, |r| r.last);
        (first, last)
    }

    /// The frames in ascending order.
    pub fn frames(&self) -> impl Iterator<Item = i64> + '_ {
        self.runs.iter().flat_map(|r| r.frames())
    }

    /// How many tasks of `blocksize` frames this set cuts into.
    pub fn task_count(&self, blocksize: u32) -> Result<u64, FrameSetError> {
        if blocksize == 0 {
            return Err(FrameSetError::ZeroBlocksize);
        }
        let bs = blocksize as u64;
        let count = self.runs.iter().map(|r| r.len().div_ceil(bs)).sum();
        if count > MAX_TASKS {
            return Err(FrameSetError::TooManyTasks { count });
        }
        Ok(count)
    }

    /// Cuts the set into tasks of `blocksize` frames; a task never spans two
    /// runs, so the last task of a run may be shorter.
    pub fn blocks(&self, blocksize: u32) -> Result<Vec<Block>, FrameSetError> {
        let count = self.task_count(blocksize)?;
        let bs = blocksize as i64;
        let mut out = Vec::with_capacity(count as usize);
        for run in &self.runs {
            let mut first = run.first;
            loop {
                let last = (first + (bs - 1) * run.step).min(run.last);
                out.push(Block {
                    first,
                    last,
                    step: run.step,
                });
                if last >= run.last {
                    break;
                }
                first = last + run.step;
            }
        }
        Ok(out)
    }
}

impl fmt::Display for FrameSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.runs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.first == r.last {
                write!(f, "{}", r.first)?;
            } else if r.step == 1 {
                write!(f, "{}-{}", r.first, r.last)?;
            } else {
                write!(f, "{}-{}x{}", r.first, r.last, r.step)?;
            }
        }
        Ok(())
    }
}

/// `7`, `1-100`, `-10--1`, `-5-5`.
fn parse_range(text: &str) -> Option<(i64, i64)> {
    if let Ok(n) = text.parse::<i64>() {
        return Some((n, n));
    }
    // The separating dash is the first '-' that is not a sign.
    let bytes = text.as_bytes();
    let start = usize::from(bytes.first() == Some(&b'-'));
    let dash = text[start..].find('-')? + start;
    let a = text[..dash].trim().parse().ok()?;
    let b = text[dash + 1..].trim().parse().ok()?;
    Some((a, b))
}

/// Sorts runs and removes duplicate frames. Disjoint sorted input (the usual
/// case) passes straight through; overlapping input is expanded, which the
/// frame cap keeps bounded.
fn normalise(mut runs: Vec<Run>) -> Vec<Run> {
    runs.sort_by_key(|r| (r.first, r.last));
    let disjoint = runs.windows(2).all(|w| w[0].last < w[1].first);
    if disjoint {
        return runs;
    }
    let mut frames: Vec<i64> = runs.iter().flat_map(|r| r.frames()).collect();
    frames.sort_unstable();
    frames.dedup();
    let mut out: Vec<Run> = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let first = frames[i];
        if i + 1 == frames.len() {
            out.push(Run {
                first,
                last: first,
                step: 1,
            });
            break;
        }
        let step = frames[i + 1] - first;
        let mut j = i + 1;
        while j + 1 < frames.len() && frames[j + 1] - frames[j] == step {
            j += 1;
        }
        out.push(Run {
            first,
            last: frames[j],
            step,
        });
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(s: &str) -> Vec<i64> {
        FrameSet::parse(s).unwrap().frames().collect()
    }

    #[test]
    fn parses_the_spec_forms() {
        assert_eq!(frames("1-5"), vec![1, 2, 3, 4, 5]);
        assert_eq!(frames("1-20x5"), vec![1, 6, 11, 16]);
        assert_eq!(frames("1,3,7-9"), vec![1, 3, 7, 8, 9]);
        assert_eq!(frames("-10--8"), vec![-10, -9, -8]);
        assert_eq!(frames("-2-1"), vec![-2, -1, 0, 1]);
        assert_eq!(frames(" 5 "), vec![5]);
    }

    #[test]
    fn removes_duplicates() {
        assert_eq!(frames("1-5,3-7"), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(frames("4,4,4"), vec![4]);
    }

    #[test]
    fn refuses_malformed_and_empty_sets() {
        for bad in [
            "", " ", "a", "1-", "1-x", "5-1", "1,,2", "1-10x0", "1-10x-2", "--", "1-2-3",
        ] {
            assert!(FrameSet::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let msg = FrameSet::parse("1-abc").unwrap_err().to_string();
        assert!(msg.contains("1-abc"), "{msg}");
    }

    #[test]
    fn caps_huge_sets_without_expanding_them() {
        let err = FrameSet::parse("1-1000000000000").unwrap_err();
        assert!(matches!(err, FrameSetError::TooManyFrames { .. }));
        let ten_million = FrameSet::parse("1-10000000").unwrap();
        assert_eq!(ten_million.len(), 10_000_000);
        assert!(matches!(
            ten_million.task_count(1),
            Err(FrameSetError::TooManyTasks { .. })
        ));
        assert_eq!(ten_million.task_count(10).unwrap(), 1_000_000);
    }

    #[test]
    fn cuts_blocks_within_runs() {
        let set = FrameSet::parse("1-10,20-22").unwrap();
        let blocks = set.blocks(4).unwrap();
        let pairs: Vec<(i64, i64)> = blocks.iter().map(|b| (b.first, b.last)).collect();
        assert_eq!(pairs, vec![(1, 4), (5, 8), (9, 10), (20, 22)]);
        let stepped = FrameSet::parse("1-100x5").unwrap().blocks(10).unwrap();
        assert_eq!(stepped.len(), 2);
        assert_eq!(
            (stepped[0].first, stepped[0].last, stepped[0].step),
            (1, 46, 5)
        );
    }

    proptest! {
        #[test]
        fn blocks_cover_every_frame_once(items in prop::collection::vec((-50i64..50, 0i64..30, 1i64..4), 1..6), bs in 1u32..7) {
            let text: Vec<String> = items.iter().map(|(a, len, step)| format!("{}-{}x{}", a, a + len, step)).collect();
            let text = text.join(",");
            let set = FrameSet::parse(&text).unwrap();
            let mut expected: Vec<i64> = items.iter().flat_map(|(a, len, step)| (*a..=a + len).step_by(*step as usize)).collect();
            expected.sort_unstable();
            expected.dedup();
            let got: Vec<i64> = set.blocks(bs).unwrap().iter().flat_map(|b| b.frames()).collect();
            prop_assert_eq!(&got, &expected);
            for b in set.blocks(bs).unwrap() {
                prop_assert!(b.len() <= bs as u64);
            }
            // Display round-trips.
            let again = FrameSet::parse(&set.to_string()).unwrap();
            prop_assert_eq!(again.frames().collect::<Vec<_>>(), expected);
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = FrameSet::parse(&s);
        }
    }
}

/// The most tasks one task set may name (a job has at most this many).
pub const MAX_TASK_SET: u64 = 1_000_000;

/// A set of task indices in frame-set syntax (`3,7-12`), sorted, for
/// `cancel`/`retry --tasks`. Negative indices and sets past
/// [`MAX_TASK_SET`] are refused, naming the field.
pub fn parse_task_set(text: &str) -> Result<Vec<u32>, String> {
    let set = FrameSet::parse(text).map_err(|e| format!("tasks: {e}"))?;
    if set.len() > MAX_TASK_SET {
        return Err(format!(
            "tasks: {text:?} names {} tasks; a job has at most {MAX_TASK_SET}",
            set.len()
        ));
    }
    set.frames()
        .map(|f| {
            u32::try_from(f).map_err(|_| {
                format!("tasks: {f} is not a task index (tasks count from 0; `drqueue tasks JOB` lists them)")
            })
        })
        .collect()
}

#[cfg(test)]
mod task_set_tests {
    use super::parse_task_set;

    #[test]
    fn task_sets_read_like_frame_sets() {
        assert_eq!(parse_task_set("3,7-9").unwrap(), vec![3, 7, 8, 9]);
        assert!(parse_task_set("-1")
            .unwrap_err()
            .contains("not a task index"));
        assert!(parse_task_set("a-b").unwrap_err().starts_with("tasks: "));
        assert!(parse_task_set("0-5000000").unwrap_err().contains("at most"));
    }
}
