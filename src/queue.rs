//! The hand-off between ingest threads and the writer thread: one global
//! [`Sequencer`] and one bounded, lock-free [`RecordQueue`].
//!
//! Sits between `ingest` (producers) and `writer` (the one consumer). A
//! producer takes its sequence numbers, formats its lines, then pushes one
//! [`Record`]. It must push every number it took: the writer orders by
//! sequence and waits for gaps (it has a timeout only as a safety net).
//!
//! The queue is bounded twice: in records (`--queue_capacity`) and in bytes
//! of queued lines, so memory stays bounded whatever the record sizes. The
//! bytes are what the lines' buffers hold (capacity, not length), and they
//! include the records the writer holds in its reorder buffer behind a gap:
//! the reorder buffer is bounded by the same cap. The one record the writer
//! waits for (the gap) is always let in, or a full cap would wait on itself. A
//! producer that finds it full waits (spin, then yield, then short sleeps,
//! or asynchronously) and never drops. The writer sleeps when the queue is
//! empty and a push wakes it at once; a writer that is ready but waits for a
//! CPU while records wait is moved to another by the producers
//! ([`ConsumerWatch`]).

use std::{
    pin::Pin,
    sync::{
        atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
    thread::{self, Thread},
    time::Duration,
};

use crossbeam_queue::ArrayQueue;
use tokio::sync::{futures::Notified, Notify};

use crate::{record::Record, sched::ConsumerWatch};

/// Default `--queue_capacity`, in records.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

/// Default bound on the bytes of lines waiting in the queue (and held by
/// the writer's reorder buffer), `--queue_memory`. Sized from a measurement
/// (`scripts/bench-vs-peers.sh --only log-server` at the defaults, 4 M
/// messages over 1 and 2 connections, caps side by side, three rounds):
/// with producers woken when the writer frees room, 8, 16 and 32 MiB ran
/// alike (2 connections: 3.5-4.3, 3.1-4.1 and 3.4-4.1 M msg/s), and at
/// 32 MiB a full queue took the server's peak RSS to 50-64 MiB, against
/// 21-34 MiB at 16 MiB. 16 MiB holds ~20 ms of lines at full speed.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Hands out the global order: every line gets one number, with no gaps.
#[derive(Debug, Default)]
pub struct Sequencer {
    next: AtomicU64,
}

impl Sequencer {
    /// A sequencer whose first number is `first`.
    pub fn starting_at(first: u64) -> Self {
        Sequencer {
            next: AtomicU64::new(first),
        }
    }

    /// Takes `n` consecutive numbers and returns the first. One atomic
    /// operation however many lines a read produced.
    #[inline]
    pub fn reserve(&self, n: u32) -> u64 {
        self.next.fetch_add(u64::from(n), Ordering::Relaxed)
    }

    /// The number the next reservation will start at.
    pub fn issued(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

/// The bounded queue of records from producers to the writer thread.
#[derive(Debug)]
pub struct RecordQueue {
    slots: ArrayQueue<Record>,
    /// Bytes of lines now in `slots` (capacity of their buffers).
    bytes: AtomicUsize,
    /// Bytes of lines the writer holds in its reorder buffer behind a gap,
    /// counted against the same cap ([`RecordQueue::set_reorder_state`]).
    held: AtomicUsize,
    /// The first sequence number the writer's reorder buffer waits for, or
    /// `u64::MAX` when nothing waits: a record starting there is let in
    /// whatever the byte cap says.
    awaited: AtomicU64,
    max_bytes: usize,
    /// Set by the writer just before it parks on an empty queue, so that a
    /// producer only pays for an unpark when one is needed.
    consumer_sleeping: AtomicBool,
    /// The writer thread, registered when it starts.
    consumer: Mutex<Option<Thread>>,
    /// Wakes a producer when the writer frees room while producers wait:
    /// producers that slept a fixed backoff instead woke up to 1 ms after
    /// the room was there, and at 2 connections a 16 MiB cap then ran at
    /// ~3.0 M msg/s against ~3.9 M at 32 MiB.
    room: Notify,
    /// Producers registered on `room`, so that a pop only notifies when
    /// someone waits.
    room_waiters: AtomicUsize,
    /// Producers move a writer that waits for a CPU while records wait for
    /// it.
    watch: ConsumerWatch,
}

/// The consumer registered on a queue, while it lives
/// ([`RecordQueue::register_consumer`]).
#[derive(Debug)]
pub struct ConsumerRegistration<'a>(&'a RecordQueue);

impl Drop for ConsumerRegistration<'_> {
    fn drop(&mut self) {
        self.0.watch.unregister();
    }
}

/// How long a producer waits for a room notification before looking
/// again anyway.
const ROOM_RECHECK: Duration = Duration::from_millis(1);

/// A producer counted among those waiting for room, while it lives.
struct RoomWaiter<'a>(&'a AtomicUsize);

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RecordQueue {
    /// A queue of at most `capacity` records and (roughly) `max_bytes` bytes
    /// of lines. A single record larger than `max_bytes` is still accepted
    /// when the queue holds no bytes, so no record can be refused forever.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        RecordQueue {
            slots: ArrayQueue::new(capacity.max(1)),
            bytes: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            awaited: AtomicU64::new(u64::MAX),
            max_bytes: max_bytes.max(1),
            consumer_sleeping: AtomicBool::new(false),
            consumer: Mutex::new(None),
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            watch: ConsumerWatch::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Records waiting now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of lines waiting now (capacity of their buffers), in the queue
    /// and in the writer's reorder buffer.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed) + self.held.load(Ordering::Relaxed)
    }

    /// Whether a push would find room now (it may not a moment later).
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.slots.capacity() && self.queued_bytes() < self.max_bytes
    }

    /// For the writer: the bytes of lines its reorder buffer holds, and the
    /// sequence number it waits for (`None` when nothing waits).
    pub fn set_reorder_state(&self, held_bytes: usize, awaited: Option<u64>) {
        let held_before = self.held.swap(held_bytes, Ordering::Relaxed);
        let awaited = awaited.unwrap_or(u64::MAX);
        let awaited_before = self.awaited.swap(awaited, Ordering::Relaxed);
        // Less held, or another record that is let in whatever the cap.
        if held_bytes < held_before || awaited != awaited_before {
            self.room_freed();
        }
    }

    /// Pushes `record` if there is room, or hands it back.
    pub fn try_push(&self, mut record: Record) -> Result<(), Record> {
        let len = record.lines.capacity();
        let queued = self.queued_bytes();
        if queued != 0
            && queued + len > self.max_bytes
            && record.seq != self.awaited.load(Ordering::Relaxed)
        {
            return Err(record);
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        let now = std::time::Instant::now();
        record.queued = now;
        match self.slots.push(record) {
            Ok(()) => {
                let woke = self.wake_consumer_if_parked();
                self.watch.pushed(now, || self.slots.len(), woke);
                Ok(())
            }
            Err(record) => {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                Err(record)
            }
        }
    }

    /// Pushes `record`, waiting as long as it takes for room: spin briefly,
    /// then yield, then sleep in growing steps up to a millisecond. For
    /// producer threads; async producers use [`RecordQueue::push_async`].
    pub fn push(&self, mut record: Record) {
        let mut attempt = 0u32;
        loop {
            match self.try_push(record) {
                Ok(()) => return,
                Err(back) => record = back,
            }
            attempt += 1;
            match attempt {
                0..=63 => std::hint::spin_loop(),
                64..=79 => thread::yield_now(),
                _ => thread::sleep(Self::backoff(attempt - 80)),
            }
        }
    }

    /// Waits until the queue has room. A connection waits here before
    /// decoding what it read: lines decoded into a full queue would only
    /// wait in memory, one batch per connection (with 1,000 connections
    /// more than the queue holds).
    pub async fn until_room(&self) {
        while !self.has_room() {
            let notified = self.room.notified();
            tokio::pin!(notified);
            let _waiting = self.wait_for_room(notified.as_mut());
            if self.has_room() {
                return;
            }
            let _ = tokio::time::timeout(ROOM_RECHECK, notified).await;
        }
    }

    /// Like [`RecordQueue::push`], but waits asynchronously so that the
    /// producer's runtime thread goes on serving its other tasks.
    pub async fn push_async(&self, mut record: Record) {
        loop {
            record = match self.try_push(record) {
                Ok(()) => return,
                Err(back) => back,
            };
            let notified = self.room.notified();
            tokio::pin!(notified);
            let _waiting = self.wait_for_room(notified.as_mut());
            record = match self.try_push(record) {
                Ok(()) => return,
                Err(back) => back,
            };
            let _ = tokio::time::timeout(ROOM_RECHECK, notified).await;
        }
    }

    /// Registers `notified` for the writer's next room notification, and
    /// counts its waiter until the returned guard is dropped. The caller
    /// looks for room once more after this and before it waits, so that
    /// room freed in between is never missed.
    fn wait_for_room<'a>(&'a self, notified: Pin<&mut Notified<'_>>) -> RoomWaiter<'a> {
        notified.enable();
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `room_freed`: either the writer sees this
        // waiter, or the caller's next look sees the room the writer freed.
        fence(Ordering::SeqCst);
        RoomWaiter(&self.room_waiters)
    }

    /// The writer freed room: wakes one producer waiting for it, if any
    /// (each pop frees about one record's room; waking every waiter at
    /// each pop cost 1,000 connections 0.43-0.84 us of CPU a message, half
    /// the runs over 0.55, instead of 0.42-0.49: most woke to no room).
    fn room_freed(&self) {
        fence(Ordering::SeqCst);
        if self.room_waiters.load(Ordering::Relaxed) > 0 {
            self.room.notify_one();
        }
    }

    /// 50 us doubling up to 1 ms: short enough that a producer resumes soon
    /// after the writer makes room, long enough not to burn a core.
    fn backoff(step: u32) -> Duration {
        Duration::from_micros(50u64 << step.min(5)).min(Duration::from_millis(1))
    }

    /// Takes the oldest record. For the writer thread only.
    pub fn pop(&self) -> Option<Record> {
        let record = self.slots.pop()?;
        self.bytes
            .fetch_sub(record.lines.capacity(), Ordering::Relaxed);
        self.room_freed();
        self.watch.took();
        Some(record)
    }

    /// Registers the calling thread as the consumer that pushes wake up,
    /// until the returned guard is dropped (also when the thread panics):
    /// after that no producer moves the thread id, which the kernel may have
    /// given to another thread.
    #[must_use = "the consumer is unregistered when the guard is dropped"]
    pub fn register_consumer(&self) -> ConsumerRegistration<'_> {
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread::current());
        self.watch.register();
        ConsumerRegistration(self)
    }

    /// Whether a consumer is registered now.
    #[cfg(test)]
    pub fn has_consumer(&self) -> bool {
        self.watch.is_registered()
    }

    /// How many times a producer moved the consumer off a CPU where it
    /// waited to run ([`ConsumerWatch`]).
    pub fn consumer_moves(&self) -> u64 {
        self.watch.moves()
    }

    /// Parks the consumer until a push (or `wake_consumer`) or `timeout`,
    /// unless the queue is not empty. Returns at once in that case.
    pub fn wait_for_records(&self, timeout: Duration) {
        self.consumer_sleeping.store(true, Ordering::SeqCst);
        // Pairs with the fence in `wake_consumer`: either the producer sees
        // the flag and unparks, or this check sees its record.
        fence(Ordering::SeqCst);
        if self.slots.is_empty() {
            thread::park_timeout(timeout);
        }
        self.consumer_sleeping.store(false, Ordering::SeqCst);
    }

    /// Wakes the consumer if it is parked (after a push, or to make it see a
    /// stop request).
    pub fn wake_consumer(&self) {
        self.wake_consumer_if_parked();
    }

    /// True if the consumer was parked (and is now woken).
    fn wake_consumer_if_parked(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.consumer_sleeping.load(Ordering::SeqCst)
            && self.consumer_sleeping.swap(false, Ordering::SeqCst)
        {
            if let Some(t) = self
                .consumer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                t.unpark();
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn record(seq: u64, len: usize, capacity: usize) -> Record {
        let mut lines = Vec::with_capacity(capacity);
        lines.resize(len, b'x');
        Record {
            seq,
            count: 1,
            received: Instant::now(),
            queued: Instant::now(),
            lines,
        }
    }

    #[test]
    fn the_byte_cap_counts_what_buffers_hold_not_their_length() {
        let q = RecordQueue::new(100, 1024 * 1024);
        // 10 bytes of lines in a 1 MiB buffer: the buffer is the memory.
        q.try_push(record(0, 10, 1024 * 1024)).unwrap();
        assert!(q.queued_bytes() >= 1024 * 1024);
        assert!(!q.has_room());
        assert!(q.try_push(record(1, 10, 1024)).is_err());
        let popped = q.pop().unwrap();
        assert_eq!(popped.seq, 0);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn lines_held_in_the_reorder_buffer_count_but_the_awaited_record_gets_in() {
        let q = RecordQueue::new(100, 1000);
        // The writer holds 1000 bytes behind a gap at sequence 5.
        q.set_reorder_state(1000, Some(5));
        assert!(!q.has_room());
        assert!(
            q.try_push(record(9, 10, 10)).is_err(),
            "the reorder buffer is bounded by the queue's cap"
        );
        // The record that closes the gap is always let in: without it the
        // writer would wait for room it alone can make.
        q.try_push(record(5, 10, 10)).unwrap();
        assert_eq!(q.pop().unwrap().seq, 5);
        q.set_reorder_state(0, None);
        q.try_push(record(9, 10, 10)).unwrap();
    }

    /// A writer ready to run but waiting for its CPU is moved to another by
    /// the producers. Here its CPU is held by a busy thread, and the
    /// consumer (niced to 19 and held to that CPU, as if it had just run
    /// there) would get about one turn in 50 ms. Without the move it never
    /// runs anywhere else.
    #[test]
    fn a_consumer_waiting_for_its_cpu_is_moved_to_another() {
        use std::sync::{atomic::AtomicUsize, Arc};

        use crate::sched::{current_cpu, CpuSet};

        let Ok(all) = CpuSet::current() else {
            crate::testing::skipped("queue::tests: sched_getaffinity is refused here");
            return;
        };
        if all.count() < 2 {
            crate::testing::skipped("queue::tests: moving the consumer needs two CPUs");
            return;
        }
        if let Err(e) = all.apply_to(0) {
            crate::testing::skipped(&format!(
                "queue::tests: sched_setaffinity is refused here ({e})"
            ));
            return;
        }
        let busy_cpu = (0..).find(|&c| all.contains(c)).unwrap();
        let only_busy = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| c != busy_cpu)
            .fold(all, |set, c| set.without(c).unwrap_or(set));
        assert_eq!(only_busy.count(), 1);
        let q = Arc::new(RecordQueue::new(1024, 1 << 30));
        let stop = Arc::new(AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            thread::spawn(move || {
                only_busy.apply_to(0).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        // The CPU the consumer took a record on that was not the busy one.
        let elsewhere = Arc::new(AtomicUsize::new(usize::MAX));
        let consumer = {
            let (q, stop, elsewhere) = (q.clone(), stop.clone(), elsewhere.clone());
            thread::spawn(move || {
                let _registered = q.register_consumer();
                only_busy.apply_to(0).unwrap();
                // SAFETY: takes no pointers; raising one's own nice needs
                // no privilege.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, 19) };
                while !stop.load(Ordering::Relaxed) {
                    while q.pop().is_some() {
                        match current_cpu() {
                            Some(cpu) if cpu != busy_cpu => {
                                elsewhere.store(cpu, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    q.wait_for_records(Duration::from_millis(1));
                }
                // Widened back to every CPU it had when it registered,
                // unless a move came after its last record.
                let now = CpuSet::current().unwrap();
                assert!(
                    now.count() == all.count() || q.watch.is_narrowed(),
                    "the consumer stays held to {now:?} and nothing will widen it back"
                );
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seq = 0;
        while elsewhere.load(Ordering::Relaxed) == usize::MAX && Instant::now() < deadline {
            q.push(record(seq, 10, 10));
            seq += 1;
            thread::sleep(Duration::from_micros(200));
        }
        stop.store(true, Ordering::Relaxed);
        q.wake_consumer();
        consumer.join().unwrap();
        busy.join().unwrap();
        assert!(
            !q.has_consumer(),
            "a consumer that ended is still registered: its thread id could be moved"
        );
        let cpu = elsewhere.load(Ordering::Relaxed);
        assert_ne!(
            cpu,
            usize::MAX,
            "the consumer never ran off CPU {busy_cpu} ({seq} records pushed, {} moves)",
            q.consumer_moves()
        );
        assert!(q.consumer_moves() >= 1);
        assert!(all.contains(cpu));
    }

    /// Producers waiting for room on a queue that is full most of the time
    /// (room for one record of the bytes they push) all get through, each
    /// record exactly once, as the consumer frees room.
    #[test]
    fn producers_waiting_for_room_push_every_record_once() {
        const TASKS: u64 = 8;
        const EACH: u64 = 200;
        let q = std::sync::Arc::new(RecordQueue::new(4, 100));
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while seen.len() < (TASKS * EACH) as usize && Instant::now() < deadline {
                    match q.pop() {
                        Some(r) => seen.push(r.seq),
                        None => thread::yield_now(),
                    }
                }
                seen
            })
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let q = q.clone();
                    tokio::task::spawn_local(async move {
                        for n in 0..EACH {
                            q.until_room().await;
                            q.push_async(record(t * EACH + n, 60, 60)).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let mut seen = consumer.join().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..TASKS * EACH).collect::<Vec<_>>());
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(q.room_waiters.load(Ordering::Relaxed), 0);
    }
}
