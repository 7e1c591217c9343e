//! `_drqueue._tcp.DOMAIN` over unicast DNS, for routed networks where
//! multicast does not cross subnets: one SRV query (the HTTP API's host and
//! port) and one TXT query (the same keys as mDNS; `engines` defaults to the
//! SRV host on port 5555). Only the wire format lives here, bounded: an
//! answer is one UDP datagram of at most 4 KiB, names at most 255 bytes.

use crate::advert::Advert;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const TYPE_TXT: u16 = 16;
const TYPE_SRV: u16 = 33;
const MAX_ANSWER: usize = 4096;

/// One SRV record: where the HTTP API of a master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// A query for `name` of type `qtype`, with id `id` and recursion desired.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("--domain: {name:?} is not a DNS name"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    Ok(out)
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position
/// after it in the record that holds it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos).ok_or("name runs past the answer")? as usize;
        if len & 0xC0 == 0xC0 {
            let low = *msg.get(pos + 1).ok_or("name runs past the answer")? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3F) << 8) | low;
            continue;
        }
        if len == 0 {
            return Ok((name, end.unwrap_or(pos + 1)));
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or("label runs past the answer")?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label));
        if name.len() > 255 {
            return Err("name longer than 255 bytes".into());
        }
        pos += 1 + len;
    }
    Err("name with too many labels or a pointer loop".into())
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, String> {
    msg.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "record runs past the answer".to_string())
}

/// The answers of type `qtype` in a reply to query `id`, as (rdata start,
/// rdata length) pairs.
fn answers(msg: &[u8], id: u16, qtype: u16) -> Result<Vec<(usize, usize)>, String> {
    if msg.len() < 12 || u16_at(msg, 0)? != id {
        return Err("not an answer to our query".into());
    }
    let rcode = msg[3] & 0x0F;
    if rcode == 3 {
        return Ok(Vec::new()); // NXDOMAIN: no such name
    }
    if rcode != 0 {
        return Err(format!("the DNS server answered with error code {rcode}"));
    }
    let (qd, an) = (u16_at(msg, 4)?, u16_at(msg, 6)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        pos = read_name(msg, pos)?.1;
        let rtype = u16_at(msg, pos)?;
        let len = u16_at(msg, pos + 8)? as usize;
        let start = pos + 10;
        if start + len > msg.len() {
            return Err("record runs past the answer".into());
        }
        if rtype == qtype {
            out.push((start, len));
        }
        pos = start + len;
    }
    Ok(out)
}

pub fn decode_srv(msg: &[u8], id: u16) -> Result<Vec<SrvRecord>, String> {
    let mut out = Vec::new();
    for (start, len) in answers(msg, id, TYPE_SRV)? {
        if len < 7 {
            return Err("SRV record too short".into());
        }
        out.push(SrvRecord {
            priority: u16_at(msg, start)?,
            weight: u16_at(msg, start + 2)?,
            port: u16_at(msg, start + 4)?,
            target: read_name(msg, start + 6)?.0,
        });
    }
    out.sort_by_key(|r| (r.priority, u16::MAX - r.weight));
    Ok(out)
}

/// The TXT strings, each `key=value`.
pub fn decode_txt(msg: &[u8], id: u16) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (start, len) in answers(msg, id, TYPE_TXT)? {
        let mut pos = start;
        while pos < start + len {
            let n = msg[pos] as usize;
            let text = msg
                .get(pos + 1..pos + 1 + n)
                .ok_or("TXT string runs past its record")?;
            let text = String::from_utf8_lossy(text);
            if let Some((k, v)) = text.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
            pos += 1 + n;
        }
    }
    Ok(out)
}

fn ask(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<(Vec<u8>, u16), String> {
    let mut id = [0u8; 2];
    drqueue_common::keys::random_bytes(&mut id)?;
    let id = u16::from_be_bytes(id);
    let query = encode_query(id, name, qtype)?;
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("DNS: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| format!("DNS: {e}"))?;
    sock.connect(server)
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    sock.send(&query)
        .map_err(|e| format!("DNS server {server}: {e}"))?;
    let mut buf = vec![0u8; MAX_ANSWER];
    let n = sock
        .recv(&mut buf)
        .map_err(|e| format!("DNS server {server} did not answer: {e}"))?;
    buf.truncate(n);
    Ok((buf, id))
}

/// The masters `_drqueue._tcp.DOMAIN` names, best SRV record first.
pub fn lookup(server: SocketAddr, domain: &str, timeout: Duration) -> Result<Vec<Advert>, String> {
    let name = format!("{}.{}", crate::SERVICE, domain.trim_end_matches('.'));
    let (msg, id) = ask(server, &name, TYPE_SRV, timeout)?;
    let records = decode_srv(&msg, id)?;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let (msg, id) = ask(server, &name, TYPE_TXT, timeout)?;
    let txt = decode_txt(&msg, id)?;
    let mut out = Vec::new();
    for r in records {
        let target = r.target.trim_end_matches('.').to_string();
        let mut pairs: Vec<(String, String)> = vec![
            ("http".into(), format!("http://{target}:{}", r.port)),
            ("engines".into(), format!("tcp://{target}:5555")),
            ("id".into(), target.clone()),
            ("fp".into(), "unknown".into()),
            (
                "proto".into(),
                drqueue_common::protocol::PROTOCOL_VERSION.to_string(),
            ),
        ];
        pairs.extend(txt.iter().cloned()); // TXT keys override the defaults
        let advert = Advert::from_txt(
            &name,
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(&target),
        )?;
        out.push(advert);
    }
    Ok(out)
}

/// The first `nameserver` of resolv.conf text, on port 53.
pub fn system_server(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<std::net::IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as a DNS server writes one, with a compressed target name.
    fn reply(id: u16) -> Vec<u8> {
        let q = encode_query(id, "_drqueue._tcp.example.test", TYPE_SRV).unwrap();
        let mut m = q.clone();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1; // one answer
        m.extend_from_slice(&[0xC0, 12]); // the question's name
        m.extend_from_slice(&TYPE_SRV.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&60u32.to_be_bytes());
        let mut rdata = vec![0, 10, 0, 5, 0x15, 0xCC]; // prio 10, weight 5, port 5580
        rdata.extend_from_slice(&[6]);
        rdata.extend_from_slice(b"master");
        rdata.extend_from_slice(&[0xC0, 12 + 1 + 8 + 1 + 4]); // "example.test"
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
        m
    }

    #[test]
    fn srv_answers_decode_with_compressed_names() {
        let recs = decode_srv(&reply(7), 7).unwrap();
        assert_eq!(
            recs,
            vec![SrvRecord {
                priority: 10,
                weight: 5,
                port: 5580,
                target: "master.example.test".into()
            }]
        );
        assert!(decode_srv(&reply(7), 8).is_err(), "another query's answer");
    }

    #[test]
    fn truncated_or_looping_answers_are_errors_not_panics() {
        let full = reply(7);
        for cut in 0..full.len() {
            let _ = decode_srv(&full[..cut], 7);
        }
        let mut looped = full.clone();
        let at = looped.len() - 2;
        looped[at + 1] = (at) as u8; // a pointer to itself
        looped[at] = 0xC0;
        assert!(decode_srv(&looped, 7).is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(encode_query(1, "a..b", TYPE_SRV).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_SRV).is_err());
    }

    #[test]
    fn resolv_conf() {
        let text = "# c\nsearch x\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n";
        assert_eq!(system_server(text), Some("10.0.0.53:53".parse().unwrap()));
        assert_eq!(system_server(""), None);
    }
}
