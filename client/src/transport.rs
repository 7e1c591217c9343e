//! The client's HTTP plumbing: building requests with the token, the
//! errors every answer is checked for, JSON in and out, pages followed by
//! `Link`, and long requests (the live feed, blob transfers) without an
//! overall timeout. The calls themselves are in `lib.rs` and `cas.rs`.

use crate::{Client, ClientError, Result, MAX_BODY};
use drqueue_common::listing::next_link;
use drqueue_common::model::ApiError;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// TLS that trusts the certificates in `path` (PEM) and nothing else: a
/// farm's own CA.
pub(crate) fn tls_with_ca(path: &str) -> std::result::Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let pem = std::fs::read(path).map_err(|e| format!("DRQUEUE_CA_FILE {path}: {e}"))?;
    let certs: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!(
            "DRQUEUE_CA_FILE {path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::Specific(std::sync::Arc::new(certs)))
        .build())
}

impl Client {
    pub(crate) fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.url(), path)
    }

    pub(crate) fn connect_error(&self, e: ureq::Error) -> ClientError {
        let mut reason = e.to_string();
        if matches!(e, ureq::Error::Protocol(_)) {
            // Something answers there, but not HTTP.
            reason.push_str(": something answers there, but not the HTTP API. Is it the master's engines port (5555)? The API listens on --http (default 127.0.0.1:5580)");
        }
        let located = self.located();
        if located.via == drqueue_discovery::Via::Default && !located.notes.is_empty() {
            reason = format!(
                "{reason} (no master found elsewhere: {})",
                located.notes.join("; ")
            );
        }
        ClientError::Connect {
            url: located.url.clone(),
            reason,
        }
    }

    pub(crate) fn check(
        &self,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let body = resp.into_body().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        Err(match status {
            401 | 403 => ClientError::Unauthorized(message),
            404 => ClientError::NotFound(message),
            400..=499 => ClientError::BadRequest(message),
            _ => ClientError::Server { status, message },
        })
    }

    pub(crate) fn json<T: DeserializeOwned>(
        &self,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T> {
        self.check(resp)?
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .read_json()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends one request: the token on every request, and JSON (even an
    /// empty body) on every change, as the master requires of writes.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut uri = self.url_for(path);
        for (i, (k, v)) in query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&percent_encode(k));
            uri.push('=');
            uri.push_str(&percent_encode(v));
        }
        self.send_to(method, uri, body)
    }

    pub(crate) fn send_to(
        &self,
        method: &str,
        uri: String,
        body: Option<&serde_json::Value>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        if let Some(e) = self.tls_error.as_ref().or(self.located().error.as_ref()) {
            return Err(ClientError::Config(e.clone()));
        }
        let mut req = ureq::http::Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if method != "GET" {
            req = req.header("Content-Type", "application/json");
        }
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let req = req
            .body(bytes)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self.agent.run(req).map_err(|e| self.connect_error(e))?;
        self.check(resp)
    }

    /// A GET whose body streams for as long as the master sends it (the
    /// live feed).
    pub(crate) fn open_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut uri = self.url_for(path);
        for (i, (k, v)) in query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(k);
            uri.push('=');
            uri.push_str(&percent_encode(v));
        }
        let req = ureq::http::Request::builder()
            .method("GET")
            .uri(uri)
            .header("Accept", "text/event-stream");
        self.run_long(req, (), Duration::from_secs(30))
    }

    /// A request whose body may take as long as it needs (a stream, a large
    /// blob): no overall timeout, only the connect's and the answer head's.
    pub(crate) fn run_long<B: ureq::AsSendBody>(
        &self,
        req: ureq::http::request::Builder,
        body: B,
        head_within: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        if let Some(e) = self.tls_error.as_ref().or(self.located().error.as_ref()) {
            return Err(ClientError::Config(e.clone()));
        }
        let req = match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        };
        let req = req
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let req = self
            .agent
            .configure_request(req)
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(head_within))
            .build();
        let resp = self.agent.run(req).map_err(|e| self.connect_error(e))?;
        self.check(resp)
    }

    /// PUTs `len` bytes from `reader` to `path`, streamed.
    pub(crate) fn upload_body(
        &self,
        path: &str,
        len: u64,
        mut reader: impl std::io::Read,
    ) -> Result<()> {
        let req = ureq::http::Request::builder()
            .method("PUT")
            .uri(self.url_for(path))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string());
        self.run_long(
            req,
            ureq::SendBody::from_reader(&mut reader),
            Duration::from_secs(120),
        )?;
        Ok(())
    }

    /// GETs `path` from byte `from` on (`Range`), for a resumed download.
    pub(crate) fn get_range(
        &self,
        path: &str,
        from: u64,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = ureq::http::Request::builder()
            .method("GET")
            .uri(self.url_for(path));
        if from > 0 {
            req = req.header("Range", format!("bytes={from}-"));
        }
        self.run_long(req, (), Duration::from_secs(120))
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let resp = self.send("GET", path, query, None)?;
        self.json(resp)
    }

    /// A whole listing: the first page, then each `Link: rel="next"` page
    /// the master names, until none is named.
    pub(crate) fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>> {
        let mut resp = self.send("GET", path, query, None)?;
        let mut all = Vec::new();
        loop {
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_link)
                .map(String::from);
            all.extend(self.json::<Vec<T>>(resp)?);
            match next {
                // Only a path on this master is followed.
                Some(next) if next.starts_with('/') => {
                    resp = self.send_to("GET", self.url_for(&next), None)?;
                }
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "the next page is not on this master: {other:?}"
                    )))
                }
                None => return Ok(all),
            }
        }
    }

    /// A change: `body` is sent as JSON (none: an empty JSON request).
    pub(crate) fn write<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self.send(method, path, query, body.as_ref())?;
        self.json(resp)
    }

    pub(crate) fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        self.write("POST", path, &[], body)
    }
}

/// Query and path parts: everything but unreserved characters is %-escaped.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
