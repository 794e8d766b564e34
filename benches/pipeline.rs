//! Criterion benches of each stage of the pipeline:
//! frame split -> decode -> format -> reorder -> writer.
//!
//! `cargo bench --bench pipeline` measures (release); CI runs
//! `cargo bench -- --test` once so the benches keep compiling and running.

use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use log_server::{
    format::{LineFormat, LineFormatter, ReceivedAt},
    progress::Progress,
    queue::{RecordQueue, Sequencer},
    record::Record,
    writer::{self, reorder::ReorderBuffer, WriterConfig},
};
use log_server_wire::{
    decode::{DecodedBatch, Decoder},
    encode::{logger_payload, push_logger_frame, Packing},
    fields::{Fields, Level},
    frame::{Frame, Frames},
};

/// A typical ~200-byte message as loggers send it.
fn sample() -> Fields<'static> {
    Fields {
        timestamp: "2026-01-02T15:04:05.000000000Z",
        hostname: "web-01",
        logger_name: "app.http",
        level: Level(3),
        filename: "server.py",
        function_name: "handle_request",
        line_number: "142",
        message: "GET /api/v1/orders/8812 200 12.4ms user=4411 bytes=5120 upstream=orders-svc",
        process_id: "4242",
        thread_name: "worker-3",
        ..Fields::default()
    }
}

fn frame_split(c: &mut Criterion) {
    let mut stream = Vec::new();
    for _ in 0..256 {
        push_logger_frame(&mut stream, &sample(), Packing::Packed);
    }
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(256));
    g.bench_function("split_256_packed_frames", |b| {
        b.iter(|| {
            let mut n = 0;
            for f in Frames::new(&stream, 1 << 22) {
                if let Ok(Frame::Payload(p)) = f {
                    n += p.len();
                }
            }
            n
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let packed = logger_payload(&sample(), Packing::Packed);
    let unpacked = logger_payload(&sample(), Packing::Unpacked);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let mut decoder = Decoder::new(4 << 20);
    let mut batch = DecodedBatch::default();
    g.bench_function(format!("packed_{}B", packed.len()), |b| {
        b.iter(|| {
            batch.clear();
            decoder.decode(&packed, &mut batch).unwrap()
        })
    });
    // Unpacked straight from the (unaligned) frame slice, capnp's
    // `unaligned` feature, versus copying into an aligned buffer first.
    g.bench_function(format!("unpacked_{}B_in_place", unpacked.len()), |b| {
        let mut framed = vec![0u8; 4];
        framed.extend_from_slice(&unpacked);
        let payload = &framed[4..];
        b.iter(|| {
            batch.clear();
            decoder.decode(payload, &mut batch).unwrap()
        })
    });
    g.bench_function(
        format!("unpacked_{}B_copied_aligned", unpacked.len()),
        |b| {
            let mut framed = vec![0u8; 4];
            framed.extend_from_slice(&unpacked);
            let payload = &framed[4..];
            let mut aligned = capnp::Word::allocate_zeroed_vec(payload.len().div_ceil(8));
            b.iter(|| {
                let bytes = capnp::Word::words_to_bytes_mut(&mut aligned);
                bytes[..payload.len()].copy_from_slice(payload);
                batch.clear();
                decoder.decode(&bytes[..payload.len()], &mut batch).unwrap()
            })
        },
    );
    g.finish();
}

fn format(c: &mut Criterion) {
    let f = sample();
    let at = ReceivedAt::new(std::time::SystemTime::now());
    let mut g = c.benchmark_group("format");
    g.throughput(Throughput::Elements(1));
    for (name, format) in [("text", LineFormat::Text), ("json", LineFormat::Json)] {
        let formatter = LineFormatter::new(format, 10 << 20);
        let mut out = Vec::with_capacity(1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                formatter.write(&f, 1, &at, &mut out)
            })
        });
    }
    g.finish();
}

/// What a TCP connection does with each frame of text lines: unpack,
/// read the fields in place and format them straight into the line buffer
/// (`Decoder::decode_with` + `LineFormatter::write_raw`), as one stage.
fn frame_to_line(c: &mut Criterion) {
    let packed = logger_payload(&sample(), Packing::Packed);
    let formatter = LineFormatter::new(LineFormat::Text, 10 << 20);
    let at = ReceivedAt::new(std::time::UNIX_EPOCH);
    let mut decoder = Decoder::new(4 << 20);
    let mut lines = Vec::with_capacity(64 << 10);
    let mut g = c.benchmark_group("frame_to_line");
    g.throughput(Throughput::Elements(256));
    g.bench_function("text_256_packed_frames", |b| {
        b.iter(|| {
            lines.clear();
            for _ in 0..256 {
                decoder
                    .decode_with(&packed, |raw| {
                        formatter.write_raw(&raw, 0, &at, &mut lines);
                    })
                    .unwrap();
            }
            lines.len()
        })
    });
    g.finish();
}

fn record(seq: u64, lines: u32) -> Record {
    Record {
        seq,
        count: lines,
        received: Instant::now(),
        queued: Instant::now(),
        lines: Vec::new(),
    }
}

fn reorder(c: &mut Criterion) {
    let mut g = c.benchmark_group("reorder");
    g.throughput(Throughput::Elements(1024));
    // Two producers interleaving: every other record arrives early.
    g.bench_function("1024_records_pairwise_swapped", |b| {
        b.iter_batched(
            || {
                let mut v: Vec<Record> = (0..1024).map(|i| record(i, 1)).collect();
                for pair in v.chunks_mut(2) {
                    pair.swap(0, 1);
                }
                v
            },
            |records| {
                let mut buf = ReorderBuffer::new(0);
                let mut out = 0;
                for r in records {
                    out += buf.offer(r).map_or(0, |_| 1);
                    while buf.pop_ready().is_some() {
                        out += 1;
                    }
                }
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Lines per second through queue + writer into a temp file, with 1 and 4
/// producer threads pushing records of `lines_per_record` formatted lines.
fn writer_throughput(c: &mut Criterion) {
    let line = {
        let mut out = Vec::new();
        LineFormatter::new(LineFormat::Text, 10 << 20).write(
            &sample(),
            0,
            &ReceivedAt::new(std::time::UNIX_EPOCH),
            &mut out,
        );
        out
    };
    let total_lines: u64 = 200_000;
    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(total_lines));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (producers, lines_per_record) in [(1, 1), (4, 1), (1, 64), (4, 64)] {
        g.bench_function(
            format!("{producers}_producers_{lines_per_record}_lines_per_record"),
            |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().unwrap();
                        let queue = Arc::new(RecordQueue::new(65_536, 64 << 20));
                        let seq = Arc::new(Sequencer::starting_at(0));
                        let config = WriterConfig {
                            max_file_size: 1 << 30,
                            ..WriterConfig::default()
                        };
                        let w = writer::spawn(
                            dir.path(),
                            config,
                            queue.clone(),
                            Arc::new(Progress::new(0)),
                        )
                        .unwrap();
                        let start = Instant::now();
                        let per_producer = total_lines / producers / lines_per_record;
                        let handles: Vec<_> = (0..producers)
                            .map(|_| {
                                let (queue, seq, line) = (queue.clone(), seq.clone(), line.clone());
                                thread::spawn(move || {
                                    for _ in 0..per_producer {
                                        let mut lines = Vec::with_capacity(
                                            line.len() * lines_per_record as usize,
                                        );
                                        for _ in 0..lines_per_record {
                                            lines.extend_from_slice(&line);
                                        }
                                        let first = seq.reserve(lines_per_record as u32);
                                        queue.push(Record {
                                            seq: first,
                                            count: lines_per_record as u32,
                                            received: Instant::now(),
                                            queued: Instant::now(),
                                            lines,
                                        });
                                    }
                                })
                            })
                            .collect();
                        for h in handles {
                            h.join().unwrap();
                        }
                        let report = w.shutdown();
                        elapsed += start.elapsed();
                        assert_eq!(report.lines, per_producer * producers * lines_per_record);
                    }
                    elapsed
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    frame_split,
    decode,
    format,
    frame_to_line,
    reorder,
    writer_throughput
);
criterion_main!(benches);
