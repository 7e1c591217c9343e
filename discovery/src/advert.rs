//! What one master says about itself: the TXT keys of its `_drqueue._tcp`
//! record, in mDNS and in DNS alike. Parsing is apart from I/O, and bounded:
//! a key that is missing or malformed is named in the error.

use std::net::IpAddr;

/// One master as it advertises itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The DNS-SD instance name (mDNS) or the SRV owner name (DNS).
    pub instance: String,
    /// The HTTP API, e.g. `http://192.0.2.7:5580` (`txt: http`).
    pub http: String,
    /// The ZeroMQ endpoint engines connect to (`txt: engines`).
    pub engines: String,
    /// The master/engine protocol version (`txt: proto`).
    pub protocol: u16,
    /// The master's id: host, process and a random tag (`txt: id`).
    pub id: String,
    /// The fingerprint of the master's public key (`txt: fp`).
    pub fingerprint: String,
    /// `active`, or `standby` for a master waiting for the store's lease.
    pub role: String,
}

/// TXT keys, each at most this long in bytes (one TXT string is ≤ 255).
const MAX_VALUE: usize = 240;

impl Advert {
    pub fn to_txt(&self) -> Vec<(String, String)> {
        vec![
            ("http".into(), self.http.clone()),
            ("engines".into(), self.engines.clone()),
            ("proto".into(), self.protocol.to_string()),
            ("id".into(), self.id.clone()),
            ("fp".into(), self.fingerprint.clone()),
            ("role".into(), self.role.clone()),
        ]
    }

    /// An advertisement from TXT pairs. `seen_at` is the address the record
    /// came from: a master bound to every interface (`0.0.0.0`) says so, and
    /// is reached at the address it answered from.
    pub fn from_txt<'a>(
        instance: &str,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        seen_at: Option<&str>,
    ) -> Result<Advert, String> {
        let (mut http, mut engines, mut proto, mut id, mut fp, mut role) =
            (None, None, None, None, None, None);
        for (k, v) in pairs {
            if v.len() > MAX_VALUE {
                return Err(format!("TXT key {k}: longer than {MAX_VALUE} bytes"));
            }
            let slot = match k {
                "http" => &mut http,
                "engines" => &mut engines,
                "proto" => &mut proto,
                "id" => &mut id,
                "fp" => &mut fp,
                "role" => &mut role,
                _ => continue,
            };
            *slot = Some(v.to_string());
        }
        let need = |v: Option<String>, key: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| format!("TXT key {key} is missing"))
        };
        let protocol = need(proto, "proto")?
            .parse::<u16>()
            .map_err(|_| "TXT key proto: not a number".to_string())?;
        let http = need(http, "http")?;
        let engines = need(engines, "engines")?;
        Ok(Advert {
            instance: instance.to_string(),
            http: seen_at.map_or(http.clone(), |host| fill_host(&http, host)),
            engines: seen_at.map_or(engines.clone(), |host| fill_host(&engines, host)),
            protocol,
            id: need(id, "id")?,
            fingerprint: need(fp, "fp")?,
            role: role.unwrap_or_else(|| "active".into()),
        })
    }

    pub fn is_standby(&self) -> bool {
        self.role == "standby"
    }
}

/// `scheme://HOST:PORT` with an unspecified HOST (`0.0.0.0`, `[::]`, `*`)
/// replaced by `host` (a name, or an address as [`host_of`] writes it); any
/// other address is left as it is.
pub fn fill_host(endpoint: &str, host: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    let Some((bound, port)) = rest.rsplit_once(':') else {
        return endpoint.to_string();
    };
    if !matches!(bound, "0.0.0.0" | "[::]" | "*") {
        return endpoint.to_string();
    }
    format!("{scheme}://{host}:{port}")
}

/// An address as the host part of a URL: IPv6 in brackets.
pub fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The IP address of an endpoint's host, when it is written as one.
pub fn endpoint_ip(endpoint: &str) -> Option<IpAddr> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether an endpoint names this machine's loopback (by address or as
/// `localhost`).
pub fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host == "localhost" || endpoint_ip(endpoint).is_some_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Advert {
        Advert {
            instance: "drqueue on a".into(),
            http: "http://0.0.0.0:5580".into(),
            engines: "tcp://0.0.0.0:5555".into(),
            protocol: 8,
            id: "a:1:ffff".into(),
            fingerprint: "ab12".into(),
            role: "active".into(),
        }
    }

    #[test]
    fn txt_round_trips_and_fills_an_unspecified_host() {
        let txt = sample().to_txt();
        let pairs = txt.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let back = Advert::from_txt("drqueue on a", pairs, Some("10.1.2.3")).unwrap();
        assert_eq!(back.http, "http://10.1.2.3:5580");
        assert_eq!(back.engines, "tcp://10.1.2.3:5555");
        assert_eq!(back.fingerprint, "ab12");
        assert!(!back.is_standby());
    }

    #[test]
    fn a_missing_or_bad_key_is_named() {
        let err =
            Advert::from_txt("x", [("http", "http://a:1"), ("proto", "8")], None).unwrap_err();
        assert!(err.contains("engines"), "{err}");
        let err = Advert::from_txt("x", [("proto", "eight")], None).unwrap_err();
        assert!(err.contains("proto"), "{err}");
        let long = "x".repeat(300);
        let err = Advert::from_txt("x", [("http", long.as_str())], None).unwrap_err();
        assert!(err.contains("http"), "{err}");
    }

    #[test]
    fn hosts() {
        let v6 = host_of("fe80::1".parse().unwrap());
        assert_eq!(fill_host("tcp://[::]:7", &v6), "tcp://[fe80::1]:7");
        assert_eq!(fill_host("tcp://10.0.0.1:7", &v6), "tcp://10.0.0.1:7");
        assert!(is_loopback("tcp://127.0.0.1:5555"));
        assert!(is_loopback("http://localhost:5580"));
        assert!(!is_loopback("tcp://10.0.0.1:5555"));
        assert_eq!(endpoint_ip("tcp://[::1]:5"), Some("::1".parse().unwrap()));
    }
}
