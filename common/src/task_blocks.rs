//! How a job's frames become tasks. A fixed `blocksize` cuts them once, at
//! submit. `--blocksize auto` starts with one task per run of the frame set;
//! the scheduler cuts each engine's share off a ready task at dispatch,
//! sized by that engine's measured speed (see the scheduler's
//! `auto_blocks`), and the store keeps every task's frames, so a restart
//! reads the cuts back.

use crate::frames::{Block, FrameSet, FrameSetError, MAX_TASKS};
use crate::model::{JobSpec, SpecError};
use crate::tiles::Tiles;

/// The minutes an auto-sized task aims at when the job names none.
pub const DEFAULT_TARGET_TASK_MINUTES: u32 = 10;
/// A day: longer tasks would defeat stall and outlier detection.
pub const MAX_TARGET_TASK_MINUTES: u32 = 24 * 60;

impl JobSpec {
    /// True when tasks are cut at dispatch to each engine's speed.
    pub fn auto_blocksize(&self) -> bool {
        self.target_task_minutes.is_some()
    }

    /// The tasks the job starts with.
    pub fn cut_tasks(&self, frames: &FrameSet) -> Result<Vec<Block>, SpecError> {
        if let Some(tiles) = &self.tiles {
            return self.cut_tiles(tiles, frames);
        }
        match self.target_task_minutes {
            None => Ok(frames.blocks(self.blocksize)?),
            Some(m) if !(1..=MAX_TARGET_TASK_MINUTES).contains(&m) => {
                Err(SpecError::TargetTaskMinutes(m))
            }
            Some(_) => {
                // Cuts never make more tasks than frames, nor than the limit.
                if frames.len() > MAX_TASKS {
                    return Err(FrameSetError::TooManyTasks {
                        count: frames.len(),
                    }
                    .into());
                }
                Ok(frames.blocks(u32::MAX)?)
            }
        }
    }
}

impl JobSpec {
    /// A tiled job's tasks: a task per tile per frame, then an assemble task
    /// per frame, each of one frame ([`crate::tiles`] has the numbering).
    fn cut_tiles(&self, tiles: &Tiles, frames: &FrameSet) -> Result<Vec<Block>, SpecError> {
        tiles.check()?;
        if self.auto_blocksize() {
            return Err(SpecError::TilesBlocksize("auto".into()));
        }
        if self.blocksize != 1 {
            return Err(SpecError::TilesBlocksize(self.blocksize.to_string()));
        }
        let count = tiles.task_count(frames.len());
        if count > MAX_TASKS {
            return Err(crate::tiles::TilesError::TooManyTasks {
                count,
                max: MAX_TASKS,
            }
            .into());
        }
        let per_frame = frames.blocks(1)?;
        let mut blocks = Vec::with_capacity(count as usize);
        for b in &per_frame {
            blocks.extend(std::iter::repeat_n(*b, tiles.count() as usize));
        }
        blocks.extend(per_frame);
        Ok(blocks)
    }
}

/// `--blocksize`: a number of frames, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocksize {
    Frames(u32),
    Auto,
}

impl std::str::FromStr for Blocksize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Blocksize::Auto);
        }
        match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Blocksize::Frames(n)),
            _ => Err(format!(
                "{s:?} is not a blocksize: give a number of frames (1 or more) or `auto`"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Blocksize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Blocksize::Frames(n)),
            Raw::Word(w) => w.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JobSpec {
    /// Sets how the job is cut: `target_minutes` only goes with `auto`.
    pub fn set_blocksize(
        &mut self,
        blocksize: Blocksize,
        target_minutes: Option<u32>,
    ) -> Result<(), String> {
        match blocksize {
            Blocksize::Frames(n) => {
                if target_minutes.is_some() {
                    return Err(
                        "target_task_minutes goes with blocksize auto: give `--blocksize auto`, or drop it"
                            .into(),
                    );
                }
                self.blocksize = n;
                self.target_task_minutes = None;
            }
            Blocksize::Auto => {
                self.blocksize = 1;
                self.target_task_minutes =
                    Some(target_minutes.unwrap_or(DEFAULT_TARGET_TASK_MINUTES));
            }
        }
        Ok(())
    }
}

/// The first `n` frames of `block` and the rest (None when `n` covers it).
pub fn split_block(block: Block, n: u64) -> (Block, Option<Block>) {
    if n == 0 || n >= block.len() {
        return (block, None);
    }
    let cut = block.first + (n as i64) * block.step;
    (
        Block {
            last: cut - block.step,
            ..block
        },
        Some(Block {
            first: cut,
            ..block
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_jobs_start_with_one_task_per_run() {
        let spec = JobSpec {
            command: vec!["x".into()],
            frames: "1-100,200-210x2".into(),
            target_task_minutes: Some(10),
            ..JobSpec::default()
        };
        let frames = spec.validate().unwrap();
        let blocks = spec.cut_tasks(&frames).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[1].first, blocks[1].last, blocks[1].step),
            (200, 210, 2)
        );
        let zero = JobSpec {
            target_task_minutes: Some(0),
            ..spec
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("target_task_minutes"));
    }

    #[test]
    fn splits_keep_every_frame_once() {
        let b = Block {
            first: 10,
            last: 30,
            step: 5,
        };
        let (head, rest) = split_block(b, 2);
        assert_eq!(head.frames().collect::<Vec<_>>(), vec![10, 15]);
        assert_eq!(rest.unwrap().frames().collect::<Vec<_>>(), vec![20, 25, 30]);
        assert_eq!(split_block(b, 5), (b, None));
    }
}
