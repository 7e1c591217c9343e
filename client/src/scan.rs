//! `drqueue nodes scan RANGE`: which hosts of a range accept a TCP
//! connection on a port (SSH's by default), with the banner the server
//! sends first. "Open" means a completed connect. Bounded: at most
//! [`MAX_ADDRESSES`] a run, `concurrency` connects at once, each within a
//! timeout; nothing is sent to a host.

use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A /16 at most per run: a larger scan is a mistake more often than not.
pub const MAX_ADDRESSES: u64 = 65_536;
/// The banner line is cut here.
const MAX_BANNER: usize = 255;

/// A host that accepted the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenHost {
    pub host: Ipv4Addr,
    pub port: u16,
    /// The first line the server sent within the timeout (SSH servers
    /// send `SSH-2.0-…` at once), printable characters only.
    pub banner: Option<String>,
}

/// The addresses `A.B.C.D`, `A.B.C.D-A.B.C.E`, `A.B.C.D-E` (last octet) or
/// `A.B.C.D/N` (CIDR; without its network and broadcast addresses when it
/// has them) name, in order.
pub fn parse_range(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let s = s.trim();
    let ip = |t: &str| {
        t.trim()
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("RANGE {s:?}: {t:?} is not an IPv4 address (A.B.C.D)"))
    };
    let (first, last) = if let Some((base, bits)) = s.split_once('/') {
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| *b <= 32)
            .ok_or_else(|| format!("RANGE {s:?}: the prefix length is 0 to 32"))?;
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        let net = u32::from(ip(base)?) & mask;
        let last = net | !mask;
        match bits {
            31 | 32 => (net, last),
            _ => (net + 1, last - 1),
        }
    } else if let Some((a, b)) = s.split_once('-') {
        let first = u32::from(ip(a)?);
        let last = match b.trim().parse::<u8>() {
            Ok(octet) => (first & !0xff) | u32::from(octet),
            Err(_) => u32::from(ip(b)?),
        };
        (first, last)
    } else {
        let one = u32::from(ip(s)?);
        (one, one)
    };
    if first > last {
        return Err(format!("RANGE {s:?}: the first address is after the last"));
    }
    let count = u64::from(last - first) + 1;
    if count > MAX_ADDRESSES {
        return Err(format!(
            "RANGE {s:?} holds {count} addresses; a scan takes at most {MAX_ADDRESSES} (a /16): split it"
        ));
    }
    Ok((first..=last).map(Ipv4Addr::from).collect())
}

/// Connects to each address's `port`, at most `concurrency` at once, each
/// connect and banner read within `timeout`; `progress(done, total)` is
/// called as they finish. The open hosts, in address order.
pub fn scan(
    addrs: &[Ipv4Addr],
    port: u16,
    timeout: Duration,
    concurrency: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> std::io::Result<Vec<OpenHost>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut probes = tokio::task::JoinSet::new();
        for &host in addrs {
            let gate = gate.clone();
            probes.spawn(async move {
                let _slot = gate.acquire_owned().await;
                probe(host, port, timeout).await
            });
        }
        let mut open = Vec::new();
        let mut done = 0;
        while let Some(found) = probes.join_next().await {
            done += 1;
            progress(done, addrs.len());
            if let Ok(Some(host)) = found {
                open.push(host);
            }
        }
        open.sort_by_key(|h| h.host);
        Ok(open)
    })
}

async fn probe(host: Ipv4Addr, port: u16, timeout: Duration) -> Option<OpenHost> {
    let addr = SocketAddr::from((host, port));
    let mut stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut buf = [0u8; MAX_BANNER];
    let banner = match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(banner_line(&buf[..n])),
        _ => None,
    };
    Some(OpenHost { host, port, banner })
}

/// The first line, printable ASCII only (a banner is shown on a terminal).
fn banner_line(bytes: &[u8]) -> String {
    bytes
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .iter()
        .filter(|b| (0x20..0x7f).contains(*b))
        .map(|b| *b as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_in_each_form() {
        assert_eq!(parse_range("127.0.0.1").unwrap(), vec![v4("127.0.0.1")]);
        assert_eq!(parse_range("127.0.0.1-127.0.0.3").unwrap().len(), 3);
        assert_eq!(parse_range("10.0.0.250-10.0.1.2").unwrap().len(), 9);
        assert_eq!(
            parse_range("127.0.0.1-3").unwrap(),
            vec![v4("127.0.0.1"), v4("127.0.0.2"), v4("127.0.0.3")]
        );
        // A /30 without its network and broadcast addresses.
        assert_eq!(
            parse_range("127.0.0.5/30").unwrap(),
            vec![v4("127.0.0.5"), v4("127.0.0.6")]
        );
        assert_eq!(parse_range("127.0.0.8/32").unwrap(), vec![v4("127.0.0.8")]);
        assert_eq!(parse_range("10.1.0.0/16").unwrap().len(), 65_534);
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        assert!(parse_range("10.0.0.0/8")
            .unwrap_err()
            .contains("at most 65536"));
        assert!(parse_range("127.0.0.3-1")
            .unwrap_err()
            .contains("after the last"));
        assert!(parse_range("127.0.0/24")
            .unwrap_err()
            .contains("not an IPv4"));
        assert!(parse_range("127.0.0.1/33").unwrap_err().contains("0 to 32"));
    }

    #[test]
    fn a_banner_is_its_first_printable_line() {
        assert_eq!(
            banner_line(b"SSH-2.0-OpenSSH_9.2\r\nrest"),
            "SSH-2.0-OpenSSH_9.2"
        );
        assert_eq!(banner_line(b"\x1b[31mred\x07"), "[31mred");
    }

    #[test]
    fn open_ports_are_found_with_their_banner_and_closed_ones_not() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let _ = s.write_all(b"SSH-2.0-test\r\n");
            }
        });
        let addrs = parse_range("127.0.0.1-3").unwrap();
        let mut calls = 0;
        let open = scan(&addrs, port, Duration::from_secs(2), 2, &mut |_, _| {
            calls += 1
        })
        .unwrap();
        // Only 127.0.0.1 listens: the listener is bound there alone.
        assert_eq!(
            open,
            vec![OpenHost {
                host: v4("127.0.0.1"),
                port,
                banner: Some("SSH-2.0-test".into())
            }]
        );
        assert_eq!(calls, 3);
    }
}
