//! The `log-server` binary: flags -> [`ServerConfig`], diagnostics to
//! stderr, run until SIGINT or SIGTERM, then a graceful shutdown and a
//! final summary.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use log_server::{
    format::LineFormat,
    ingest::{
        budget::DEFAULT_INGEST_MEMORY,
        frame::DEFAULT_MAX_FRAME_SIZE,
        grpc::{AckMode, Http2Limits},
        tcp::IoEngine,
    },
    metrics::{IngestStats, WriterStats},
    queue::DEFAULT_QUEUE_CAPACITY,
    server::{self, Server, ServerConfig},
    writer::{self, FsyncPolicy},
};
use tracing_subscriber::EnvFilter;

/// A fast, lossless log sink for one host: Cap'n Proto over TCP and gRPC in,
/// one globally ordered stream of lines in rotating files out.
#[derive(Debug, Parser)]
#[command(name = "log-server", version, about, long_about = None)]
struct Args {
    /// Address to listen on. Loopback by default: on any other address, every host that can reach it can write logs.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// TCP port for length-prefixed Cap'n Proto frames.
    #[arg(long, default_value_t = server::DEFAULT_PORT)]
    port: u16,
    /// gRPC port (protobuf LogRequest).
    #[arg(long = "grpc_port", alias = "grpc-port", default_value_t = server::DEFAULT_GRPC_PORT)]
    grpc_port: u16,
    /// Serve TCP only: never start gRPC nor bind its port.
    #[arg(long = "only_tcp", alias = "only-tcp")]
    only_tcp: bool,
    /// Directory of the log files (created if missing).
    #[arg(long = "log_dir", alias = "log-dir", default_value = "./logs")]
    log_dir: PathBuf,
    /// Mode of the log files the server creates, octal; set exactly, whatever the umask (existing files keep theirs).
    #[arg(long = "file_mode", alias = "file-mode", value_parser = parse_mode, default_value = "0640")]
    file_mode: u32,
    /// Mode of the log directory (and parents) when the server creates it, octal; set exactly, whatever the umask.
    #[arg(long = "dir_mode", alias = "dir-mode", value_parser = parse_mode, default_value = "0750")]
    dir_mode: u32,
    /// Accept a log directory that its group or others can write (or that another user owns); refused by default, since they could plant links or files in it.
    #[arg(long = "allow_shared_log_dir", alias = "allow-shared-log-dir")]
    allow_shared_log_dir: bool,
    /// Files kept, counting the active _main.log.
    #[arg(long = "max_files", alias = "max-files", default_value_t = writer::DEFAULT_MAX_FILES)]
    max_files: usize,
    /// Largest size of one log file, bytes; rotation happens before a line would pass it.
    #[arg(long = "max_file_size", alias = "max-file-size", default_value_t = writer::DEFAULT_MAX_FILE_SIZE)]
    max_file_size: u64,
    /// Largest frame payload (and unpacked message) accepted, bytes; a larger frame closes its connection.
    #[arg(long = "max_frame_size", alias = "max-frame-size", default_value_t = DEFAULT_MAX_FRAME_SIZE)]
    max_frame_size: usize,
    /// Line format: fixed-width text columns, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LineFormat::Text)]
    format: LineFormat,
    /// Records the queue between ingest and writer holds before producers wait.
    #[arg(long = "queue_capacity", alias = "queue-capacity", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    queue_capacity: usize,
    /// When to fsync: never, each file as it is rotated out and at shutdown, or after every batch too.
    #[arg(long, value_enum, default_value_t = FsyncPolicy::Rotate)]
    fsync: FsyncPolicy,
    /// TCP ingest threads; each new connection goes to the one with the fewest open [default: number of cores].
    #[arg(long = "tcp_threads", alias = "tcp-threads")]
    tcp_threads: Option<usize>,
    /// TCP I/O engine: io_uring if available else epoll, io_uring only, or epoll only.
    #[arg(long = "io_engine", alias = "io-engine", value_enum, default_value_t = IoEngine::Auto)]
    io_engine: IoEngine,
    /// Most TCP connections open at once; more are closed at once.
    #[arg(long = "max_connections", alias = "max-connections", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Close a TCP connection silent for this many seconds (0 = never).
    #[arg(long = "idle_timeout", alias = "idle-timeout", default_value_t = 0)]
    idle_timeout: u64,
    /// Close a TCP connection silent this many seconds in the middle of a frame (slowloris), or that waited this long for memory for its frame (0 = never).
    #[arg(long = "frame_timeout", alias = "frame-timeout", default_value_t = server::DEFAULT_FRAME_TIMEOUT.as_secs())]
    frame_timeout: u64,
    /// Bytes all TCP connections' buffers may hold together; past it a connection stops reading until memory is given back.
    #[arg(long = "ingest_memory", alias = "ingest-memory", default_value_t = DEFAULT_INGEST_MEMORY)]
    ingest_memory: usize,
    /// Worker threads of the gRPC runtime.
    #[arg(long = "grpc_threads", alias = "grpc-threads", default_value_t = 2)]
    grpc_threads: usize,
    /// Most gRPC connections open at once; more are closed as soon as they are accepted.
    #[arg(long = "grpc_max_connections", alias = "grpc-max-connections", default_value_t = server::DEFAULT_GRPC_MAX_CONNECTIONS)]
    grpc_max_connections: usize,
    /// Concurrent gRPC calls (HTTP/2 streams) on one connection.
    #[arg(long = "grpc_max_streams", alias = "grpc-max-streams", default_value_t = Http2Limits::default().max_concurrent_streams)]
    grpc_max_streams: u32,
    /// Streams the server may reset for protocol errors on one connection before closing it (reset floods).
    #[arg(long = "grpc_max_reset_streams", alias = "grpc-max-reset-streams", default_value_t = Http2Limits::default().max_local_error_reset_streams)]
    grpc_max_reset_streams: usize,
    /// Request bytes all gRPC calls may hold in memory at once; a call that waits 5 s for room is answered RESOURCE_EXHAUSTED.
    #[arg(long = "grpc_max_inflight_bytes", alias = "grpc-max-inflight-bytes", default_value_t = server::DEFAULT_GRPC_MAX_INFLIGHT_BYTES)]
    grpc_max_inflight_bytes: usize,
    /// Seconds a gRPC call may be silent in the middle of a message before it is ended (streams idle between messages stay open).
    #[arg(
        long = "grpc_message_timeout",
        alias = "grpc-message-timeout",
        default_value_t = 30
    )]
    grpc_message_timeout: u64,
    /// Seconds between HTTP/2 keepalive PINGs on a gRPC connection.
    #[arg(long = "grpc_keepalive", alias = "grpc-keepalive", default_value_t = Http2Limits::default().keepalive_interval.as_secs())]
    grpc_keepalive: u64,
    /// Seconds a keepalive PING may go unanswered before its connection is closed.
    #[arg(long = "grpc_keepalive_timeout", alias = "grpc-keepalive-timeout", default_value_t = Http2Limits::default().keepalive_timeout.as_secs())]
    grpc_keepalive_timeout: u64,
    /// When a gRPC call is answered: message queued, its line written to the file, or written and fsynced (needs --fsync batch).
    #[arg(long = "grpc_ack", alias = "grpc-ack", value_enum, default_value_t = AckMode::Written)]
    grpc_ack: AckMode,
    /// Seconds between stats lines on stderr (0 = off).
    #[arg(
        long = "stats_interval",
        alias = "stats-interval",
        default_value_t = 10
    )]
    stats_interval: u64,
    /// At shutdown, write the receive-to-written latency distribution of the whole run to this file (HdrHistogram .hgrm, milliseconds).
    #[arg(long = "histogram_out", alias = "histogram-out")]
    histogram_out: Option<PathBuf>,
    /// More diagnostics: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Args {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            host: self.host,
            port: self.port,
            grpc_port: self.grpc_port,
            only_tcp: self.only_tcp,
            log_dir: self.log_dir.clone(),
            file_mode: self.file_mode,
            dir_mode: self.dir_mode,
            allow_shared_log_dir: self.allow_shared_log_dir,
            max_files: self.max_files,
            max_file_size: self.max_file_size,
            max_frame_size: self.max_frame_size,
            format: self.format,
            queue_capacity: self.queue_capacity,
            fsync: self.fsync,
            tcp_threads: self.tcp_threads.unwrap_or_else(server::default_tcp_threads),
            io_engine: self.io_engine,
            max_connections: self.max_connections,
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            frame_timeout: (self.frame_timeout > 0)
                .then(|| Duration::from_secs(self.frame_timeout)),
            ingest_memory: self.ingest_memory,
            grpc_threads: self.grpc_threads,
            grpc_ack: self.grpc_ack,
            grpc_max_connections: self.grpc_max_connections,
            grpc_max_inflight_bytes: self.grpc_max_inflight_bytes,
            grpc_message_timeout: Duration::from_secs(self.grpc_message_timeout),
            grpc_http2: Http2Limits {
                max_concurrent_streams: self.grpc_max_streams,
                max_local_error_reset_streams: self.grpc_max_reset_streams,
                keepalive_interval: Duration::from_secs(self.grpc_keepalive),
                keepalive_timeout: Duration::from_secs(self.grpc_keepalive_timeout),
                ..Http2Limits::default()
            },
            ..ServerConfig::default()
        }
    }
}

/// A file mode in octal: `640`, `0640` or `0o640`, permission bits only.
fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 0640"))?;
    if mode > 0o777 {
        return Err(format!(
            "{s:?} has bits beyond the permissions (at most 0777)"
        ));
    }
    Ok(mode)
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.verbose);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("log-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(args: &Args) -> anyhow::Result<()> {
    raise_fd_limit();
    let config = args.config();
    let server = Server::start(config.clone()).context("cannot start")?;
    let grpc = server
        .grpc_addr()
        .map_or_else(|| "off (--only_tcp)".to_string(), |a| a.to_string());
    tracing::info!(
        tcp = %server.tcp_addr(),
        grpc = %grpc,
        engine = %server.io_engine(),
        tcp_threads = config.tcp_threads,
        log_dir = %config.log_dir.display(),
        max_files = config.max_files,
        max_file_size = config.max_file_size,
        format = ?config.format,
        fsync = ?config.fsync,
        "log-server is listening."
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stats = (args.stats_interval > 0).then(|| {
        let (server_stats, writer_stats, stop) = (
            server.ingest_stats().clone(),
            server.writer().clone(),
            stop.clone(),
        );
        let queue_len = {
            let ingress = server.ingress().clone();
            move || ingress.queue().len()
        };
        let interval = Duration::from_secs(args.stats_interval);
        thread::Builder::new()
            .name("stats".into())
            .spawn(move || {
                stats_loop(
                    interval,
                    &server_stats,
                    &writer_stats.stats,
                    queue_len,
                    &stop,
                )
            })
            .expect("spawn the stats thread")
    });

    wait_for_signal().context("cannot wait for signals")?;
    tracing::info!("Shutting down: draining connections, the queue and the writer.");
    stop.store(true, Ordering::Relaxed);
    let writer_shared = server.writer().clone();
    let report = server.shutdown();
    if let Some(t) = stats {
        t.thread().unpark();
        let _ = t.join();
    }
    tracing::info!(
        lines = report.writer.lines,
        bytes = report.writer.bytes,
        tcp_messages = report.tcp_messages,
        grpc_messages = report.grpc_messages,
        decode_errors = report.decode_errors,
        rotations = report.writer.rotations,
        retries = report.writer.retries,
        latency = %report.writer.latency,
        "Stopped; every accepted message is written."
    );
    if let Some(path) = &args.histogram_out {
        let h = writer_shared.stats.latency_histogram();
        std::fs::File::create(path)
            .and_then(|mut f| log_server::metrics::write_hgrm(&h, &mut f))
            .with_context(|| format!("cannot write the latency histogram to {}", path.display()))?;
        tracing::info!(path = %path.display(), "Wrote the latency distribution.");
    }
    if report.writer.abandoned_lines > 0 {
        anyhow::bail!(
            "{} lines could not be written before the shutdown timeout",
            report.writer.abandoned_lines
        );
    }
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}

/// One stats line every `interval` until `stop`: rates over the interval,
/// queue and reorder depth, and the receive-to-written latency of the lines
/// written during the interval.
fn stats_loop(
    interval: Duration,
    ingest: &IngestStats,
    writer: &WriterStats,
    queue_len: impl Fn() -> usize,
    stop: &AtomicBool,
) {
    let mut last = Instant::now();
    let (mut last_tcp, mut last_grpc, mut last_lines, mut last_bytes) = (0, 0, 0, 0);
    while !stop.load(Ordering::Relaxed) {
        thread::park_timeout(interval.saturating_sub(last.elapsed()));
        if stop.load(Ordering::Relaxed) || last.elapsed() < interval {
            continue;
        }
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let per_s = |now: u64, before: u64| ((now - before) as f64 / secs) as u64;
        let tcp = IngestStats::get(&ingest.tcp_messages);
        let grpc = IngestStats::get(&ingest.grpc_messages);
        let lines = WriterStats::get(&writer.lines);
        let bytes = WriterStats::get(&writer.bytes);
        tracing::info!(
            tcp_in_per_s = per_s(tcp, last_tcp),
            grpc_in_per_s = per_s(grpc, last_grpc),
            written_per_s = per_s(lines, last_lines),
            mb_written_per_s = format!("{:.1}", (bytes - last_bytes) as f64 / secs / 1e6),
            queue = queue_len(),
            reorder = WriterStats::get(&writer.reorder_waiting),
            connections = IngestStats::get(&ingest.connections_open),
            ingest_memory_mb = format!("{:.1}", IngestStats::get(&ingest.ingest_memory_bytes) as f64 / 1e6),
            latency = %writer.take_interval_latency(),
            retries = WriterStats::get(&writer.retries),
            rotations = WriterStats::get(&writer.rotations),
            "stats"
        );
        (last_tcp, last_grpc, last_lines, last_bytes) = (tcp, grpc, lines, bytes);
    }
}

/// Raises the soft open-files limit to the hard limit: each connection is a
/// file descriptor, and the usual soft limit of 1024 is below
/// `--max_connections`.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_and_permission_bits_only() {
        assert_eq!(parse_mode("0640"), Ok(0o640));
        assert_eq!(parse_mode("750"), Ok(0o750));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0948").is_err());
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("rw-r-----").is_err());
        let args = Args::try_parse_from(["log-server"]).unwrap();
        assert_eq!((args.file_mode, args.dir_mode), (0o640, 0o750));
        assert!(!args.allow_shared_log_dir);
        let args = Args::try_parse_from([
            "log-server",
            "--file-mode",
            "0600",
            "--dir_mode",
            "0700",
            "--allow-shared-log-dir",
        ])
        .unwrap();
        let config = args.config();
        assert_eq!((config.file_mode, config.dir_mode), (0o600, 0o700));
        assert!(config.allow_shared_log_dir);
    }
}
