//! The writer thread's loop: pop records, put them in order, write each
//! contiguous run as one batch, advance the watermarks, skip a gap that
//! never closes, notice a replaced `_main.log`, and make everything durable
//! at the end. Retries are `retry.rs`'s; rotated files are fsynced by
//! `syncer.rs`'s thread.

use std::{
    io,
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    batch::Batch, file::LogDir, reorder::ReorderBuffer, rotate::Files, syncer::Job, FsyncPolicy,
    WriterConfig, WriterShared,
};
use crate::{progress::Progress, queue::RecordQueue, record::Record};

pub(super) struct Writer<D: LogDir> {
    pub(super) files: Files<D>,
    pub(super) config: WriterConfig,
    pub(super) queue: Arc<RecordQueue>,
    pub(super) shared: Arc<WriterShared>,
    /// The watermarks; only this writer advances them.
    pub(super) progress: Arc<Progress>,
    pub(super) reorder: ReorderBuffer,
    pub(super) batch: Batch,
    /// Since when the reorder buffer has held records behind a gap.
    pub(super) gap_since: Option<Instant>,
    /// When shutdown was first seen.
    pub(super) stop_at: Option<Instant>,
    /// When `_main.log` was last checked for being replaced.
    pub(super) last_replaced_check: Instant,
    /// Hands rotated files (to fsync and compress) and removed ones (to
    /// close) to the finisher thread.
    pub(super) syncer: Option<std::sync::mpsc::Sender<Job<D::File>>>,
    pub(super) syncer_thread: Option<JoinHandle<()>>,
}

/// How often the writer looks whether `_main.log` was removed or renamed
/// under it. Under continuous load, lines written in that window after a
/// removal go to the removed file.
const REPLACED_CHECK: Duration = Duration::from_millis(100);

/// How long the writer parks on an empty queue before looking at its
/// timers again (a push wakes it at once).
const IDLE_PARK: Duration = Duration::from_millis(100);

impl<D: LogDir> Writer<D> {
    pub(super) fn run(mut self) {
        // Best effort: refused, the writer only waits longer for a CPU.
        let _ = crate::sched::request_short_slice();
        // Unregistered when the writer ends, or panics: no producer may
        // then move its thread id.
        let queue = self.queue.clone();
        let _registered = queue.register_consumer();
        loop {
            self.reopen_if_asked();
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

    /// SIGHUP: the open file is closed (fsynced first on the syncer thread,
    /// as a rotated file is, unless `--fsync none`) and the next write opens
    /// `_main.log` by name, creating it if logrotate did not.
    fn reopen_if_asked(&mut self) {
        if !self.shared.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        if let (Some(old), Some(syncer)) = (self.files.detach(), &self.syncer) {
            let _ = syncer.send(Job::Rotated(old));
        }
        tracing::info!(
            "Reopened the log file on SIGHUP: the next line goes to the file now named _main.log."
        );
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
                self.shared.stats.late_records.add(1);
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
            self.shared.stats.gap_skips.add(1);
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
                    self.shared.stats.errors.add(1);
                    if !self.wait_before_retry(failures, &e) {
                        break;
                    }
                    self.shared.stats.retries.add(1);
                }
            }
        }
        self.account_batch();
        self.shared
            .stats
            .reorder_waiting
            .set(self.reorder.waiting_lines());
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
                self.shared.stats.rotations.add(1);
                if let Some(syncer) = &self.syncer {
                    // fsync of a finished file off the writer thread: it
                    // took tens of milliseconds inline, a latency spike for
                    // every line queued behind it. Likewise the close that
                    // frees the blocks of the file rotation removed.
                    if let Some(old) = old {
                        let _ = syncer.send(Job::Rotated(old));
                    }
                    for removed in self.files.take_removed() {
                        let _ = syncer.send(Job::Close(removed));
                    }
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
        self.shared.stats.writes.add(1);
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
}

impl<D: LogDir> Writer<D> {
    /// Counts the batch's lines and bytes and records their latency. A batch
    /// cut short by the shutdown timeout counts its unwritten lines as
    /// abandoned.
    fn account_batch(&mut self) {
        let stats = &self.shared.stats;
        let now = Instant::now();
        let mut lines = 0;
        let mut bytes = 0;
        let unwritten = self.batch.remaining();
        stats.record_latencies(
            now,
            self.batch.records().iter().map(|r| {
                lines += u64::from(r.count);
                bytes += r.lines.len() as u64;
                (r.received, r.queued, u64::from(r.count))
            }),
        );
        if unwritten > 0 {
            // Which lines are not in the file: those after the last newline
            // written. Count them from the end of the batch.
            let abandoned = count_lines_in_last(self.batch.records(), unwritten);
            stats.abandoned_lines.add(abandoned);
            tracing::error!(
                lines = abandoned,
                "Shutdown timeout reached while the file system kept failing; these lines were not written."
            );
            lines -= abandoned;
            bytes -= unwritten as u64;
        }
        stats.lines.add(lines);
        stats.bytes.add(bytes);
        stats.batches.add(1);
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

/// Lines that end within the last `tail` bytes of `records` (each record is
/// whole lines).
fn count_lines_in_last(records: &[Record], mut tail: usize) -> u64 {
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
