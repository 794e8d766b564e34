//! Helpers shared by the integration tests: a server in a temp dir, clients
//! that speak the TCP wire contract, and readers of the log files.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use log_server::{
    ingest::tcp::IoEngine,
    server::{Server, ServerConfig},
};
use log_server_wire::{
    encode::{push_heartbeat, push_hello_frame, push_logger_frame, Packing},
    fields::{Fields, Level},
    output::{rotated_name, ACTIVE},
};

/// A server on 127.0.0.1:0 writing into its own temp dir.
pub(crate) struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub config: ServerConfig,
}

impl TestServer {
    pub(crate) fn start(engine: IoEngine) -> Self {
        Self::start_with(|c| c.io_engine = engine)
    }

    /// Starts with the test defaults changed by `tweak`.
    pub(crate) fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            port: 0,
            log_dir: dir.path().join("logs"),
            // Tests that drain at shutdown do so well within this.
            drain_timeout: Duration::from_secs(10),
            tcp_threads: 2,
            only_tcp: true,
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let server = Server::start(config.clone()).expect("server starts");
        TestServer {
            server: Some(server),
            dir,
            config,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().tcp_addr()
    }

    pub(crate) fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub(crate) fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Shuts the server down and returns every line written, oldest first.
    pub(crate) fn stop(&mut self) -> Vec<String> {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        read_lines(&self.config.log_dir, self.config.writer.max_files)
    }

    /// Waits until the writer has written `n` lines (or panics after 30 s).
    pub(crate) fn wait_written(&self, n: u64) {
        wait_written(self.server(), n);
    }
}

/// Waits until `server`'s writer has written `n` lines (or panics after
/// 30 s).
pub(crate) fn wait_written(server: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let progress = server.progress();
    while progress.written() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} lines written",
            progress.written()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `done` holds, checking every 10 ms; fails the test, saying
/// `what`, after `limit`.
pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A typical message whose text names its connection and its number.
pub(crate) fn message(conn: usize, n: usize) -> String {
    format!("conn={conn} n={n} payload=abcdefghijklmnopqrstuvwxyz0123456789")
}

pub(crate) fn fields(msg: &str) -> Fields<'_> {
    Fields {
        timestamp: "2026-01-02T15:04:05.000000000Z",
        hostname: "testhost",
        logger_name: "tests",
        level: Level(3),
        filename: "tests.rs",
        function_name: "send",
        line_number: "1",
        message: msg,
        ..Fields::default()
    }
}

/// The frames of `count` messages of connection `conn`, packed, with a hello
/// first and a heartbeat every `heartbeat_every` messages when asked.
pub(crate) fn frames(
    conn: usize,
    count: usize,
    hello: bool,
    heartbeat_every: Option<usize>,
) -> Vec<u8> {
    let mut out = Vec::new();
    if hello {
        push_hello_frame(&mut out, &format!("client{conn}"), "testhost");
    }
    for n in 0..count {
        if heartbeat_every.is_some_and(|k| n % k == 0) {
            push_heartbeat(&mut out);
        }
        let packing = if n % 7 == 3 {
            Packing::Unpacked
        } else {
            Packing::Packed
        };
        push_logger_frame(&mut out, &fields(&message(conn, n)), packing);
    }
    out
}

/// Connects and sends `bytes`, in pieces of varying size to exercise
/// reassembly, then closes.
pub(crate) fn send(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut at = 0;
    let mut step = 1;
    while at < bytes.len() {
        let end = (at + step).min(bytes.len());
        s.write_all(&bytes[at..end]).unwrap();
        at = end;
        step = (step * 3 + 1) % 65_521 + 1;
    }
    s.flush().unwrap();
}

/// Reads until end of stream, expecting nothing but end of stream (or a
/// reset) within 10 s: the server closed the connection.
pub(crate) fn assert_closed_by_server(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => panic!("the server never writes on a TCP connection"),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
    }
}

/// A log directory under `root` whose `_main.log` is a FIFO: the writer
/// blocks on it until someone reads it, a stuck disk on demand. Returns
/// the directory and the FIFO.
pub(crate) fn fifo_log_dir(root: &Path) -> (PathBuf, PathBuf) {
    let logs = root.join("logs");
    fs::create_dir_all(&logs).unwrap();
    let fifo = logs.join(ACTIVE);
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    (logs, fifo)
}

/// A server with gRPC (and OTLP) on port 0 whose writer is stuck (its
/// `_main.log` is a FIFO nobody reads yet), whose queue holds four records
/// and which answers a full queue after 200 ms (gRPC UNAVAILABLE, HTTP 503),
/// before anything is taken, with `queued` acks; and the FIFO.
pub(crate) fn stuck_grpc_server(root: &Path) -> (Server, PathBuf) {
    let (logs, fifo) = fifo_log_dir(root);
    let server = Server::start(ServerConfig {
        port: 0,
        grpc_port: 0,
        log_dir: logs,
        queue_capacity: 4,
        grpc_ack: log_server::ingest::grpc::AckMode::Queued,
        grpc_queue_wait: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .unwrap();
    (server, fifo)
}

/// Unsticks a server made by [`stuck_grpc_server`]: reads its FIFO while it
/// shuts down; returns its report and every line the FIFO carried.
pub(crate) fn shutdown_reading_fifo(
    server: Server,
    fifo: PathBuf,
) -> (log_server::server::ShutdownReport, Vec<String>) {
    let reader = std::thread::spawn(move || fs::read(fifo).unwrap());
    let report = server.shutdown();
    let lines = String::from_utf8(reader.join().unwrap())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (report, lines)
}

/// Every line of every log file, oldest file first; every file must end
/// with a whole line (read it once the writer is done).
pub(crate) fn read_lines(dir: &Path, max_files: usize) -> Vec<String> {
    read_log_files(dir, max_files, true)
}

/// Like [`read_lines`] while the server may still be writing: a read can
/// see a write half done, so a last line not yet complete is left out
/// instead of failing.
pub(crate) fn read_lines_so_far(dir: &Path, max_files: usize) -> Vec<String> {
    read_log_files(dir, max_files, false)
}

fn read_log_files(dir: &Path, max_files: usize, whole: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut names: Vec<String> = (0..max_files.saturating_sub(1))
        .rev()
        .map(rotated_name)
        .collect();
    names.push(ACTIVE.to_string());
    for name in names {
        let Ok(bytes) = fs::read(dir.join(&name)) else {
            continue;
        };
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(end) => &bytes[..=end],
            None => &bytes[..0],
        };
        assert!(
            !whole || complete.len() == bytes.len(),
            "{name} ends in a partial line"
        );
        let text = std::str::from_utf8(complete).expect("log lines are UTF-8");
        lines.extend(text.lines().map(str::to_string));
    }
    lines
}

/// `(conn, n)` of a line written from [`message`], or `None`.
pub(crate) fn parse_message(line: &str) -> Option<(usize, usize)> {
    let at = line.find("conn=")?;
    let mut words = line[at..].split_whitespace();
    let conn = words.next()?.strip_prefix("conn=")?.parse().ok()?;
    let n = words.next()?.strip_prefix("n=")?.parse().ok()?;
    Some((conn, n))
}

/// Asserts that `lines` hold exactly `per_conn[c]` messages of each
/// connection `c`, each once, in the order each connection sent them.
pub(crate) fn assert_all_once_in_order(lines: &[String], per_conn: &[usize]) {
    let mut next = vec![0usize; per_conn.len()];
    for line in lines {
        let (c, n) = parse_message(line).unwrap_or_else(|| panic!("unexpected line {line:?}"));
        assert_eq!(
            n, next[c],
            "connection {c}: expected message {} but got {n}",
            next[c]
        );
        next[c] += 1;
    }
    assert_eq!(next, per_conn, "messages per connection");
}

/// Says that a test, or part of one, did not run and why: on stderr, and
/// in the file `LOG_SERVER_SKIPS` names (`.ci/run` sets it, then lists and
/// counts the skips in the run's closing line), so no skip passes unseen.
pub(crate) fn skipped(what: &str) {
    eprintln!("SKIPPED: {what}");
    if let Some(path) = std::env::var_os("LOG_SERVER_SKIPS") {
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{what}"));
    }
}
