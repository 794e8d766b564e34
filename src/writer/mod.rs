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
//!
//! By concern: this file is the API (config, [`spawn`], [`WriterHandle`],
//! [`WriterReport`]); `worker` is the thread's loop; `retry` the retry
//! policy; `syncer` the thread that fsyncs rotated files; [`reorder`],
//! [`batch`], [`rotate`] and [`file`](mod@file) the steps. The watermarks
//! it advances are a [`Progress`] it is handed.

pub mod batch;
pub mod compress;
pub mod file;
pub mod reorder;
mod retry;
pub mod rotate;
mod syncer;
mod worker;

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
    compress::Compression,
    file::{DirError, DirOptions, LogDir, RealDir},
    reorder::ReorderBuffer,
    rotate::Files,
    syncer::{Finisher, Job},
    worker::Writer,
};
use crate::{
    format::LINE_OVERHEAD,
    metrics::{LatencySummary, Stage, WriterStats},
    progress::Progress,
    queue::RecordQueue,
};

/// Default `--max_files`: files on disk counting the active one.
pub const DEFAULT_MAX_FILES: usize = 10;
/// Default `--max_file_size`, bytes.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;
/// Default `--shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// What rotated files become (`--compress`).
    pub compress: Compression,
    /// Told of every file rotation removes (the forwarder counts the lines
    /// it had not sent yet).
    pub on_removed: Option<Arc<dyn RemovedFileHook>>,
}

/// Told, on the finisher thread, of what happens to rotated files after the
/// writer let them go: the forwarder follows them by identity.
pub trait RemovedFileHook: Send + Sync + std::fmt::Debug {
    /// Rotation removed `file`, which is still readable through the
    /// descriptor handed over (the last one: closing it frees the blocks).
    fn removed(&self, file: std::fs::File);
    /// The rotated file `from` was compressed into the file `to`, which
    /// took its place in the chain.
    fn compressed(&self, from: file::FileId, to: file::FileId);
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
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_batch_bytes: 4 * 1024 * 1024,
            dir: DirOptions::default(),
            compress: Compression::None,
            on_removed: None,
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
    /// Set by SIGHUP: close `_main.log` and open the file now at that name
    /// before the next write (logrotate's `create` + `postrotate kill -HUP`).
    pub(super) reopen: AtomicBool,
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
            reopen: AtomicBool::new(false),
            deadline: OnceLock::new(),
            skipped: AtomicU64::new(0),
            late_lines: AtomicU64::new(0),
            stats: WriterStats::default(),
        }
    }

    /// Asks the writer to close `_main.log` and open the file at that name
    /// again (SIGHUP). Lines written from then on go to the new file; none
    /// is lost or doubled, since the switch happens between two writes.
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::Release);
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
    /// Receive-to-written latency of the whole run.
    pub latency: LatencySummary,
    /// Its two parts: received to queued, queued to written.
    pub to_queue: LatencySummary,
    pub queue_to_written: LatencySummary,
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
            lines: s.lines.get(),
            bytes: s.bytes.get(),
            rotations: s.rotations.get(),
            retries: s.retries.get(),
            abandoned_lines: s.abandoned_lines.get(),
            skipped: self.shared.skipped(),
            late_lines: self.shared.late_lines.load(Ordering::Relaxed),
            died,
            stuck,
            latency: s.latency(),
            to_queue: s.stage_latency(Stage::ToQueue),
            queue_to_written: s.stage_latency(Stage::QueueToWritten),
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
    // A helper's handle on the directory, taken before the writer owns it.
    let compressor_dir = match config.compress {
        Compression::None => None,
        _ => {
            let mut d = dir.try_clone().map_err(open_error)?;
            compress::clean_up(&mut d, config.max_files).map_err(open_error)?;
            Some(d)
        }
    };
    let files = Files::open(dir, config.max_files).map_err(open_error)?;
    let finisher = Finisher {
        sync: config.fsync != FsyncPolicy::None,
        compress: config.compress,
        dir: compressor_dir,
        chain: files.chain(),
        max_files: config.max_files,
        on_removed: config.on_removed.clone(),
    };
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
    // Always there: besides fsyncing and compressing rotated files, it
    // closes the files rotation removed (freeing their blocks).
    let (tx, rx) = std::sync::mpsc::channel::<Job<D::File>>();
    let syncer = thread::Builder::new()
        .name("log-finisher".into())
        .spawn(move || finisher.run(rx))
        .map_err(WriterError::Spawn)?;
    let writer = Writer {
        syncer: Some(tx),
        syncer_thread: Some(syncer),
        ..writer
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

#[cfg(test)]
mod tests;
