//! Interop with a Cap'n Proto implementation that is not ours: the Python
//! example client in `clients/python/` (pycapnp, the C++ library) against
//! an in-process server.

use std::process::Command;

use crate::util::*;

/// The Python that has pycapnp: `LOG_SERVER_PYTHON` (set by `.ci/run`),
/// else the `.venv` that `scripts/setup-python.sh` makes, else `python3`.
fn python() -> String {
    if let Ok(p) = std::env::var("LOG_SERVER_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        return venv.into();
    }
    "python3".into()
}

#[test]
fn python_pycapnp_client_lines_arrive_intact() {
    let has_pycapnp = Command::new(python())
        .args(["-c", "import capnp"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_pycapnp {
        // CI installs it (see .ci/run); there a missing pycapnp is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "pycapnp is missing in CI: .ci/run must install it"
        );
        skipped(&format!(
            "the Python interop test: pycapnp is not installed for {}; run scripts/setup-python.sh",
            python()
        ));
        return;
    }
    let mut s = TestServer::start(log_server::ingest::tcp::IoEngine::Auto);
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(python())
        .arg(format!("{root}/clients/python/log_client.py"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &s.addr().port().to_string(),
        ])
        .args(["--schema-dir", &format!("{root}/schema")])
        .args(["--count", "500", "--demo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait_written(503);
    let lines = s.stop();
    assert_eq!(lines.len(), 503, "{lines:#?}");
    // The demo lines exercise columns, levels, metadata and escaping.
    let expected_first = format!(
        "{:<33} {:<12} {:<22} {:<10} {:<20} {:<25} {:<6} {}",
        "2026-01-02T15:04:05.000000000Z",
        "py-host",
        "python.interop",
        "WARNING",
        "log_client.py",
        "main",
        "42",
        "first line | second line [metadata: mod=interop pid=4242 tname=MainThread svc=demo]"
    );
    assert_eq!(lines[0], expected_first);
    assert!(
        lines[1].starts_with(&format!(
            "{:<33} hôst-ünïcödé {:<22} CRITICAL ",
            "2026-01-02T15:04:05.000000000Z", ""
        )),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(" ünïcödé ✓"), "{}", lines[1]);
    assert!(
        lines[2].ends_with(r#"boom [metadata: stack=Traceback (most recent call last): |   File "x.py", line 1 | ValueError]"#),
        "{}",
        lines[2]
    );
    for (i, line) in lines[3..].iter().enumerate() {
        assert!(line.ends_with(&format!("python message {i}")), "{line}");
        assert!(line.contains(" INFO       "), "{line}");
    }
}

/// The Node.js example client in `clients/js/` (@grpc/grpc-js) against an
/// in-process server: unary calls on both service names, then a stream.
/// Whether node and `clients/js/node_modules` are there; in CI their
/// absence fails the test instead of skipping it.
fn node_client_installed() -> bool {
    let root = env!("CARGO_MANIFEST_DIR");
    let installed = std::path::Path::new(root)
        .join("clients/js/node_modules/@grpc/grpc-js")
        .exists();
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(installed && has_node) {
        assert!(
            std::env::var_os("CI").is_none(),
            "node or clients/js/node_modules is missing in CI: .ci/run must run npm ci"
        );
        skipped("a Node interop test: run `npm ci --prefix clients/js` (needs node)");
    }
    installed && has_node
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A server with gRPC on port 0 and its gRPC address, if node and the
/// client's modules are there (else the test is reported skipped).
fn node_and_grpc_server() -> Option<(TestServer, std::net::SocketAddr)> {
    if !node_client_installed() {
        return None;
    }
    let s = TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
    });
    let addr = s.server().grpc_addr().unwrap();
    Some((s, addr))
}

#[test]
fn node_grpc_js_client_messages_arrive_once() {
    let Some((mut s, addr)) = node_and_grpc_server() else {
        return;
    };
    let out = Command::new("node")
        .arg(format!("{ROOT}/clients/js/check.js"))
        .args([
            "--address",
            &addr.to_string(),
            "--unary",
            "2000",
            "--stream",
            "3000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait_written(5_000);
    let lines = s.stop();
    assert_eq!(lines.len(), 5_000);
    // Unary calls in flight together may land in any order among
    // themselves: each exactly once. The stream keeps its order.
    let mut unary = vec![0u32; 2_000];
    let mut streamed = Vec::new();
    for line in &lines {
        match parse_message(line) {
            Some((0, n)) => {
                unary[n] += 1;
                assert!(
                    line.contains(" INFO ") && line.contains("[metadata: mod=check"),
                    "{line}"
                );
            }
            Some((1, n)) => {
                streamed.push(n);
                assert!(
                    line.contains(" WARNING ") && line.contains("svc=check"),
                    "{line}"
                );
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert!(
        unary.iter().all(|&c| c == 1),
        "every unary message exactly once"
    );
    assert_eq!(streamed, (0..3_000).collect::<Vec<_>>());
}

/// Rounds of 8 concurrent unary calls from Node's grpc-js, whose delayed
/// ACKs met Nagle's algorithm on the server's sockets: every round waited
/// ~40 ms for an ACK (p50 47 ms a call before the fix, 3.5 ms after, debug
/// build). With TCP_NODELAY a call takes a few milliseconds
/// even from a debug build; the bound is far from both.
#[test]
fn node_concurrent_unary_calls_do_not_wait_for_delayed_acks() {
    let Some((mut s, addr)) = node_and_grpc_server() else {
        return;
    };
    let out = Command::new("node")
        .arg(format!("{ROOT}/clients/js/bench/grpc-load.js"))
        .args(["--address", &addr.to_string()])
        .args(["--mode", "rounds", "--inflight", "8", "--messages", "400"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    // {"call_ms":{"p50":2.8,...}}: the median call, in milliseconds.
    let p50: f64 = report
        .split("\"call_ms\":{\"p50\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no call_ms.p50 in {report}"));
    assert!(
        p50 < 20.0,
        "median unary call took {p50} ms with 8 in flight: responses wait for delayed ACKs ({report})"
    );
    // 400 timed calls and 50 warm-up calls.
    s.wait_written(450);
    assert_eq!(s.stop().len(), 450);
}
