//! An attempt's log: copied to the engine's log file and streamed to the
//! master, within the job's cap (`max_log_mb`).
//!
//! Past the cap the log keeps its head and its tail. The first half of the
//! cap goes out as it comes; the rest of the output cycles through a spool
//! file of the other half's size on the engine's disk, and at the end a line
//! marking the gap is written, then the spooled tail in order. So neither the
//! engine's memory, its disk, nor the master's store ever holds more than the
//! cap (plus the marker line), however much a task prints.

use crate::RunnerEvent;
use drqueue_common::protocol::AttemptKey;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// How much of the tail is read back and sent per message.
const TAIL_CHUNK: usize = 64 * 1024;

pub(crate) struct LogSink<'a> {
    key: AttemptKey,
    path: &'a Path,
    /// Made on the first output: most quick tasks print nothing, and
    /// creating then deleting a file per task was the engine's largest cost.
    file: Option<File>,
    /// Bytes written to the log (and streamed) so far.
    offset: u64,
    head_cap: u64,
    tail_cap: u64,
    /// Output past the head, cycling through a spool of `tail_cap` bytes.
    tail: Option<(File, PathBuf)>,
    tail_seen: u64,
    /// The last bytes of output, for the failure signature's last line.
    last: Vec<u8>,
    events: &'a mpsc::UnboundedSender<RunnerEvent>,
}

/// How much of the output's end is kept for its last line.
const LAST_KEPT: usize = 512;

impl<'a> LogSink<'a> {
    pub(crate) fn new(
        key: AttemptKey,
        path: &'a Path,
        cap: u64,
        events: &'a mpsc::UnboundedSender<RunnerEvent>,
    ) -> LogSink<'a> {
        let cap = cap.max(2);
        LogSink {
            key,
            path,
            file: None,
            offset: 0,
            head_cap: cap / 2,
            tail_cap: cap - cap / 2,
            tail: None,
            tail_seen: 0,
            last: Vec::new(),
            events,
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) {
        let keep = &data[data.len().saturating_sub(LAST_KEPT)..];
        let excess = (self.last.len() + keep.len()).saturating_sub(LAST_KEPT);
        self.last.drain(..excess.min(self.last.len()));
        self.last.extend_from_slice(keep);
        let room = self.head_cap.saturating_sub(self.offset) as usize;
        let (head, rest) = data.split_at(room.min(data.len()));
        self.emit(head);
        if !rest.is_empty() {
            self.spool(rest);
        }
    }

    /// Writes the gap marker and the spooled tail; returns the log's length.
    pub(crate) fn finish(&mut self) -> u64 {
        let Some((mut spool, spool_path)) = self.tail.take() else {
            return self.offset;
        };
        let kept = self.tail_seen.min(self.tail_cap);
        let dropped = self.tail_seen - kept;
        if dropped > 0 {
            let marker = format!(
                "\n[drqueue: {dropped} bytes of output dropped here; the log keeps its first {} and last {} bytes (max_log_mb)]\n",
                self.head_cap, kept
            );
            self.emit(marker.as_bytes());
        }
        // Oldest first: from where the ring would write next, round to it.
        let start = if dropped > 0 {
            self.tail_seen % self.tail_cap
        } else {
            0
        };
        let mut buf = vec![0u8; TAIL_CHUNK];
        let mut left = kept;
        let mut pos = start;
        while left > 0 {
            let n = (left.min(TAIL_CHUNK as u64)).min(self.tail_cap - pos) as usize;
            if spool.seek(SeekFrom::Start(pos)).is_err() || spool.read_exact(&mut buf[..n]).is_err()
            {
                break;
            }
            self.emit(&buf[..n]);
            left -= n as u64;
            pos = (pos + n as u64) % self.tail_cap;
        }
        drop(spool);
        let _ = std::fs::remove_file(spool_path);
        self.offset
    }

    /// The output's last non-empty line.
    pub(crate) fn last_line(&self) -> String {
        drqueue_common::signature::last_line(&self.last)
    }

    fn emit(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.file = File::create(self.path).ok();
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(data);
        }
        let _ = self.events.send(RunnerEvent::Log {
            key: self.key,
            offset: self.offset,
            data: data.to_vec(),
        });
        self.offset += data.len() as u64;
    }

    /// Output past the head: into the ring spool.
    fn spool(&mut self, mut data: &[u8]) {
        if self.tail.is_none() {
            let path = self.path.with_extension("tail");
            match File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
            {
                Ok(f) => self.tail = Some((f, path)),
                Err(_) => return, // no spool: the tail is lost, the head is kept
            }
        }
        let Some((spool, _)) = self.tail.as_mut() else {
            return;
        };
        // Only the last tail_cap bytes can survive: skip what would be
        // overwritten within this very write.
        if data.len() as u64 > self.tail_cap {
            let skip = data.len() - self.tail_cap as usize;
            self.tail_seen += skip as u64;
            data = &data[skip..];
        }
        while !data.is_empty() {
            let pos = self.tail_seen % self.tail_cap;
            let n = ((self.tail_cap - pos) as usize).min(data.len());
            if spool.seek(SeekFrom::Start(pos)).is_err() || spool.write_all(&data[..n]).is_err() {
                return;
            }
            self.tail_seen += n as u64;
            data = &data[n..];
        }
    }
}
