//! Finding the master with no configuration. The mDNS tests run inside a
//! private network namespace each (`drqueue_tests::netns`): the masters
//! advertise on its loopback, and engines and the CLI, started with no
//! address, find them there. Nothing leaves the namespace.

use drqueue_common::model::JobStatus;
use drqueue_tests::netns::private_network;
use drqueue_tests::{bin, eventually, Farm};
use std::process::{Command, Output};
use std::time::Duration;

/// The CLI with no address of any kind: no --url, no DRQUEUE_URL, no
/// config file (`config` names one when given).
fn drqueue_unaddressed(farm: &Farm, args: &[&str], config: Option<&str>) -> Output {
    let config_path = farm.dir.join("cli-config.toml");
    match config {
        Some(text) => std::fs::write(&config_path, text).unwrap(),
        None => {
            let _ = std::fs::remove_file(&config_path);
        }
    }
    Command::new(bin("drqueue"))
        .args(args)
        .env_remove("DRQUEUE_URL")
        .env_remove("DRQUEUE_DOMAIN")
        .env_remove("DRQUEUE_TOKEN")
        .env("DRQUEUE_CONFIG", &config_path)
        .current_dir(&farm.dir)
        .output()
        .expect("run drqueue")
}

/// The CLI's JSON once `ok` holds: each call is one bounded browse, and a
/// loaded machine may answer one of them late, so a few are allowed.
fn seen(farm: &Farm, args: &[&str], ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..8 {
        last = json_of(&drqueue_unaddressed(farm, args, None));
        if ok(&last) {
            return last;
        }
    }
    panic!("drqueue {args:?} never showed what was expected; last: {last}");
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "drqueue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// `drqueue submit` succeeded, and its job ran to done.
fn submitted_and_done(farm: &Farm, out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(
        farm.wait_job(id, Duration::from_secs(60)).status,
        JobStatus::Done
    );
}

#[test]
fn an_engine_and_the_cli_with_no_address_find_the_master_over_mdns_and_run_a_job() {
    private_network(|| {
        let mut farm = Farm::start_advertising(None, &[]);
        farm.engine("found", &[]);
        farm.wait_engines(1);
        assert!(
            farm.engine_log("found").contains("via=mDNS"),
            "the engine says how it found the master:\n{}",
            farm.engine_log("found")
        );

        // The master bound port 0; the CLI finds whatever port it got.
        let v = seen(&farm, &["--json", "farm"], |v| {
            v["url"] == farm.http.as_str()
        });
        assert!(v["via"].as_str().unwrap().starts_with("mDNS"), "{v}");
        assert_eq!(v["answers"], true);

        let farms = seen(&farm, &["--json", "farms", "--wait-ms", "1500"], |f| {
            f != &serde_json::json!([])
        });
        let farms = farms.as_array().unwrap();
        assert_eq!(farms.len(), 1, "{farms:?}");
        assert_eq!(farms[0]["engines"], farm.engines_endpoint.as_str());
        assert_eq!(farms[0]["role"], "active");

        // A submit that found no master sent nothing: it may be tried again.
        let out = (0..8)
            .map(|_| drqueue_unaddressed(&farm, &["submit", "--frames", "1-3", "--", "true"], None))
            .find(|o| {
                o.status.success() || !String::from_utf8_lossy(&o.stderr).contains("cannot reach")
            })
            .expect("a submit that reached the master");
        submitted_and_done(&farm, &out);

        // The master comes back on other ports: the same engine follows it.
        farm.stop_master();
        farm.http = "127.0.0.1:0".into();
        farm.engines_endpoint = "tcp://127.0.0.1:0".into();
        farm.start_master();
        eventually(
            Duration::from_secs(40),
            "the engine to follow the master",
            || {
                let log = farm.engine_log("found");
                (log.contains("the master moved") && log.contains(&farm.engines_endpoint))
                    .then_some(())
            },
        );
        submitted_and_done(
            &farm,
            &drqueue_unaddressed(&farm, &["submit", "--", "true"], None),
        );
    });
}

#[test]
fn an_enrolled_engine_refuses_a_master_with_another_key_and_finds_its_own_on_a_new_port() {
    private_network(|| {
        let mut first = Farm::start_advertising(None, &[]);
        first.engine("pinned", &[]);
        first.wait_engines(1);
        let state = first.dir.join("engine-pinned");
        assert!(
            state.join("master.pub").exists(),
            "the engine pinned the master's key"
        );
        first.signal_engine(0, libc::SIGKILL);
        first.kill_master();

        // Another master, with its own key, alone on the link: the engine
        // sees it advertised and does not go near it.
        let mut other = Farm::start_advertising(None, &[]);
        other.engine_at("pinned", state.to_str().unwrap(), &[], &[]);
        eventually(
            Duration::from_secs(20),
            "the engine to skip the other master",
            || {
                other
                    .engine_log("pinned")
                    .contains("not the trusted")
                    .then_some(())
            },
        );
        assert!(
            other.client().engines().unwrap().is_empty(),
            "no engine joined the other master"
        );

        // Its own master comes back on new ports: found again by key.
        first.http = "127.0.0.1:0".into();
        first.engines_endpoint = "tcp://127.0.0.1:0".into();
        first.start_master();
        first.wait_engines(1);
        assert!(other.client().engines().unwrap().is_empty());
        let log = other.engine_log("pinned");
        assert!(
            log.contains(&first.engines_endpoint),
            "found on its new port:\n{log}"
        );
    });
}

#[test]
fn with_no_advertise_nothing_is_found_and_the_order_holds() {
    private_network(|| {
        let farm = Farm::start();
        let farms = json_of(&drqueue_unaddressed(
            &farm,
            &["--json", "farms", "--wait-ms", "1500"],
            None,
        ));
        assert_eq!(
            farms,
            serde_json::json!([]),
            "a --no-advertise master is not seen"
        );
        let v = json_of(&drqueue_unaddressed(&farm, &["--json", "farm"], None));
        assert_eq!(v["answers"], false, "{v}");
        assert!(
            v["via"].as_str().unwrap().contains("no master found"),
            "{v}"
        );
        let out = drqueue_unaddressed(&farm, &["jobs"], None);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no master found elsewhere") && err.contains("mDNS"),
            "{err}"
        );

        // The config file names it.
        let config = format!("url = \"{}\"\n", farm.http);
        let v = json_of(&drqueue_unaddressed(
            &farm,
            &["--json", "farm"],
            Some(&config),
        ));
        assert_eq!(v["url"], farm.http.as_str());
        assert!(
            v["via"].as_str().unwrap().starts_with("the config file"),
            "{v}"
        );
        // The flag beats the environment, which beats the config file.
        let out = Command::new(bin("drqueue"))
            .args(["--json", "--url", &farm.http, "farm"])
            .env("DRQUEUE_URL", "http://127.0.0.1:9")
            .env("DRQUEUE_CONFIG", farm.dir.join("cli-config.toml"))
            .output()
            .unwrap();
        let v = json_of(&out);
        assert_eq!(
            (v["url"].as_str(), v["answers"].as_bool()),
            (Some(farm.http.as_str()), Some(true))
        );
        let out = Command::new(bin("drqueue"))
            .args(["--json", "farm"])
            .env("DRQUEUE_URL", &farm.http)
            .env("DRQUEUE_CONFIG", farm.dir.join("cli-config.toml"))
            .output()
            .unwrap();
        assert_eq!(json_of(&out)["via"], "the environment (DRQUEUE_URL)");
        // A broken config file is named, not skipped.
        let out = drqueue_unaddressed(&farm, &["jobs"], Some("urll = 1\n"));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cli-config.toml") && err.contains("urll"),
            "{err}"
        );
    });
}

/// Kills a master the test started itself, whatever happens.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real DNS server (dnsmasq) on a loopback port, serving the farm's SRV
/// and TXT records for `farm.test`; killed when dropped.
struct Dnsmasq {
    child: std::process::Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dnsmasq(farm: &Farm, fingerprint: &str) -> Option<Dnsmasq> {
    let Some(dnsmasq) = drqueue_tests::which("dnsmasq").or_else(|| {
        let p = std::path::PathBuf::from("/usr/sbin/dnsmasq");
        p.is_file().then_some(p)
    }) else {
        drqueue_common::test_skip::skip("no dnsmasq: install dnsmasq-base");
        return None;
    };
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    let http_port = farm.http.rsplit_once(':').unwrap().1;
    let child = Command::new(dnsmasq)
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
        ])
        .args([
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--pid-file=",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--user={}", whoami()))
        .arg(format!(
            "--srv-host=_drqueue._tcp.farm.test,127.0.0.1,{http_port},0,0"
        ))
        .arg(format!(
            "--txt-record=_drqueue._tcp.farm.test,engines={},fp={fingerprint}",
            farm.engines_endpoint
        ))
        .arg(format!(
            "--log-facility={}",
            farm.dir.join("dnsmasq.log").display()
        ))
        .spawn()
        .expect("start dnsmasq");
    let server = Dnsmasq { child, port };
    eventually(Duration::from_secs(10), "dnsmasq to listen", || {
        std::fs::read_to_string(farm.dir.join("dnsmasq.log"))
            .ok()?
            .contains("started")
            .then_some(())
    });
    Some(server)
}

fn whoami() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        "root".into()
    } else {
        std::env::var("USER").unwrap_or_else(|_| "nobody".into())
    }
}

#[test]
fn with_a_domain_the_engine_and_the_cli_find_the_master_by_dns_srv() {
    // In a namespace of its own too: a master the host runs on 5580 or
    // 5555 would otherwise be found first, on loopback.
    private_network(dns_srv_body);
}

fn dns_srv_body() {
    let mut farm = Farm::start();
    let fp = farm.client().join_token(1, 60).unwrap().master_fingerprint;
    let Some(dns) = start_dnsmasq(&farm, &fp) else {
        return;
    };
    let config = farm.dir.join("dns.toml");
    std::fs::write(
        &config,
        format!("dns_server = \"127.0.0.1:{}\"\n", dns.port),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();

    farm.engines_discover = true;
    farm.engine_with_env(
        "by-srv",
        &["--domain", "farm.test"],
        &[("DRQUEUE_CONFIG", &config)],
    );
    farm.wait_engines(1);
    let log = farm.engine_log("by-srv");
    assert!(log.contains("via=DNS SRV _drqueue._tcp.farm.test"), "{log}");

    let cli = |args: &[&str]| {
        Command::new(bin("drqueue"))
            .args(["--domain", "farm.test"])
            .args(args)
            .env_remove("DRQUEUE_URL")
            .env_remove("DRQUEUE_TOKEN")
            .env("DRQUEUE_CONFIG", &config)
            .output()
            .unwrap()
    };
    let v = json_of(&cli(&["--json", "farm"]));
    assert_eq!(v["url"], farm.http.as_str(), "{v}");
    assert_eq!(v["via"], "DNS SRV _drqueue._tcp.farm.test");
    submitted_and_done(&farm, &cli(&["submit", "--frames", "1-2", "--", "true"]));
}

#[test]
fn a_standby_master_advertises_as_standby_and_as_active_once_it_takes_over() {
    private_network(|| {
        let scratch =
            std::env::temp_dir().join(format!("drqueue-standby-mdns-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let Some(mongo) = drqueue_tests::TestMongo::start(&scratch) else {
            return;
        };
        let db = mongo.uri("standby_mdns");
        let mut farm = Farm::start_advertising(Some(&db), &["--lease", "2"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let standby_url = format!("http://127.0.0.1:{port}");
        let log = farm.dir.join("standby.log");
        let _standby = Reaper(
            std::process::Command::new(bin("drqueue-master"))
                .args([
                    "--db",
                    &db,
                    "--lease",
                    "2",
                    "--engines",
                    "tcp://127.0.0.1:0",
                ])
                .args(["--http", &format!("127.0.0.1:{port}")])
                .arg("--keys-dir")
                .arg(farm.dir.join("keys"))
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let standby_log = || std::fs::read_to_string(&log).unwrap_or_default();
        eventually(Duration::from_secs(30), "the standby to advertise", || {
            standby_log().contains("role=\"standby\"").then_some(())
        });
        let roles = |farms: &serde_json::Value| {
            let mut r: Vec<(String, String)> = farms
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["role"].as_str().unwrap().to_string(),
                        f["http"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            r.sort();
            r
        };
        let both = vec![
            ("active".to_string(), farm.http.clone()),
            ("standby".to_string(), standby_url.clone()),
        ];
        seen(&farm, &["--json", "farms", "--wait-ms", "1500"], |f| {
            roles(f) == both
        });
        // Clients use the active one.
        seen(&farm, &["--json", "farm"], |v| {
            v["url"] == farm.http.as_str()
        });

        farm.kill_master();
        eventually(Duration::from_secs(30), "the standby to take over", || {
            standby_log().contains("took over").then_some(())
        });
        seen(&farm, &["--json", "farm"], |v| {
            v["url"] == standby_url.as_str()
        });
        let only = vec![("active".to_string(), standby_url.clone())];
        seen(&farm, &["--json", "farms", "--wait-ms", "1500"], |f| {
            roles(f) == only
        });
        drop(mongo);
        let _ = std::fs::remove_dir_all(&scratch);
    });
}
