//! The reorder buffer: records arrive from the queue in roughly sequence
//! order (producers take numbers and push concurrently); the file must get
//! them in exactly sequence order.
//!
//! First step of the writer thread, after the queue and before batching.
//! A record whose first number is the next expected one goes straight
//! through; others wait in a `BTreeMap` until the gap before them closes.

use std::collections::BTreeMap;

use crate::record::Record;

#[derive(Debug)]
pub struct ReorderBuffer {
    /// The first sequence number not yet released.
    next: u64,
    /// Records that arrived ahead of `next`, by first sequence number.
    waiting: BTreeMap<u64, Record>,
    /// Lines held in `waiting`.
    waiting_lines: u64,
    /// Bytes the lines' buffers in `waiting` hold (capacity): counted
    /// against the queue's byte cap, which so bounds this buffer too.
    waiting_bytes: usize,
}

impl ReorderBuffer {
    /// A buffer that releases `first` first.
    pub fn new(first: u64) -> Self {
        ReorderBuffer {
            next: first,
            waiting: BTreeMap::new(),
            waiting_lines: 0,
            waiting_bytes: 0,
        }
    }

    /// The first sequence number not yet released.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Records waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Lines waiting for an earlier record.
    pub fn waiting_lines(&self) -> u64 {
        self.waiting_lines
    }

    /// Bytes waiting for an earlier record (capacity of their buffers).
    pub fn waiting_bytes(&self) -> usize {
        self.waiting_bytes
    }

    /// The first sequence number it waits for, if records wait behind a gap.
    pub fn awaited(&self) -> Option<u64> {
        (!self.waiting.is_empty()).then_some(self.next)
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes in a record. Returns it at once if it is next in order and
    /// nothing is waiting (the common case: no map operation at all), or if
    /// it is late (its numbers were skipped by [`ReorderBuffer::skip_gap`]):
    /// it is written out of order rather than dropped.
    #[must_use]
    pub fn offer(&mut self, record: Record) -> Option<Record> {
        if record.seq == self.next && self.waiting.is_empty() {
            self.next = record.end_seq();
            return Some(record);
        }
        if record.seq < self.next {
            return Some(record);
        }
        self.waiting_lines += u64::from(record.count);
        self.waiting_bytes += record.lines.capacity();
        self.waiting.insert(record.seq, record);
        None
    }

    /// Releases the waiting record that is next in order, if it is here.
    #[must_use]
    pub fn pop_ready(&mut self) -> Option<Record> {
        let entry = self.waiting.first_entry()?;
        if *entry.key() != self.next {
            return None;
        }
        let record = entry.remove();
        self.waiting_lines -= u64::from(record.count);
        self.waiting_bytes -= record.lines.capacity();
        self.next = record.end_seq();
        Some(record)
    }

    /// Gives up on the missing numbers before the first waiting record (a
    /// producer that took numbers and never pushed them: a bug this safety
    /// net makes loud instead of fatal). Returns the skipped range.
    pub fn skip_gap(&mut self) -> Option<std::ops::Range<u64>> {
        let (&first, _) = self.waiting.first_key_value()?;
        let skipped = self.next..first;
        self.next = first;
        Some(skipped)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;

    fn record(seq: u64, count: u32) -> Record {
        Record {
            seq,
            count,
            received: Instant::now(),
            queued: Instant::now(),
            lines: Vec::new(),
        }
    }

    /// Releases everything releasable after each offer.
    fn drain(buf: &mut ReorderBuffer, offered: Record, out: &mut Vec<u64>) {
        if let Some(r) = buf.offer(offered) {
            out.push(r.seq);
        }
        while let Some(r) = buf.pop_ready() {
            out.push(r.seq);
        }
    }

    #[test]
    fn in_order_records_pass_straight_through() {
        let mut buf = ReorderBuffer::new(10);
        assert_eq!(buf.offer(record(10, 3)).map(|r| r.seq), Some(10));
        assert_eq!(buf.offer(record(13, 1)).map(|r| r.seq), Some(13));
        assert_eq!(buf.next_seq(), 14);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_gap_holds_later_records_until_it_closes() {
        let mut buf = ReorderBuffer::new(0);
        assert!(buf.offer(record(5, 2)).is_none());
        assert!(buf.offer(record(2, 3)).is_none());
        assert!(buf.pop_ready().is_none());
        assert_eq!(buf.waiting_lines(), 5);
        let mut out = Vec::new();
        drain(&mut buf, record(0, 2), &mut out);
        assert_eq!(out, vec![0, 2, 5]);
        assert_eq!(buf.next_seq(), 7);
        assert_eq!(buf.waiting_lines(), 0);
    }

    #[test]
    fn skipping_a_gap_releases_what_follows_and_late_records_still_come_out() {
        let mut buf = ReorderBuffer::new(0);
        assert!(buf.offer(record(4, 1)).is_none());
        assert_eq!(buf.skip_gap(), Some(0..4));
        assert_eq!(buf.pop_ready().map(|r| r.seq), Some(4));
        // The missing record shows up after all: written, not dropped.
        assert_eq!(buf.offer(record(0, 4)).map(|r| r.seq), Some(0));
        assert_eq!(buf.skip_gap(), None);
    }

    proptest! {
        /// Any arrival order of any partition of a sequence range comes out
        /// exactly once each, in order.
        #[test]
        fn any_interleaving_comes_out_in_order(
            sizes in prop::collection::vec(1u32..5, 1..60),
            seed in any::<u64>(),
        ) {
            let mut records = Vec::new();
            let mut seq = 100;
            for n in &sizes {
                records.push(record(seq, *n));
                seq += u64::from(*n);
            }
            let expected: Vec<u64> = records.iter().map(|r| r.seq).collect();
            // Fisher-Yates with a small LCG driven by the seed.
            let mut state = seed | 1;
            for i in (1..records.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (state >> 33) as usize % (i + 1);
                records.swap(i, j);
            }
            let mut buf = ReorderBuffer::new(100);
            let mut out = Vec::new();
            for r in records {
                drain(&mut buf, r, &mut out);
            }
            prop_assert_eq!(out, expected);
            prop_assert!(buf.is_empty());
            prop_assert_eq!(buf.next_seq(), seq);
        }
    }
}
