//! `uploads`: a job folder through the content store. The upload on
//! loopback against the bare baseline of copying the same folder on the
//! same disk, the bytes a changed scene sends, and an engine's fetch (over
//! its link) and per-task verified copy. Nothing is asserted.

use super::{run_job, scratch, spec, start_engines, start_master, wait_engines};
use drqueue_client::cas::Quiet;
use drqueue_client::Client;
use std::path::Path;
use std::time::Instant;

const FILES: usize = 32;

/// `mb` MiB of incompressible data in [`FILES`] files.
fn make_folder(dir: &Path, mb: u64) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let per = (mb << 20) / FILES as u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..FILES {
        let data: Vec<u8> = (0..per)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(format!("part-{i:02}.bin")), data)?;
    }
    Ok(per * FILES as u64)
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1_048_576.0 / secs.max(1e-9)
}

pub async fn uploads(mb: u64) -> anyhow::Result<()> {
    println!("== uploads: a {mb} MiB folder of {FILES} files through the content store");
    let dir = scratch("uploads");
    let scene = dir.join("scene");
    let bytes = make_folder(&scene, mb)?;
    // Baseline: the same bytes copied on the same disk, no network, no hash.
    let t = Instant::now();
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy)?;
    for e in std::fs::read_dir(&scene)? {
        let e = e?;
        std::fs::copy(e.path(), copy.join(e.file_name()))?;
    }
    let bare = t.elapsed().as_secs_f64();
    println!(
        "   bare copy on disk:          {:7.1} MiB/s",
        mb_s(bytes, bare)
    );

    let master = start_master(&dir).await?;
    let url = master.http_url.clone();
    let scene2 = scene.clone();
    let (first, second, changed) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let c = Client::new(Some(&url), None);
        let t = Instant::now();
        let first = c.upload_dir(&scene2, &[], &Quiet)?;
        let first_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let second = c.upload_dir(&scene2, &[], &Quiet)?;
        let second_s = t.elapsed().as_secs_f64();
        std::fs::write(scene2.join("part-00.bin"), b"one small change")?;
        let changed = c.upload_dir(&scene2, &[], &Quiet)?;
        Ok(((first, first_s), (second, second_s), changed))
    })
    .await??;
    let (up, up_s) = first;
    println!(
        "   upload (hash, ask, send):   {:7.1} MiB/s = {:.2} × bare copy; {} blobs, {} bytes sent",
        mb_s(bytes, up_s),
        bare / up_s,
        up.sent_blobs,
        up.sent_bytes
    );
    println!(
        "   again, unchanged:           {:7.2} s (hashing only), {} bytes sent",
        second.1, second.0.sent_bytes
    );
    println!(
        "   one file changed:           {} blobs, {} bytes sent (the file and the manifest)",
        changed.sent_blobs, changed.sent_bytes
    );

    // An engine lays the folder out: the first task fetches into its cache,
    // the second finds it there and only copies.
    let _engines = start_engines(&master.engines_endpoint, &dir, 1, 1)?;
    wait_engines(&master.http_url, 1).await?;
    let mut job = spec(&["true"], 1);
    job.inputs = Some(changed.manifest);
    job.cwd = None;
    let (_, fetch) = run_job(master.http_url.clone(), job.clone()).await?;
    let (_, cached) = run_job(master.http_url.clone(), job).await?;
    println!(
        "   engine, first task (fetch + copy): {:7.1} MiB/s = {:.2} × bare copy",
        mb_s(bytes, fetch.as_secs_f64()),
        bare / fetch.as_secs_f64()
    );
    println!(
        "   engine, cached (verified copy):    {:7.1} MiB/s = {:.2} × bare copy",
        mb_s(bytes, cached.as_secs_f64()),
        bare / cached.as_secs_f64()
    );
    master.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
