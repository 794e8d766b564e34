//! Forwarding (`--forward_otlp`): every line the writer wrote, sent on over
//! OTLP to an OpenTelemetry Collector (or another log-server), at least once.
//!
//! ```text
//! files -> follow (chain, tail, head) -> lines (RequestBuilder)
//!       -> export (OTLP/gRPC or OTLP/HTTP, the spec's retries)
//!       -> checkpoint (after every acknowledged batch)
//! ```
//!
//! Beside the pipeline, after the writer: the forwarder reads the files, not
//! the queue, so the files are its buffer (10 files of 10 MiB at the
//! defaults) and neither ingest nor the writer ever waits for it. It runs
//! on a thread of its own at nice 10, with a one-thread runtime for
//! the client, and pauses between batches while ingest saturates the
//! machine (`yield_to_ingest`). One request is in flight at a time; what the writer
//! writes meanwhile goes into the next batch, so the faster lines come,
//! the larger the batches.
//!
//! Files are known by [`Key`]: device and inode, plus the [`Head`] (a hash
//! of the first line) that guards against an inode number used again. The
//! finisher thread tells the forwarder ([`LossBook`], a
//! [`RemovedFileHook`]) when a rotated file is compressed (a new inode) and
//! when rotation removes one: a removed file neither forwarded nor being
//! forwarded is counted as lost, once, with its lines, and forwarding goes
//! on with the oldest file left.

pub mod checkpoint;
pub mod export;
pub mod follow;
pub mod lines;

use std::{
    collections::VecDeque,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use thiserror::Error;

use self::{
    checkpoint::Checkpoint,
    export::{ExportConfig, ExportError, Exporter, Outcome},
    follow::{Entry, Head, Tail},
    lines::RequestBuilder,
};
use crate::{
    metrics::ForwardStats,
    writer::{file::FileId, RemovedFileHook},
};

/// Default `--forward_batch_lines`. One request is in flight at a time, so
/// its round trip bounds the rate: 400,000 lines from A's files to B's
/// OTLP ingest took 0.53 s with 8,192 (a 3 MiB cap), 0.69 s with 2,048
/// and 1.15 s with 512 (`scripts/forward-bench.sh`, both release).
pub const DEFAULT_BATCH_LINES: usize = 8192;
/// Default `--forward_batch_bytes`: under the 4 MiB a gRPC server (a
/// Collector's default, log-server's `--max_frame_size`) takes, with room
/// for the line that crosses it.
pub const DEFAULT_BATCH_BYTES: usize = 3 * 1024 * 1024;
/// Batches taken at a reduced size before the size is doubled again.
const REGROW_AFTER: u32 = 64;
/// While ingest is busy, the forwarder waits this many times as long as
/// its last batch took before the next.
const BUSY_SHARE: u32 = 3;
/// The longest such wait.
const MAX_YIELD: Duration = Duration::from_millis(100);
/// How often an idle forwarder looks for new lines.
const POLL: Duration = Duration::from_millis(20);

/// What `--forward_*` configure.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub export: ExportConfig,
    /// Resource attributes added to every record (`--forward_resource`).
    pub resource: Vec<(String, String)>,
    /// Most lines in one export request.
    pub batch_lines: usize,
    /// Most bytes in one export request (encoded, about).
    pub batch_bytes: usize,
    /// How long a stop waits for the request in flight to be answered.
    pub stop_timeout: Duration,
}

/// Why forwarding could not start.
#[derive(Debug, Error)]
pub enum ForwardError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot read the log directory {} to forward its files: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--forward_batch_lines and --forward_batch_bytes must be at least 1")]
    Batch,
    #[error("cannot start the forwarder thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Which file: its inode, and its first line in case the inode number was
/// given to a new file after the old one was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub id: FileId,
    pub head: Head,
}

/// What the forwarder and the finisher thread's hook share: the file being
/// forwarded, the files forwarded in full and the files lost, so that a
/// removed file is counted lost exactly when it was neither.
#[derive(Debug, Default)]
struct Book {
    current: Option<Key>,
    done: VecDeque<Key>,
    lost: VecDeque<Key>,
    /// Recent compressions, plain file -> compressed file: a file listed
    /// (or claimed) just before its compression is known by its new inode.
    renamed: VecDeque<(FileId, FileId)>,
    /// How many of `done`, `lost` and `renamed` to remember: more than the
    /// chain holds, so no file still in it is forgotten.
    remember: usize,
}

impl Book {
    fn knows(&self, key: &Key) -> bool {
        self.current.as_ref() == Some(key) || self.done.contains(key) || self.lost.contains(key)
    }

    /// The inode `id`'s file has now (another after a compression).
    fn resolve(&self, key: Key) -> Key {
        match self.renamed.iter().rev().find(|(from, _)| *from == key.id) {
            Some(&(_, to)) => Key { id: to, ..key },
            None => key,
        }
    }

    fn push<T>(list: &mut VecDeque<T>, key: T, remember: usize) {
        if list.len() == remember {
            list.pop_front();
        }
        list.push_back(key);
    }
}

/// Counts the lines rotation removed before they were forwarded; the hook
/// the writer's finisher thread calls ([`RemovedFileHook`]).
#[derive(Debug, Clone)]
pub struct LossBook {
    book: Arc<Mutex<Book>>,
    stats: Arc<ForwardStats>,
}

impl LossBook {
    /// For a chain of `max_files` files.
    pub fn new(max_files: usize) -> LossBook {
        LossBook {
            book: Arc::new(Mutex::new(Book {
                remember: 2 * max_files + 16,
                ..Book::default()
            })),
            stats: Arc::new(ForwardStats::default()),
        }
    }

    pub fn stats(&self) -> &Arc<ForwardStats> {
        &self.stats
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RemovedFileHook for LossBook {
    fn removed(&self, file: File) {
        let key = match key_of(&file) {
            Ok(Some(key)) => key,
            // Empty (rotation never leaves one) or unreadable: no lines.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "Could not read a log file rotation removed, to tell whether it was forwarded; if it was not, its lines are lost to the destination and not counted.");
                return;
            }
        };
        {
            let mut book = self.lock();
            if book.knows(&key) {
                return;
            }
            let remember = book.remember;
            Book::push(&mut book.lost, key, remember);
        }
        // Counted outside the lock: a compressed file takes a while.
        match follow::count_lines(file) {
            Ok(lines) => {
                self.stats.lost_lines.add(lines);
                self.stats.lost_files.add(1);
                tracing::warn!(
                    lines,
                    "Forwarding is behind: rotation removed a log file before it was forwarded, so its {lines} lines will not reach the destination (they were written locally); forwarding goes on with the oldest file left."
                );
            }
            Err(e) => {
                self.stats.lost_files.add(1);
                tracing::warn!(error = %e, "Forwarding is behind: rotation removed a log file before it was forwarded, and its lines could not be counted.");
            }
        }
    }

    fn compressed(&self, from: FileId, to: FileId) {
        let mut book = self.lock();
        let Book {
            current,
            done,
            lost,
            ..
        } = &mut *book;
        for key in current
            .iter_mut()
            .chain(done.iter_mut())
            .chain(lost.iter_mut())
        {
            if key.id == from {
                key.id = to;
            }
        }
    }
}

/// The key of an open file, `None` while its first line is not complete.
fn key_of(file: &File) -> io::Result<Option<Key>> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    let head = follow::head_of(file.try_clone()?)?;
    Ok(head.map(|head| Key {
        id: (m.dev(), m.ino()),
        head,
    }))
}

/// The running forwarder.
#[derive(Debug)]
pub struct ForwardHandle {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Arc<ForwardStats>,
}

impl ForwardHandle {
    pub fn stats(&self) -> &Arc<ForwardStats> {
        &self.stats
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops after the request in flight is answered (or the stop timeout),
    /// and writes the checkpoint durably.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ForwardHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Finds where to start (the checkpoint), counts what is not forwarded yet,
/// and starts the forwarder thread. Call after the writer opened the log
/// directory and before ingest starts, so that the backlog counted here and
/// the writer's line count from then on add up.
pub fn start(
    config: ForwardConfig,
    dir: &Path,
    max_files: usize,
    file_mode: u32,
    book: LossBook,
    ingest_busy: Box<dyn Fn() -> bool + Send>,
) -> Result<ForwardHandle, ForwardError> {
    if config.batch_lines == 0 || config.batch_bytes == 0 {
        return Err(ForwardError::Batch);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("log-forward-io")
        // Its I/O gives way to ingest and the writer too.
        .on_thread_start(crate::sched::run_at_low_priority)
        .enable_all()
        .build()
        .map_err(ForwardError::Spawn)?;
    // The client's connection task needs the runtime it will run on.
    let exporter = {
        let _entered = runtime.enter();
        Exporter::new(&config.export)?
    };
    let dir_error = |source| ForwardError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    // Listed once for both: where to go on, and what is left from there.
    let keyed = keyed_chain(dir, max_files).map_err(dir_error)?;
    let resume = resume_point(dir, &keyed, &book);
    let backlog = backlog(dir, &keyed, &book, resume.as_ref()).map_err(dir_error)?;
    book.stats.backlog_at_start.add(backlog);
    tracing::info!(
        destination = %config.export.url,
        protocol = ?config.export.protocol,
        backlog,
        "Forwarding every line written to the destination; {backlog} lines in the files are not forwarded yet."
    );
    if backlog == 0 {
        book.stats.caught_up();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stats = book.stats.clone();
    let forwarder = Forwarder {
        builder: RequestBuilder::new(config.resource.clone()),
        batch_lines: config.batch_lines,
        taken_since_resize: 0,
        config,
        dir: dir.to_path_buf(),
        max_files,
        file_mode,
        book,
        exporter: Some(exporter),
        runtime,
        stop: stop.clone(),
        current: None,
        resume,
        acked: None,
        in_flight: None,
        stored: None,
        refused_since: None,
        checkpoint_failing: false,
        ingest_busy,
    };
    let thread = thread::Builder::new()
        .name("log-forward".into())
        .spawn(move || forwarder.run())
        .map_err(ForwardError::Spawn)?;
    Ok(ForwardHandle {
        thread: Some(thread),
        stop,
        stats,
    })
}

/// Where a checkpoint says to go on: the file, and offsets in it.
#[derive(Debug)]
struct Resume {
    key: Key,
    acked: u64,
    sent: u64,
}

/// Reads the checkpoint and finds its file; marks the files before it as
/// forwarded. `None`: start with the oldest file there is.
fn resume_point(dir: &Path, keyed: &[(Entry, Key)], book: &LossBook) -> Option<Resume> {
    let loaded = checkpoint::load(dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "The forwarding checkpoint cannot be read; forwarding starts again with the oldest log file, so the destination may receive lines twice.");
        None
    });
    let checkpoint = match loaded {
        None => {
            tracing::info!("Forwarding starts with the oldest log file (no checkpoint yet).");
            return None;
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "The forwarding checkpoint is damaged; forwarding starts again with the oldest log file, so the destination may receive lines twice.");
            return None;
        }
        Some(Ok(c)) => c,
    };
    // The file with the checkpoint's head; of several (a file starting
    // with the same line as another), the oldest: lines twice rather than
    // lines skipped.
    let Some(at) = keyed.iter().position(|(_, k)| k.head == checkpoint.head) else {
        book.stats.lost_files.add(1);
        tracing::warn!("The log file the forwarding checkpoint points into is gone (rotated out while forwarding was behind, or removed by hand); its lines after the checkpoint were not forwarded and cannot be counted. Forwarding goes on with the oldest file left.");
        return None;
    };
    let mut b = book.lock();
    let remember = b.remember;
    for (_, key) in &keyed[..at] {
        Book::push(&mut b.done, *key, remember);
    }
    if checkpoint.sent > checkpoint.acked {
        tracing::info!("The last stop left a request unanswered: its lines are sent again and may reach the destination twice (counted as resent).");
    }
    Some(Resume {
        key: keyed[at].1,
        acked: checkpoint.acked,
        sent: checkpoint.sent,
    })
}

/// The chain with each file's key (files whose first line is not complete
/// yet, a new `_main.log`, are left out).
fn keyed_chain(dir: &Path, max_files: usize) -> io::Result<Vec<(Entry, Key)>> {
    let mut keyed = Vec::new();
    for entry in follow::list(dir, max_files)? {
        let Some(file) = follow::open(dir, &entry)? else {
            continue;
        };
        match follow::head_of(file) {
            Ok(Some(head)) => {
                let key = Key { id: entry.id, head };
                keyed.push((entry, key));
            }
            Ok(None) => {}
            // Not even its first line reads (a damaged compressed file):
            // there is nothing of it to forward, and the others go on.
            Err(e) => {
                tracing::debug!(error = %e, file = %entry.name, "A log file's first line cannot be read; it is not forwarded.");
            }
        }
    }
    Ok(keyed)
}

/// Lines in the files not forwarded yet: after the checkpoint in its file,
/// and all of every later file.
fn backlog(
    dir: &Path,
    keyed: &[(Entry, Key)],
    book: &LossBook,
    resume: Option<&Resume>,
) -> io::Result<u64> {
    let mut lines = 0;
    let b = book.lock();
    for (entry, key) in keyed {
        if b.done.contains(key) {
            continue;
        }
        let Some(file) = follow::open(dir, entry)? else {
            continue;
        };
        let offset = match resume {
            Some(r) if r.key.head == key.head => r.acked,
            _ => 0,
        };
        let mut tail = match Tail::new(file, offset) {
            Ok(tail) => tail,
            Err(e) => {
                tracing::warn!(error = %e, file = %entry.name, "A log file cannot be read from where forwarding stopped (damaged?); it is passed over.");
                continue;
            }
        };
        loop {
            while tail.next_line().is_some() {
                lines += 1;
            }
            match tail.fill() {
                Ok(0) => break,
                Ok(_) => {}
                // A damaged compressed file: its lines up to the damage
                // are what will be forwarded of it.
                Err(e) => {
                    tracing::warn!(error = %e, file = %entry.name, "A log file cannot be read to its end (damaged?); only the lines before that point will be forwarded.");
                    break;
                }
            }
        }
    }
    Ok(lines)
}

/// The file being forwarded.
#[derive(Debug)]
struct Current {
    key: Key,
    /// Still `_main.log` when claimed: it may grow, and is done only once
    /// rotation moved it on.
    was_active: bool,
    tail: Tail,
    /// The file itself, to read it again from an offset (after a "too
    /// large" answer) even if rotation removed its name meanwhile.
    file: File,
    /// Lines before this offset were sent before a stop that left them
    /// unacknowledged: sent again, counted as resent.
    resend_until: u64,
}

/// A batch read and encoded, waiting for its turn.
#[derive(Debug)]
struct Batch {
    request: bytes::Bytes,
    lines: u64,
    /// Offset after its last line.
    end: u64,
}

/// The forwarder thread's state.
struct Forwarder {
    config: ForwardConfig,
    dir: PathBuf,
    max_files: usize,
    file_mode: u32,
    book: LossBook,
    builder: RequestBuilder,
    /// Lines a batch may hold now: halved after a "too large" answer,
    /// doubled again (up to the configured most) after a run of batches
    /// taken, so one odd answer does not slow forwarding for good.
    batch_lines: usize,
    /// Batches taken since `batch_lines` last changed.
    taken_since_resize: u32,
    /// The client, moved into the request in flight and back.
    exporter: Option<Exporter>,
    runtime: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    current: Option<Current>,
    /// From the checkpoint, for the first file claimed.
    resume: Option<Resume>,
    /// Offset after the last acknowledged line of the current file.
    acked: Option<u64>,
    /// Offset after the last line of the request in flight, if one is:
    /// a stop that cannot wait for its answer leaves it marked as sent.
    in_flight: Option<u64>,
    /// The checkpoint last stored, not to store the same one again.
    stored: Option<Checkpoint>,
    /// Since when the destination has refused every request.
    refused_since: Option<Instant>,
    /// The last checkpoint write failed (reported once until one works).
    checkpoint_failing: bool,
    /// Whether ingest has records waiting for the writer right now.
    ingest_busy: Box<dyn Fn() -> bool + Send>,
}

impl Forwarder {
    fn run(mut self) {
        crate::sched::run_at_low_priority();
        while !self.stopping() {
            if self.current.is_none() && !self.claim_next() {
                self.idle();
                continue;
            }
            // One request in flight at a time. Reading the next batch while
            // it travelled was tried and gained nothing measurable (the
            // destination's side of the round trip dominates); larger
            // batches did (DEFAULT_BATCH_LINES).
            let started = Instant::now();
            match self.read_batch() {
                Some(batch) => {
                    self.deliver(batch);
                    self.yield_to_ingest(started.elapsed());
                }
                None => {
                    if !self.finish_if_done() {
                        self.book.stats.caught_up();
                        self.idle();
                    }
                }
            }
        }
        self.store_checkpoint(true);
    }

    /// While ingest is busy, forwarding takes at most a quarter of the time:
    /// after a batch that took `took`, it waits three times as long. Its
    /// threads also run at nice 10. Without these pauses (under SCHED_IDLE
    /// then) ingest measured 10-15% slower at full speed, though timed by a
    /// method that also counted the forwarder catching up (BENCHMARKS.md).
    /// The files hold what piles up meanwhile; a burst that outlasts them is
    /// counted as lost, never slowed down.
    fn yield_to_ingest(&self, took: Duration) {
        if (self.ingest_busy)() {
            self.sleep((took * BUSY_SHARE).min(MAX_YIELD));
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn idle(&self) {
        thread::sleep(POLL);
    }

    /// Picks the oldest file of the chain neither forwarded nor lost.
    fn claim_next(&mut self) -> bool {
        let keyed = match keyed_chain(&self.dir, self.max_files) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "Could not list the log directory to forward its files; trying again.");
                return false;
            }
        };
        for (entry, key) in keyed {
            let file = match follow::open(&self.dir, &entry) {
                Ok(Some(file)) => file,
                // Rotation moved it since the listing: list again rather
                // than take a newer file before it.
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(error = %e, file = %entry.name, "Could not open a log file to forward it; trying again.");
                    return false;
                }
            };
            let key = {
                let mut book = self.book.lock();
                let key = book.resolve(key);
                if book.knows(&key) {
                    continue;
                }
                // Claimed under the lock: from here on the hook will not
                // count this file as lost, and it did not before.
                book.current = Some(key);
                key
            };
            let resume = self.resume.take().filter(|r| r.key.head == key.head);
            let (offset, resend_until) = resume.map_or((0, 0), |r| (r.acked, r.sent));
            match file.try_clone().and_then(|dup| Tail::new(dup, offset)) {
                Ok(tail) => {
                    self.acked = Some(tail.offset());
                    self.current = Some(Current {
                        key,
                        was_active: entry.active,
                        tail,
                        file,
                        resend_until,
                    });
                    return true;
                }
                // Unreadable up to where it is to be read from (a damaged
                // compressed file): passed over, never retried forever.
                Err(e) => {
                    tracing::error!(error = %e, file = %entry.name, "A log file cannot be read from where forwarding is to go on (damaged?); it is passed over and forwarding goes on with the next one.");
                    let mut book = self.book.lock();
                    book.current = None;
                    let remember = book.remember;
                    Book::push(&mut book.done, key, remember);
                    return false;
                }
            }
        }
        false
    }

    /// Reads lines of the current file into a batch: as many as there are,
    /// up to the batch limits. `None` when there was no line to read.
    fn read_batch(&mut self) -> Option<Batch> {
        let current = self.current.as_mut()?;
        let stats = &self.book.stats;
        let mut lines = 0u64;
        loop {
            loop {
                let start = current.tail.offset();
                let Some(line) = current.tail.next_line() else {
                    break;
                };
                if start < current.resend_until {
                    stats.resent.add(1);
                }
                if line.is_empty() {
                    stats.skipped.add(1);
                    continue;
                }
                self.builder.push(line);
                lines += 1;
                if self.builder.records() >= self.batch_lines
                    || self.builder.encoded_len() >= self.config.batch_bytes
                {
                    return Some(self.take_batch(lines));
                }
            }
            match current.tail.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Could not read further in a log file being forwarded (a damaged compressed file, or an I/O error); lines after that point in a rotated file are not forwarded (the active file is read again).");
                    break;
                }
            }
        }
        (self.builder.records() > 0).then(|| self.take_batch(lines))
    }

    fn take_batch(&mut self, lines: u64) -> Batch {
        let end = self.current.as_ref().map_or(0, |c| c.tail.offset());
        Batch {
            request: self.builder.take_encoded(),
            lines,
            end,
        }
    }

    /// Sends a batch until the destination has taken it (or refused it as
    /// bad data), storing the checkpoint before (what is in flight) and
    /// after (what is acknowledged). Returns early only at a stop.
    fn deliver(&mut self, batch: Batch) {
        self.in_flight = Some(batch.end);
        self.store_checkpoint(false);
        let mut attempt = 0u32;
        loop {
            let Some(mut exporter) = self.exporter.take() else {
                return;
            };
            let request = batch.request.clone();
            let task = self.runtime.spawn(async move {
                let outcome = exporter.send(request).await;
                (exporter, outcome)
            });
            let (exporter, outcome) = match self.wait_for(task) {
                Some(done) => done,
                // Stopped with the request unanswered: the checkpoint says
                // it was sent, not acknowledged.
                None => return,
            };
            self.exporter = Some(exporter);
            let stats = &self.book.stats;
            let delay = match outcome {
                Outcome::Accepted { rejected, message } => {
                    stats.lines.add(batch.lines);
                    stats.batches.add(1);
                    if rejected > 0 || !message.is_empty() {
                        stats.rejected.add(rejected);
                        tracing::warn!(rejected, message = %message, "The forwarding destination took a batch but rejected some of its lines (partial success).");
                    }
                    if self.refused_since.take().is_some() {
                        tracing::info!("The forwarding destination takes requests again.");
                    }
                    self.taken_since_resize += 1;
                    if self.taken_since_resize >= REGROW_AFTER
                        && self.batch_lines < self.config.batch_lines
                    {
                        self.batch_lines = (self.batch_lines * 2).min(self.config.batch_lines);
                        self.taken_since_resize = 0;
                    }
                    self.acked(batch.end);
                    return;
                }
                Outcome::BadData { reason } => {
                    stats.rejected.add(batch.lines);
                    stats.dropped.add(batch.lines);
                    tracing::error!(lines = batch.lines, reason = %reason, "The forwarding destination refused a batch as bad data; it is not sent again (the lines stay in the local files).");
                    self.acked(batch.end);
                    return;
                }
                Outcome::TooLarge { reason } if self.batch_lines > 1 => {
                    self.batch_lines = (self.batch_lines / 2).max(1);
                    self.taken_since_resize = 0;
                    tracing::warn!(reason = %reason, batch_lines = self.batch_lines, "The forwarding destination found a request too large; sending smaller batches.");
                    self.rewind();
                    return;
                }
                Outcome::TooLarge { reason } => {
                    stats.rejected.add(batch.lines);
                    stats.dropped.add(batch.lines);
                    tracing::error!(reason = %reason, "The forwarding destination refuses even a single line as too large; that line is not sent again.");
                    self.acked(batch.end);
                    return;
                }
                Outcome::Retry { after, reason } => {
                    if attempt == 0 {
                        tracing::warn!(reason = %reason, "The forwarding destination did not take a batch; retrying with backoff.");
                    }
                    export::backoff(attempt, after)
                }
                Outcome::Refused { reason } => {
                    if self.refused_since.is_none() {
                        self.refused_since = Some(Instant::now());
                        tracing::error!(reason = %reason, "The forwarding destination refuses requests for a reason retrying cannot fix (check --forward_otlp and --forward_protocol); the lines are kept and sent when it takes them.");
                    }
                    export::backoff(attempt, None)
                }
            };
            stats.retries.add(1);
            attempt = attempt.saturating_add(1);
            if !self.sleep(delay) {
                return;
            }
        }
    }

    /// Waits for a request to be answered; `None` if a stop came first and
    /// the answer did not come within the stop timeout.
    fn wait_for<T: Send + 'static>(&self, mut task: tokio::task::JoinHandle<T>) -> Option<T> {
        let mut stop_deadline = None;
        loop {
            let waited = self
                .runtime
                .block_on(async { tokio::time::timeout(POLL, &mut task).await });
            if let Ok(done) = waited {
                return done.ok();
            }
            if self.stopping() {
                let deadline =
                    *stop_deadline.get_or_insert_with(|| Instant::now() + self.config.stop_timeout);
                if Instant::now() >= deadline {
                    task.abort();
                    return None;
                }
            }
        }
    }

    /// Sleeps `delay`, waking early at a stop; false if stopped.
    fn sleep(&self, delay: Duration) -> bool {
        let end = Instant::now() + delay;
        while Instant::now() < end {
            if self.stopping() {
                return false;
            }
            thread::sleep((end - Instant::now()).min(POLL * 5));
        }
        true
    }

    /// A batch is done with (taken, or dropped as bad data).
    fn acked(&mut self, end: u64) {
        self.acked = Some(end);
        self.in_flight = None;
        self.store_checkpoint(false);
    }

    /// Reads the current file again from the last acknowledged line (the
    /// batch after it is sent again, smaller).
    fn rewind(&mut self) {
        let _ = self.builder.take_encoded();
        self.in_flight = None;
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let offset = self.acked.unwrap_or(0);
        // Through the file held, not its name: rotation may have removed
        // it, and it is still this forwarder's (the book's current).
        match current
            .file
            .try_clone()
            .and_then(|dup| Tail::new(dup, offset))
        {
            Ok(tail) => current.tail = tail,
            Err(e) => {
                tracing::warn!(error = %e, "Could not read a log file being forwarded again; its lines after the last acknowledged one are not forwarded.");
                self.current = None;
                self.book.lock().current = None;
            }
        }
    }

    /// At the end of what the current file has now: if rotation moved it
    /// on (or it was a rotated file), the file is done and the next one is
    /// claimed; true if so.
    fn finish_if_done(&mut self) -> bool {
        let Some(current) = self.current.as_mut() else {
            return false;
        };
        if current.was_active {
            let still_active = follow::active(&self.dir)
                .ok()
                .flatten()
                .is_some_and(|id| id == current.key.id);
            if still_active {
                return false;
            }
            // Lines written before the rotation, read after the check.
            current.was_active = false;
            return true;
        }
        if current.tail.pending() > 0 {
            tracing::warn!(bytes = current.tail.pending(), "A rotated log file ends in a line without its newline; that part is not forwarded.");
        }
        self.current = None;
        self.acked = None;
        let mut book = self.book.lock();
        // The book's key: compressed meanwhile, it has the new inode.
        if let Some(key) = book.current.take() {
            let remember = book.remember;
            Book::push(&mut book.done, key, remember);
        }
        true
    }

    fn store_checkpoint(&mut self, durable: bool) {
        if let Some(c) = self.checkpoint() {
            self.store(c, durable);
        }
    }

    /// Where forwarding stands now: the current file (as the book knows it,
    /// after a compression) at its last acknowledged line.
    fn checkpoint(&self) -> Option<Checkpoint> {
        let key = self.book.lock().current?;
        let acked = self.acked?;
        // Lines an earlier unclean stop left unacknowledged and not sent
        // again yet stay marked as such.
        let resend_until = self.current.as_ref().map_or(0, |c| c.resend_until);
        let sent = acked.max(resend_until).max(self.in_flight.unwrap_or(0));
        Some(Checkpoint {
            head: key.head,
            acked,
            sent,
        })
    }

    fn store(&mut self, c: Checkpoint, durable: bool) {
        if self.stored == Some(c) && !durable {
            return;
        }
        match checkpoint::store(&self.dir, &c, self.file_mode, durable) {
            Ok(()) => {
                if self.stored.is_none() && self.checkpoint_failing {
                    tracing::info!("The forwarding checkpoint is written again.");
                }
                self.checkpoint_failing = false;
                self.stored = Some(c);
            }
            // Once per run of failures, not once per batch.
            Err(e) => {
                if !self.checkpoint_failing {
                    tracing::warn!(error = %e, "Could not write the forwarding checkpoint; after a restart lines since the last one written are sent again.");
                }
                self.checkpoint_failing = true;
                self.stored = None;
            }
        }
    }
}
