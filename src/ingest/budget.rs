//! The ingest memory budget (`--ingest_memory`): one global bound on the
//! buffers TCP connections hold (read buffer, decoder scratch, lines not yet
//! queued), whatever the clients announce.
//!
//! Sits beside `ingest::tcp` and `ingest::conn`: every connection holds a
//! [`Charge`] sized to what its buffers hold. A length prefix alone no longer
//! makes a buffer grow: the connection first gets the bytes from the budget,
//! and while the budget is spent it stops reading (TCP flow control holds
//! its client back) until other connections give memory back, or until the
//! frame timeout closes it. What is already decoded is charged as it is
//! (`force`), so the budget can be passed by what one read of each
//! connection produced, never by what clients merely announce. The queue
//! and the writer's reorder buffer have bounds of their own.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::metrics::IngestStats;

/// Default `--ingest_memory`: fits a small host, and holds the base read
/// buffers of `--max_connections` (4,096 x 16 KiB = 64 MiB) with room for
/// several dozen maximum-size frames at once.
pub const DEFAULT_INGEST_MEMORY: usize = 256 * 1024 * 1024;

/// The budget shared by every TCP connection of the server.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    /// The gauge (`ingest_memory_bytes` and its peak) lives in the stats, so
    /// that the stats line and tests read the one number the budget checks.
    stats: Arc<IngestStats>,
    /// Woken when memory is given back while someone waits for it.
    freed: Notify,
    /// Connections waiting for memory, so that releases only notify when
    /// someone listens.
    waiters: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize, stats: Arc<IngestStats>) -> Self {
        MemoryBudget {
            limit,
            stats,
            freed: Notify::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// The bound, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now by all connections.
    pub fn used(&self) -> usize {
        self.stats
            .ingest_memory_bytes
            .as_atomic()
            .load(Ordering::Relaxed) as usize
    }

    /// Adds `grow` bytes if the total stays within the limit.
    fn try_add(&self, grow: usize) -> bool {
        let used = self.stats.ingest_memory_bytes.as_atomic();
        let mut now = used.load(Ordering::Relaxed);
        loop {
            let Some(next) = now.checked_add(grow as u64) else {
                return false;
            };
            if next > self.limit as u64 {
                return false;
            }
            match used.compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.stats
                        .ingest_memory_peak_bytes
                        .as_atomic()
                        .fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Adds `grow` bytes whatever the limit: memory already allocated.
    fn add(&self, grow: usize) {
        let next = self
            .stats
            .ingest_memory_bytes
            .as_atomic()
            .fetch_add(grow as u64, Ordering::AcqRel)
            + grow as u64;
        self.stats
            .ingest_memory_peak_bytes
            .as_atomic()
            .fetch_max(next, Ordering::Relaxed);
    }

    fn sub(&self, shrink: usize) {
        self.stats
            .ingest_memory_bytes
            .as_atomic()
            .fetch_sub(shrink as u64, Ordering::AcqRel);
        if shrink > 0 && self.waiters.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// What one connection holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl Charge {
    /// A charge of nothing yet.
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        Charge { budget, held: 0 }
    }

    pub fn held(&self) -> usize {
        self.held
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Holds `bytes` in all if the budget allows it (shrinking always does).
    #[must_use = "false means the memory may not be allocated"]
    pub fn try_set(&mut self, bytes: usize) -> bool {
        if bytes > self.held {
            if !self.budget.try_add(bytes - self.held) {
                return false;
            }
        } else {
            self.budget.sub(self.held - bytes);
        }
        self.held = bytes;
        true
    }

    /// Holds `bytes` in all, over the limit if need be: for memory that is
    /// already allocated (what a read decoded), so the gauge tells the truth.
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.held {
            self.budget.add(bytes - self.held);
        } else {
            self.budget.sub(self.held - bytes);
        }
        self.held = bytes;
    }

    /// Like [`Charge::try_set`], waiting up to `max_wait` (forever if
    /// `None`) for other connections to give memory back. False if it never
    /// came.
    pub async fn set_within(&mut self, bytes: usize, max_wait: Option<Duration>) -> bool {
        if self.try_set(bytes) {
            return true;
        }
        let deadline = max_wait.map(|w| tokio::time::Instant::now() + w);
        let budget = self.budget.clone();
        budget.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = WaiterGuard(&budget.waiters);
        loop {
            let freed = budget.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release in between wakes us.
            freed.as_mut().enable();
            if self.try_set(bytes) {
                return true;
            }
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, freed).await.is_err() {
                        return self.try_set(bytes);
                    }
                }
                None => freed.await,
            }
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.sub(self.held);
    }
}

/// Counts a waiter for as long as it waits (also if its future is dropped).
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(limit, Arc::new(IngestStats::default())))
    }

    #[test]
    fn charges_stay_within_the_limit_and_are_given_back() {
        let b = budget(100);
        let mut one = Charge::new(b.clone());
        let mut two = Charge::new(b.clone());
        assert!(one.try_set(60));
        assert!(!two.try_set(50), "60 + 50 is over 100");
        assert!(two.try_set(40));
        assert_eq!(b.used(), 100);
        assert!(one.try_set(10), "shrinking always works");
        assert_eq!(b.used(), 50);
        drop(two);
        assert_eq!(b.used(), 10);
        one.set(500);
        assert_eq!(b.used(), 500, "forced charges are counted, not refused");
        drop(one);
        assert_eq!(b.used(), 0);
        assert_eq!(
            b.stats.ingest_memory_peak_bytes.get(),
            500,
            "the peak gauge keeps the highest total"
        );
    }

    #[test]
    fn a_waiting_charge_gets_memory_when_another_gives_it_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = budget(100);
            let mut holder = Charge::new(b.clone());
            assert!(holder.try_set(100));
            let mut waiter = Charge::new(b.clone());
            // Times out while the memory is held.
            assert!(!waiter.set_within(50, Some(Duration::from_millis(20))).await);
            let wait = tokio::spawn(async move {
                let got = waiter.set_within(50, Some(Duration::from_secs(30))).await;
                (got, waiter)
            });
            tokio::task::yield_now().await;
            assert!(holder.try_set(0));
            let (got, waiter) = wait.await.unwrap();
            assert!(got);
            assert_eq!(waiter.held(), 50);
            assert_eq!(b.used(), 50);
        });
    }
}
