//! The loadtest against a freshly started `ringcast` binary, as CI gates a release: the small
//! scenario in every SRTP profile (loss < 1 %, every subscriber gets every track, a valid JSON
//! report), and the clear errors a user gets for a server that is not there, credentials the
//! server refuses, and a room that is full.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcast_loadtest::run::{self, Options, RunError};
use ringcast_loadtest::scenario::{Args, Scenario};
use ringcast_loadtest::signal::SignalError;

const BIN: &str = env!("CARGO_BIN_EXE_ringcast");
const KEY: &str = "devkey";
const SECRET: &str = "devsecret-for-local-testing-only";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    grpc: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let (grpc, http) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--udp-port-base",
            "0",
            "--shards",
            "1",
        ])
        .env("RINGCAST_LOG_LEVEL", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, grpc }
}

fn scenario(grpc: u16, flags: &[&str]) -> Scenario {
    let addr = format!("http://127.0.0.1:{grpc}");
    let mut v = vec!["loadtest", "--grpc-addr", &addr];
    v.extend_from_slice(flags);
    use clap::Parser;
    Scenario::resolve(&Args::parse_from(v)).unwrap()
}

fn options(key: &str, secret: &str) -> Options {
    Options {
        api_key: key.to_owned(),
        api_secret: secret.to_owned(),
        quiet: true,
        ..Options::default()
    }
}

fn run_blocking(s: &Scenario, o: &Options) -> Result<ringcast_loadtest::report::Report, RunError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run::run(s, o))
}

#[test]
fn loadtest_against_a_fresh_server() {
    let server = start_server();
    // The CI scenario once per SRTP profile, one room each, one after the other: three debug
    // builds of the generator side by side with the debug server overran 2 cores (a run with
    // the generator at 97 % of a core fell seconds behind and counted its own lag as loss).
    let runs = [
        "AEAD_AES_128_GCM",
        "AEAD_AES_256_GCM",
        "AES_CM_128_HMAC_SHA1_80",
    ]
    .into_iter()
    .enumerate()
    .map(|(i, profile)| {
        let prefix = format!("ci{i}");
        let s = scenario(
            server.grpc,
            &[
                "--publishers",
                "2",
                "--subscribers",
                "4",
                "--duration",
                "10s",
                "--srtp-profile",
                profile,
                "--max-loss",
                "1",
                "--room-prefix",
                &prefix,
                "--seed",
                &(7 + i).to_string(),
            ],
        );
        (profile, run_blocking(&s, &options(KEY, SECRET)))
    });
    for (profile, report) in runs {
        let report = report.unwrap_or_else(|e| panic!("{profile}: {e}"));
        let table = report.table();
        assert!(report.ok, "{profile}:\n{table}");
        assert_eq!(
            report.connect.connected, 6,
            "{profile}: 2 publishers + 4 subscribers\n{table}"
        );
        // Each subscriber gets audio and video from both publishers.
        assert_eq!(report.receive.tracks_offered, 16, "{profile}\n{table}");
        assert_eq!(report.receive.missing_tracks, 0, "{profile}\n{table}");
        assert!(report.receive.loss_pct < 1.0, "{profile}\n{table}");
        // 2 publishers x (50 audio + ~100 video packets/s) to 4 subscribers.
        assert!(report.receive.packets_per_s > 800.0, "{profile}\n{table}");
        assert!(report.latency_ms.all.count > 5000, "{profile}\n{table}");
        assert!(report.first_frame_ms.count == 4, "{profile}\n{table}");
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(json["scenario"]["srtp_profile"], profile);
        assert!(json["latency_ms"]["all"]["p99"].as_f64().unwrap() > 0.0);
        assert_eq!(json["ok"], true);
    }

    // Credentials the server does not accept.
    let s = scenario(
        server.grpc,
        &[
            "--subscribers",
            "1",
            "--duration",
            "1s",
            "--room-prefix",
            "bad",
        ],
    );
    match run_blocking(&s, &options(KEY, "not-the-secret")) {
        Err(RunError::Signal(e @ SignalError::Unauthenticated { .. })) => {
            assert!(e.to_string().contains("RINGCAST_API_SECRET"), "{e}");
        }
        Err(e) => panic!("wrong error for a bad secret: {e}"),
        Ok(r) => panic!("a bad secret ran:\n{}", r.table()),
    }

    // A room that is full: an operator made it for 2; the scenario brings 4.
    let admin = scenario(
        server.grpc,
        &[
            "--subscribers",
            "3",
            "--duration",
            "1s",
            "--room-prefix",
            "full",
        ],
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let api = ringcast_loadtest::signal::Api::connect(&admin.grpc_addr, KEY, SECRET)
                .await
                .unwrap();
            api.create_room("full-1", 2).await.unwrap();
        });
    let r = run_blocking(&admin, &options(KEY, SECRET)).unwrap();
    assert!(!r.ok, "{}", r.table());
    assert!(
        r.connect.errors.iter().any(|e| e.contains("is full")),
        "{:?}",
        r.connect.errors
    );
    assert!(
        r.violations.iter().any(|v| v.contains("failed to connect")),
        "{:?}",
        r.violations
    );
    drop(server);

    // A server that is not there.
    let gone = scenario(free_port(), &["--duration", "1s"]);
    match run_blocking(&gone, &options(KEY, SECRET)) {
        Err(RunError::Signal(e @ SignalError::Unreachable { .. })) => {
            assert!(e.to_string().contains("cannot reach"), "{e}");
        }
        Err(e) => panic!("wrong error for a missing server: {e}"),
        Ok(r) => panic!("ran without a server:\n{}", r.table()),
    }
}
