//! A window of an attempt's log, joined from its stored chunks: the one
//! place both backends turn chunks into bytes.

use super::LOG_WINDOW;

/// The bytes of a log from one offset on, joined from chunks sorted by
/// offset (possibly overlapping after a re-send), up to [`LOG_WINDOW`]. A gap
/// (a lost chunk) ends it: the bytes before it are all it can vouch for.
pub struct LogWindow {
    out: Vec<u8>,
    /// Where the bytes gathered so far end.
    end: u64,
}

impl LogWindow {
    pub fn new(from: u64) -> LogWindow {
        LogWindow {
            out: Vec::new(),
            end: from,
        }
    }

    /// Starts from the one of `candidates` (chunks starting at or before
    /// the window's start) that reaches furthest.
    pub fn start_from(&mut self, candidates: Vec<(u64, Vec<u8>)>) {
        if let Some(best) = candidates
            .into_iter()
            .max_by_key(|(offset, data)| offset + data.len() as u64)
        {
            self.add(best);
        }
    }

    /// Adds the next chunk; false once the window is full or a gap is met.
    pub fn add(&mut self, (offset, data): (u64, Vec<u8>)) -> bool {
        let chunk_end = offset + data.len() as u64;
        if chunk_end <= self.end {
            return true; // already covered
        }
        if offset > self.end {
            return false; // a gap
        }
        let skip = (self.end - offset) as usize;
        self.out.extend_from_slice(&data[skip..]);
        self.end = chunk_end;
        if self.out.len() >= LOG_WINDOW {
            self.out.truncate(LOG_WINDOW);
            return false;
        }
        true
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stitch(chunks: Vec<(u64, Vec<u8>)>, from: u64) -> Vec<u8> {
        let mut w = LogWindow::new(from);
        for c in chunks {
            if !w.add(c) {
                break;
            }
        }
        w.into_bytes()
    }

    #[test]
    fn stitching_handles_resent_and_overlapping_chunks() {
        let chunks = vec![
            (0, b"hello ".to_vec()),
            (0, b"hello wor".to_vec()),
            (6, b"world".to_vec()),
            (11, b"!".to_vec()),
        ];
        assert_eq!(stitch(chunks.clone(), 0), b"hello world!");
        assert_eq!(stitch(chunks, 6), b"world!");
        assert_eq!(
            stitch(vec![(0, b"ab".to_vec()), (5, b"x".to_vec())], 0),
            b"ab"
        );
        // A read stops at the window; the next one starts where it ended.
        let big = vec![
            (0, vec![b'a'; LOG_WINDOW]),
            (LOG_WINDOW as u64, b"tail".to_vec()),
        ];
        assert_eq!(stitch(big.clone(), 0).len(), LOG_WINDOW);
        assert_eq!(stitch(big, LOG_WINDOW as u64), b"tail");
    }
}
