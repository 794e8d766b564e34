//! Forwarding (`--forward_otlp`) end to end: server A writes its files and
//! forwards every line to server B's OTLP ingest (or to a scripted
//! receiver); B's files are checked line by line. Real sockets on loopback,
//! real files in temp dirs, every wait bounded.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use log_server::{
    format::LineFormat,
    forward::{
        checkpoint,
        export::{ExportConfig, Protocol},
        ForwardConfig,
    },
    server::ServerConfig,
    writer::compress::Compression,
};
use log_server_wire::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;

use crate::util::*;

/// Server B: OTLP ingest on the gRPC port.
fn receiver(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
        tweak(c);
    })
}

fn forward_config(url: String, protocol: Protocol) -> ForwardConfig {
    ForwardConfig {
        export: ExportConfig {
            url,
            protocol,
            timeout: Duration::from_secs(5),
            ca_file: None,
        },
        resource: vec![("deployment.environment".into(), "test".into())],
        batch_lines: 512,
        batch_bytes: 1 << 20,
        stop_timeout: Duration::from_secs(2),
    }
}

fn grpc_url(b: &TestServer) -> String {
    format!("http://{}", b.server().grpc_addr().unwrap())
}

/// Server A in `dir`: TCP in, forwarding to `url`.
fn forwarder(
    dir: &Path,
    url: String,
    protocol: Protocol,
    tweak: impl FnOnce(&mut ServerConfig),
) -> log_server::server::Server {
    let mut config = ServerConfig {
        port: 0,
        log_dir: dir.to_path_buf(),
        only_tcp: true,
        tcp_threads: 1,
        drain_timeout: Duration::from_secs(10),
        forward: Some(forward_config(url, protocol)),
        ..ServerConfig::default()
    };
    // Small files, to rotate often (a file must hold the largest line),
    // yet ten of them hold what a test sends while a debug build forwards.
    config.writer.max_file_size = 1024 * 1024;
    config.max_frame_size = 16 * 1024;
    tweak(&mut config);
    log_server::server::Server::start(config).expect("forwarding server starts")
}

/// How long a forwarding test waits for lines to get somewhere (debug
/// builds of two servers on two CPUs).
const WAIT: Duration = Duration::from_secs(60);

fn forwarded(a: &log_server::server::Server) -> u64 {
    a.forward_stats().unwrap().lines.get()
}

/// `(conn, n)` of every message line of B, in B's order.
fn messages_in(b_dir: &Path, max_files: usize) -> Vec<(usize, usize)> {
    read_lines_so_far(b_dir, max_files)
        .iter()
        .filter_map(|l| parse_message(l))
        .collect()
}

/// Sends `count` messages of connection `conn`, numbered from `from`.
fn send_numbered(a: &log_server::server::Server, conn: usize, from: usize, count: usize) {
    let mut bytes = Vec::new();
    for n in from..from + count {
        log_server_wire::encode::push_logger_frame(
            &mut bytes,
            &fields(&message(conn, n)),
            log_server_wire::encode::Packing::Packed,
        );
    }
    send(a.tcp_addr(), &bytes);
}

#[test]
fn every_line_of_a_reaches_b_once_in_order_across_rotations() {
    let b = receiver(|_| {});
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |_| {});
    let n = 20_000;
    send_numbered(&a, 0, 0, n);
    wait_written(&a, n as u64);
    wait_until("A to forward every line", WAIT, || {
        forwarded(&a) == n as u64
    });
    let report = a.shutdown();
    let f = report.forward.unwrap();
    assert_eq!((f.lines, f.lost, f.behind, f.resent), (n as u64, 0, 0, 0));
    assert!(
        report.writer.rotations >= 3,
        "rotations: {}",
        report.writer.rotations
    );
    let lines = read_lines(&b.config.log_dir, b.config.writer.max_files);
    assert_all_once_in_order(&lines, &[n]);
    // The columns come through: B's line is A's line (same fields, same
    // rendering), but for the resource attribute A added.
    let a_line = read_lines(a_dir.path(), 10).into_iter().last().unwrap();
    let b_line = lines.last().unwrap();
    assert!(
        b_line.starts_with(a_line.trim_end()),
        "A: {a_line}\nB: {b_line}"
    );
    assert!(b_line.contains("deployment.environment"), "{b_line}");
}

/// Threads that keep every CPU busy at normal priority (another program's
/// work) until dropped.
struct BusyCpus {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl BusyCpus {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cpus)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyCpus { stop, threads }
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The forwarder gives way to ingest, not to everything else on the host:
/// while other work keeps every CPU busy, forwarding goes on. Under
/// `SCHED_IDLE`, which it used before, these lines took 54 s here (1.8 s
/// at nice 10), and some were sent twice after a request timed out.
#[test]
fn forwarding_goes_on_while_other_work_keeps_every_cpu_busy() {
    let b = receiver(|_| {});
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |_| {});
    let n = 20_000;
    let busy = BusyCpus::start();
    send_numbered(&a, 0, 0, n);
    wait_written(&a, n as u64);
    wait_until(
        "A to forward every line while the CPUs are busy",
        Duration::from_secs(30),
        || forwarded(&a) == n as u64,
    );
    drop(busy);
    let resent = a.shutdown().forward.unwrap().resent;
    // At least once, and twice only what A says it sent again (a request
    // timed out on a loaded machine is sent again, as designed).
    let mut got = messages_in(&b.config.log_dir, b.config.writer.max_files);
    let all = got.len() as u64;
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, (0..n).map(|i| (0, i)).collect::<Vec<_>>());
    assert!(
        all - n as u64 <= resent,
        "{all} lines for {n}, {resent} resent"
    );
}

#[test]
fn a_forwards_over_http_from_compressed_rotated_files() {
    let b = receiver(|_| {});
    let a_dir = tempfile::tempdir().unwrap();
    // B is not there yet: A's lines wait in its files, compressed as they
    // are rotated, and go out once B answers.
    let url = format!("http://{}", b.server().grpc_addr().unwrap());
    let a = forwarder(a_dir.path(), url, Protocol::Http, |c| {
        c.writer.compress = Compression::Zstd;
        c.format = LineFormat::Json;
    });
    let n = 8_000;
    send_numbered(&a, 0, 0, n);
    wait_written(&a, n as u64);
    wait_until("A to forward every line", WAIT, || {
        forwarded(&a) >= n as u64
    });
    assert!(a.shutdown().complete());
    let lines = read_lines(&b.config.log_dir, b.config.writer.max_files);
    assert_all_once_in_order(&lines, &[n]);
    // From JSON lines: A's sequence number travels as an attribute.
    assert!(lines[0].contains("log_server.seq"), "{}", lines[0]);
}

#[test]
fn b_stopped_and_started_again_gets_every_line_once_the_rest_waiting_in_a_s_files() {
    let b = receiver(|_| {});
    let port = b.server().grpc_addr().unwrap().port();
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(
        a_dir.path(),
        format!("http://127.0.0.1:{port}"),
        Protocol::Grpc,
        |c| c.metrics_port = Some(0),
    );
    send_numbered(&a, 0, 0, 2_000);
    wait_until("the first lines forwarded", WAIT, || forwarded(&a) == 2_000);
    // B stops; what A writes meanwhile waits in its files.
    let mut b = b;
    let first = b.stop();
    send_numbered(&a, 0, 2_000, 3_000);
    wait_written(&a, 5_000);
    wait_until("A to be refused and retry", WAIT, || {
        a.forward_stats().unwrap().retries.get() > 0
    });
    assert_eq!(forwarded(&a), 2_000);
    let lag = a
        .forward_stats()
        .unwrap()
        .lag_lines(a.writer().stats.lines.get());
    assert_eq!(lag, 3_000);
    // The lag is in /metrics too, with the other forwarding counters.
    let (_, body) = crate::metrics::scrape(a.metrics_addr().unwrap());
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    };
    assert_eq!(value("log_server_forward_lag_lines"), 3_000);
    assert_eq!(value("log_server_forwarded_lines_total"), 2_000);
    assert!(value("log_server_forward_retries_total") > 0);
    assert!(value("log_server_forward_lag_milliseconds") > 0);
    // B again, on the same port.
    let mut b = receiver_on(port);
    wait_until("A to forward every line to B", WAIT, || {
        forwarded(&a) == 5_000
    });
    send_numbered(&a, 0, 5_000, 1_000);
    wait_until("the later lines too", WAIT, || forwarded(&a) == 6_000);
    assert!(a.shutdown().complete());
    let mut lines = first;
    lines.extend(b.stop());
    assert_all_once_in_order(&lines, &[6_000]);
}

/// B again on `port` (a port just freed; retried if taken meanwhile).
fn receiver_on(port: u16) -> TestServer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = std::panic::catch_unwind(|| receiver(|c| c.grpc_port = port));
        match started {
            Ok(b) => return b,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

#[test]
fn a_stopped_and_started_again_resumes_at_its_checkpoint_without_duplicates() {
    let b = receiver(|_| {});
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |_| {});
    send_numbered(&a, 0, 0, 5_000);
    wait_until("the first lines forwarded", WAIT, || forwarded(&a) == 5_000);
    assert!(a.shutdown().complete());
    let saved = checkpoint::load(a_dir.path()).unwrap().unwrap().unwrap();
    assert_eq!(
        saved.acked, saved.sent,
        "a clean stop leaves nothing in flight"
    );
    // Lines written while forwarding is off (A restarted without it) are
    // forwarded by the next start that has it.
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |c| {
        c.forward = None
    });
    send_numbered(&a, 0, 5_000, 2_000);
    wait_written(&a, 2_000);
    assert!(a.shutdown().complete());
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |_| {});
    assert_eq!(a.forward_stats().unwrap().backlog_at_start.get(), 2_000);
    send_numbered(&a, 0, 7_000, 3_000);
    wait_until("the rest forwarded", WAIT, || forwarded(&a) == 5_000);
    let report = a.shutdown();
    assert_eq!(report.forward.unwrap().resent, 0);
    let lines = read_lines(&b.config.log_dir, b.config.writer.max_files);
    assert_all_once_in_order(&lines, &[10_000]);
}

#[test]
fn files_rotated_out_before_they_were_forwarded_are_counted_lost_once_and_forwarding_goes_on() {
    let b = receiver(|_| {});
    let port = b.server().grpc_addr().unwrap().port();
    drop(b);
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(
        a_dir.path(),
        format!("http://127.0.0.1:{port}"),
        Protocol::Grpc,
        |c| {
            c.writer.max_files = 3;
            c.writer.max_file_size = 64 * 1024;
        },
    );
    // Far more than 3 files of 64 KiB hold, while B is down.
    let n = 6_000;
    send_numbered(&a, 0, 0, n);
    wait_written(&a, n as u64);
    let stats = a.forward_stats().unwrap().clone();
    wait_until("the lost files counted", WAIT, || {
        stats.lost_lines.get() + stats.lag_lines(a.writer().stats.lines.get()) == n as u64
    });
    assert!(stats.lost_files.get() > 0);
    let b = receiver_on(port);
    wait_until("everything left forwarded", WAIT, || {
        stats.lag_lines(a.writer().stats.lines.get()) == 0
    });
    let report = a.shutdown();
    let f = report.forward.unwrap();
    let got = messages_in(&b.config.log_dir, b.config.writer.max_files);
    // Every line is either in B (once, in A's order) or counted lost.
    assert_eq!(got.len() as u64 + f.lost, n as u64, "lost {}", f.lost);
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "in order, none twice"
    );
    // The lines B has are the file being forwarded when B went away and
    // the files rotation had not removed yet: the newest are all there.
    assert_eq!(got.last().unwrap().1, n - 1);
}

/// One answer of the scripted OTLP/HTTP receiver.
#[derive(Clone, Copy)]
enum Answer {
    /// 503 with `Retry-After: 1`.
    Unavailable,
    /// 200 with `partial_success.rejected_log_records`.
    Partial(i64),
    /// No answer at all (for 30 s).
    Hang,
    /// 413: the request is too large.
    TooLarge,
    Ok,
}

/// A plain HTTP/1.1 OTLP receiver that answers requests from `script` in
/// turn (then `Ok`) and keeps the records of those it took.
struct Scripted {
    addr: SocketAddr,
    taken: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<usize>>,
}

fn scripted(script: Vec<Answer>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let taken = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(0usize));
    let (t, r) = (taken.clone(), requests.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (t, r, script) = (t.clone(), r.clone(), script.clone());
            thread::spawn(move || serve(stream, &script, &t, &r));
        }
    });
    Scripted {
        addr,
        taken,
        requests,
    }
}

fn serve(stream: TcpStream, script: &[Answer], taken: &Mutex<Vec<String>>, n: &Mutex<usize>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        assert!(line.starts_with("POST /v1/logs "), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let answer = {
            let mut n = n.lock().unwrap();
            *n += 1;
            script.get(*n - 1).copied().unwrap_or(Answer::Ok)
        };
        if let Answer::Hang = answer {
            thread::sleep(Duration::from_secs(30));
            return;
        }
        let (status, extra, response) = match answer {
            Answer::Hang => unreachable!("returned above"),
            Answer::Unavailable => ("503 Service Unavailable", "Retry-After: 1\r\n", vec![]),
            Answer::TooLarge => ("413 Payload Too Large", "", vec![]),
            Answer::Partial(rejected) => (
                "200 OK",
                "",
                ExportLogsServiceResponse {
                    partial_success: Some(ExportLogsPartialSuccess {
                        rejected_log_records: rejected,
                        error_message: "records too old".into(),
                    }),
                }
                .encode_to_vec(),
            ),
            Answer::Ok => (
                "200 OK",
                "",
                ExportLogsServiceResponse::default().encode_to_vec(),
            ),
        };
        if matches!(answer, Answer::Ok | Answer::Partial(_)) {
            let request = ExportLogsServiceRequest::decode(&body[..]).unwrap();
            let mut t = taken.lock().unwrap();
            for rl in request.resource_logs {
                for sl in rl.scope_logs {
                    for r in sl.log_records {
                        let body = r.body.and_then(|b| b.value);
                        t.push(format!("{body:?}"));
                    }
                }
            }
        }
        write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\n{extra}content-length: {}\r\n\r\n",
            response.len()
        )
        .unwrap();
        out.write_all(&response).unwrap();
    }
}

#[test]
fn a_503_with_retry_after_is_retried_after_it_and_partial_success_is_counted_not_resent() {
    let r = scripted(vec![Answer::Unavailable, Answer::Partial(3)]);
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(
        a_dir.path(),
        format!("http://{}", r.addr),
        Protocol::Http,
        |_| {},
    );
    send_numbered(&a, 0, 0, 100);
    wait_written(&a, 100);
    let started = Instant::now();
    wait_until("the batch to be taken", WAIT, || forwarded(&a) == 100);
    // Retry-After: 1 was waited for.
    assert!(started.elapsed() >= Duration::from_millis(900));
    let stats = a.forward_stats().unwrap().clone();
    assert_eq!(stats.rejected.get(), 3);
    assert_eq!(stats.retries.get(), 1);
    send_numbered(&a, 0, 100, 50);
    wait_until("the next lines", WAIT, || forwarded(&a) == 150);
    assert!(a.shutdown().complete());
    // The 503'd request was sent again, the partly rejected one was not.
    let taken = r.taken.lock().unwrap();
    assert_eq!(taken.len(), 150, "{} requests", r.requests.lock().unwrap());
    assert!(taken[0].contains("conn=0 n=0 "), "{}", taken[0]);
    assert!(taken[149].contains("conn=0 n=149 "), "{}", taken[149]);
}

#[test]
fn a_full_queue_at_b_is_unavailable_and_a_retries_until_b_takes_its_lines() {
    let root = tempfile::tempdir().unwrap();
    // B's writer is stuck on a FIFO nobody reads: its queue fills and it
    // answers UNAVAILABLE (after a shortened wait) until the FIFO is read.
    let (b, fifo) = stuck_grpc_server(root.path());
    let url = format!("http://{}", b.grpc_addr().unwrap());
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(a_dir.path(), url, Protocol::Grpc, |_| {});
    send_numbered(&a, 0, 0, 20_000);
    wait_written(&a, 20_000);
    wait_until("A to be told UNAVAILABLE and retry", WAIT, || {
        a.forward_stats().unwrap().retries.get() > 0
    });
    let lines = shutdown_reading_fifo_after(&a, b, &fifo);
    let got: Vec<_> = lines.iter().filter_map(|l| parse_message(l)).collect();
    assert_eq!(got.len(), 20_000);
    assert!(
        got.iter().enumerate().all(|(i, m)| m.1 == i),
        "once, in order"
    );
}

/// Reads B's FIFO until A has forwarded everything, then stops both and
/// returns what B wrote.
fn shutdown_reading_fifo_after(
    a: &log_server::server::Server,
    b: log_server::server::Server,
    fifo: &Path,
) -> Vec<String> {
    let reader = {
        let fifo = fifo.to_path_buf();
        thread::spawn(move || {
            let mut text = String::new();
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        })
    };
    wait_until("A to forward everything", WAIT, || forwarded(a) == 20_000);
    assert!(b.shutdown().complete());
    reader.join().unwrap().lines().map(str::to_string).collect()
}

#[test]
fn a_stop_with_a_request_unanswered_marks_it_sent_and_the_next_start_counts_it_resent() {
    let silent = scripted(vec![Answer::Hang]);
    let a_dir = tempfile::tempdir().unwrap();
    let a = forwarder(
        a_dir.path(),
        format!("http://{}", silent.addr),
        Protocol::Http,
        |_| {},
    );
    send_numbered(&a, 0, 0, 100);
    wait_until("the request to reach the receiver", WAIT, || {
        *silent.requests.lock().unwrap() == 1
    });
    let report = a.shutdown();
    assert_eq!(report.forward.unwrap().lines, 0);
    let saved = checkpoint::load(a_dir.path()).unwrap().unwrap().unwrap();
    assert!(saved.sent > saved.acked, "{saved:?}");
    // The next start sends those lines again and says so.
    let r = scripted(vec![]);
    let a = forwarder(
        a_dir.path(),
        format!("http://{}", r.addr),
        Protocol::Http,
        |_| {},
    );
    wait_until("the lines sent again", WAIT, || forwarded(&a) == 100);
    let f = a.shutdown().forward.unwrap();
    assert_eq!((f.lines, f.resent), (100, 100));
    assert_eq!(r.taken.lock().unwrap().len(), 100);
}

#[test]
fn a_batch_too_large_for_the_receiver_is_sent_again_in_halves_each_line_once() {
    let r = scripted(vec![Answer::TooLarge]);
    let a_dir = tempfile::tempdir().unwrap();
    // Written before forwarding starts: one batch of 400 at first.
    let writer = forwarder(a_dir.path(), String::new(), Protocol::Http, |c| {
        c.forward = None
    });
    send_numbered(&writer, 0, 0, 400);
    wait_written(&writer, 400);
    assert!(writer.shutdown().complete());
    let a = forwarder(
        a_dir.path(),
        format!("http://{}", r.addr),
        Protocol::Http,
        |_| {},
    );
    wait_until("every line forwarded", WAIT, || forwarded(&a) == 400);
    assert!(a.shutdown().complete());
    let taken = r.taken.lock().unwrap();
    assert_eq!(taken.len(), 400);
    for (i, body) in taken.iter().enumerate() {
        assert!(body.contains(&format!("conn=0 n={i} ")), "{i}: {body}");
    }
    // 413, then the 400 lines in batches of 256 and 144.
    assert_eq!(*r.requests.lock().unwrap(), 3);
}

/// `_main.log.0.gz` in `dir`: `lines` messages of connection 9, gzipped
/// and cut in half. Returns the text it held whole.
fn damaged_gzip(dir: &Path, lines: usize) -> String {
    let text: String = (0..lines).map(|n| format!("{}\n", message(9, n))).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(dir.join("_main.log.0.gz"), &gz[..gz.len() / 2]).unwrap();
    text
}

#[test]
fn a_damaged_compressed_file_does_not_stall_forwarding_of_the_files_after_it() {
    let b = receiver(|_| {});
    let a_dir = tempfile::tempdir().unwrap();
    // A rotated file whose gzip stream is cut short (a disk that lost its
    // end), then the active file.
    damaged_gzip(a_dir.path(), 500);
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |_| {});
    send_numbered(&a, 0, 0, 300);
    wait_until("the active file's lines forwarded", WAIT, || {
        messages_in(&b.config.log_dir, 10)
            .iter()
            .filter(|m| m.0 == 0)
            .count()
            == 300
    });
    assert!(a.shutdown().complete());
    let got = messages_in(&b.config.log_dir, 10);
    // What could be read of the damaged file came first, in order, once.
    let damaged: Vec<_> = got.iter().filter(|m| m.0 == 9).map(|m| m.1).collect();
    assert!(
        damaged.iter().enumerate().all(|(i, n)| i == *n),
        "{damaged:?}"
    );
    assert!(damaged.len() < 500);
    let rest: Vec<_> = got.iter().filter(|m| m.0 == 0).map(|m| m.1).collect();
    assert_eq!(rest, (0..300).collect::<Vec<_>>());
}

#[test]
fn a_checkpoint_past_the_damage_of_a_compressed_file_passes_it_over() {
    let b = receiver(|_| {});
    let a_dir = tempfile::tempdir().unwrap();
    let old = damaged_gzip(a_dir.path(), 2_000);
    // A checkpoint near the end of that file, past what can be read of it.
    let head = log_server::forward::follow::Head::of(old.as_bytes()).unwrap();
    let near_end = old.len() as u64 - 100;
    let c = checkpoint::Checkpoint {
        head,
        acked: near_end,
        sent: near_end,
    };
    checkpoint::store(a_dir.path(), &c, 0o640, false).unwrap();
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |_| {});
    send_numbered(&a, 0, 0, 300);
    wait_until("the active file's lines forwarded", WAIT, || {
        forwarded(&a) == 300
    });
    assert!(a.shutdown().complete());
    let got = messages_in(&b.config.log_dir, 10);
    assert_eq!(got, (0..300).map(|n| (0, n)).collect::<Vec<_>>());
}

#[test]
fn a_directory_planted_at_the_checkpoint_name_neither_stops_the_server_nor_forwarding() {
    let b = receiver(|_| {});
    let a_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(a_dir.path().join(checkpoint::NAME)).unwrap();
    let a = forwarder(a_dir.path(), grpc_url(&b), Protocol::Grpc, |_| {});
    send_numbered(&a, 0, 0, 1_000);
    wait_until("every line forwarded", WAIT, || forwarded(&a) == 1_000);
    assert!(a.shutdown().complete());
    let got = messages_in(&b.config.log_dir, 10);
    assert_eq!(got, (0..1_000).map(|n| (0, n)).collect::<Vec<_>>());
}
