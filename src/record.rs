//! The type that crosses the pipeline's stages: the [`Record`] that travels
//! from an ingest thread through the queue to the writer.
//!
//! The fields of one message as the wire carries them are the wire crate's
//! ([`log_server_wire::fields`]).

use std::time::Instant;

/// A run of consecutive log lines on its way to the file: the unit the queue
/// carries and the writer orders.
///
/// One record holds `count` lines with the sequence numbers
/// `seq .. seq + count`, already formatted, each ending in `\n`. An ingest
/// thread puts every message it decoded from one socket read into one
/// record, so the queue, the reorder buffer and the writer pay their
/// per-item costs once per read rather than once per message.
#[derive(Debug)]
pub struct Record {
    /// Sequence number of the first line.
    pub seq: u64,
    /// Number of lines in `lines`; never zero.
    pub count: u32,
    /// When the bytes of these messages were received, for the
    /// receive-to-written latency histogram.
    pub received: Instant,
    /// When the record went into the queue (set by the queue's push), for
    /// the per-stage latency: received -> queued -> written.
    pub queued: Instant,
    /// `count` formatted lines, each terminated by `\n`.
    pub lines: Vec<u8>,
}

impl Record {
    /// The sequence number after the last line of this record.
    pub fn end_seq(&self) -> u64 {
        self.seq + u64::from(self.count)
    }
}
