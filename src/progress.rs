//! How far the writer has got, for whoever waits on it: the `written` and
//! `synced` watermarks over the global sequence numbers.
//!
//! Sits beside the [`queue`](crate::queue), where the ingest side and the
//! writer meet: `server.rs` makes one and hands it to both. The writer
//! advances it; gRPC waits on it for its acknowledgements (`--grpc_ack`),
//! and the binary and the tests read it. Neither side reaches into the
//! other for it.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// The two watermarks: every sequence number below `written` is in the
/// file; every one below `synced` is also fsynced.
#[derive(Debug)]
pub struct Progress {
    /// Every sequence number below this is in the file.
    written: AtomicU64,
    /// Every sequence number below this is in the file and fsynced.
    synced: AtomicU64,
    /// The same two watermarks for async waiters (gRPC acknowledgements).
    written_watch: watch::Sender<u64>,
    synced_watch: watch::Sender<u64>,
}

impl Progress {
    /// Nothing written yet; the first line will have sequence number
    /// `first_seq`.
    pub fn new(first_seq: u64) -> Self {
        Progress {
            written: AtomicU64::new(first_seq),
            synced: AtomicU64::new(first_seq),
            written_watch: watch::Sender::new(first_seq),
            synced_watch: watch::Sender::new(first_seq),
        }
    }

    /// Every sequence number below `w` is in the file. Wakes the waiters.
    pub(crate) fn set_written(&self, w: u64) {
        self.written.store(w, Ordering::Release);
        self.written_watch.send_replace(w);
    }

    /// Every sequence number below `w` is in the file and fsynced. Wakes
    /// the waiters: the only way the writer advances `synced`, so that a
    /// sync at shutdown answers the calls waiting for it too.
    pub(crate) fn set_synced(&self, w: u64) {
        self.synced.store(w, Ordering::Release);
        self.synced_watch.send_replace(w);
    }

    /// Waits until every sequence number below `end` is written.
    pub async fn wait_written(&self, end: u64) {
        let mut rx = self.written_watch.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|w| *w >= end).await;
    }

    /// Waits until every sequence number below `end` is written and fsynced.
    pub async fn wait_synced(&self, end: u64) {
        let mut rx = self.synced_watch.subscribe();
        let _ = rx.wait_for(|w| *w >= end).await;
    }

    /// Every sequence number below the returned one has been written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Every sequence number below the returned one has been written and
    /// made durable.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }
}
