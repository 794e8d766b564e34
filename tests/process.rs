//! The built `log-server` binary as a user runs it: flags, a signal, files.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_log-server");

/// A port that was free a moment ago (the binary cannot report port 0 back
/// other than in its log line, which this test also checks).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sigterm_drains_and_exits_zero_with_every_message_written() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--port", &port.to_string(), "--only_tcp", "--log-dir"])
        .arg(dir.path().join("logs"))
        .args(["--stats_interval", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !line.contains("listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the server exited before listening"
        );
        assert!(Instant::now() < deadline);
    }
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut open = Vec::new();
    for c in 0..3 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&frames(c, 2_000, true, Some(100))).unwrap();
        open.push(s);
    }
    // SAFETY-free: kill(2) with the child's pid and SIGTERM.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}; stderr:\n{rest}");
    assert!(rest.contains("every accepted message is written"), "{rest}");
    assert!(
        rest.contains("p99="),
        "the final summary has latency percentiles: {rest}"
    );
    assert_all_once_in_order(&read_lines(&dir.path().join("logs"), 10), &[2_000; 3]);
    drop(open);
}

#[test]
fn startup_failures_are_one_sentence_and_a_nonzero_exit() {
    // A port in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--port", &port, "--only_tcp", "--log_dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Contradictory limits.
    let out = Command::new(BIN)
        .args(["--max_file_size", "1000", "--log_dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--max_file_size 1000 cannot hold a line"),
        "{err}"
    );

    // A log directory that cannot be created.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = Command::new(BIN)
        .args(["--port", "0", "--log_dir"])
        .arg(file.join("logs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot open the log file"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}
