//! What io_uring's registered buffers would save the TCP ingest: the same
//! loopback stream read with tokio-uring's `read` (a buffer of our own, as
//! the server reads) and `read_fixed` (a buffer registered with the ring
//! once, from a `FixedBufPool`), 16 KiB and 64 KiB at a time (the server's
//! base and busy read sizes).
//!
//! What is measured is the CPU time of the receiving thread (user and
//! kernel: with io_uring the socket's copy runs in that thread, at submit
//! or as its task work), not the wall clock, so the sender's thread and
//! the machine's other load stay out of it. Criterion's throughput is then
//! bytes per CPU-second of the receiver.
//!
//! `cargo bench --bench uring_read`

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio_uring::buf::fixed::FixedBufPool;

/// Bytes sent for one measured transfer.
const TRANSFER: usize = 64 << 20;

/// The calling thread's CPU time, user and kernel.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A loopback connection whose other end sends `TRANSFER` bytes, `rounds`
/// times, from a thread of its own.
fn sender(rounds: u64) -> (std::net::TcpStream, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sending = thread::spawn(move || {
        let mut out = TcpStream::connect(addr).unwrap();
        let chunk = vec![0x5au8; 256 * 1024];
        for _ in 0..rounds {
            let mut left = TRANSFER;
            while left > 0 {
                let n = left.min(chunk.len());
                out.write_all(&chunk[..n]).unwrap();
                left -= n;
            }
        }
    });
    let (stream, _) = listener.accept().unwrap();
    (stream, sending)
}

#[derive(Clone, Copy)]
enum Read {
    Own,
    Fixed,
}

/// Receives `rounds` transfers with reads of `size` bytes; the receiver's
/// CPU time for all of them.
fn receive(rounds: u64, size: usize, how: Read) -> Duration {
    let (stream, sending) = sender(rounds);
    let spent = tokio_uring::start(async move {
        let stream = tokio_uring::net::TcpStream::from_std(stream);
        let pool = FixedBufPool::new([Vec::<u8>::with_capacity(size)]);
        if matches!(how, Read::Fixed) {
            pool.register().expect("registering the read buffer");
        }
        let mut own = Vec::with_capacity(size);
        let mut fixed = pool.try_next(size);
        let start = thread_cpu();
        let mut got = 0usize;
        let total = TRANSFER * rounds as usize;
        while got < total {
            let n = match how {
                Read::Own => {
                    // Both reads fill their buffer from its start.
                    let (res, buf) = stream.read(own).await;
                    own = buf;
                    res.unwrap()
                }
                Read::Fixed => {
                    let buf = fixed.take().expect("the pool's one buffer");
                    let (res, buf) = stream.read_fixed(buf).await;
                    fixed = Some(buf);
                    res.unwrap()
                }
            };
            assert!(n > 0, "the sender closed early");
            got += n;
        }
        thread_cpu() - start
    });
    sending.join().unwrap();
    spent
}

fn uring_read(c: &mut Criterion) {
    if let Err(e) = log_server::ingest::tcp::uring_available() {
        eprintln!("io_uring unavailable ({e}): nothing to measure");
        return;
    }
    let mut group = c.benchmark_group("uring_read");
    group.throughput(Throughput::Bytes(TRANSFER as u64));
    group.sample_size(20);
    for size in [16 * 1024, 64 * 1024] {
        for (name, how) in [("read", Read::Own), ("read_fixed", Read::Fixed)] {
            group.bench_function(format!("{name}_{}k", size / 1024), |b| {
                b.iter_custom(|iters| receive(iters, size, how))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, uring_read);
criterion_main!(benches);
