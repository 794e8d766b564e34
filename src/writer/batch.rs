//! Dynamic batching: the contiguous run of records the reorder buffer has
//! released, written with as few vectored writes as possible.
//!
//! Between the reorder buffer and the file. A batch takes whatever is ready
//! (up to `IOV_MAX` slices or a byte limit), so batches grow under load and
//! stay one record long when idle, with no added delay. It remembers how many
//! of its bytes are already in the file, so a short write or a failed write
//! resumes at the exact first unwritten byte and nothing is written twice.

use std::io::IoSlice;

use crate::record::Record;

/// Most slices one `writev` takes on Linux.
pub const IOV_MAX: usize = 1024;

#[derive(Debug)]
pub struct Batch {
    records: Vec<Record>,
    /// Total bytes of all records' lines.
    bytes: usize,
    /// Bytes already written, counted from the start of the first record.
    written: usize,
    /// Stop taking records past this many bytes.
    max_bytes: usize,
}

impl Batch {
    pub fn new(max_bytes: usize) -> Self {
        Batch {
            records: Vec::with_capacity(IOV_MAX),
            bytes: 0,
            written: 0,
            max_bytes: max_bytes.max(1),
        }
    }

    /// Adds a record. Returns true when the batch is now full and should be
    /// written before taking more.
    #[must_use]
    pub fn push(&mut self, record: Record) -> bool {
        self.bytes += record.lines.len();
        self.records.push(record);
        self.is_full()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= IOV_MAX || self.bytes >= self.max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes not yet written.
    pub fn remaining(&self) -> usize {
        self.bytes - self.written
    }

    /// The records in this batch.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Empties the batch for reuse, returning nothing: its records have been
    /// written (`remaining() == 0`) or are abandoned by the caller.
    pub fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
        self.written = 0;
    }

    /// The longest run of unwritten bytes, at most `limit`, that ends at a
    /// line end: what can go into a file with `limit` bytes of room without
    /// splitting a line. Zero when not even the next line fits.
    pub fn fit(&self, limit: usize) -> usize {
        if self.remaining() <= limit {
            return self.remaining();
        }
        let end = self.written + limit;
        let mut start = 0;
        let mut best = self.written;
        for r in &self.records {
            let rec_end = start + r.lines.len();
            if rec_end <= end {
                // Every record ends with a newline.
                best = best.max(rec_end);
            } else {
                let from = self.written.max(start);
                if from < end {
                    if let Some(i) = memchr::memrchr(b'\n', &r.lines[from - start..end - start]) {
                        best = best.max(from + i + 1);
                    }
                }
                break;
            }
            start = rec_end;
        }
        best - self.written
    }

    /// Slices covering the next `len` unwritten bytes, at most [`IOV_MAX`].
    pub fn slices(&self, len: usize) -> Vec<IoSlice<'_>> {
        let mut out = Vec::with_capacity(self.records.len().min(IOV_MAX));
        let end = self.written + len;
        let mut start = 0;
        for r in &self.records {
            let rec_end = start + r.lines.len();
            if rec_end > self.written && start < end {
                let from = self.written.max(start) - start;
                let to = end.min(rec_end) - start;
                out.push(IoSlice::new(&r.lines[from..to]));
                if out.len() == IOV_MAX {
                    break;
                }
            }
            if rec_end >= end {
                break;
            }
            start = rec_end;
        }
        out
    }

    /// Records that `n` more bytes are in the file.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.remaining());
        self.written += n;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn record(seq: u64, lines: &[&str]) -> Record {
        Record {
            seq,
            count: lines.len() as u32,
            received: Instant::now(),
            queued: Instant::now(),
            lines: lines
                .iter()
                .flat_map(|l| format!("{l}\n").into_bytes())
                .collect(),
        }
    }

    fn concat(slices: &[IoSlice<'_>]) -> String {
        slices
            .iter()
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn fit_never_splits_a_line() {
        let mut b = Batch::new(1 << 20);
        assert!(!b.push(record(0, &["aaa", "bb"])));
        assert!(!b.push(record(2, &["cccc"])));
        // "aaa\n" = 4, "bb\n" = 3, "cccc\n" = 5
        assert_eq!(b.fit(100), 12);
        assert_eq!(b.fit(3), 0);
        assert_eq!(b.fit(4), 4);
        assert_eq!(b.fit(6), 4);
        assert_eq!(b.fit(7), 7);
        assert_eq!(b.fit(11), 7);
        b.advance(4);
        assert_eq!(b.fit(3), 3);
        assert_eq!(b.fit(7), 3);
        assert_eq!(b.fit(8), 8);
    }

    #[test]
    fn slices_resume_at_the_first_unwritten_byte() {
        let mut b = Batch::new(1 << 20);
        let _ = b.push(record(0, &["hello", "world"]));
        let _ = b.push(record(2, &["x"]));
        assert_eq!(concat(&b.slices(b.remaining())), "hello\nworld\nx\n");
        b.advance(3);
        assert_eq!(concat(&b.slices(5)), "lo\nwo");
        b.advance(8);
        assert_eq!(concat(&b.slices(b.remaining())), "\nx\n");
        b.advance(3);
        assert_eq!(b.remaining(), 0);
        assert!(b.slices(0).is_empty());
    }

    #[test]
    fn full_by_bytes_or_by_slices() {
        let mut b = Batch::new(10);
        assert!(!b.push(record(0, &["12345"])));
        assert!(b.push(record(1, &["12345"])));
        let mut b = Batch::new(usize::MAX);
        for i in 0..IOV_MAX as u64 - 1 {
            assert!(!b.push(record(i, &["x"])));
        }
        assert!(b.push(record(IOV_MAX as u64, &["x"])));
        assert_eq!(b.slices(b.remaining()).len(), IOV_MAX);
    }
}
