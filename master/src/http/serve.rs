//! The HTTP listener: accepting connections within bounds, TLS when asked,
//! and hyper with timeouts, so no client can stall or exhaust the master.
//!
//! - At most `max_connections` connections are served at once. Past that
//!   the listener stops accepting (the kernel's backlog holds the rest), so
//!   file descriptors are left for engines and the store.
//! - One address may hold at most a share of them; a connection past its
//!   share is answered 429 and closed.
//! - Headers must arrive within `header_timeout`, and an idle keep-alive
//!   connection is closed after it too.
//! - With `--tls-cert`/`--tls-key`, every connection is TLS (rustls); the
//!   handshake shares the header timeout.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

/// How the listener bounds its clients.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections one address may hold at once.
    pub per_client: usize,
    /// Requests one client (a user, or an address without a token) may
    /// have in flight at once: half its connection share, so people behind
    /// one proxy address still get theirs.
    pub requests_per_client: usize,
    /// Time to send a request's headers (and to finish a TLS handshake).
    pub header_timeout: Duration,
}

impl Limits {
    pub fn new(max_connections: usize, header_timeout: Duration) -> Limits {
        let max_connections = max_connections.max(1);
        Limits {
            max_connections,
            // A quarter each, but never fewer than a browser's handful.
            per_client: (max_connections / 4).max(8).min(max_connections),
            requests_per_client: (max_connections / 8).max(4).min(max_connections),
            header_timeout,
        }
    }
}

/// The TLS configuration from a PEM certificate chain and key.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!(
                "--tls-cert {}: not a PEM certificate chain: {e}",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("--tls-cert {}: holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: not a PEM private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--tls-cert and --tls-key do not make a usable pair")?;
    Ok(Arc::new(config))
}

/// Connections held per address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

impl PerClient {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_take(&self, ip: IpAddr, share: usize) -> bool {
        let mut held = self.lock();
        let n = held.entry(ip).or_default();
        if *n >= share {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, ip: IpAddr) {
        let mut held = self.lock();
        if let Some(n) = held.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&ip);
            }
        }
    }
}

/// Serves `app` on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        // Wait for a free slot before accepting: past the cap, connections
        // wait in the kernel's backlog rather than take descriptors.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = remote.ip();
        if !per_client.try_take(ip, limits.per_client) {
            tokio::spawn(refuse_busy(stream));
            continue;
        }
        let (app, tls, per_client, limits) =
            (app.clone(), tls.clone(), per_client.clone(), limits.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, remote, app, &limits).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => connection(tls_stream, remote, app, &limits).await,
                        Ok(Err(e)) => tracing::debug!(%remote, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
            per_client.give_back(ip);
            drop(slot);
        });
    }
}

/// One client connection, HTTP/1.1 with the header timeout.
async fn connection<S>(stream: S, remote: SocketAddr, app: Router, limits: &Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.layer(axum::Extension(ConnectInfo(remote)));
    let service = TowerToHyperService::new(app);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%remote, "HTTP connection ended: {e}");
    }
}

/// A client over its share of connections hears why, then is hung up on.
async fn refuse_busy(mut stream: TcpStream) {
    let body = r#"{"error":"too many connections from this address: close some, or wait"}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_share() {
        let p = PerClient::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.try_take(ip, 2) && p.try_take(ip, 2));
        assert!(!p.try_take(ip, 2));
        p.give_back(ip);
        assert!(p.try_take(ip, 2));
        p.give_back(ip);
        p.give_back(ip);
        assert!(p.lock().is_empty());
        let l = Limits::new(1000, Duration::from_secs(1));
        assert_eq!((l.per_client, l.requests_per_client), (250, 125));
        assert_eq!(Limits::new(4, Duration::from_secs(1)).per_client, 4);
    }
}
