//! Interop with implementations that are not ours, against an in-process
//! server: the Python example client in `clients/python/` (pycapnp, the C++
//! Cap'n Proto library), the Node client (@grpc/grpc-js), and the real
//! OpenTelemetry SDKs of Node and Python through OTLP.

use std::process::Command;

use crate::util::*;

/// The Python that has pycapnp and the OpenTelemetry SDK:
/// `LOG_SERVER_PYTHON` (set by `.ci/run`),
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

// ---------------------------------------------------------------------------
// The real OpenTelemetry SDKs: Node's @opentelemetry/sdk-logs with its three
// OTLP exporters (clients/js/otel-test, pinned) and Python's
// opentelemetry-sdk with the stdlib `logging` handler and the OTLP/gRPC
// exporter (clients/python/requirements-otel.txt), each configured the way
// a user does (OTEL_EXPORTER_OTLP_* variables), against an in-process server.

/// Records each mapping test logs: enough for several records of each
/// level and exception, few enough for a short debug run.
const OTEL_RECORDS: usize = 200;

/// An OpenTelemetry SDK client and how it exports.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sdk {
    /// `clients/js/otel-test/otel-log.js --exporter KIND`.
    Node(&'static str),
    /// `clients/python/otel_log.py` (OTLP/gRPC).
    Python,
}

impl Sdk {
    /// Whether the SDK is installed; in CI its absence fails the test.
    fn installed(self) -> bool {
        let (ok, fix) = match self {
            Sdk::Node(_) => (
                std::path::Path::new(ROOT)
                    .join("clients/js/otel-test/node_modules/@opentelemetry/sdk-logs")
                    .exists()
                    && Command::new("node")
                        .arg("--version")
                        .output()
                        .is_ok_and(|o| o.status.success()),
                "run `npm ci --prefix clients/js/otel-test` (needs node)",
            ),
            Sdk::Python => (
                Command::new(python())
                    .args([
                        "-c",
                        "import opentelemetry.sdk._logs, opentelemetry.exporter.otlp.proto.grpc, \
                         opentelemetry.instrumentation.logging",
                    ])
                    .status()
                    .is_ok_and(|s| s.success()),
                "run scripts/setup-python.sh",
            ),
        };
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "the OpenTelemetry SDK for {self:?} is missing in CI: .ci/run must install it ({fix})"
            );
            skipped(&format!(
                "an OpenTelemetry SDK interop test ({self:?}): {fix}"
            ));
        }
        ok
    }

    /// The client, pointed at the gRPC port `addr` through the environment
    /// as a user points it: gRPC at the bare endpoint; http/protobuf at the
    /// base endpoint (the SDK adds `/v1/logs`); http/json at the full logs
    /// URL, the other documented form.
    fn command(self, addr: std::net::SocketAddr, count: usize) -> Command {
        let mut cmd = match self {
            Sdk::Node(kind) => {
                let mut cmd = Command::new("node");
                cmd.arg(format!("{ROOT}/clients/js/otel-test/otel-log.js"))
                    .args(["--exporter", kind]);
                cmd
            }
            Sdk::Python => {
                let mut cmd = Command::new(python());
                cmd.arg(format!("{ROOT}/clients/python/otel_log.py"));
                cmd
            }
        };
        cmd.args(["--count", &count.to_string()]);
        // Nothing of the test runner's own OpenTelemetry setup leaks in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        match self {
            Sdk::Node("proto") => cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            Sdk::Node("http") => cmd.env(
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("http://{addr}/v1/logs"),
            ),
            _ => cmd.env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", format!("http://{addr}")),
        };
        cmd
    }

    /// What every line of this client must show: host, logger (the
    /// scope), file, function and `svc=`.
    fn columns(self) -> (&'static str, &'static str, &'static str, String) {
        match self {
            Sdk::Node(kind) => (
                "node-host",
                "otel.node.interop",
                "otel-log.js",
                format!("svc=otel-node-{kind}"),
            ),
            Sdk::Python => (
                "py-host",
                "otel.python.interop",
                "otel_log.py",
                "svc=otel-python".to_string(),
            ),
        }
    }

    /// The level record `n` was logged at (see the two scripts).
    fn level(self, n: usize) -> &'static str {
        match (self, n % 10 == 9, n % 2 == 1) {
            (_, true, _) => "ERROR",
            (Sdk::Python, false, true) => "WARNING",
            _ => "INFO",
        }
    }

    /// How the exception's stack of record `n` starts in the text line.
    fn stack(self, n: usize) -> String {
        match self {
            Sdk::Node(_) => format!("stack=Error: failure {n} |     at "),
            Sdk::Python => "stack=Traceback (most recent call last): |   File ".to_string(),
        }
    }
}

/// The client's JSON summary line (stdout), after asserting it exited 0.
fn otel_summary(sdk: Sdk, out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{sdk:?} client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{sdk:?} summary {stdout:?}: {e}"))
}

/// Every record of `sdk` exactly once (by the counter in its body), one
/// line each although each body has a line break, with its columns mapped.
fn assert_otel_lines(sdk: Sdk, lines: &[String], count: usize) {
    assert_eq!(lines.len(), count, "{sdk:?}: {lines:#?}");
    let (host, logger, file, svc) = sdk.columns();
    let mut seen = vec![0u32; count];
    for line in lines {
        let Some((0, n)) = parse_message(line) else {
            panic!("{sdk:?}: unexpected line {line:?}");
        };
        seen[n] += 1;
        // Timestamp: RFC 3339 UTC with nine decimals, padded to 33.
        let (timestamp, rest) = line.split_at(34);
        let timestamp = timestamp.trim_end();
        assert!(
            timestamp.len() == 30 && timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.',
            "{sdk:?}: timestamp {timestamp:?} in {line}"
        );
        let columns = format!(
            "{host:<12} {logger:<22} {:<10} {file:<20} {:<25} ",
            sdk.level(n),
            "main"
        );
        assert!(rest.starts_with(&columns), "{sdk:?}: {columns:?} in {line}");
        // The line number: the caller's, a positive integer.
        let line_number = rest[columns.len()..columns.len() + 6].trim_end();
        assert!(
            line_number.parse::<u32>().is_ok_and(|l| l > 0),
            "{sdk:?}: line number {line_number:?} in {line}"
        );
        // The body's line break is ` | `, in the message column.
        let message = &rest[columns.len() + 7..];
        assert!(
            message.starts_with(&format!("conn=0 n={n} from the ")),
            "{sdk:?}: message of {n} in {line}"
        );
        assert!(
            message.contains(&format!(" exporter | second line of {n} [metadata: ")),
            "{sdk:?}: {line}"
        );
        assert!(message.contains(&svc), "{sdk:?}: {svc} in {line}");
        assert!(
            message.contains(&format!("/{file} ")),
            "{sdk:?}: path= in {line}"
        );
        assert_eq!(
            message.contains(&sdk.stack(n)),
            n % 10 == 9,
            "{sdk:?}: the stack of {n} in {line}"
        );
    }
    let wrong: Vec<_> = (0..count).filter(|&n| seen[n] != 1).collect();
    assert!(
        wrong.is_empty(),
        "{sdk:?}: records not written exactly once: {wrong:?}"
    );
}

/// One SDK logs [`OTEL_RECORDS`] records at its default batch settings;
/// the server writes each once, mapped.
fn otel_sdk_records_arrive_once_mapped(sdk: Sdk) {
    if !sdk.installed() {
        return;
    }
    let mut s = TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
    });
    let addr = s.server().grpc_addr().unwrap();
    let out = sdk.command(addr, OTEL_RECORDS).output().unwrap();
    let summary = otel_summary(sdk, &out);
    assert_eq!(summary["exported"], OTEL_RECORDS, "{summary}");
    // Answers follow --grpc_ack written: every export answered is written.
    let lines = s.stop();
    assert_otel_lines(sdk, &lines, OTEL_RECORDS);
}

#[test]
fn otel_node_grpc_exporter_records_arrive_once_mapped() {
    otel_sdk_records_arrive_once_mapped(Sdk::Node("grpc"));
}

#[test]
fn otel_node_http_protobuf_exporter_records_arrive_once_mapped() {
    otel_sdk_records_arrive_once_mapped(Sdk::Node("proto"));
}

#[test]
fn otel_node_http_json_exporter_records_arrive_once_mapped() {
    otel_sdk_records_arrive_once_mapped(Sdk::Node("http"));
}

#[test]
fn otel_python_logging_grpc_exporter_records_arrive_once_mapped() {
    otel_sdk_records_arrive_once_mapped(Sdk::Python);
}

/// With `--format json`: every record once, one JSON object a line, the
/// columns under their keys, the body's line break a `\n` escape inside
/// the message, and what has no column (other attributes, resource, scope,
/// severity text) as JSON objects and strings.
fn otel_sdk_records_arrive_once_as_json(sdk: Sdk) {
    if !sdk.installed() {
        return;
    }
    let mut s = TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
        c.format = log_server::format::LineFormat::Json;
    });
    let addr = s.server().grpc_addr().unwrap();
    let out = sdk.command(addr, OTEL_RECORDS).output().unwrap();
    let summary = otel_summary(sdk, &out);
    assert_eq!(summary["exported"], OTEL_RECORDS, "{summary}");
    let lines = s.stop();
    assert_eq!(lines.len(), OTEL_RECORDS, "{sdk:?}: {lines:#?}");
    let (host, logger, file, svc) = sdk.columns();
    let svc = svc.trim_start_matches("svc=");
    let mut seen = vec![0u32; OTEL_RECORDS];
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{sdk:?}: {e}: {line}"));
        let message = v["message"].as_str().unwrap_or_default();
        let n: usize = message
            .strip_prefix("conn=0 n=")
            .and_then(|m| m.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{sdk:?}: message {message:?} in {line}"));
        seen[n] += 1;
        assert!(
            message.contains(&format!("exporter\nsecond line of {n}")),
            "{line}"
        );
        assert_eq!(v["hostname"], host, "{line}");
        assert_eq!(v["logger_name"], logger, "{line}");
        assert_eq!(v["level"], sdk.level(n), "{line}");
        assert_eq!(v["filename"], file, "{line}");
        assert_eq!(v["function_name"], "main", "{line}");
        assert_eq!(v["service_name"], svc, "{line}");
        assert!(v["severity_text"].is_string(), "{line}");
        // Only what no column took, as objects: the Node script's resource
        // is host and service alone (no key), Python's records carry no
        // attribute but the code location (no key).
        for key in ["resource", "attributes"] {
            assert!(v.get(key).is_none_or(|r| r.is_object()), "{key}: {line}");
        }
        assert!(
            v.get("resource").is_some() || v.get("attributes").is_some(),
            "{line}"
        );
        assert_eq!(
            v["stack_trace"].as_str().is_some_and(|t| !t.is_empty()),
            n % 10 == 9,
            "{line}"
        );
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "{sdk:?}: not every record once: {seen:?}"
    );
}

#[test]
fn otel_node_http_protobuf_exporter_records_arrive_once_as_json() {
    otel_sdk_records_arrive_once_as_json(Sdk::Node("proto"));
}

#[test]
fn otel_python_logging_grpc_exporter_records_arrive_once_as_json() {
    otel_sdk_records_arrive_once_as_json(Sdk::Python);
}

/// A common mistake: the logs endpoint variable set to the bare port for an
/// HTTP exporter (the SDK posts to `/`, not `/v1/logs`). Whatever the path,
/// an exporter that is told its records were delivered must find them in
/// the files: an HTTP 200 for a path nobody serves makes the SDK drop them
/// in silence.
#[test]
fn otel_node_http_exporter_at_a_wrong_path_is_not_told_success() {
    let sdk = Sdk::Node("proto");
    if !sdk.installed() {
        return;
    }
    let mut s = TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
    });
    let addr = s.server().grpc_addr().unwrap();
    let out = sdk
        .command(addr, 20)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", format!("http://{addr}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}"));
    let lines = s.stop();
    assert_eq!(
        summary["exported"],
        lines.len(),
        "the SDK was told {} records were delivered, {} are written: {summary}",
        summary["exported"],
        lines.len()
    );
    assert!(!out.status.success(), "{summary}");
}

/// Records and batch size of the full-queue tests: 20 exports of 50, more
/// than the FIFO's pipe buffer (64 KiB, which the stuck writer still
/// fills: some 200 lines) and the queue hold together.
const FULL_QUEUE_RECORDS: usize = 1_000;
const FULL_QUEUE_BATCH: &str = "50";

/// With the writer stuck the queue fills and the server refuses exports as
/// OTLP says; the SDK's exporter retries; once the writer is unstuck (as
/// soon as the client reports its first retry, well inside the SDK's
/// bounded retry time) every record arrives exactly once, in order (both
/// SDKs export one batch at a time).
fn otel_sdk_retries_while_the_queue_is_full(sdk: Sdk) {
    use std::io::{BufRead, BufReader};
    if !sdk.installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, fifo) = stuck_grpc_server(dir.path());
    let mut child = sdk
        .command(server.grpc_addr().unwrap(), FULL_QUEUE_RECORDS)
        .args(["--batch", FULL_QUEUE_BATCH])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (retried, first_retry) = std::sync::mpsc::channel();
    let diagnostics = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains(" retry: ") {
                let _ = retried.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Bounded: the channel closes when the client exits without a retry.
    let saw_retry = first_retry
        .recv_timeout(std::time::Duration::from_secs(60))
        .is_ok();
    let reader = std::thread::spawn(move || std::fs::read(fifo).unwrap());
    let out = child.wait_with_output().unwrap();
    let diagnostics = diagnostics.join().unwrap();
    let report = server.shutdown();
    let lines: Vec<String> = String::from_utf8(reader.join().unwrap())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        saw_retry,
        "{sdk:?} never retried: the queue did not fill, or a refusal was not retryable: {}{diagnostics}",
        String::from_utf8_lossy(&out.stdout)
    );
    let summary = otel_summary(sdk, &out);
    assert!(summary["retries"].as_u64() >= Some(1), "{summary}");
    assert_eq!(summary["exported"], FULL_QUEUE_RECORDS, "{summary}");
    assert_eq!(report.otlp_records, FULL_QUEUE_RECORDS as u64);
    assert_all_once_in_order(&lines, &[FULL_QUEUE_RECORDS]);
}

/// Node's OTLP/gRPC exporter (0.223.1) does not retry: its transport
/// reports every gRPC error, UNAVAILABLE included, as a failure, and the
/// SDK drops the batch (the HTTP exporters do retry 503; Python's gRPC
/// exporter retries UNAVAILABLE). So a full queue costs a Node gRPC client
/// the batches refused while it lasts (`--grpc_queue_wait`, 5 s by default,
/// is how long a stall the server absorbs first). What the server must
/// still do: refuse whole and tell the SDK, so that every record the SDK
/// counts exported is written exactly once and every other one is counted
/// failed by the SDK, none half taken.
#[test]
fn otel_node_grpc_exporter_is_told_of_a_full_queue() {
    let sdk = Sdk::Node("grpc");
    if !sdk.installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, fifo) = stuck_grpc_server(dir.path());
    let out = sdk
        .command(server.grpc_addr().unwrap(), FULL_QUEUE_RECORDS)
        .args(["--batch", FULL_QUEUE_BATCH])
        .output()
        .unwrap();
    let reader = std::thread::spawn(move || std::fs::read(fifo).unwrap());
    let report = server.shutdown();
    let lines: Vec<String> = String::from_utf8(reader.join().unwrap())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}"));
    let exported = summary["exported"].as_u64().unwrap() as usize;
    let failed = summary["failed"].as_u64().unwrap() as usize;
    assert!(failed > 0, "the queue never filled: {summary}");
    assert!(!out.status.success(), "{summary}");
    assert_eq!(exported + failed, FULL_QUEUE_RECORDS, "{summary}");
    assert_eq!(report.otlp_records, exported as u64, "{summary}");
    // The batches before the queue filled, each record once, in order.
    assert_all_once_in_order(&lines, &[exported]);
}

#[test]
fn otel_node_http_protobuf_exporter_retries_while_the_queue_is_full() {
    otel_sdk_retries_while_the_queue_is_full(Sdk::Node("proto"));
}

#[test]
fn otel_node_http_json_exporter_retries_while_the_queue_is_full() {
    otel_sdk_retries_while_the_queue_is_full(Sdk::Node("http"));
}

#[test]
fn otel_python_grpc_exporter_retries_while_the_queue_is_full() {
    otel_sdk_retries_while_the_queue_is_full(Sdk::Python);
}
