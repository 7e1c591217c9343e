//! `drqueue farm`: which master this client uses and how it was found;
//! `drqueue farms`: every master this machine can see (mDNS, and DNS SRV
//! with --domain). See `drqueue_discovery` for the order.

use crate::error::CliResult;
use crate::output::Output;
use drqueue_client::Client;
use std::time::Duration;

pub fn farm(client: &Client, out: &dyn Output) -> CliResult<()> {
    let located = client.located();
    let answers = client.health().is_ok();
    let json = serde_json::json!({
        "url": located.url,
        "via": located.via.to_string(),
        "answers": answers,
        "notes": located.notes,
    });
    let mut said = format!("master: {}\nfound through: {}", located.url, located.via);
    if !answers {
        said.push_str("\nit does not answer");
        if !located.notes.is_empty() {
            said.push_str(&format!(" (looked for one: {})", located.notes.join("; ")));
        }
    }
    out.done(&json, &said)
}

pub fn farms(domain: Option<&str>, wait_ms: u64, out: &dyn Output) -> CliResult<()> {
    let (found, notes) = drqueue_discovery::resolve::list(Duration::from_millis(wait_ms), domain);
    let rows: Vec<serde_json::Value> = found
        .iter()
        .map(|(a, via)| {
            serde_json::json!({
                "instance": a.instance, "http": a.http, "engines": a.engines,
                "fingerprint": a.fingerprint, "protocol": a.protocol, "id": a.id,
                "role": a.role, "via": via.to_string(),
            })
        })
        .collect();
    let mut said = format!("{} master(s) seen within {wait_ms} ms", found.len());
    for (a, via) in &found {
        said.push_str(&format!(
            "\n{}  {}  engines {}  key {}  {}  via {via}",
            a.instance, a.http, a.engines, a.fingerprint, a.role
        ));
    }
    for n in &notes {
        said.push_str(&format!("\nnote: {n}"));
    }
    out.done(&serde_json::Value::Array(rows), &said)
}
