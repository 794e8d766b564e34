//! How the server's threads ask the kernel's scheduler for a CPU, beside
//! the data flow: the writer asks to be run soon after it wakes, the
//! forwarder to give way to others when the CPUs are busy, and a producer
//! moves a writer that waits for a CPU another thread holds
//! ([`ConsumerWatch`], kept by the queue between them). Linux threads have
//! their own scheduling attributes, so each thread sets its own slice and
//! nice value. None of this needs a privilege; where the kernel refuses,
//! the thread runs as before and says nothing (the only cost is latency).

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// The slice the writer asks for: the shortest the kernel accepts.
const WRITER_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` as `sched_setattr(2)` takes it (the first version,
/// 48 bytes; the kernel accepts any version it knows by `size`).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// The writer is woken by every push onto an empty queue and then works
/// for tens of microseconds; on a machine whose CPUs the senders and the
/// ingest threads keep busy, it waited up to milliseconds for one (`perf
/// sched timehist`: ~0.9 ms after each rotation, 4.5 ms at worst), and that
/// wait was the tail of receive-to-written latency. Since Linux 6.12 the
/// fair scheduler (EEVDF) lets a normal thread ask for a shorter slice
/// (`sched_runtime`) without privilege: its deadlines come sooner, so on
/// waking it may preempt a thread with a longer slice instead of waiting
/// for that slice to end. Its share of the CPU does not change. Older
/// kernels ignore the field. The error (a sandbox that refuses the call)
/// is for tests: the writer runs the same either way.
pub fn request_short_slice() -> std::io::Result<()> {
    // SAFETY: gettid and getpriority take no pointers.
    let nice = unsafe {
        let tid = libc::gettid();
        libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        // Kept as it is: a nice set by the operator stays.
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: WRITER_SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: pid 0 is the calling thread; `attr` outlives the call and
    // its `size` says how much the kernel may read.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The nice value of the forwarder's threads.
pub const FORWARDER_NICE: i32 = 10;

/// Forwarding gives way to ingest and the writer when the CPUs are busy:
/// the calling thread runs at nice [`FORWARDER_NICE`], about a tenth of a
/// CPU that a normal thread also wants (weights 110 and 1,024). A thread
/// already nicer than that (a server started under `nice`) keeps its value.
///
/// Not `SCHED_IDLE`, which it used before: that gave way to every other
/// program of the host as well. With two busy loops on the two CPUs,
/// forwarding fell to ~200 lines a second (debug build; ~6,000 at nice
/// 10), so a host kept busy by anything for long enough rotated lines out
/// before they were forwarded. Switching to `SCHED_IDLE` only while busy is
/// no way out: a thread without `CAP_SYS_NICE` may not leave it, nor lower
/// its nice value again. Where our own ingest is what keeps the CPUs busy,
/// the forwarder also pauses between batches
/// (`forward::Forwarder::yield_to_ingest`).
pub fn run_at_low_priority() {
    // SAFETY: gettid, getpriority and setpriority take no pointers. -1 is
    // also a valid nice value, but below FORWARDER_NICE either way.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        if libc::getpriority(libc::PRIO_PROCESS, tid) < FORWARDER_NICE {
            libc::setpriority(libc::PRIO_PROCESS, tid, FORWARDER_NICE);
        }
    }
}

/// How long the writer may leave records waiting, taking none, before a
/// producer moves it to another CPU. Longer than most of the writer's runs
/// (20-500 us in `perf sched timehist` at 1.9 M msg/s; a writer moved
/// while it runs only pays for one migration), far shorter than the waits
/// it cures (2.6-3.9 ms).
pub const CONSUMER_STALL: Duration = Duration::from_millis(1);

/// The CPUs a thread may run on (`cpu_set_t`).
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The CPUs the calling thread may run on, as the operator left them
    /// (`taskset`, a cgroup's cpuset).
    pub fn current() -> std::io::Result<CpuSet> {
        // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes
        // into `set`; pid 0 is the calling thread.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 {
            Ok(CpuSet(set))
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// These CPUs but `cpu`; `None` if that leaves none.
    pub fn without(&self, cpu: usize) -> Option<CpuSet> {
        let mut set = *self;
        if cpu < libc::CPU_SETSIZE as usize {
            // SAFETY: `cpu` is within the set's size.
            unsafe { libc::CPU_CLR(cpu, &mut set.0) };
        }
        (set.count() > 0).then_some(set)
    }

    pub fn contains(&self, cpu: usize) -> bool {
        // SAFETY: `cpu` is within the set's size.
        cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, &self.0) }
    }

    pub fn count(&self) -> usize {
        // SAFETY: counts the bits of a whole set.
        unsafe { libc::CPU_COUNT(&self.0) as usize }
    }

    /// Lets thread `tid` (0: the calling one) run on these CPUs only. A
    /// thread waiting on a CPU left out is moved at once.
    pub fn apply_to(&self, tid: libc::pid_t) -> std::io::Result<()> {
        // SAFETY: the kernel reads `size_of::<cpu_set_t>()` bytes of a set
        // that outlives the call.
        let rc = unsafe {
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &self.0)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| self.contains(c));
        f.debug_set().entries(cpus).finish()
    }
}

/// The CPU the calling thread runs on (glibc reads it from the thread's
/// rseq area: no system call), or `None` where the kernel cannot say.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: takes no arguments.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// How often producers look at the writer's progress: at most once in this
/// time (and at every push that wakes it), so that a push costs a load of a
/// line that is rarely written, not a read of the writer's counter.
const CONSUMER_CHECK_EVERY: Duration = Duration::from_micros(100);

/// Gets the writer off a CPU where it is ready to run but waits.
///
/// `perf sched timehist` at 1.5-1.9 M msg/s: the writer's longest waits
/// (2.6-3.9 ms, the tail of receive-to-written) were all scheduling delay,
/// each behind a kernel thread (the VM's `kdamond.0`) that ran that long
/// on the writer's CPU without a preemption point, while the other CPU was
/// idle a third of the time. The scheduler does not pull a thread that ran
/// within the last 0.5 ms (it is "cache hot") to an idle CPU, so the
/// writer waited the kernel thread out. The producers see it happen:
/// records wait in the queue and the writer takes none. After
/// [`CONSUMER_STALL`] a producer narrows the writer's CPUs to exclude the
/// one it last ran on, which makes the kernel move it at once; the writer
/// widens them back at its next record (to the CPUs it had when it
/// started). A writer that is stuck elsewhere (a write blocked on the
/// disk) is narrowed once, which does no harm.
///
/// At 1.9 M msg/s on one connection (`scripts/latency-at-defaults.sh`, 19
/// runs each, alternating), p99.9 receive-to-written was at most 2 ms in
/// 16 runs against 1 before, with 6-22 moves a run.
#[derive(Debug)]
pub struct ConsumerWatch {
    epoch: Instant,
    consumer_side: ConsumerSide,
    producer_side: ProducerSide,
    /// Times a producer moved the consumer.
    moves: AtomicU64,
    /// The consumer's thread id, and the CPUs it may run on.
    consumer: Mutex<Option<(libc::pid_t, CpuSet)>>,
}

/// Written by the consumer at every record it takes; on a cache line of
/// its own, so producers pushing do not contend for it.
#[derive(Debug)]
#[repr(align(128))]
struct ConsumerSide {
    /// Records taken.
    taken: AtomicU64,
    /// The CPU the last one was taken on.
    cpu: AtomicI32,
}

/// Written by producers at most every [`CONSUMER_CHECK_EVERY`].
#[derive(Debug)]
#[repr(align(128))]
struct ProducerSide {
    /// No producer looks before this (ns since `epoch`).
    next_check: AtomicU64,
    /// `taken` as a producer last saw it change, and when (ns since
    /// `epoch`).
    seen_taken: AtomicU64,
    seen_at: AtomicU64,
    /// Set by the producer that narrowed the consumer's CPUs; cleared by
    /// the consumer as it widens them back.
    narrowed: AtomicBool,
}

impl Default for ConsumerWatch {
    fn default() -> Self {
        ConsumerWatch {
            epoch: Instant::now(),
            consumer_side: ConsumerSide {
                taken: AtomicU64::new(0),
                cpu: AtomicI32::new(-1),
            },
            producer_side: ProducerSide {
                next_check: AtomicU64::new(0),
                seen_taken: AtomicU64::new(0),
                seen_at: AtomicU64::new(0),
                narrowed: AtomicBool::new(false),
            },
            moves: AtomicU64::new(0),
            consumer: Mutex::new(None),
        }
    }
}

impl ConsumerWatch {
    /// The calling thread is the consumer. Without its CPUs (a sandbox
    /// that refuses the call) it is never moved.
    pub fn register(&self) {
        // SAFETY: takes no arguments.
        let tid = unsafe { libc::gettid() };
        let mine = CpuSet::current().ok().map(|cpus| (tid, cpus));
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = mine;
    }

    /// The consumer has stopped: no producer may touch its thread id, which
    /// the kernel can give to another thread.
    pub fn unregister(&self) {
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether a consumer is registered.
    #[cfg(test)]
    pub fn is_registered(&self) -> bool {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The consumer took a record. Widens its CPUs back if a producer
    /// narrowed them: it runs now, so the CPU it waited for is behind it.
    pub fn took(&self) {
        let c = &self.consumer_side;
        // One consumer: no read-modify-write needed.
        c.taken
            .store(c.taken.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if let Some(cpu) = current_cpu() {
            c.cpu.store(cpu as i32, Ordering::Relaxed);
        }
        if self.producer_side.narrowed.load(Ordering::Relaxed) {
            self.widen();
        }
    }

    #[cold]
    fn widen(&self) {
        let consumer = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, cpus)) = *consumer {
            let _ = cpus.apply_to(0);
        }
        self.producer_side.narrowed.store(false, Ordering::Relaxed);
    }

    /// A producer pushed a record at `now`, after which `queued()` records
    /// wait (asked only when it is time to look); `woke` if its push woke
    /// the consumer from an empty queue. Moves the consumer if it has left
    /// records waiting for longer than [`CONSUMER_STALL`] without taking
    /// one.
    pub fn pushed(&self, now: Instant, queued: impl FnOnce() -> usize, woke: bool) {
        let p = &self.producer_side;
        let at = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        if !woke && at < p.next_check.load(Ordering::Relaxed) {
            return;
        }
        p.next_check.store(
            at + CONSUMER_CHECK_EVERY.as_nanos() as u64,
            Ordering::Relaxed,
        );
        let taken = self.consumer_side.taken.load(Ordering::Relaxed);
        // The stall clock starts again whenever the consumer took a
        // record, or had none to take (it was asleep, or this record is
        // the only one).
        if woke || taken != p.seen_taken.load(Ordering::Relaxed) || queued() <= 1 {
            p.seen_taken.store(taken, Ordering::Relaxed);
            p.seen_at.store(at, Ordering::Relaxed);
            return;
        }
        let since = p.seen_at.load(Ordering::Relaxed);
        if at.saturating_sub(since) < CONSUMER_STALL.as_nanos() as u64 {
            return;
        }
        // Moved once, until the consumer runs again and widens back.
        if p.narrowed.load(Ordering::Relaxed) {
            return;
        }
        p.seen_at.store(at, Ordering::Relaxed);
        self.move_consumer();
    }

    /// Narrows the consumer's CPUs, and sets `narrowed`, under the lock
    /// that `widen` takes to undo both: a widen cannot fall between the two
    /// and leave the consumer narrowed with nothing to widen it back. The
    /// lock also keeps the consumer from unregistering and ending meanwhile,
    /// so its thread id is still its own.
    #[cold]
    fn move_consumer(&self) {
        let cpu = self.consumer_side.cpu.load(Ordering::Relaxed);
        let consumer = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
        if self.producer_side.narrowed.load(Ordering::Relaxed) {
            return; // another producer was first
        }
        let moved = match (*consumer, usize::try_from(cpu)) {
            (Some((tid, cpus)), Ok(cpu)) => cpus
                .without(cpu)
                .is_some_and(|elsewhere| elsewhere.apply_to(tid).is_ok()),
            _ => false,
        };
        if moved {
            self.producer_side.narrowed.store(true, Ordering::Relaxed);
            self.moves.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the consumer's CPUs are narrowed now, waiting for it to
    /// widen them back.
    #[cfg(test)]
    pub fn is_narrowed(&self) -> bool {
        self.producer_side.narrowed.load(Ordering::Relaxed)
    }

    /// How many times a producer moved the consumer.
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the calling thread's attributes back with `sched_getattr`.
    fn current() -> SchedAttr {
        let mut attr = SchedAttr {
            size: 0,
            sched_policy: 0,
            sched_flags: 0,
            sched_nice: 0,
            sched_priority: 0,
            sched_runtime: 0,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: the kernel writes at most `size` bytes into `attr`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                std::mem::size_of::<SchedAttr>() as u32,
                0,
            )
        };
        assert_eq!(rc, 0, "sched_getattr: {}", std::io::Error::last_os_error());
        attr
    }

    #[test]
    fn the_writer_s_slice_is_set_and_its_policy_and_nice_kept() {
        std::thread::spawn(|| {
            let before = current();
            if let Err(e) = request_short_slice() {
                crate::testing::skipped(&format!(
                    "sched::tests: sched_setattr is refused here ({e})"
                ));
                return;
            }
            let after = current();
            assert_eq!(after.sched_policy, libc::SCHED_OTHER as u32);
            assert_eq!(after.sched_nice, before.sched_nice);
            // Kernels with custom slices (6.12+) report the thread's slice,
            // the base one (0.75 ms or more) had the request not taken;
            // older kernels report 0 for a normal thread.
            assert!(
                after.sched_runtime == WRITER_SLICE_NS || after.sched_runtime == 0,
                "slice {} ns after asking for {WRITER_SLICE_NS}",
                after.sched_runtime
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_forwarder_runs_at_nice_10_not_sched_idle() {
        std::thread::spawn(|| {
            let before = current().sched_nice;
            run_at_low_priority();
            let attr = current();
            assert_eq!(attr.sched_policy, libc::SCHED_OTHER as u32);
            assert_eq!(attr.sched_nice, before.max(FORWARDER_NICE));
        })
        .join()
        .unwrap();
    }
}
