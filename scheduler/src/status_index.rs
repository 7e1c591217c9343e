//! Which of a job's tasks are in each status: one bit per task and status
//! (under a byte per task in all), kept beside the counts on every change,
//! so a listing by status walks 64 tasks per word and stops once it has
//! what it came for, and an empty status costs nothing.

use drqueue_common::model::TaskStatus;

const STATUSES: usize = TaskStatus::ALL.len();

#[derive(Debug, Default)]
pub(super) struct StatusIndex {
    bits: [Vec<u64>; STATUSES],
}

impl StatusIndex {
    /// `len` tasks, all in `status`.
    pub(super) fn new(len: usize, status: TaskStatus) -> StatusIndex {
        let words = len.div_ceil(64);
        let mut index = StatusIndex {
            bits: std::array::from_fn(|_| vec![0; words]),
        };
        for i in 0..len {
            index.set(i as u32, status);
        }
        index
    }

    /// Makes room for task `task` (a job cut at dispatch grows).
    pub(super) fn grow_to(&mut self, task: u32) {
        let words = task as usize / 64 + 1;
        for bits in &mut self.bits {
            if bits.len() < words {
                bits.resize(words, 0);
            }
        }
    }

    pub(super) fn set(&mut self, task: u32, status: TaskStatus) {
        let (word, bit) = (task as usize / 64, task % 64);
        if let Some(w) = self.bits[status.index()].get_mut(word) {
            *w |= 1 << bit;
        }
    }

    pub(super) fn clear(&mut self, task: u32, status: TaskStatus) {
        let (word, bit) = (task as usize / 64, task % 64);
        if let Some(w) = self.bits[status.index()].get_mut(word) {
            *w &= !(1 << bit);
        }
    }

    /// Up to `limit` tasks in `status` after `after` (from the first when
    /// None), in index order.
    pub(super) fn page(&self, status: TaskStatus, after: Option<u32>, limit: usize) -> Vec<u32> {
        let bits = &self.bits[status.index()];
        let start = after.map_or(0, |a| a as usize + 1);
        let mut out = Vec::new();
        let mut word = start / 64;
        // Bits below `start` in its word are masked off.
        let mut mask = u64::MAX.checked_shl((start % 64) as u32).unwrap_or(0);
        while out.len() < limit && word < bits.len() {
            let mut w = bits[word] & mask;
            while w != 0 && out.len() < limit {
                out.push((word * 64) as u32 + w.trailing_zeros());
                w &= w - 1;
            }
            word += 1;
            mask = u64::MAX;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_bits() {
        let mut ix = StatusIndex::new(200, TaskStatus::Waiting);
        for t in [3, 64, 65, 130, 199] {
            ix.clear(t, TaskStatus::Waiting);
            ix.set(t, TaskStatus::Done);
        }
        assert_eq!(
            ix.page(TaskStatus::Done, None, 10),
            vec![3, 64, 65, 130, 199]
        );
        assert_eq!(ix.page(TaskStatus::Done, Some(3), 2), vec![64, 65]);
        assert_eq!(ix.page(TaskStatus::Done, Some(65), 10), vec![130, 199]);
        assert_eq!(ix.page(TaskStatus::Done, Some(199), 10), Vec::<u32>::new());
        assert!(ix.page(TaskStatus::Failed, None, 10).is_empty());
        let waiting = ix.page(TaskStatus::Waiting, Some(62), 3);
        assert_eq!(waiting, vec![63, 66, 67]);
        assert_eq!(ix.page(TaskStatus::Waiting, None, 1000).len(), 195);
    }
}
