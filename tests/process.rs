//! The built `log-server` binary as a user runs it: flags, signals, files;
//! and the shutdown deadline, the process's last act, in-process too.

use std::{
    io::{BufRead, BufReader, Read, Write},
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
    // An explicit --port, as users give it: a port free a moment ago may be
    // taken by someone else before the server binds it, so a start that
    // fails on a port in use tries another one (never more than 5).
    let (mut child, stderr, port) = (0..5)
        .find_map(|_| {
            let port = free_port();
            let mut child = KillOnDrop(
                Command::new(BIN)
                    .args(["--port", &port.to_string(), "--only_tcp", "--log-dir"])
                    .arg(dir.path().join("logs"))
                    .args(["--stats_interval", "0"])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let (mut line, mut said) = (String::new(), String::new());
            while !line.contains("listening") {
                line.clear();
                if stderr.read_line(&mut line).unwrap() == 0 {
                    let status = wait_bounded(&mut child, Duration::from_secs(10));
                    assert!(
                        said.contains("in use"),
                        "the server exited before listening ({status}): {said}"
                    );
                    return None;
                }
                said.push_str(&line);
            }
            assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
            Some((child, stderr, port))
        })
        .expect("five free ports in a row were taken before the server bound them");

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
    let rest = collect_stderr(stderr);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let rest = rest.join().unwrap();
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

/// Starts the binary on port 0 writing into `logs`; returns the child
/// (killed if the test fails) and its port once it says it is listening.
fn start_binary(logs: &std::path::Path, extra: &[&str]) -> (KillOnDrop, u16) {
    let (child, mut stderr, port) = start_on_port_0(logs, extra);
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, port)
}

/// The frames `flood` sends, built before any timing starts.
fn flood_frames(conns: usize) -> Vec<Vec<u8>> {
    (0..conns)
        .map(|c| frames(c, 100_000, false, None))
        .collect()
}

/// Connections sending as fast as they can until the server goes away.
fn flood(port: u16, streams: Vec<Vec<u8>>) -> Vec<std::thread::JoinHandle<()>> {
    streams
        .into_iter()
        .map(|bytes| {
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                for chunk in bytes.chunks(16 * 1024) {
                    if s.write_all(chunk).is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// Lines per connection, asserting each connection's lines are 0, 1, 2, ...
/// with no gap and no repeat.
fn whole_prefixes(lines: &[String], conns: usize) -> Vec<usize> {
    let mut counts = vec![0usize; conns];
    for line in lines {
        if let Some((c, _)) = parse_message(line) {
            counts[c] += 1;
        }
    }
    assert_all_once_in_order(lines, &counts);
    counts
}

#[test]
fn sigterm_under_full_load_leaves_a_whole_prefix_of_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let streams = flood_frames(2);
    let (mut child, port) = start_binary(&logs, &["--max_files", "100"]);
    let clients = flood(port, streams);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) with the child's pid and SIGTERM.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    for c in clients {
        c.join().unwrap();
    }
    assert!(status.success(), "exit status {status}");
    let counts = whole_prefixes(&read_lines(&logs, 100), 2);
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
}

#[test]
fn kill_9_under_load_then_restart_appends_to_well_formed_files() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let streams = flood_frames(2);
    let (mut child, port) = start_binary(&logs, &["--max_files", "100"]);
    let clients = flood(port, streams);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL: no drain, no fsync.
    wait_bounded(&mut child, Duration::from_secs(30));
    for c in clients {
        c.join().unwrap();
    }
    // Restart on the same directory and send a few more from a third stream.
    let (mut child, port) = start_binary(&logs, &["--max_files", "100"]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&frames(2, 100, false, None)).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) with the child's pid and SIGTERM.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());

    // Every line is whole but at most one torn by the crash; each stream is
    // a gap-free prefix; the new stream is complete and on lines of its own.
    let lines = read_lines(&logs, 100);
    let torn: Vec<&String> = lines
        .iter()
        .filter(|l| parse_message(l).is_none())
        .collect();
    assert!(torn.len() <= 1, "{} torn lines", torn.len());
    let whole: Vec<String> = lines
        .iter()
        .filter(|l| parse_message(l).is_some())
        .cloned()
        .collect();
    let mut counts = [0usize; 3];
    for l in &whole {
        counts[parse_message(l).unwrap().0] += 1;
    }
    // A torn line may have eaten the last message of a crashed stream.
    assert_eq!(counts[2], 100);
    let mut next = [0usize; 3];
    for l in &whole {
        let (c, n) = parse_message(l).unwrap();
        assert_eq!(n, next[c], "stream {c} repeats or skips");
        next[c] += 1;
    }
}

/// A child process killed (and reaped) when the test ends, failing or not,
/// so a failed assertion never leaves a server running.
struct KillOnDrop(std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` to exit, at most `limit`; kills it and fails the test
/// if it does not.
fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to `child`.
fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: kill(2) takes no pointers; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// Starts the binary on port 0 with `args` (plus `--only_tcp
/// --stats_interval 0 --log_dir logs`), reads stderr up to the "listening"
/// line and returns the child, its stderr (the rest of it) and the TCP port
/// taken from that line.
fn start_on_port_0(
    logs: &std::path::Path,
    args: &[&str],
) -> (KillOnDrop, BufReader<std::process::ChildStderr>, u16) {
    let mut command = Command::new(BIN);
    command.args(args);
    spawn_on_port_0(command, logs)
}

/// Spawns `command` (the binary with its extra flags) on port 0, TCP only,
/// writing into `logs`; waits for its "listening" line and reads the port
/// from it.
fn spawn_on_port_0(
    mut command: Command,
    logs: &std::path::Path,
) -> (KillOnDrop, BufReader<std::process::ChildStderr>, u16) {
    let mut child = command
        .args(["--port", "0", "--only_tcp", "--stats_interval", "0"])
        .arg("--log_dir")
        .arg(logs)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server exited before listening");
        }
    }
    let at = line
        .find("127.0.0.1:")
        .expect("the listening line names the address")
        + 10;
    let port = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    (KillOnDrop(child), stderr, port)
}

/// Like [`start_on_port_0`], with one resource limit of the server process
/// set to `cur`/`max` (a hard limit the server cannot raise).
fn start_with_limit(
    logs: &std::path::Path,
    args: &[&str],
    resource: libc::__rlimit_resource_t,
    cur: libc::rlim_t,
    max: libc::rlim_t,
) -> (KillOnDrop, BufReader<std::process::ChildStderr>, u16) {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(BIN);
    command.args(args);
    // SAFETY: only setrlimit(2) runs between fork and exec: async-signal-safe,
    // no allocation, no lock.
    unsafe {
        command.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: cur,
                rlim_max: max,
            };
            if libc::setrlimit(resource, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    spawn_on_port_0(command, logs)
}

/// Every line of `extra` (a file renamed away, if it exists) then of the
/// log files, once they hold `n` lines together or after 30 s.
fn wait_for_lines(logs: &std::path::Path, extra: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut lines: Vec<String> = std::fs::read_to_string(extra)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.extend(read_lines_so_far(logs, 10));
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// stderr is a pipe whose reader is gone (a supervisor or `| head` exited):
/// a diagnostic (here: "the log file was renamed") must not take the
/// writer thread down with it. Everything sent afterwards is written, and
/// SIGTERM still exits 0.
#[test]
fn a_dead_stderr_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (mut child, stderr, port) = start_on_port_0(&logs, &[]);
    // The reader of the pipe exits.
    drop(stderr);
    send(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &frames(0, 1, false, None),
    );
    let moved = logs.join("moved.log");
    assert_eq!(wait_for_lines(&logs, &moved, 1).len(), 1);
    // logrotate's move: the writer notices (and says so on stderr) at its
    // first write 100 ms or more after its last look.
    std::fs::rename(logs.join("_main.log"), &moved).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    send(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &frames(1, 5_000, false, None),
    );
    let lines = wait_for_lines(&logs, &moved, 5_001);
    signal(&child, libc::SIGTERM);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert_all_once_in_order(&lines, &[1, 5_000]);
    assert!(
        !read_lines(&logs, 10).is_empty(),
        "the rename was noticed and a new _main.log started"
    );
    assert!(status.success(), "exit status {status}");
}

/// Reads the rest of the child's stderr on a thread of its own (so the
/// server never blocks on it); join it after the child exited.
fn collect_stderr(
    mut stderr: BufReader<std::process::ChildStderr>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    })
}

/// SIGHUP (a closed terminal, or an operator used to it meaning "reopen")
/// and SIGPIPE must not kill the server: it is logged and ignored, and the server goes
/// on taking and writing messages.
#[test]
fn sighup_and_sigpipe_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (mut child, stderr, port) = start_on_port_0(&logs, &[]);
    let stderr = collect_stderr(stderr);
    signal(&child, libc::SIGHUP);
    // SIGPIPE too (the Rust runtime ignores it; a dead peer is an EPIPE).
    signal(&child, libc::SIGPIPE);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // If the SIGHUP killed the server, this connect or the wait fails.
    let sent =
        TcpStream::connect(addr).and_then(|mut s| s.write_all(&frames(0, 1_000, true, None)));
    let lines = wait_for_lines(&logs, &dir.path().join("none"), 1_000);
    let alive = child.try_wait().unwrap().is_none();
    if alive {
        signal(&child, libc::SIGTERM);
    }
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let stderr = stderr.join().unwrap();
    assert!(alive, "SIGHUP killed the server: {status}");
    sent.unwrap();
    assert_all_once_in_order(&lines, &[1_000]);
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(stderr.contains("SIGHUP received: reopening"), "{stderr}");
}

/// logrotate's `create` and `postrotate kill -HUP`: `_main.log` renamed
/// away, a new one created, SIGHUP. Lines sent before the signal are in the
/// renamed file, lines sent after the server reopened in the new one; none
/// lost or doubled, and the process lives on.
#[test]
fn sighup_reopens_the_log_file_as_logrotate_expects() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (mut child, stderr, port) = start_on_port_0(&logs, &[]);
    // Every diagnostic line, as it comes.
    let (said_tx, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = said_tx.send(line);
        }
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    send(addr, &frames(0, 500, false, None));
    let none = dir.path().join("none");
    assert_eq!(wait_for_lines(&logs, &none, 500).len(), 500);
    let rotated = logs.join("_main.log-20261124");
    std::fs::rename(logs.join("_main.log"), &rotated).unwrap();
    std::fs::File::create(logs.join("_main.log")).unwrap();
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = said
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server says it reopened the log file");
        if line.contains("Reopened the log file on SIGHUP") {
            break;
        }
    }
    send(addr, &frames(1, 500, false, None));
    let new = wait_for_lines(&logs, &none, 500);
    signal(&child, libc::SIGTERM);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
    let old: Vec<String> = std::fs::read_to_string(&rotated)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_all_once_in_order(&old, &[500]);
    assert_eq!(new.len(), 500);
    assert!(
        new.iter()
            .all(|l| parse_message(l).is_some_and(|(c, _)| c == 1)),
        "only lines sent after the reopen in the new file"
    );
    let mut all = old;
    all.extend(read_lines(&logs, 10));
    assert_all_once_in_order(&all, &[500, 500]);
}

/// Starts the binary on a FIFO log directory (a stuck disk: writes block
/// once the pipe holds 64 KiB) with a tiny queue, and floods it until the
/// queue is full and a connection waits for room. Returns the child, its
/// stderr collector and the flooding client.
fn start_stuck(
    root: &std::path::Path,
    extra: &[&str],
) -> (
    KillOnDrop,
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<()>,
) {
    let (logs, _fifo) = fifo_log_dir(root);
    let mut args = vec!["--queue_capacity", "4"];
    args.extend_from_slice(extra);
    let (child, stderr, port) = start_on_port_0(&logs, &args);
    let stderr = collect_stderr(stderr);
    // ~4 MB: far more than the pipe and the queue hold.
    let bytes = frames(0, 20_000, false, None);
    let client = std::thread::spawn(move || {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            // Fails once the server is gone; that is the end of it.
            let _ = s.write_all(&bytes);
        }
    });
    // Long enough for the writer to fill the pipe and block, and for the
    // connection to fill the queue and wait; the test holds either way.
    std::thread::sleep(Duration::from_millis(500));
    (child, stderr, client)
}

/// With the file system stuck, a first SIGTERM starts a shutdown that
/// cannot finish before its deadline; a second one ends the process at
/// once, with status 2 and a sentence saying so.
#[test]
fn a_second_signal_exits_at_once_when_the_shutdown_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stderr, client) = start_stuck(dir.path(), &[]);
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let still_running = child.try_wait().unwrap().is_none();
    signal(&child, libc::SIGINT);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    let stderr = stderr.join().unwrap();
    client.join().unwrap();
    assert!(
        still_running,
        "the first signal should start a shutdown that waits for the stuck writer"
    );
    assert_eq!(status.code(), Some(2), "{status}; stderr:\n{stderr}");
    assert!(stderr.contains("Second signal: exiting now"), "{stderr}");
}

/// With the file system stuck, one SIGTERM is enough: the shutdown deadline
/// (`--shutdown_timeout`, from the signal) ends it, the connection waiting
/// for room in the queue gives up, the summary says not everything was
/// written and the exit status is 1.
#[test]
fn a_stuck_file_system_ends_the_shutdown_at_its_deadline_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stderr, client) = start_stuck(dir.path(), &["--shutdown_timeout", "2"]);
    signal(&child, libc::SIGTERM);
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let stderr = stderr.join().unwrap();
    client.join().unwrap();
    assert_eq!(status.code(), Some(1), "{status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("NOT every accepted message is written"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Stopped; every accepted message is written"),
        "{stderr}"
    );
}

/// A file-size limit (`ulimit -f`) below the file: the write past it fails
/// with EFBIG instead of SIGXFSZ killing the process; the writer holds the
/// data and retries, and once the limit is raised every message is written.
#[test]
fn a_file_size_limit_holds_writes_until_raised_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (mut child, stderr, port) = start_with_limit(
        &logs,
        &[],
        libc::RLIMIT_FSIZE,
        64 * 1024,
        libc::RLIM_INFINITY,
    );
    let stderr = collect_stderr(stderr);
    // ~1 MB of lines against a 64 KiB limit.
    send(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &frames(0, 5_000, false, None),
    );
    // Wait until the writer has hit the limit: the file stops at it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(logs.join("_main.log")).map_or(0, |m| m.len()) < 64 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the file never reached the limit"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The writer's first retries (10 ms, 100 ms) meet the limit too.
    std::thread::sleep(Duration::from_millis(300));
    let alive = child.try_wait().unwrap();
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit(2) on our own child, reading one struct.
    let rc = unsafe {
        libc::prlimit(
            child.id() as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    // Until the writer's next retry (within 1 s) the file ends mid-line.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(logs.join("_main.log"))
        .is_ok_and(|t| t.ends_with('\n') && t.lines().count() >= 5_000)
    {
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive.is_none() {
        signal(&child, libc::SIGTERM);
    }
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let stderr = stderr.join().unwrap();
    assert!(alive.is_none(), "killed at the file-size limit: {alive:?}");
    assert_eq!(rc, 0);
    assert_all_once_in_order(&read_lines(&logs, 10), &[5_000]);
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
}

/// The shutdown deadline in-process, for both I/O engines: with the writer
/// stuck on its file and a connection waiting for room in the full queue,
/// `Server::shutdown_by` returns shortly after its deadline (it used to
/// wait forever for that connection) and its report says that not every
/// message taken in was written.
#[test]
fn shutdown_by_returns_at_its_deadline_with_a_stuck_writer_on_both_engines() {
    use log_server::{
        ingest::tcp::{uring_available, IoEngine},
        server::{Server, ServerConfig},
    };
    let mut engines = vec![IoEngine::Epoll];
    if uring_available().is_ok() {
        engines.push(IoEngine::Uring);
    }
    for engine in engines {
        let dir = tempfile::tempdir().unwrap();
        let (logs, fifo) = fifo_log_dir(dir.path());
        let server = Server::start(ServerConfig {
            port: 0,
            only_tcp: true,
            io_engine: engine,
            log_dir: logs,
            queue_capacity: 2,
            tcp_threads: 1,
            ..ServerConfig::default()
        })
        .unwrap();
        let addr = server.tcp_addr();
        let bytes = frames(0, 20_000, false, None);
        let client = std::thread::spawn(move || {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(&bytes);
            }
        });
        // Until the pipe (64 KiB) and the queue are full and the
        // connection waits for room.
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.sequenced() < 1_000 || server.ingress().queue().has_room() {
            assert!(
                Instant::now() < deadline,
                "{engine}: the queue never filled"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(server.shutdown_by(started + Duration::from_secs(1)));
        });
        let report = rx.recv_timeout(Duration::from_secs(20));
        // Unblock the writer left behind, so that it ends with the test.
        let reader = std::thread::spawn(move || std::fs::read(fifo).map(|b| b.len()));
        let report = report.unwrap_or_else(|_| panic!("{engine}: shutdown_by hangs"));
        assert!(!report.complete(), "{engine}: {report:?}");
        assert!(report.unwritten() > 0, "{engine}: {report:?}");
        assert!(report.writer.stuck, "{engine}: {report:?}");
        client.join().unwrap();
        let _ = reader.join();
    }
}

/// The writer always has the descriptors it needs. With the open-files
/// limit at 128 (hard, so the server cannot raise it) and 200 clients
/// holding every connection the server takes, rotation must still open each
/// new `_main.log`: connections that would eat into the reserve kept for
/// the writer are refused instead. Before, the accepted connections used up
/// every descriptor and the first rotation failed with EMFILE forever.
#[test]
fn rotation_still_opens_its_files_when_clients_take_every_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let (mut child, stderr, port) = start_with_limit(
        &logs,
        &[
            "--max_frame_size",
            "4096",
            "--max_file_size",
            "65536",
            "--max_connections",
            "10000",
        ],
        libc::RLIMIT_NOFILE,
        128,
        128,
    );
    let stderr = collect_stderr(stderr);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The first connection is accepted first; the 199 after it take every
    // descriptor the server lets them have, and hold on.
    let mut sender = TcpStream::connect(addr).unwrap();
    let hogs: Vec<TcpStream> = (0..199)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // ~1 MB of lines: about 15 rotations of 64 KiB files.
    sender.write_all(&frames(0, 5_000, false, None)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = read_lines_so_far(&logs, 10);
        if lines.last().and_then(|l| parse_message(l)) == Some((0, 4_999)) {
            // What rotation kept is the unbroken tail of the stream.
            let first = parse_message(&lines[0]).unwrap().1;
            let ns: Vec<usize> = lines.iter().map(|l| parse_message(l).unwrap().1).collect();
            assert_eq!(ns, (first..5_000).collect::<Vec<_>>());
            assert!(
                first > 0,
                "no rotation removed a file: the test did not rotate"
            );
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the last message never reached the files ({} lines); the server said:\n{}",
                lines.len(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hogs);
    drop(sender);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let said = stderr.join().unwrap();
    assert!(status.success(), "{status}: {said}");
    assert!(
        said.contains("descriptors"),
        "the refused connections were reported: {said}"
    );
}

/// Under systemd (`Type=notify`, `WatchdogSec`): READY=1 once the server
/// listens, WATCHDOG=1 at least every half watchdog period while it lives,
/// STOPPING=1 when a shutdown starts; then a clean exit.
#[test]
fn systemd_hears_ready_watchdog_pings_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let hear = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut command = Command::new(BIN);
    command
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000");
    let (mut child, stderr, _port) = spawn_on_port_0(command, &logs);
    let stderr = collect_stderr(stderr);
    assert!(hear().starts_with("READY=1\n"), "READY=1 first");
    // 400 ms watchdog: pings every 200 ms or sooner.
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(hear(), "WATCHDOG=1");
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "three pings took {:?}",
        start.elapsed()
    );
    signal(&child, libc::SIGTERM);
    let stopping = (0..100)
        .map(|_| hear())
        .find(|m| m != "WATCHDOG=1")
        .expect("a notification other than the watchdog's");
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let said = stderr.join().unwrap();
    assert!(status.success(), "{status}: {said}");
}

/// Diagnostics off a terminal carry no colour codes, and with
/// `--log_format json` every line is one JSON object with its level,
/// message and fields, the shutdown summary included.
#[test]
fn diagnostics_are_plain_off_a_terminal_and_json_on_request() {
    for json in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let args: &[&str] = if json { &["--log_format", "json"] } else { &[] };
        let (mut child, stderr, port) = start_on_port_0(&logs, args);
        let stderr = collect_stderr(stderr);
        send(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &frames(0, 10, false, None),
        );
        signal(&child, libc::SIGTERM);
        let status = wait_bounded(&mut child, Duration::from_secs(20));
        let said = stderr.join().unwrap();
        assert!(status.success(), "{status}: {said}");
        assert!(
            !said.contains('\x1b'),
            "colour codes off a terminal: {said:?}"
        );
        if json {
            let events: Vec<serde_json::Value> = said
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
                .collect();
            assert!(events
                .iter()
                .all(|e| e["level"].is_string() && e["message"].is_string()));
            let summary = events
                .iter()
                .find(|e| e["message"] == "Stopped; every accepted message is written.")
                .expect("the summary");
            assert_eq!(summary["lines"], 10, "{summary}");
        }
    }
}

/// Where the time goes, by stage: `--histogram_out FILE` writes the whole
/// receive-to-written distribution to FILE and its two parts (received to
/// queued, queued to written) beside it; the summary gives all three.
#[test]
fn latency_is_reported_by_stage() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let hgrm = dir.path().join("lat.hgrm");
    let out = hgrm.to_str().unwrap().to_string();
    let (mut child, stderr, port) =
        start_on_port_0(&logs, &["--histogram_out", &out, "--log_format", "json"]);
    let stderr = collect_stderr(stderr);
    send(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &frames(0, 100, false, None),
    );
    wait_for_lines(&logs, &dir.path().join("none"), 100);
    signal(&child, libc::SIGTERM);
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let said = stderr.join().unwrap();
    assert!(status.success(), "{status}: {said}");
    for name in [
        "lat.hgrm",
        "lat.received-to-queued.hgrm",
        "lat.queued-to-written.hgrm",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.contains("Total count    =          100]"),
            "{name}: {text}"
        );
    }
    let summary: serde_json::Value = said
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["message"] == "Stopped; every accepted message is written.")
        .expect("the summary");
    for field in ["latency", "to_queue", "queue_to_written"] {
        assert!(
            summary[field]
                .as_str()
                .is_some_and(|s| s.starts_with("n=100 ")),
            "{field}: {summary}"
        );
    }
}

/// The value of `key=` in a diagnostics line, as a number.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_forwarding_server_killed_then_stopped_then_started_again_forwards_every_line_at_least_once() {
    // B: OTLP ingest, in-process.
    let b = TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
    });
    let url = format!("http://{}", b.server().grpc_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let args = [
        "--forward_otlp",
        url.as_str(),
        "--max_file_size",
        "1048576",
        "--max_frame_size",
        "65536",
        "--forward_batch_lines",
        "256",
    ];
    // Run 1: killed (-9) while lines are being forwarded.
    let (mut child, port) = start_binary(&logs, &args);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&frames(0, 30_000, false, None)).unwrap();
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_lines_so_far(&b.config.log_dir, 10).len() < 2_000 {
        assert!(Instant::now() < deadline, "nothing forwarded");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    wait_bounded(&mut child, Duration::from_secs(30));
    // Run 2: more lines, then SIGTERM.
    let (mut child, mut stderr, port) = start_on_port_0(&logs, &args);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&frames(1, 5_000, false, None)).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    assert!(
        wait_bounded(&mut child, Duration::from_secs(30)).success(),
        "{err}"
    );
    let summary = err.lines().find(|l| l.contains("Stopped;")).unwrap_or("");
    let resent = field(summary, "forward_resent").unwrap_or_else(|| panic!("{err}"));
    // Run 3: forwards whatever is left, then stops.
    let (mut child, mut stderr, port) = start_on_port_0(&logs, &args);
    let run3 = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&frames(2, 1_000, false, None)).unwrap();
    drop(s);
    let in_a: std::collections::BTreeSet<(usize, usize)> = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines: Vec<_> = read_lines_so_far(&logs, 10)
                .iter()
                .filter_map(|l| parse_message(l))
                .collect();
            if lines.iter().filter(|m| m.0 == 2).count() == 1_000 {
                break lines.into_iter().collect();
            }
            assert!(Instant::now() < deadline, "run 3 did not write its lines");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_b = loop {
        let got: Vec<_> = read_lines_so_far(&b.config.log_dir, 10)
            .iter()
            .filter_map(|l| parse_message(l))
            .collect();
        let distinct: std::collections::BTreeSet<_> = got.iter().copied().collect();
        if in_a.is_subset(&distinct) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "B has {} of A's {} lines",
            in_a.intersection(&distinct).count(),
            in_a.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    signal(&child, libc::SIGTERM);
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());
    let err = run3.join().unwrap();
    let summary = err.lines().find(|l| l.contains("Stopped;")).unwrap_or("");
    let resent = resent + field(summary, "forward_resent").unwrap_or_else(|| panic!("{err}"));
    // At least once: every line of A's files is in B. Twice only for the
    // lines the restarts after the kill said they sent again.
    let twice = in_b.len() - in_b.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(
        twice as u64 <= resent,
        "{twice} lines twice, {resent} resent"
    );
    // The runs after the kill wrote all they were sent; the killed one at
    // least what was forwarded before the kill.
    let per_conn = |c| in_a.iter().filter(|m| m.0 == c).count();
    assert!(per_conn(0) >= 2_000, "run 1 wrote {}", per_conn(0));
    assert_eq!((per_conn(1), per_conn(2)), (5_000, 1_000));
}
