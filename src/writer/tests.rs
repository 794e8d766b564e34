//! Writer tests on real files in temp dirs, with injected faults.

use std::{
    fs,
    io::{self, IoSlice},
    path::Path,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use super::{
    compress::{self, Compression},
    file::{DirError, DirOptions, EntryKind, LogDir, LogFile, Opened, RealDir},
    rotate::{rotated_name, Files, ACTIVE},
    *,
};
use crate::{progress::Progress, queue::Sequencer, record::Record};

/// Faults to inject, shared by a [`FaultyDir`] and its files.
#[derive(Debug, Default)]
struct Faults {
    /// Fail this many of the next writes...
    fail_writes: usize,
    /// ...after letting this many through first.
    fail_after: usize,
    /// Write at most this many bytes per call.
    short_writes: Option<usize>,
    /// Fail this many of the next renames.
    fail_renames: usize,
    /// Fail this many of the next opens.
    fail_opens: usize,
    /// Writes that failed, for assertions.
    failed: usize,
    /// Panic on the next write (a bug in the writer thread).
    panic_on_write: bool,
}

#[derive(Debug)]
struct FaultyDir {
    real: RealDir,
    faults: Arc<Mutex<Faults>>,
}

struct FaultyFile {
    real: fs::File,
    faults: Arc<Mutex<Faults>>,
}

impl LogFile for FaultyFile {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut f = self.faults.lock().unwrap();
        if f.panic_on_write {
            drop(f);
            panic!("injected panic in the writer thread");
        }
        if f.fail_writes > 0 && f.fail_after > 0 {
            f.fail_after -= 1;
        } else if f.fail_writes > 0 {
            f.fail_writes -= 1;
            f.failed += 1;
            return Err(io::Error::other("injected write failure"));
        }
        match f.short_writes {
            Some(max) => {
                // Write only the first `max` bytes of the first slice.
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                let n = first.len().min(max);
                LogFile::write_vectored(&mut self.real, &[IoSlice::new(&first[..n])])
            }
            None => LogFile::write_vectored(&mut self.real, bufs),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        LogFile::sync(&mut self.real)
    }

    fn id(&self) -> io::Result<super::file::FileId> {
        LogFile::id(&self.real)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.real, buf, offset)
    }
}

impl LogDir for FaultyDir {
    type File = FaultyFile;

    fn open_append(&mut self, name: &str) -> io::Result<Opened<FaultyFile>> {
        {
            let mut f = self.faults.lock().unwrap();
            if f.fail_opens > 0 {
                f.fail_opens -= 1;
                return Err(io::Error::other("injected open failure"));
            }
        }
        let o = self.real.open_append(name)?;
        Ok(Opened {
            file: FaultyFile {
                real: o.file,
                faults: self.faults.clone(),
            },
            len: o.len,
            torn: o.torn,
        })
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut f = self.faults.lock().unwrap();
        if f.fail_renames > 0 {
            f.fail_renames -= 1;
            return Err(io::Error::other("injected rename failure"));
        }
        drop(f);
        self.real.rename(from, to)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.real.remove(name)
    }

    fn id(&mut self, name: &str) -> io::Result<Option<super::file::FileId>> {
        self.real.id(name)
    }

    fn kind(&mut self, name: &str) -> io::Result<EntryKind> {
        self.real.kind(name)
    }

    fn try_clone(&self) -> io::Result<Self> {
        Ok(FaultyDir {
            real: self.real.try_clone()?,
            faults: self.faults.clone(),
        })
    }
}

fn fast_retries() -> WriterConfig {
    WriterConfig {
        retry_delays: vec![
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_millis(3),
        ],
        steady_retry: Duration::from_millis(5),
        ..WriterConfig::default()
    }
}

/// Watermarks for a writer whose first line is `first_seq`.
fn progress_from(first_seq: u64) -> Arc<Progress> {
    Arc::new(Progress::new(first_seq))
}

/// A record of `count` lines `seq=<n> <tag>` starting at `seq`.
fn record(seq: u64, count: u32, tag: &str) -> Record {
    let mut lines = Vec::new();
    for s in seq..seq + u64::from(count) {
        lines.extend_from_slice(format!("seq={s:010} {tag}\n").as_bytes());
    }
    Record {
        seq,
        count,
        received: Instant::now(),
        queued: Instant::now(),
        lines,
    }
}

/// `producers` threads each push `records` records of 1..=3 lines, taking
/// their numbers from one sequencer, like ingest threads do. Returns the
/// number of lines pushed.
fn produce(
    queue: &Arc<RecordQueue>,
    seq: &Arc<Sequencer>,
    producers: usize,
    records: usize,
) -> u64 {
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let (queue, seq) = (queue.clone(), seq.clone());
            thread::spawn(move || {
                let mut lines = 0;
                for i in 0..records {
                    let count = (i % 3 + 1) as u32;
                    let first = seq.reserve(count);
                    queue.push(record(first, count, &format!("p{p} r{i}")));
                    lines += u64::from(count);
                }
                lines
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// All files of `dir`, oldest first; a compressed rotated file
/// (`.gz`, `.zst`) decompressed. A slot holds one file under one name.
fn files_oldest_first(dir: &Path, max_files: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in (0..max_files.saturating_sub(1)).rev() {
        let name = rotated_name(i);
        let mut found: Vec<(String, Vec<u8>)> = Vec::new();
        if let Ok(bytes) = fs::read(dir.join(&name)) {
            found.push((name.clone(), bytes));
        }
        if let Ok(z) = fs::read(dir.join(format!("{name}.gz"))) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z[..]), &mut bytes)
                .unwrap();
            found.push((format!("{name}.gz"), bytes));
        }
        if let Ok(z) = fs::read(dir.join(format!("{name}.zst"))) {
            found.push((format!("{name}.zst"), zstd::decode_all(&z[..]).unwrap()));
        }
        assert!(
            found.len() <= 1,
            "slot {i} under two names: {:?}",
            found.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        out.extend(found);
    }
    if let Ok(bytes) = fs::read(dir.join(ACTIVE)) {
        out.push((ACTIVE.to_string(), bytes));
    }
    out
}

/// Runs a writer with `config` over a new temp dir while two producers
/// push `per_producer` one-line records each; returns the dir, the lines
/// produced and the report.
fn write_through(
    config: WriterConfig,
    per_producer: usize,
) -> (tempfile::TempDir, u64, WriterReport) {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(256, 1 << 20));
    let seq = Arc::new(Sequencer::starting_at(0));
    let writer = spawn(dir.path(), config, queue.clone(), progress_from(0)).unwrap();
    let lines = produce(&queue, &seq, 2, per_producer);
    let report = writer.shutdown();
    assert_eq!(report.lines, lines);
    (dir, lines, report)
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Sequence numbers of all lines of all files, oldest first; panics on a
/// line that is not one of ours (a split or torn line).
fn sequences(dir: &Path, max_files: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for (name, bytes) in files_oldest_first(dir, max_files) {
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends in a partial line"
        );
        for line in text.lines() {
            let n = line
                .strip_prefix("seq=")
                .and_then(|l| l.get(..10))
                .unwrap_or_else(|| panic!("malformed line {line:?} in {name}"));
            seqs.push(n.parse().unwrap());
        }
    }
    seqs
}

fn assert_exactly_once_in_order(seqs: &[u64], first: u64, total: u64) {
    assert_eq!(seqs.len() as u64, total, "line count");
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, first + i as u64, "line {i} out of order or duplicated");
    }
}

#[test]
fn concurrent_producers_every_line_once_in_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let seq = Arc::new(Sequencer::starting_at(0));
    let writer = spawn(
        dir.path(),
        WriterConfig::default(),
        queue.clone(),
        progress_from(0),
    )
    .unwrap();
    let lines = produce(&queue, &seq, 4, 5_000);
    let report = writer.shutdown();
    assert_eq!(report.lines, lines);
    assert_eq!(report.abandoned_lines, 0);
    assert_eq!(report.latency.count, lines);
    assert_exactly_once_in_order(&sequences(dir.path(), 10), 0, lines);
}

#[test]
fn rotation_keeps_files_under_the_limit_and_lines_whole() {
    let config = WriterConfig {
        max_file_size: MIN_MAX_FILE_SIZE,
        max_files: 4,
        ..WriterConfig::default()
    };
    let (dir, lines, report) = write_through(config, 2_000);
    assert!(
        report.rotations > 10,
        "rotated only {} times",
        report.rotations
    );

    let names = names_in(dir.path());
    assert!(names.len() <= 4, "{names:?}");
    for (name, bytes) in files_oldest_first(dir.path(), 4) {
        assert!(
            bytes.len() as u64 <= MIN_MAX_FILE_SIZE,
            "{name} is {} bytes",
            bytes.len()
        );
    }
    // The oldest files were dropped: what is left is the newest lines, contiguous.
    let seqs = sequences(dir.path(), 4);
    let first = seqs[0];
    assert!(first > 0);
    assert_exactly_once_in_order(&seqs, first, lines - first);
}

#[test]
fn short_writes_resume_at_the_exact_byte() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Mutex::new(Faults {
        short_writes: Some(7),
        ..Faults::default()
    }));
    let fs_dir = FaultyDir {
        real: RealDir::open(dir.path(), DirOptions::default()).unwrap(),
        faults: faults.clone(),
    };
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let seq = Arc::new(Sequencer::starting_at(0));
    let writer = spawn_with(fs_dir, fast_retries(), queue.clone(), progress_from(0)).unwrap();
    let lines = produce(&queue, &seq, 2, 200);
    let report = writer.shutdown();
    assert_eq!(report.lines, lines);
    assert_exactly_once_in_order(&sequences(dir.path(), 10), 0, lines);
}

/// Fails `n` writes in a row in the middle of a run, then lets them through.
fn run_with_failing_writes(n: usize) -> (WriterReport, usize, Vec<u64>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Mutex::new(Faults::default()));
    let fs_dir = FaultyDir {
        real: RealDir::open(dir.path(), DirOptions::default()).unwrap(),
        faults: faults.clone(),
    };
    let queue = Arc::new(RecordQueue::new(16, 1 << 20));
    let seq = Arc::new(Sequencer::starting_at(0));
    let writer = spawn_with(fs_dir, fast_retries(), queue.clone(), progress_from(0)).unwrap();
    let mut lines = produce(&queue, &seq, 1, 100);
    faults.lock().unwrap().fail_writes = n;
    lines += produce(&queue, &seq, 2, 300);
    let report = writer.shutdown();
    let failed = faults.lock().unwrap().failed;
    (report, failed, sequences(dir.path(), 10), lines)
}

#[test]
fn two_failed_writes_are_retried_with_nothing_lost_or_doubled() {
    let (report, failed, seqs, lines) = run_with_failing_writes(2);
    assert_eq!(failed, 2);
    assert_eq!(report.retries, 2);
    assert_eq!(report.lines, lines);
    assert_exactly_once_in_order(&seqs, 0, lines);
}

#[test]
fn ten_failed_writes_reopen_the_file_and_recover() {
    let (report, failed, seqs, lines) = run_with_failing_writes(10);
    assert_eq!(failed, 10);
    assert_eq!(report.retries, 10);
    assert_eq!(report.abandoned_lines, 0);
    assert_exactly_once_in_order(&seqs, 0, lines);
}

#[test]
fn failed_renames_and_opens_during_rotation_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Mutex::new(Faults::default()));
    let fs_dir = FaultyDir {
        real: RealDir::open(dir.path(), DirOptions::default()).unwrap(),
        faults: faults.clone(),
    };
    let config = WriterConfig {
        max_file_size: MIN_MAX_FILE_SIZE,
        max_files: 50,
        ..fast_retries()
    };
    let queue = Arc::new(RecordQueue::new(16, 1 << 20));
    let seq = Arc::new(Sequencer::starting_at(0));
    let writer = spawn_with(fs_dir, config, queue.clone(), progress_from(0)).unwrap();
    let mut lines = produce(&queue, &seq, 1, 100);
    {
        let mut f = faults.lock().unwrap();
        f.fail_renames = 3;
        f.fail_opens = 2;
    }
    lines += produce(&queue, &seq, 1, 400);
    let report = writer.shutdown();
    assert!(report.retries >= 5, "retries: {}", report.retries);
    assert_eq!(report.lines, lines);
    for (name, bytes) in files_oldest_first(dir.path(), 50) {
        assert!(
            bytes.len() as u64 <= MIN_MAX_FILE_SIZE,
            "{name} is {} bytes",
            bytes.len()
        );
    }
    assert_exactly_once_in_order(&sequences(dir.path(), 50), 0, lines);
}

#[test]
fn shutdown_drains_the_queue_and_reorder_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(1024, 64 << 20));
    // Push everything out of order before the writer even starts.
    for s in (0..500u64).rev() {
        queue.try_push(record(s, 1, "x")).unwrap();
    }
    let writer = spawn(
        dir.path(),
        WriterConfig::default(),
        queue.clone(),
        progress_from(0),
    )
    .unwrap();
    let report = writer.shutdown();
    assert_eq!(report.lines, 500);
    assert!(queue.is_empty());
    assert_exactly_once_in_order(&sequences(dir.path(), 10), 0, 500);
}

#[test]
fn the_written_watermark_covers_what_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let writer = spawn(
        dir.path(),
        WriterConfig::default(),
        queue.clone(),
        progress_from(100),
    )
    .unwrap();
    let shared = writer.progress().clone();
    assert_eq!(shared.written(), 100);
    queue.push(record(100, 5, "a"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.written() < 105 {
        assert!(
            Instant::now() < deadline,
            "watermark stuck at {}",
            shared.written()
        );
        thread::sleep(Duration::from_millis(1));
    }
    // Everything below the watermark is in the file already.
    assert_exactly_once_in_order(&sequences(dir.path(), 10), 100, 5);
    // A record behind a gap does not move it.
    queue.push(record(110, 1, "b"));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(shared.written(), 105);
    queue.push(record(105, 5, "c"));
    let report = writer.shutdown();
    assert_eq!(report.lines, 11);
    assert_eq!(shared.written(), 111);
    assert_eq!(shared.synced(), 111);
}

/// With `--fsync rotate` the watermark `synced` moves only at shutdown,
/// after the final fsync: a task waiting on it (a gRPC call with
/// `--grpc_ack synced`) must be woken then, not left waiting forever.
#[test]
fn the_final_sync_wakes_whoever_waits_for_synced() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let config = WriterConfig {
        fsync: FsyncPolicy::Rotate,
        ..WriterConfig::default()
    };
    let progress = progress_from(0);
    let writer = spawn(dir.path(), config, queue.clone(), progress.clone()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let waiter = {
        let progress = progress.clone();
        thread::spawn(move || {
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), progress.wait_synced(3))
                    .await
                    .is_ok()
            })
        })
    };
    queue.push(record(0, 3, "a"));
    let report = writer.shutdown();
    assert_eq!(report.lines, 3);
    assert_eq!(progress.synced(), 3);
    assert!(
        waiter.join().unwrap(),
        "the waiter for synced was not woken by the final fsync"
    );
}

/// A gap given up on is counted, and a record that turns up after its gap
/// was skipped is dropped and counted, not written out of order: the file
/// keeps one global order and the report says what is missing.
#[test]
fn a_gap_that_never_closes_is_skipped_counted_and_a_late_record_not_written_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let config = WriterConfig {
        gap_timeout: Duration::from_millis(50),
        ..WriterConfig::default()
    };
    let writer = spawn(dir.path(), config, queue.clone(), progress_from(0)).unwrap();
    let shared = writer.shared().clone();
    let progress = writer.progress().clone();
    queue.push(record(0, 1, "a"));
    queue.push(record(3, 1, "d")); // 1 and 2 are pushed only after the skip
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.written() < 4 {
        assert!(Instant::now() < deadline, "gap never skipped");
        thread::sleep(Duration::from_millis(5));
    }
    queue.push(record(1, 2, "b"));
    queue.push(record(4, 1, "e"));
    let report = writer.shutdown();
    assert_eq!(sequences(dir.path(), 10), vec![0, 3, 4]);
    assert_eq!(report.lines, 3);
    assert_eq!(report.skipped, 2);
    assert_eq!(report.late_lines, 2);
    assert!(!report.complete());
    assert_eq!(shared.stats.gap_skips.get(), 1);
    assert_eq!(shared.stats.late_records.get(), 1);
}

/// The writer thread dying is visible before any shutdown (the binary
/// polls it and exits non-zero) and in the report: never a quiet loss.
#[test]
fn a_writer_thread_that_dies_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Mutex::new(Faults {
        panic_on_write: true,
        ..Faults::default()
    }));
    let faulty = FaultyDir {
        real: RealDir::open(dir.path(), DirOptions::default()).unwrap(),
        faults,
    };
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let writer = spawn_with(
        faulty,
        WriterConfig::default(),
        queue.clone(),
        progress_from(0),
    )
    .unwrap();
    assert!(!writer.is_finished());
    queue.push(record(0, 3, "a"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the writer should have died");
        thread::sleep(Duration::from_millis(5));
    }
    let report = writer.shutdown();
    assert!(report.died);
    assert!(!report.complete());
    assert_eq!(report.lines, 0);
}

/// Without a gap nor a failure the report is complete: the summary may say
/// every accepted message is written.
#[test]
fn a_clean_run_reports_complete() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let writer = spawn(
        dir.path(),
        WriterConfig::default(),
        queue.clone(),
        progress_from(0),
    )
    .unwrap();
    queue.push(record(1, 1, "b"));
    queue.push(record(0, 1, "a"));
    let report = writer.shutdown();
    assert_eq!((report.lines, report.skipped, report.late_lines), (2, 0, 0));
    assert!(report.complete());
}

#[test]
fn an_existing_file_is_appended_to_and_a_torn_line_terminated() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(ACTIVE), b"seq=0000000000 old\nseq=00000000").unwrap();
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let writer = spawn(
        dir.path(),
        WriterConfig::default(),
        queue.clone(),
        progress_from(1),
    )
    .unwrap();
    queue.push(record(1, 2, "new"));
    writer.shutdown();
    let text = fs::read_to_string(dir.path().join(ACTIVE)).unwrap();
    assert_eq!(
        text,
        "seq=0000000000 old\nseq=00000000\nseq=0000000001 new\nseq=0000000002 new\n"
    );
}

#[test]
fn an_unwritable_directory_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let queue = Arc::new(RecordQueue::new(4, 1024));
    let err = spawn(
        file.join("logs"),
        WriterConfig::default(),
        queue,
        progress_from(0),
    )
    .unwrap_err();
    assert!(matches!(err, WriterError::Open { .. }), "{err}");
}

#[test]
fn limits_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(RecordQueue::new(4, 1024));
    let zero_files = WriterConfig {
        max_files: 0,
        ..WriterConfig::default()
    };
    assert!(matches!(
        spawn(dir.path(), zero_files, queue.clone(), progress_from(0)),
        Err(WriterError::Config(_))
    ));
    let tiny = WriterConfig {
        max_file_size: 10,
        ..WriterConfig::default()
    };
    assert!(matches!(
        spawn(dir.path(), tiny, queue, progress_from(0)),
        Err(WriterError::Config(_))
    ));
}

/// A write that fails after a short one (a disk filling up) leaves part of a
/// line in the file; the reopen after repeated failures must carry on after
/// that part, not take it for a line torn by a crash.
#[test]
fn a_reopen_in_the_middle_of_a_line_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Mutex::new(Faults {
        short_writes: Some(5),
        ..Faults::default()
    }));
    let fs_dir = FaultyDir {
        real: RealDir::open(dir.path(), DirOptions::default()).unwrap(),
        faults: faults.clone(),
    };
    let queue = Arc::new(RecordQueue::new(16, 1 << 20));
    let writer = spawn_with(fs_dir, fast_retries(), queue.clone(), progress_from(0)).unwrap();
    queue.push(record(0, 1, "first"));
    let progress = writer.progress().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.written() < 1 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(1));
    }
    // Two 5-byte writes into the next line, then five failures (more than
    // the three quick retries: the file is reopened).
    {
        let mut f = faults.lock().unwrap();
        f.fail_after = 2;
        f.fail_writes = 5;
    }
    queue.push(record(1, 2, "second"));
    let report = writer.shutdown();
    assert_eq!(report.lines, 3);
    assert!(report.retries >= 5);
    assert_exactly_once_in_order(&sequences(dir.path(), 10), 0, 3);
}

/// A directory where a rotated file should go (`_main.log.1`, not empty)
/// cannot be renamed over nor removed: rotation skips that slot and goes on,
/// every line is written, and the directory is left alone. A symbolic link
/// at another slot is replaced by rename, never followed.
#[test]
fn a_directory_in_a_rotated_slot_is_skipped_and_never_blocks_writes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let blocked = logs.join(rotated_name(1));
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("keep"), b"not ours\n").unwrap();
    let outside = dir.path().join("outside.txt");
    fs::write(&outside, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&outside, logs.join(rotated_name(3))).unwrap();

    let config = WriterConfig {
        max_file_size: MIN_MAX_FILE_SIZE,
        max_files: 5,
        // Before the fix the writer retried the blocked rename forever: give
        // up soon after shutdown so that the test fails instead of hanging.
        shutdown_timeout: Duration::from_secs(2),
        ..fast_retries()
    };
    // Room for everything, so producers never wait on a stuck writer.
    let queue = Arc::new(RecordQueue::new(1 << 16, 64 << 20));
    let seq = Arc::new(Sequencer::starting_at(0));
    let writer = spawn(&logs, config, queue.clone(), progress_from(0)).unwrap();
    let lines = produce(&queue, &seq, 2, 1_000);
    let report = writer.shutdown();
    assert_eq!(report.abandoned_lines, 0, "writes were blocked");
    assert_eq!(report.lines, lines);
    assert!(
        report.rotations > 10,
        "rotated only {} times",
        report.rotations
    );

    assert_eq!(fs::read(blocked.join("keep")).unwrap(), b"not ours\n");
    assert_eq!(fs::read(&outside).unwrap(), b"precious\n");
    assert!(fs::symlink_metadata(logs.join(rotated_name(3)))
        .unwrap()
        .is_file());
    // Four slots for rotated files, one taken by the directory: three
    // rotated files and the active one, each within the limit, holding the
    // newest lines without a gap.
    let files = files_oldest_first(&logs, 5);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["_main.log.3", "_main.log.2", "_main.log.0", "_main.log"]
    );
    for (name, bytes) in &files {
        assert!(
            bytes.len() as u64 <= MIN_MAX_FILE_SIZE,
            "{name} is {} bytes",
            bytes.len()
        );
    }
    let seqs = sequences(&logs, 5);
    let first = seqs[0];
    assert_exactly_once_in_order(&seqs, first, lines - first);
}

/// A hard link planted as `_main.log` (another name of a file outside the
/// directory, same file system) is refused at startup with one sentence,
/// and the file is not touched.
#[test]
fn a_hard_link_at_the_active_name_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let outside = dir.path().join("outside.txt");
    fs::write(&outside, b"precious").unwrap();
    fs::hard_link(&outside, logs.join(ACTIVE)).unwrap();
    let queue = Arc::new(RecordQueue::new(4, 1024));
    let err = spawn(
        &logs,
        WriterConfig::default(),
        queue.clone(),
        progress_from(0),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, WriterError::Dir(DirError::NotAFile { .. })),
        "{msg}"
    );
    assert!(msg.contains("_main.log is a file with 2 names"), "{msg}");
    // Not even the newline that terminates a torn line was written.
    assert_eq!(fs::read(&outside).unwrap(), b"precious");
}

/// The directory itself may be a symbolic link (the operator's choice):
/// it is followed once, at startup, and the files land in its target.
#[test]
fn a_symlinked_log_directory_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = dir.path().join("logs");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let queue = Arc::new(RecordQueue::new(64, 1 << 20));
    let writer = spawn(
        &link,
        WriterConfig::default(),
        queue.clone(),
        progress_from(0),
    )
    .unwrap();
    queue.push(record(0, 3, "x"));
    writer.shutdown();
    assert_exactly_once_in_order(&sequences(&real, 10), 0, 3);
}

/// `--compress gzip|zstd`: every rotated file ends up compressed in its
/// slot, no plain rotated file and no temporary file is left, the chain
/// keeps at most `max_files` files, and every line is in them once, in
/// order, once decompressed.
#[test]
fn compressed_rotation_keeps_every_line_once_and_the_chain_bounded() {
    for how in [Compression::Gzip, Compression::Zstd] {
        let config = WriterConfig {
            max_file_size: MIN_MAX_FILE_SIZE,
            max_files: 6,
            compress: how,
            ..WriterConfig::default()
        };
        let (dir, lines, report) = write_through(config, 1_000);
        assert!(
            report.rotations > 5,
            "rotated only {} times",
            report.rotations
        );
        let suffix = how.suffix().unwrap();
        let names = names_in(dir.path());
        assert!(names.len() <= 6, "{names:?}");
        for name in &names {
            assert!(
                name == ACTIVE || name.ends_with(suffix),
                "{how:?}: {name} is neither the active file nor compressed ({names:?})"
            );
        }
        let seqs = sequences(dir.path(), 6);
        let first = seqs[0];
        assert!(first > 0, "the oldest files were rotated out");
        assert_exactly_once_in_order(&seqs, first, lines - first);
    }
}

/// A crash in the middle of compressing leaves the temporary file, or a
/// plain rotated file beside its whole compressed copy: at startup both
/// are cleaned up, and no final name ever held a partial file.
#[test]
fn a_crash_while_compressing_is_cleaned_up_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let gz = |text: &str| {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, text.as_bytes()).unwrap();
        z.finish().unwrap()
    };
    fs::write(dir.path().join(compress::TEMP), b"half a gzip stream").unwrap();
    fs::write(dir.path().join(rotated_name(0)), "seq=0000000001 b\n").unwrap();
    fs::write(
        dir.path().join(format!("{}.gz", rotated_name(0))),
        gz("seq=0000000001 b\n"),
    )
    .unwrap();
    fs::write(
        dir.path().join(format!("{}.gz", rotated_name(1))),
        gz("seq=0000000000 a\n"),
    )
    .unwrap();
    let config = WriterConfig {
        max_files: 4,
        compress: Compression::Gzip,
        ..WriterConfig::default()
    };
    let queue = Arc::new(RecordQueue::new(16, 1 << 20));
    let writer = spawn(dir.path(), config, queue, progress_from(2)).unwrap();
    writer.shutdown();
    assert!(
        !dir.path().join(compress::TEMP).exists(),
        "the temporary file is removed"
    );
    assert!(
        !dir.path().join(rotated_name(0)).exists(),
        "the plain copy is removed"
    );
    assert_eq!(sequences(dir.path(), 4), vec![0, 1]);
}

/// Rotation removes the oldest file by name but hands it back still open,
/// so that freeing its blocks (milliseconds for a full file on ext4) is
/// the closer's cost, not the writer's; the chain stays bounded.
#[test]
fn rotation_hands_the_removed_file_back_open() {
    let dir = tempfile::tempdir().unwrap();
    let real = RealDir::open(dir.path(), DirOptions::default()).unwrap();
    let mut files = Files::open(real, 3).unwrap();
    for round in 0..4u8 {
        files
            .write_vectored(&[IoSlice::new(&[b'a' + round, b'\n'])])
            .unwrap();
        files.rotate().unwrap();
    }
    let removed = files.take_removed();
    // Four rotations into a chain of two rotated files: two removed.
    assert_eq!(removed.len(), 2);
    let names = names_in(dir.path());
    assert_eq!(names, [ACTIVE, "_main.log.0", "_main.log.1"]);
    // The removed files are the oldest two, readable until closed.
    let mut first = String::new();
    std::io::Read::read_to_string(&mut &removed[0], &mut first).unwrap();
    assert_eq!(first, "a\n");
}

/// How many of the file's pages are in the page cache (`mincore` over a
/// mapping of it).
fn cached_pages(file: &fs::File) -> usize {
    // SAFETY: the mapping is only read by mincore, and the file is not
    // truncated while it exists.
    let map = unsafe { memmap2::Mmap::map(file) }.unwrap();
    let page = 4096;
    let mut resident = vec![0u8; map.len().div_ceil(page)];
    // SAFETY: `resident` has a byte for every page of the mapping.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            resident.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
    resident.iter().filter(|&&r| r & 1 == 1).count()
}

/// The finisher releases a removed file's cache before closing it, a
/// slice at a time: afterwards none of its pages are cached, and whoever
/// still reads it reads the same bytes (from disk).
#[test]
fn releasing_a_removed_file_s_cache_drops_its_pages_and_keeps_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    // Three and a half release steps of lines.
    let line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let content: Vec<u8> = line.repeat((3 << 20) / line.len() + 8192);
    fs::write(&path, &content).unwrap();
    let mut file = fs::File::open(&path).unwrap();
    // Clean pages: DONTNEED leaves dirty ones alone.
    LogFile::sync(&mut fs::OpenOptions::new().write(true).open(&path).unwrap()).unwrap();
    let reader = fs::File::open(&path).unwrap();
    // SAFETY: `stat` is a plain struct the kernel fills.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let c_path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a struct to fill.
    assert_eq!(unsafe { libc::statfs(c_path.as_ptr(), &mut stat) }, 0);
    if stat.f_type == libc::TMPFS_MAGIC {
        crate::testing::skipped(
            "writer::tests: releasing a file's cache, on tmpfs (its pages are its storage)",
        );
        return;
    }
    fs::read(&path).unwrap();
    assert!(
        cached_pages(&reader) > 0,
        "the file was just written and read: its pages are cached"
    );
    file.release_cache();
    assert_eq!(cached_pages(&reader), 0, "every page released");
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut again).unwrap();
    assert!(again == content, "the same bytes are read back");
}
