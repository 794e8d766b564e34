//! How the server's threads ask the kernel's scheduler for a CPU, beside
//! the data flow: the writer asks to be run soon after it wakes, the
//! forwarder to give way to others when the CPUs are busy. Linux threads
//! have their own scheduling attributes, so each thread calls these for
//! itself. Neither needs a privilege; where the kernel refuses, the thread
//! runs as before and says nothing (the only cost is latency).

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
