//! Faults from the real file system: a full disk, and the log directory or
//! file removed or renamed under the running server.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use log_server::{
    server::{Server, ServerConfig},
    writer::WriterConfig,
};

use crate::util::*;

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`, or says why it cannot. Its root
    /// is 0750 (tmpfs defaults to 1777, a shared log directory the server
    /// refuses).
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_full_disk_holds_writes_until_space_returns_then_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let fs = match Tmpfs::mount(&logs, "96k") {
        Ok(fs) => fs,
        Err(why) => {
            // Mounting needs root (or CAP_SYS_ADMIN): say so, never skip
            // silently; the injected-fault writer tests still run.
            eprintln!("SKIPPED: cannot mount a small tmpfs here ({why})");
            return;
        }
    };
    let server = Server::start(ServerConfig {
        port: 0,
        only_tcp: true,
        log_dir: logs.clone(),
        max_file_size: 64 * 1024,
        max_frame_size: 16 * 1024,
        max_files: 40,
        writer: WriterConfig {
            retry_delays: vec![
                Duration::from_millis(1),
                Duration::from_millis(5),
                Duration::from_millis(10),
            ],
            steady_retry: Duration::from_millis(20),
            ..WriterConfig::default()
        },
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.tcp_addr();
    // ~700 KB of lines into 96 KB of disk.
    let client = thread::spawn(move || send(addr, &frames(0, 3_000, true, Some(500))));
    let writer = server.writer().clone();
    let errors = || {
        writer
            .stats
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_until("the disk is full", || errors() >= 5);
    let stuck_at = writer.written();
    assert!(stuck_at < 3_000, "everything fit");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        writer.written(),
        stuck_at,
        "nothing is written while the disk is full"
    );

    // Space comes back: writing resumes where it stopped.
    fs.resize("8m");
    client.join().unwrap();
    wait_until("every line is written", || writer.written() >= 3_000);
    let report = server.shutdown();
    assert_eq!(report.writer.lines, 3_000);
    assert_eq!(report.writer.abandoned_lines, 0);
    let lines = read_lines(&logs, 40);
    assert_all_once_in_order(&lines, &[3_000]);
    for line in &lines {
        assert!(
            line.starts_with("2026-01-02T15:04:05.000000000Z"),
            "a split or torn line: {line:?}"
        );
    }
}

/// logrotate's default: the active file is renamed under the server. Lines
/// written before the server notices are in the renamed file, the rest in
/// a new `_main.log`; none is lost or doubled.
#[test]
fn a_renamed_log_file_is_noticed_and_a_new_one_started() {
    let mut s = TestServer::start(log_server::ingest::tcp::IoEngine::Auto);
    let logs = s.log_dir();
    send(s.addr(), &frames(0, 1_000, false, None));
    s.wait_written(1_000);
    std::fs::rename(logs.join("_main.log"), logs.join("moved.log")).unwrap();
    thread::sleep(Duration::from_millis(150));
    send(s.addr(), &frames(1, 1_000, false, None));
    s.wait_written(2_000);
    let mut lines = s.stop();
    assert!(!lines.is_empty(), "a new _main.log was created");
    let moved = std::fs::read_to_string(logs.join("moved.log")).unwrap();
    let mut all: Vec<String> = moved.lines().map(str::to_string).collect();
    all.append(&mut lines);
    assert_all_once_in_order(&all, &[1_000, 1_000]);
}

/// The whole log directory removed under the server: it is created again
/// and the lines sent after that are in it.
#[test]
fn a_removed_log_directory_is_created_again() {
    let mut s = TestServer::start(log_server::ingest::tcp::IoEngine::Auto);
    let logs = s.log_dir();
    send(s.addr(), &frames(0, 100, false, None));
    s.wait_written(100);
    std::fs::remove_dir_all(&logs).unwrap();
    thread::sleep(Duration::from_millis(150));
    send(s.addr(), &frames(1, 500, false, None));
    s.wait_written(600);
    let lines = s.stop();
    assert!(logs.join("_main.log").exists());
    assert_all_once_in_order(&lines, &[0, 500]);
}
