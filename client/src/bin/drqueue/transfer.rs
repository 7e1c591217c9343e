//! Transfers: progress bars for hashing, uploads and downloads,
//! `drqueue download` (a job's collected outputs) and `drqueue cas` (what
//! the master's content store holds).

use crate::error::CliResult;
use crate::output::Output;
use crate::table::bytes;
use drqueue_client::cas::Progress;
use drqueue_client::Client;
use drqueue_common::model::JobId;
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::Path;

/// One bar per phase on a terminal's stderr; nothing elsewhere.
pub struct Bars {
    bar: RefCell<Option<ProgressBar>>,
    on_terminal: bool,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            bar: RefCell::new(None),
            on_terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bars {
    fn phase(&self, what: &str, total_bytes: u64) {
        if !self.on_terminal {
            return;
        }
        let bar = ProgressBar::new(total_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        *self.bar.borrow_mut() = Some(bar);
    }
    fn advance(&self, n: u64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.inc(n);
        }
    }
    fn done(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

/// `3.1 MB`.
pub fn size(n: u64) -> String {
    bytes(n)
}

/// `drqueue download JOB [--to DIR]`.
pub fn download(client: &Client, job: JobId, to: &Path, out: &dyn Output) -> CliResult<()> {
    let got = client.download_outputs(job, to, &Bars::new())?;
    out.done(
        &serde_json::json!({"job": job, "to": to, "files": got.files, "bytes": got.bytes}),
        &format!(
            "downloaded {} files ({}) of job {job} into {}",
            got.files,
            size(got.bytes),
            to.display()
        ),
    )
}

#[derive(clap::Subcommand)]
pub enum CasCmd {
    /// Remove now the blobs no job names and nobody used for the master's
    /// --cas-keep-days.
    Gc,
}

/// `drqueue cas [gc]`.
pub fn cas(client: &Client, action: Option<CasCmd>, out: &dyn Output) -> CliResult<()> {
    if let Some(CasCmd::Gc) = action {
        let r = client.cas_gc()?;
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        return out.done(
            &r,
            &format!(
                "removed {} blobs ({}); kept {}",
                n("removed_blobs"),
                size(n("removed_bytes")),
                n("kept_blobs")
            ),
        );
    }
    let s = client.cas_stats()?;
    out.done(
        &serde_json::to_value(s).unwrap_or_default(),
        &format!(
            "content store: {} blobs, {} ({} written since the master started)\n\
             disk: {} free; uploads are refused below {}\n\
             yours: your jobs keep {}{}",
            s.blobs,
            size(s.bytes),
            size(s.written_bytes),
            size(s.free_bytes),
            size(s.min_free_bytes),
            size(s.your_bytes),
            if s.quota_bytes > 0 {
                format!(" of your {} quota", size(s.quota_bytes))
            } else {
                " (no quota)".to_string()
            }
        ),
    )
}
