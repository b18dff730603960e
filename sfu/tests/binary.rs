//! The `ringcast` binary as an operator runs it: configuration layering, start-up, SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringcast");

#[test]
fn print_config_layers_env_under_flags() {
    let out = Command::new(BIN)
        .args(["--print-config", "--shards", "3"])
        .env("RINGCAST_SHARDS", "5")
        .env("RINGCAST_UDP_PORT_BASE", "45000")
        .env("RINGCAST_PUBLIC_IP", "127.0.0.1,::1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("shards = 3"), "{text}");
    assert!(text.contains("udp_port_base = 45000"), "{text}");
    assert!(
        text.contains(r#"public_ips = ["127.0.0.1", "::1"]"#),
        "{text}"
    );

    let bad = Command::new(BIN)
        .args(["--print-config", "--grpc-addr", "0.0.0.0:1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--api-secret"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn starts_serves_and_exits_zero_on_sigterm() {
    let (grpc, http) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--drain-grace-secs",
            "1",
            "--udp-port-base",
            "0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(r) = http_get(http, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(health.starts_with("HTTP/1.1 200"));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(err.contains("Development credentials"), "{err}");
    assert!(err.contains("Admin token"));
    assert!(err.contains("Demo: open http://127.0.0.1:"), "{err}");
    assert!(err.contains("draining"));
}
