//! The API over HTTPS (`--tls-cert`/`--tls-key`, rustls): the CLI verifies
//! the master's certificate against `DRQUEUE_CA_FILE`, and refuses a
//! master it cannot verify. The certificates are made here, by a test CA.

use drqueue_tests::farm_with_admin;

/// A CA and a certificate it signed for 127.0.0.1 and localhost, as PEM
/// files in `dir`: (ca, cert, key).
fn test_pki(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[test]
fn the_api_speaks_tls_and_the_cli_verifies_the_master() {
    let dir = std::env::temp_dir().join(format!("drqueue-pki-{}", std::process::id()));
    let (ca, cert, key) = test_pki(&dir);
    let (farm, admin) = farm_with_admin(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(farm.http.starts_with("https://127.0.0.1:"), "{}", farm.http);
    let env = [
        ("DRQUEUE_TOKEN", admin.as_str()),
        ("DRQUEUE_CA_FILE", ca.as_str()),
    ];
    let out = farm.drqueue_env(&["whoami"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "admin (admin)");
    let out = farm.drqueue_env(&["submit", "--paused", "--", "true"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the farm's CA the certificate is not trusted: refused.
    let out = farm.drqueue_env(&["whoami"], &[("DRQUEUE_TOKEN", admin.as_str())]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("issuer"),
        "{err}"
    );
    // A CA file that holds no certificate is an error, not "trust anything".
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let out = farm.drqueue_env(
        &["whoami"],
        &[
            ("DRQUEUE_TOKEN", admin.as_str()),
            ("DRQUEUE_CA_FILE", empty.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no PEM certificate"));
    // Plain HTTP to the TLS port gets no API.
    let plain = farm.http.replace("https://", "http://");
    let out = farm.drqueue_env(&["--url", &plain, "whoami"], &env);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_key_that_does_not_match_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("drqueue-pki-bad-{}", std::process::id()));
    let (_, cert, _) = test_pki(&dir);
    let (_, _, other_key) = test_pki(&dir.join("other"));
    let out = std::process::Command::new(drqueue_tests::bin("drqueue-master"))
        .args(["--db", dir.join("db").to_str().unwrap()])
        .args(["--http", "127.0.0.1:0", "--engines", "tcp://127.0.0.1:0"])
        .args(["--tls-cert", &cert, "--tls-key", &other_key])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert and --tls-key"), "{err}");
}
