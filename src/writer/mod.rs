//! The writer thread: the one consumer of the queue and the only code that
//! touches the log files.
//!
//! ```text
//! queue -> reorder (by sequence) -> batch (contiguous run) -> writev
//!       -> retry on error -> rotate before the size limit -> files
//! ```
//!
//! It pops records, puts them in sequence order ([`reorder`]), takes every
//! contiguous run that is ready as one batch ([`batch`]) and writes it with
//! vectored writes, continuing short writes at the exact byte where they
//! stopped. A failed write is retried after 10 ms, 100 ms and 1 s; after
//! that the file is reopened and the write retried every second for as long
//! as it takes, while the bounded queue holds the producers back. Accepted
//! data is never dropped. Rotation ([`rotate`]) happens before a write that
//! would pass the size limit. The file system is behind the [`file`](mod@file) traits
//! so tests can inject faults.

pub mod batch;
pub mod file;
pub mod reorder;
pub mod rotate;

use std::{
    io,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use thiserror::Error;

use self::{
    batch::Batch,
    file::{DirError, DirOptions, LogDir, RealDir},
    reorder::ReorderBuffer,
    rotate::Files,
};
use crate::{
    format::LINE_OVERHEAD,
    metrics::{LatencySummary, WriterStats},
    progress::Progress,
    queue::RecordQueue,
};

/// Default `--max_files`: files on disk counting the active one.
pub const DEFAULT_MAX_FILES: usize = 10;
/// Default `--max_file_size`, bytes.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;
/// Smallest `--max_file_size` accepted: room for one line of bounded size.
pub const MIN_MAX_FILE_SIZE: u64 = 4 * LINE_OVERHEAD as u64;

/// When the writer makes written data durable (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// Never; the kernel writes back in its own time.
    None,
    /// Each file as it is rotated out (on a helper thread, so writing goes
    /// on meanwhile) and the active file at shutdown.
    #[default]
    Rotate,
    /// After every batch, before it counts as written... and at rotation and
    /// shutdown. Safest, slowest.
    Batch,
}

/// How the writer writes.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Largest size of one file, bytes.
    pub max_file_size: u64,
    /// Files kept, counting the active one.
    pub max_files: usize,
    pub fsync: FsyncPolicy,
    /// Waits before the first retries of a failed operation.
    pub retry_delays: Vec<Duration>,
    /// Wait between retries once those are used up.
    pub steady_retry: Duration,
    /// How long a gap in the sequence may hold later records back before it
    /// is given up on (a safety net: every number handed out is pushed).
    pub gap_timeout: Duration,
    /// After shutdown is requested (from the signal on, see
    /// [`WriterHandle::set_deadline`]), how long to keep retrying a failing
    /// file system before giving up on the lines not yet written.
    pub shutdown_timeout: Duration,
    /// Largest batch, bytes (a batch also stops at `IOV_MAX` records).
    pub max_batch_bytes: usize,
    /// Modes of new files and directories, and whether a log directory
    /// others can write is accepted.
    pub dir: DirOptions,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_files: DEFAULT_MAX_FILES,
            fsync: FsyncPolicy::default(),
            retry_delays: vec![
                Duration::from_millis(10),
                Duration::from_millis(100),
                Duration::from_secs(1),
            ],
            steady_retry: Duration::from_secs(1),
            gap_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            max_batch_bytes: 4 * 1024 * 1024,
            dir: DirOptions::default(),
        }
    }
}

/// Why the writer could not start.
#[derive(Debug, Error)]
pub enum WriterError {
    /// The active log file (or its directory) could not be opened or
    /// created.
    #[error("cannot open the log file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The log directory is not safe to write (shared, locked by another
    /// server, a link planted at `_main.log`).
    #[error(transparent)]
    Dir(DirError),
    /// A limit is out of range.
    #[error("invalid writer configuration: {0}")]
    Config(String),
    /// The thread could not be spawned.
    #[error("cannot start the writer thread: {0}")]
    Spawn(#[source] io::Error),
}

/// State the writer shares with the rest of the server.
#[derive(Debug)]
pub struct WriterShared {
    stop: AtomicBool,
    /// When the shutdown must be over, set once when it is requested (the
    /// signal), before the producers drain: the whole shutdown shares one
    /// deadline. Past it a failing write is given up on.
    deadline: OnceLock<Instant>,
    /// Sequence numbers given up on: a gap skipped after the gap timeout or
    /// at shutdown. Their lines are not in the file.
    skipped: AtomicU64,
    /// Lines of records that arrived after their gap was skipped. Writing
    /// them then would break the one global order, so they are dropped and
    /// counted (they are part of `skipped`).
    late_lines: AtomicU64,
    pub stats: WriterStats,
}

impl WriterShared {
    fn new() -> Self {
        WriterShared {
            stop: AtomicBool::new(false),
            deadline: OnceLock::new(),
            skipped: AtomicU64::new(0),
            late_lines: AtomicU64::new(0),
            stats: WriterStats::default(),
        }
    }

    /// Sequence numbers given up on so far (gaps skipped); their lines are
    /// not in the file.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Whether the shutdown deadline has passed.
    fn past_deadline(&self) -> bool {
        self.deadline.get().is_some_and(|d| Instant::now() >= *d)
    }
}

/// What the writer did, returned when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterReport {
    pub lines: u64,
    pub bytes: u64,
    pub rotations: u64,
    pub retries: u64,
    /// Lines given up on because the file system failed past the shutdown
    /// timeout. Zero in every normal run.
    pub abandoned_lines: u64,
    /// Sequence numbers given up on (gaps skipped): their lines are not in
    /// the file. Zero in every normal run.
    pub skipped: u64,
    /// Of those, lines whose record did arrive, after its gap was skipped,
    /// and was dropped rather than written out of order.
    pub late_lines: u64,
    /// The writer thread died (panicked): nothing after its last write is
    /// in the file.
    pub died: bool,
    /// The writer was still busy (a write blocked in the kernel, or the
    /// queue not drained) at the shutdown deadline and was left behind.
    pub stuck: bool,
    pub latency: LatencySummary,
}

impl WriterReport {
    /// Whether everything handed to the writer is in the file.
    pub fn complete(&self) -> bool {
        self.abandoned_lines == 0 && self.skipped == 0 && !self.died && !self.stuck
    }
}

/// The running writer thread.
#[derive(Debug)]
pub struct WriterHandle {
    thread: Option<JoinHandle<()>>,
    shared: Arc<WriterShared>,
    progress: Arc<Progress>,
    queue: Arc<RecordQueue>,
}

impl WriterHandle {
    /// Counters and the shutdown state, shareable with other threads.
    pub fn shared(&self) -> &Arc<WriterShared> {
        &self.shared
    }

    /// The watermarks this writer advances (the one it was started with).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Starts the shutdown clock: from `deadline` on, a failing write is
    /// given up on (and counted), and [`WriterHandle::shutdown`] waits no
    /// longer. Call it when the shutdown is requested, before the producers
    /// drain; only the first call counts.
    pub fn set_deadline(&self, deadline: Instant) {
        let _ = self.shared.deadline.set(deadline);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// The writer thread has ended. Before a shutdown that means it died.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the writer: it takes everything still in the queue and the
    /// reorder buffer, writes it, fsyncs (unless `--fsync none`) and closes
    /// the file. Call once every producer has pushed its last record. With
    /// a deadline set, waits for the writer at most until shortly after it
    /// (the writer gives up on failing writes at the deadline; a write
    /// blocked in the kernel cannot be given up on, so the thread is then
    /// left behind and the report says `stuck`).
    pub fn shutdown(mut self) -> WriterReport {
        let (died, stuck) = self.stop_and_join();
        let s = &self.shared.stats;
        WriterReport {
            lines: WriterStats::get(&s.lines),
            bytes: WriterStats::get(&s.bytes),
            rotations: WriterStats::get(&s.rotations),
            retries: WriterStats::get(&s.retries),
            abandoned_lines: WriterStats::get(&s.abandoned_lines),
            skipped: self.shared.skipped(),
            late_lines: self.shared.late_lines.load(Ordering::Relaxed),
            died,
            stuck,
            latency: s.latency(),
        }
    }

    /// Returns (died, stuck).
    fn stop_and_join(&mut self) -> (bool, bool) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let Some(t) = self.thread.take() else {
            return (false, false);
        };
        t.thread().unpark();
        self.queue.wake_consumer();
        if let Some(&deadline) = self.shared.deadline.get() {
            // A little past the deadline: the writer notices it between two
            // attempts, up to one retry interval late.
            let give_up = deadline + JOIN_GRACE;
            while !t.is_finished() {
                if Instant::now() >= give_up {
                    tracing::error!(
                        "The writer is still blocked at the shutdown deadline (a stuck file system); leaving it behind."
                    );
                    return (false, true);
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        if t.join().is_err() {
            tracing::error!("The writer thread panicked; lines still queued were not written.");
            return (true, false);
        }
        (false, false)
    }
}

/// How long past the shutdown deadline [`WriterHandle::shutdown`] waits
/// for the writer to notice it: one steady retry interval and some.
const JOIN_GRACE: Duration = Duration::from_millis(1500);

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts a writer on a real directory. The directory is created, checked
/// and locked and the active file opened before this returns, so an
/// unwritable, shared or already used directory is a startup error.
///
/// The writer advances `progress` (and only it does); it starts at the
/// first sequence number `progress` does not count as written.
pub fn spawn(
    dir: impl AsRef<std::path::Path>,
    config: WriterConfig,
    queue: Arc<RecordQueue>,
    progress: Arc<Progress>,
) -> Result<WriterHandle, WriterError> {
    let dir = dir.as_ref();
    let real = RealDir::open(dir, config.dir).map_err(|e| match e {
        DirError::Open { source, .. } => WriterError::Open {
            path: dir.join(rotate::ACTIVE),
            source,
        },
        other => WriterError::Dir(other),
    })?;
    spawn_with(real, config, queue, progress)
}

/// Starts a writer on any [`LogDir`] (tests inject faults this way).
pub fn spawn_with<D: LogDir>(
    dir: D,
    config: WriterConfig,
    queue: Arc<RecordQueue>,
    progress: Arc<Progress>,
) -> Result<WriterHandle, WriterError> {
    // The first line to write is the first one not written yet.
    let first_seq = progress.written();
    if config.max_files == 0 {
        return Err(WriterError::Config("max_files must be at least 1".into()));
    }
    if config.max_file_size < MIN_MAX_FILE_SIZE {
        return Err(WriterError::Config(format!(
            "max_file_size must be at least {MIN_MAX_FILE_SIZE} bytes"
        )));
    }
    let files = Files::open(dir, config.max_files).map_err(open_error)?;
    let shared = Arc::new(WriterShared::new());
    let writer = Writer {
        batch: Batch::new(config.max_batch_bytes),
        reorder: ReorderBuffer::new(first_seq),
        files,
        config,
        queue: queue.clone(),
        shared: shared.clone(),
        progress: progress.clone(),
        gap_since: None,
        stop_at: None,
        last_replaced_check: Instant::now(),
        syncer: None,
        syncer_thread: None,
    };
    let writer = if writer.config.fsync == FsyncPolicy::None {
        writer
    } else {
        let (tx, rx) = std::sync::mpsc::channel::<D::File>();
        let syncer = thread::Builder::new()
            .name("log-syncer".into())
            .spawn(move || sync_rotated(rx))
            .map_err(WriterError::Spawn)?;
        Writer {
            syncer: Some(tx),
            syncer_thread: Some(syncer),
            ..writer
        }
    };
    let thread = thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer.run())
        .map_err(WriterError::Spawn)?;
    Ok(WriterHandle {
        thread: Some(thread),
        shared,
        progress,
        queue,
    })
}

/// A failure to open the active file at startup: a refusal by the log
/// directory is its own sentence; other errors say which file.
fn open_error(source: io::Error) -> WriterError {
    if DirError::from_io(&source).is_none() {
        return WriterError::Open {
            path: PathBuf::from(rotate::ACTIVE),
            source,
        };
    }
    match source
        .into_inner()
        .map(|inner| inner.downcast::<DirError>())
    {
        Some(Ok(refusal)) => WriterError::Dir(*refusal),
        // Not reached: checked above. Still an error, never a panic.
        _ => WriterError::Open {
            path: PathBuf::from(rotate::ACTIVE),
            source: io::Error::other("the log directory refused the file"),
        },
    }
}

struct Writer<D: LogDir> {
    files: Files<D>,
    config: WriterConfig,
    queue: Arc<RecordQueue>,
    shared: Arc<WriterShared>,
    /// The watermarks; only this writer advances them.
    progress: Arc<Progress>,
    reorder: ReorderBuffer,
    batch: Batch,
    /// Since when the reorder buffer has held records behind a gap.
    gap_since: Option<Instant>,
    /// When shutdown was first seen.
    stop_at: Option<Instant>,
    /// When `_main.log` was last checked for being replaced.
    last_replaced_check: Instant,
    /// Hands rotated files to the syncer thread (unless `--fsync none`).
    syncer: Option<std::sync::mpsc::Sender<D::File>>,
    syncer_thread: Option<JoinHandle<()>>,
}

/// How often the writer looks whether `_main.log` was removed or renamed
/// under it. Under continuous load, lines written in that window after a
/// removal go to the removed file.
const REPLACED_CHECK: Duration = Duration::from_millis(100);

/// How long the writer parks on an empty queue before looking at its
/// timers again (a push wakes it at once).
const IDLE_PARK: Duration = Duration::from_millis(100);

impl<D: LogDir> Writer<D> {
    fn run(mut self) {
        self.queue.register_consumer();
        loop {
            self.fill_batch();
            if !self.batch.is_empty() {
                self.gap_since = None;
                self.write_batch();
                continue;
            }
            let stopping = self.shared.stop.load(Ordering::SeqCst);
            if stopping && self.stop_at.is_none() {
                self.stop_at = Some(Instant::now());
            }
            if !self.queue.is_empty() {
                continue;
            }
            if self.reorder.is_empty() {
                if stopping {
                    break;
                }
                self.queue.wait_for_records(IDLE_PARK);
                continue;
            }
            // Records wait behind a gap. At shutdown no producer is left to
            // fill it; otherwise give it the gap timeout.
            let since = *self.gap_since.get_or_insert_with(Instant::now);
            if stopping || since.elapsed() >= self.config.gap_timeout {
                self.skip_gap();
            } else {
                self.queue
                    .wait_for_records(self.config.gap_timeout.min(IDLE_PARK) / 10);
            }
        }
        self.finish();
    }

    /// Moves every record that is ready, in order, into the batch.
    fn fill_batch(&mut self) {
        while !self.batch.is_full() {
            if let Some(r) = self.reorder.pop_ready() {
                let _ = self.batch.push(r);
                continue;
            }
            let Some(r) = self.queue.pop() else { break };
            if r.seq < self.reorder.next_seq() {
                // Its numbers were skipped: writing it now would put it after
                // later numbers, breaking the one global order. It is counted
                // as lost (its numbers already are, in `skipped`).
                WriterStats::add(&self.shared.stats.late_records, 1);
                self.shared
                    .late_lines
                    .fetch_add(u64::from(r.count), Ordering::Relaxed);
                tracing::error!(
                    seq = r.seq,
                    lines = r.count,
                    "A record arrived after its sequence gap was given up on; it is dropped, not written out of order."
                );
                continue;
            }
            if let Some(r) = self.reorder.offer(r) {
                let _ = self.batch.push(r);
            }
        }
        // What waits behind a gap counts against the queue's byte cap.
        self.queue
            .set_reorder_state(self.reorder.waiting_bytes(), self.reorder.awaited());
    }

    fn skip_gap(&mut self) {
        if let Some(missing) = self.reorder.skip_gap() {
            WriterStats::add(&self.shared.stats.gap_skips, 1);
            self.shared
                .skipped
                .fetch_add(missing.end - missing.start, Ordering::Relaxed);
            tracing::error!(
                from = missing.start,
                to = missing.end,
                "Sequence numbers were taken but never delivered; writing the records after the gap."
            );
        }
        self.gap_since = None;
        self.queue
            .set_reorder_state(self.reorder.waiting_bytes(), self.reorder.awaited());
    }

    /// At most every [`REPLACED_CHECK`], before a write: if `_main.log` was
    /// removed or renamed under the server, start a new one.
    fn check_replaced(&mut self) {
        if self.last_replaced_check.elapsed() < REPLACED_CHECK {
            return;
        }
        self.last_replaced_check = Instant::now();
        match self.files.reopen_if_replaced() {
            Ok(true) => tracing::warn!(
                "The log file was removed or renamed under the server; writing to a new _main.log."
            ),
            Ok(false) => {}
            // The write that follows meets the same trouble and retries.
            Err(e) => tracing::debug!(error = %e, "Cannot tell whether the log file was replaced."),
        }
    }

    /// Writes the whole batch (retrying as long as it takes), then accounts
    /// for it and moves the watermarks.
    fn write_batch(&mut self) {
        self.check_replaced();
        let mut failures = 0usize;
        while self.batch.remaining() > 0 {
            match self.write_step() {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    WriterStats::add(&self.shared.stats.errors, 1);
                    if !self.wait_before_retry(failures, &e) {
                        break;
                    }
                    WriterStats::add(&self.shared.stats.retries, 1);
                }
            }
        }
        self.account_batch();
        self.shared
            .stats
            .reorder_waiting
            .store(self.reorder.waiting_lines(), Ordering::Relaxed);
        if self.config.fsync == FsyncPolicy::Batch {
            self.retry_until_done("sync the log file", |files| files.sync());
        }
        let released = self.reorder.next_seq();
        self.progress.set_written(released);
        if self.config.fsync == FsyncPolicy::Batch {
            self.progress.set_synced(released);
        }
        self.batch.clear();
    }

    /// One step of progress on the batch: a rotation or one `writev`.
    fn write_step(&mut self) -> io::Result<()> {
        self.files.ensure_open()?;
        let room = self.config.max_file_size.saturating_sub(self.files.len());
        let mut len = self.batch.fit(usize::try_from(room).unwrap_or(usize::MAX));
        if len == 0 {
            if !self.files.is_empty() {
                let old = self.files.rotate()?;
                WriterStats::add(&self.shared.stats.rotations, 1);
                if let (Some(old), Some(syncer)) = (old, &self.syncer) {
                    // fsync of a finished file off the writer thread: it
                    // took tens of milliseconds inline, a latency spike for
                    // every line queued behind it.
                    let _ = syncer.send(old);
                }
                return Ok(());
            }
            // A line longer than a whole file. The formatter bounds lines by
            // the file size, so this is a bug; write the line alone rather
            // than lose it or loop.
            len = self.batch.fit(usize::MAX).min(self.first_line_len());
            tracing::error!(
                bytes = len,
                "A line is longer than the maximum file size; writing it alone."
            );
        }
        let slices = self.batch.slices(len);
        let n = self.files.write_vectored(&slices)?;
        drop(slices);
        self.batch.advance(n);
        WriterStats::add(&self.shared.stats.writes, 1);
        Ok(())
    }

    /// Length of the next unwritten line of the batch.
    fn first_line_len(&self) -> usize {
        let mut len = 1;
        while self.batch.fit(len) == 0 {
            len *= 2;
        }
        // `fit` returned the first line end at most `len`: shrink to it.
        self.batch.fit(len)
    }

    /// After the `failures`-th consecutive failure: log, wait, and say
    /// whether to try again (false only when shutting down and the shutdown
    /// timeout has passed).
    fn wait_before_retry(&mut self, failures: usize, e: &io::Error) -> bool {
        if self.shared.past_deadline() {
            return false;
        }
        if let Some(stop_at) = self.stop_at {
            if stop_at.elapsed() >= self.config.shutdown_timeout {
                return false;
            }
        }
        match self.config.retry_delays.get(failures - 1) {
            Some(&delay) => {
                tracing::warn!(
                    attempt = failures,
                    error = %e,
                    "Writing the log file failed; retrying in {delay:?}."
                );
                self.pause(delay);
            }
            None => {
                tracing::error!(
                    error = %e,
                    unwritten_bytes = self.batch.remaining(),
                    queued_records = self.queue.len(),
                    "Writing the log file keeps failing; keeping the data, reopening the file and retrying every {:?}.",
                    self.config.steady_retry
                );
                self.files.close();
                self.pause(self.config.steady_retry);
            }
        }
        if self.shared.stop.load(Ordering::SeqCst) && self.stop_at.is_none() {
            self.stop_at = Some(Instant::now());
        }
        true
    }

    /// Sleeps `delay` before a retry, but not past the shutdown deadline.
    fn pause(&self, delay: Duration) {
        let delay = match self.shared.deadline.get() {
            Some(d) => delay.min(d.saturating_duration_since(Instant::now())),
            None => delay,
        };
        thread::sleep(delay);
    }

    /// Runs a file operation until it succeeds, with the same retry policy
    /// as writes.
    fn retry_until_done(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Files<D>) -> io::Result<()>,
    ) {
        let mut failures = 0;
        while let Err(e) = op(&mut self.files) {
            failures += 1;
            WriterStats::add(&self.shared.stats.errors, 1);
            tracing::warn!(error = %e, "Could not {what}.");
            if !self.wait_before_retry(failures, &e) {
                return;
            }
            WriterStats::add(&self.shared.stats.retries, 1);
        }
    }

    /// Counts the batch's lines and bytes and records their latency. A batch
    /// cut short by the shutdown timeout counts its unwritten lines as
    /// abandoned.
    fn account_batch(&mut self) {
        let stats = &self.shared.stats;
        let now = Instant::now();
        let mut lines = 0;
        let mut bytes = 0;
        let unwritten = self.batch.remaining();
        stats.record_latencies(self.batch.records().iter().map(|r| {
            lines += u64::from(r.count);
            bytes += r.lines.len() as u64;
            (
                now.saturating_duration_since(r.received),
                u64::from(r.count),
            )
        }));
        if unwritten > 0 {
            // Which lines are not in the file: those after the last newline
            // written. Count them from the end of the batch.
            let abandoned = count_lines_in_last(self.batch.records(), unwritten);
            WriterStats::add(&stats.abandoned_lines, abandoned);
            tracing::error!(
                lines = abandoned,
                "Shutdown timeout reached while the file system kept failing; these lines were not written."
            );
            lines -= abandoned;
            bytes -= unwritten as u64;
        }
        WriterStats::add(&stats.lines, lines);
        WriterStats::add(&stats.bytes, bytes);
        WriterStats::add(&stats.batches, 1);
    }

    /// The queue and the reorder buffer are empty and no producer is left:
    /// make everything durable.
    fn finish(&mut self) {
        // Rotated files first: the syncer finishes its queue and ends.
        drop(self.syncer.take());
        if let Some(t) = self.syncer_thread.take() {
            let _ = t.join();
        }
        if self.config.fsync != FsyncPolicy::None {
            self.retry_until_done("fsync the log file at shutdown", |files| files.sync());
            // Through the setter: calls waiting for `synced` are woken.
            self.progress.set_synced(self.reorder.next_seq());
        }
    }
}

/// The syncer thread: makes each rotated file durable, retrying a failed
/// fsync a few times (the data is in the page cache either way; a file that
/// cannot be synced is reported).
fn sync_rotated<F: file::LogFile>(rx: std::sync::mpsc::Receiver<F>) {
    for mut file in rx {
        let mut attempt = 0;
        while let Err(e) = file.sync() {
            attempt += 1;
            if attempt == 3 {
                tracing::error!(error = %e, "Could not fsync a rotated log file; its data may not survive a power loss.");
                break;
            }
            thread::sleep(Duration::from_millis(100 * attempt));
        }
    }
}

/// Lines that end within the last `tail` bytes of `records` (each record is
/// whole lines).
fn count_lines_in_last(records: &[crate::record::Record], mut tail: usize) -> u64 {
    let mut lines = 0;
    for r in records.iter().rev() {
        if tail == 0 {
            break;
        }
        let take = tail.min(r.lines.len());
        lines += memchr::memchr_iter(b'\n', &r.lines[r.lines.len() - take..]).count() as u64;
        tail -= take;
    }
    lines
}

#[cfg(test)]
mod tests;
