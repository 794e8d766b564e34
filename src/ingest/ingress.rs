//! The last ingest step, shared by every front door: decoded messages ->
//! sequence numbers -> formatted lines -> one [`Record`] in the queue.
//!
//! All messages decoded from one read take their sequence numbers in one
//! atomic step and travel as one record, so per-message costs on the way to
//! the writer are a memcpy and a format. Formatting happens here, on the
//! ingest thread, so the writer thread only moves bytes.

use std::time::{Instant, SystemTime};

use log_server_wire::{decode::DecodedBatch, fields::Fields};

use crate::{
    format::{LineFormat, LineFormatter, ReceivedAt},
    metrics::{Counter, RateLimiter},
    queue::{RecordQueue, Sequencer},
    record::Record,
};

/// Messages a connection decoded from one read, waiting to be published.
#[derive(Debug)]
pub enum Pending {
    /// Already formatted (text lines carry no sequence number): the fast
    /// path, formatting straight from each decoded frame.
    Lines {
        lines: Vec<u8>,
        count: u32,
        /// Lines cut to fit the maximum line length.
        truncated: usize,
    },
    /// Decoded fields, formatted once their sequence numbers are taken
    /// (JSON lines carry `seq`).
    Fields(DecodedBatch),
}

impl Pending {
    /// The right kind for `format`.
    pub fn for_format(format: LineFormat) -> Self {
        match format {
            LineFormat::Text => Pending::Lines {
                lines: Vec::new(),
                count: 0,
                truncated: 0,
            },
            LineFormat::Json => Pending::Fields(DecodedBatch::default()),
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        match self {
            Pending::Lines { count, .. } => *count as usize,
            Pending::Fields(batch) => batch.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a producer needs: the sequencer, the queue and the line
/// format. Shared by all ingest threads (behind an `Arc`).
#[derive(Debug)]
pub struct Ingress {
    sequencer: Sequencer,
    queue: std::sync::Arc<RecordQueue>,
    formatter: LineFormatter,
    /// Lines whose fields were cut to fit the maximum line length.
    truncated: Counter,
    /// Holds the truncation warning to a few lines a second: any client can
    /// cause one per message it sends.
    truncation_warnings: RateLimiter,
}

/// Truncation warnings let through per second (the rest are counted in the
/// next one that is).
const TRUNCATION_WARNINGS_PER_SECOND: u64 = 1;

impl Ingress {
    /// Producers for `queue`, numbering lines from `first_seq`.
    pub fn new(
        queue: std::sync::Arc<RecordQueue>,
        formatter: LineFormatter,
        first_seq: u64,
    ) -> Self {
        Ingress {
            sequencer: Sequencer::starting_at(first_seq),
            queue,
            formatter,
            truncated: Counter::default(),
            truncation_warnings: RateLimiter::new(TRUNCATION_WARNINGS_PER_SECOND),
        }
    }

    pub fn formatter(&self) -> LineFormatter {
        self.formatter
    }

    pub fn queue(&self) -> &RecordQueue {
        &self.queue
    }

    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// Lines cut to fit the maximum line length so far.
    pub fn truncated_lines(&self) -> u64 {
        self.truncated.get()
    }

    /// Numbers and formats every message of `batch` into one record.
    /// `None` if the batch is empty (nothing numbered).
    ///
    /// The record holds sequence numbers: it must be pushed to the queue
    /// ([`Ingress::publish_pending`] does both).
    #[must_use = "a sequenced record must be pushed, or the writer waits for its numbers"]
    pub fn sequence_batch(&self, batch: &DecodedBatch, received: Instant) -> Option<Record> {
        self.sequence_fields(batch.iter(), received)
    }

    /// Numbers and formats messages into one record, in the order given.
    /// `None` if there are none.
    #[must_use = "a sequenced record must be pushed, or the writer waits for its numbers"]
    pub fn sequence_fields<'a>(
        &self,
        messages: impl ExactSizeIterator<Item = Fields<'a>>,
        received: Instant,
    ) -> Option<Record> {
        let count =
            u32::try_from(messages.len()).expect("a batch holds fewer than 4 billion messages");
        if count == 0 {
            return None;
        }
        Some(self.sequence_with(count, received, |first, at, out| {
            let mut truncated = 0;
            for (seq, fields) in (first..).zip(messages) {
                truncated += usize::from(self.formatter.write(&fields, seq, at, out));
            }
            truncated
        }))
    }

    /// Numbers `count` messages into one record whose lines `format`
    /// writes: it gets the first sequence number, the receive time for JSON
    /// lines and the output, and returns how many lines it had to cut. For
    /// front doors whose messages are more than [`Fields`] (OTLP).
    #[must_use = "a sequenced record must be pushed, or the writer waits for its numbers"]
    pub fn sequence_with(
        &self,
        count: u32,
        received: Instant,
        format: impl FnOnce(u64, &ReceivedAt, &mut Vec<u8>) -> usize,
    ) -> Record {
        let at = match self.formatter.format() {
            LineFormat::Json => ReceivedAt::new(SystemTime::now()),
            LineFormat::Text => ReceivedAt::new(std::time::UNIX_EPOCH),
        };
        let mut lines = Vec::with_capacity(count as usize * 256);
        let seq = self.sequencer.reserve(count);
        let truncated = format(seq, &at, &mut lines);
        self.note_truncated(truncated);
        Record {
            seq,
            count,
            received,
            queued: received,
            lines,
        }
    }

    /// Waits (asynchronously) until the queue has room, for at most
    /// `max_wait`. False if it stayed full: the caller can refuse the
    /// messages before taking sequence numbers for them, so that nothing is
    /// half accepted.
    pub async fn wait_for_room(&self, max_wait: std::time::Duration) -> bool {
        // Woken by the writer as it frees room, like TCP connections are
        // (this polled on its own backoff, up to 5 ms late).
        tokio::time::timeout(max_wait, self.queue.until_room())
            .await
            .is_ok()
    }

    /// Publishes what a connection decoded from one read, and empties
    /// `pending` for the next: one reservation of sequence numbers, one
    /// record, pushed waiting asynchronously for room.
    pub async fn publish_pending(&self, pending: &mut Pending, received: Instant) {
        match pending {
            Pending::Lines {
                lines,
                count,
                truncated,
            } => {
                if *count == 0 {
                    return;
                }
                self.note_truncated(std::mem::take(truncated));
                let record = Record {
                    seq: self.sequencer.reserve(*count),
                    count: std::mem::take(count),
                    received,
                    queued: received,
                    // Taken, not replaced with a buffer of the same size:
                    // the next feed sizes its lines to what it decodes, so
                    // a connection between reads holds no line memory
                    // (with 1,000 connections that was ~128 KiB each).
                    lines: std::mem::take(lines),
                };
                self.queue.push_async(record).await;
            }
            Pending::Fields(batch) => {
                if let Some(record) = self.sequence_batch(batch, received) {
                    self.queue.push_async(record).await;
                }
                batch.clear();
            }
        }
    }

    fn note_truncated(&self, truncated: usize) {
        if truncated > 0 {
            self.truncation_warnings
                .emit(&[&self.truncated], truncated as u64, |held| {
                    tracing::warn!(
                        lines = truncated,
                        suppressed = held,
                        "Lines longer than a log file allows were cut to fit."
                    );
                });
        }
    }
}
