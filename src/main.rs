//! The `log-server` binary: flags -> [`ServerConfig`], diagnostics to
//! stderr, run until SIGINT or SIGTERM, then a graceful shutdown and a
//! final summary.
//!
//! Around the library's pipeline it owns the process's life: diagnostics go
//! through a stderr thread that can never panic or stall a pipeline thread
//! ([`diagnostics`]); the first SIGINT/SIGTERM starts a shutdown with one
//! deadline (`--shutdown_timeout`, counted from the signal), a second one
//! exits at once with status 2, SIGHUP is logged and ignored, SIGXFSZ is
//! ignored ([`signals`], [`ignore_sigxfsz`]); a server thread that dies ends
//! the process with status 1. The summary says "every accepted message is
//! written" only when it is true; otherwise the exit status is 1.

use std::{
    io::{IsTerminal, Write as _},
    net::IpAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::RecvTimeoutError,
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use log_server::systemd::Notifier;
use log_server::writer::compress::Compression;
use log_server::{
    format::LineFormat,
    forward::{
        export::{ExportConfig, Protocol},
        ForwardConfig, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_LINES,
    },
    ingest::{
        budget::DEFAULT_INGEST_MEMORY,
        grpc::{AckMode, Http2Limits},
        tcp::IoEngine,
    },
    metrics::{ForwardStats, IngestStats, Stage, WriterStats},
    queue::{DEFAULT_QUEUE_CAPACITY, DEFAULT_QUEUE_MAX_BYTES},
    server::{self, Server, ServerConfig},
    writer::{
        self,
        file::{DirOptions, DEFAULT_DIR_MODE, DEFAULT_FILE_MODE},
        FsyncPolicy, WriterConfig,
    },
};
use log_server_wire::frame::DEFAULT_MAX_FRAME_SIZE;
use tracing_subscriber::EnvFilter;

/// A fast, lossless log sink for one host: Cap'n Proto over TCP and gRPC in,
/// one globally ordered stream of lines in rotating files out.
#[derive(Debug, Parser)]
#[command(name = "log-server", version, about, long_about = None)]
struct Args {
    /// Address to listen on. Loopback by default: on any other address, every host that can reach it can write logs.
    #[arg(long, default_value_t = server::DEFAULT_HOST)]
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
    #[arg(long = "log_dir", alias = "log-dir", default_value = server::DEFAULT_LOG_DIR)]
    log_dir: PathBuf,
    /// Mode of the log files the server creates, octal; set exactly, whatever the umask (existing files keep theirs).
    #[arg(long = "file_mode", alias = "file-mode", value_parser = parse_mode, default_value_t = Mode(DEFAULT_FILE_MODE))]
    file_mode: Mode,
    /// Mode of the log directory (and parents) when the server creates it, octal; set exactly, whatever the umask.
    #[arg(long = "dir_mode", alias = "dir-mode", value_parser = parse_mode, default_value_t = Mode(DEFAULT_DIR_MODE))]
    dir_mode: Mode,
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
    #[arg(long, value_enum, default_value_t = LineFormat::default())]
    format: LineFormat,
    /// Records the queue between ingest and writer holds before producers wait.
    #[arg(long = "queue_capacity", alias = "queue-capacity", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    queue_capacity: usize,
    /// Bytes of lines the queue and the writer's reorder buffer may hold before producers wait (a record is always let into an empty queue).
    #[arg(long = "queue_memory", alias = "queue-memory", default_value_t = DEFAULT_QUEUE_MAX_BYTES)]
    queue_memory: usize,
    /// When to fsync: never, each file as it is rotated out and at shutdown, or after every batch too.
    #[arg(long, value_enum, default_value_t = FsyncPolicy::default())]
    fsync: FsyncPolicy,
    /// Compress each rotated file on a helper thread into _main.log.N.gz or .zst (the writer never waits for it).
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compress: Compression,
    /// TCP ingest threads; each new connection goes to the one with the fewest open [default: number of cores].
    #[arg(long = "tcp_threads", alias = "tcp-threads")]
    tcp_threads: Option<usize>,
    /// TCP I/O engine: io_uring if available else epoll, io_uring only, or epoll only.
    #[arg(long = "io_engine", alias = "io-engine", value_enum, default_value_t = IoEngine::default())]
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
    #[arg(long = "grpc_threads", alias = "grpc-threads", default_value_t = server::DEFAULT_GRPC_THREADS)]
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
        default_value_t = server::DEFAULT_GRPC_MESSAGE_TIMEOUT.as_secs()
    )]
    grpc_message_timeout: u64,
    /// Seconds between HTTP/2 keepalive PINGs on a gRPC connection.
    #[arg(long = "grpc_keepalive", alias = "grpc-keepalive", default_value_t = Http2Limits::default().keepalive_interval.as_secs())]
    grpc_keepalive: u64,
    /// Seconds a keepalive PING may go unanswered before its connection is closed.
    #[arg(long = "grpc_keepalive_timeout", alias = "grpc-keepalive-timeout", default_value_t = Http2Limits::default().keepalive_timeout.as_secs())]
    grpc_keepalive_timeout: u64,
    /// When a gRPC call is answered: message queued, its line written to the file, or written and fsynced (needs --fsync batch).
    #[arg(long = "grpc_ack", alias = "grpc-ack", value_enum, default_value_t = AckMode::default())]
    grpc_ack: AckMode,
    /// Seconds from SIGINT/SIGTERM until the shutdown gives up on a stuck file system and exits non-zero, counting what it could not write.
    #[arg(
        long = "shutdown_timeout",
        alias = "shutdown-timeout",
        default_value_t = writer::DEFAULT_SHUTDOWN_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    shutdown_timeout: u64,
    /// Also serve GET /metrics (Prometheus text) on this port of its own, on --host; /metrics is always on the gRPC port too.
    #[arg(long = "metrics_port", alias = "metrics-port")]
    metrics_port: Option<u16>,
    /// Forward every line written, at least once, to this OTLP endpoint (an OpenTelemetry Collector, another log-server): http://host:4317 for OTLP/gRPC, https:// for TLS. Off by default.
    #[arg(long = "forward_otlp", alias = "forward-otlp", value_name = "URL")]
    forward_otlp: Option<String>,
    /// OTLP/gRPC, or OTLP/HTTP with protobuf bodies to URL/v1/logs.
    #[arg(long = "forward_protocol", alias = "forward-protocol", value_enum, default_value_t = Protocol::Grpc)]
    forward_protocol: Protocol,
    /// A resource attribute added to every forwarded record, as key=value (repeatable), e.g. deployment.environment=prod.
    #[arg(long = "forward_resource", alias = "forward-resource", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    forward_resource: Vec<(String, String)>,
    /// PEM file of a CA to trust (besides the system's) for an https:// --forward_otlp.
    #[arg(long = "forward_ca", alias = "forward-ca", value_name = "FILE")]
    forward_ca: Option<PathBuf>,
    /// Seconds an export request may take before it is retried.
    #[arg(long = "forward_timeout", alias = "forward-timeout", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    forward_timeout: u64,
    /// Most lines in one export request.
    #[arg(long = "forward_batch_lines", alias = "forward-batch-lines", default_value_t = DEFAULT_BATCH_LINES)]
    forward_batch_lines: usize,
    /// Most bytes in one export request (keep it under the destination's largest request: 4 MiB for a Collector's gRPC receiver by default).
    #[arg(long = "forward_batch_bytes", alias = "forward-batch-bytes", default_value_t = DEFAULT_BATCH_BYTES)]
    forward_batch_bytes: usize,
    /// Seconds between stats lines on stderr (0 = off).
    #[arg(
        long = "stats_interval",
        alias = "stats-interval",
        default_value_t = 10
    )]
    stats_interval: u64,
    /// At shutdown, write the receive-to-written latency distribution of the whole run to this file (HdrHistogram .hgrm, milliseconds), and its two stages beside it (NAME.received-to-queued.hgrm, NAME.queued-to-written.hgrm).
    #[arg(long = "histogram_out", alias = "histogram-out")]
    histogram_out: Option<PathBuf>,
    /// Format of the server's own diagnostics on stderr: readable text, or one JSON object per line.
    #[arg(long = "log_format", alias = "log-format", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
            max_frame_size: self.max_frame_size,
            format: self.format,
            queue_capacity: self.queue_capacity,
            queue_max_bytes: self.queue_memory,
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
            metrics_port: self.metrics_port,
            grpc_message_timeout: Duration::from_secs(self.grpc_message_timeout),
            grpc_http2: Http2Limits {
                max_concurrent_streams: self.grpc_max_streams,
                max_local_error_reset_streams: self.grpc_max_reset_streams,
                keepalive_interval: Duration::from_secs(self.grpc_keepalive),
                keepalive_timeout: Duration::from_secs(self.grpc_keepalive_timeout),
                ..Http2Limits::default()
            },
            writer: WriterConfig {
                max_files: self.max_files,
                max_file_size: self.max_file_size,
                fsync: self.fsync,
                compress: self.compress,
                dir: DirOptions {
                    file_mode: self.file_mode.0,
                    dir_mode: self.dir_mode.0,
                    allow_shared: self.allow_shared_log_dir,
                },
                shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
                ..WriterConfig::default()
            },
            forward: self.forward_otlp.as_ref().map(|url| ForwardConfig {
                export: ExportConfig {
                    url: url.clone(),
                    protocol: self.forward_protocol,
                    timeout: Duration::from_secs(self.forward_timeout),
                    ca_file: self.forward_ca.clone(),
                },
                resource: self.forward_resource.clone(),
                batch_lines: self.forward_batch_lines,
                batch_bytes: self.forward_batch_bytes,
                stop_timeout: Duration::from_secs(2),
            }),
            ..ServerConfig::default()
        }
    }
}

/// A permission mode as `--file_mode` and `--dir_mode` take and show it:
/// octal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode(u32);

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// `key=value`, the key not empty.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?} is not key=value (e.g. deployment.environment=prod)"
        )),
    }
}

/// A file mode in octal: `640`, `0640` or `0o640`, permission bits only.
fn parse_mode(s: &str) -> Result<Mode, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{s:?} is not an octal mode such as 0640"))?;
    if mode > 0o777 {
        return Err(format!(
            "{s:?} has bits beyond the permissions (at most 0777)"
        ));
    }
    Ok(Mode(mode))
}

fn main() -> ExitCode {
    // Before any thread starts: an arena already made for a thread stays.
    tune_malloc();
    let args = Args::parse();
    let sink = init_tracing(args.verbose, args.log_format);
    let code = match run(&args, &sink) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // After what was logged before it; not `eprintln!`, which
            // panics when stderr is gone.
            sink.flush(FINAL_FLUSH);
            let _ = writeln!(std::io::stderr(), "log-server: {}", one_sentence(&e));
            ExitCode::FAILURE
        }
    };
    sink.flush(FINAL_FLUSH);
    code
}

/// An error and its causes as one line, each cause once: the library's
/// errors name their cause in their own message (`cannot open X: <cause>`),
/// so `{:#}` printed it twice.
fn one_sentence(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// How the server's own diagnostics are written (`--log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One readable line per event: time, level, target, message, fields.
    Text,
    /// One JSON object per event (timestamp, level, target, message and the
    /// event's fields at the top level), for log shippers.
    Json,
}

fn init_tracing(verbose: u8, format: LogFormat) -> diagnostics::Sink {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let sink = diagnostics::Sink::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, not for journald or a file.
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal())
        // The sink never fails a write; were it to, tracing-subscriber would
        // report it with `eprintln!`, which panics on a dead stderr.
        .log_internal_errors(false)
        .with_writer(sink.clone());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    sink
}

/// Diagnostics to stderr that can neither panic nor hold up the pipeline.
///
/// tracing's stderr writer runs on the thread that logs (the writer thread
/// included), and its write error handler panics when stderr is a pipe whose
/// reader is gone: one warning then killed the writer thread, and every
/// message accepted afterwards was lost. Here every diagnostic line goes
/// through a bounded channel to one "stderr" thread that does the blocking
/// writes and ignores their errors. A full channel (stderr stalled) or a
/// failed write drops the line and counts it: a dead or slow stderr costs
/// diagnostics, never log data.
mod diagnostics {
    use std::{
        io::{self, Write},
        sync::{
            atomic::{AtomicU64, Ordering},
            mpsc::{self, SyncSender, TrySendError},
        },
        thread,
        time::Duration,
    };

    /// Lines waiting for the stderr thread before new ones are dropped.
    const BACKLOG: usize = 4096;

    /// Diagnostic lines dropped (stderr failed or stalled).
    static DROPPED: AtomicU64 = AtomicU64::new(0);

    enum Msg {
        Line(Vec<u8>),
        /// Answered once every line sent before it was written (or dropped).
        Flush(SyncSender<()>),
    }

    /// The `MakeWriter` of the tracing subscriber: each event becomes one
    /// [`EventWriter`] that sends its bytes when dropped.
    #[derive(Debug, Clone)]
    pub(crate) struct Sink {
        /// `None` when the stderr thread could not be started: then the
        /// calling thread writes, still ignoring errors.
        tx: Option<SyncSender<Msg>>,
    }

    impl Sink {
        /// Starts the stderr thread.
        pub(crate) fn start() -> Sink {
            let (tx, rx) = mpsc::sync_channel::<Msg>(BACKLOG);
            let spawned = thread::Builder::new().name("stderr".into()).spawn(move || {
                let mut stderr = io::stderr();
                for msg in rx {
                    match msg {
                        Msg::Line(bytes) => {
                            if stderr.write_all(&bytes).is_err() {
                                DROPPED.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
            Sink {
                tx: spawned.is_ok().then_some(tx),
            }
        }

        /// Waits (at most `timeout`) until every diagnostic logged so far has
        /// been written; false if it had to stop waiting.
        pub(crate) fn flush(&self, timeout: Duration) -> bool {
            let Some(tx) = &self.tx else { return true };
            let (done_tx, done_rx) = mpsc::sync_channel(1);
            if tx.try_send(Msg::Flush(done_tx)).is_err() {
                return false;
            }
            done_rx.recv_timeout(timeout).is_ok()
        }

        /// Diagnostic lines dropped so far.
        pub(crate) fn dropped() -> u64 {
            DROPPED.load(Ordering::Relaxed)
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
        type Writer = EventWriter;

        fn make_writer(&'a self) -> EventWriter {
            EventWriter {
                buf: Vec::new(),
                tx: self.tx.clone(),
            }
        }
    }

    /// One event's bytes, sent to the stderr thread when dropped.
    #[derive(Debug)]
    pub(crate) struct EventWriter {
        buf: Vec<u8>,
        tx: Option<SyncSender<Msg>>,
    }

    impl Write for EventWriter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.buf.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for EventWriter {
        fn drop(&mut self) {
            if self.buf.is_empty() {
                return;
            }
            let line = std::mem::take(&mut self.buf);
            match &self.tx {
                Some(tx) => match tx.try_send(Msg::Line(line)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                },
                None => {
                    if io::stderr().write_all(&line).is_err() {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

fn run(args: &Args, sink: &diagnostics::Sink) -> anyhow::Result<()> {
    raise_fd_limit();
    ignore_sigxfsz();
    let config = args.config();
    // Before the server starts, so that no signal finds the default action
    // (SIGHUP's kills the process).
    let signals = signals::start(sink.clone()).context("cannot wait for signals")?;
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
        max_files = config.writer.max_files,
        max_file_size = config.writer.max_file_size,
        format = ?config.format,
        fsync = ?config.writer.fsync,
        "log-server is listening."
    );
    // Under systemd (Type=notify): ready now that the ports are bound and
    // the log file is open; the watchdog is pinged while all threads live.
    let mut notifier = Notifier::from_env().context("cannot reach systemd's $NOTIFY_SOCKET")?;
    notify(&notifier, "READY=1\nSTATUS=Listening.");
    let stop = Arc::new(AtomicBool::new(false));
    let stats = (args.stats_interval > 0).then(|| {
        let (server_stats, writer_stats, forward_stats, stop) = (
            server.ingest_stats().clone(),
            server.writer().clone(),
            server.forward_stats().cloned(),
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
                    forward_stats.as_deref(),
                    queue_len,
                    &stop,
                )
            })
            .expect("spawn the stats thread")
    });

    // Until a signal, watch that every thread of the server is alive: one
    // that died (a panic) would otherwise lose messages in silence.
    let check = notifier
        .watchdog_interval()
        .map_or(LIVENESS_CHECK, |w| w.min(LIVENESS_CHECK));
    let dead = loop {
        match signals.recv_timeout(check) {
            Ok(signals::Ask::Reopen) => server.writer().request_reopen(),
            Ok(signals::Ask::Stop) | Err(RecvTimeoutError::Disconnected) => break None,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(thread) = server.dead_thread() {
                    break Some(thread);
                }
                if let Err(e) = notifier.keep_alive() {
                    tracing::warn!(error = %e, "Cannot ping systemd's watchdog.");
                }
            }
        }
    };
    notify(&notifier, "STOPPING=1\nSTATUS=Shutting down.");
    // The one deadline of the whole shutdown starts now.
    let deadline = Instant::now() + config.writer.shutdown_timeout;
    match dead {
        None => tracing::info!(
            "Shutting down: draining connections, the queue and the writer (deadline in {:?}; a second signal exits at once).",
            config.writer.shutdown_timeout
        ),
        Some("writer") => {
            // Nothing more can be written: say what is lost and stop now.
            let written = server.progress().written();
            tracing::error!(
                sequenced = server.sequenced(),
                written,
                "The writer thread died; messages accepted after the last one written are lost. Exiting."
            );
            sink.flush(FINAL_FLUSH);
            std::process::exit(EXIT_NOT_ALL_WRITTEN);
        }
        Some(thread) => tracing::error!(
            thread,
            "A server thread died; shutting down with what is left."
        ),
    }
    stop.store(true, Ordering::Relaxed);
    let writer_shared = server.writer().clone();
    let ingest = server.ingest_stats().clone();
    let ingress = server.ingress().clone();
    let report = server.shutdown_by(deadline);
    if let Some(t) = stats {
        t.thread().unpark();
        let _ = t.join();
    }
    let complete = report.complete() && dead.is_none();
    let summary = if complete {
        "Stopped; every accepted message is written."
    } else {
        "Stopped; NOT every accepted message is written (see unwritten, skipped, abandoned)."
    };
    tracing::info!(
        lines = report.writer.lines,
        bytes = report.writer.bytes,
        tcp_messages = report.tcp_messages,
        grpc_messages = report.grpc_messages,
        otlp_records = report.otlp_records,
        decode_errors = report.decode_errors,
        tcp_bytes_in = ingest.tcp_bytes.get(),
        connections_refused = ingest.connections_refused.get(),
        refused_for_fds = ingest.connections_refused_fds.get(),
        closed_for_memory = ingest.connections_memory_closed.get(),
        batches = writer_shared.stats.batches.get(),
        writes = writer_shared.stats.writes.get(),
        unwritten = report.unwritten(),
        skipped = report.writer.skipped,
        late_dropped = report.writer.late_lines,
        abandoned = report.writer.abandoned_lines,
        writer_stuck = report.writer.stuck,
        rotations = report.writer.rotations,
        retries = report.writer.retries,
        writer_moves = ingress.queue().consumer_moves(),
        diagnostics_dropped = diagnostics::Sink::dropped(),
        forwarded = report.forward.map(|f| f.lines),
        forward_behind = report.forward.map(|f| f.behind),
        forward_lost = report.forward.map(|f| f.lost),
        forward_resent = report.forward.map(|f| f.resent),
        forward_rejected = report.forward.map(|f| f.rejected),
        latency = %report.writer.latency,
        to_queue = %report.writer.to_queue,
        queue_to_written = %report.writer.queue_to_written,
        "{summary}"
    );
    if let Some(path) = &args.histogram_out {
        // The whole latency to the file named, each stage beside it
        // (lat.hgrm -> lat.received-to-queued.hgrm, ...), so a regression
        // shows its stage.
        for stage in Stage::ALL {
            let h = writer_shared.stats.stage_histogram(stage);
            let path = match stage {
                Stage::EndToEnd => path.clone(),
                _ => path.with_extension(format!(
                    "{}.{}",
                    stage.name(),
                    path.extension()
                        .map_or("hgrm".into(), |e| e.to_string_lossy())
                )),
            };
            std::fs::File::create(&path)
                .and_then(|mut f| log_server::metrics::write_hgrm(&h, &mut f))
                .with_context(|| {
                    format!("cannot write the latency histogram to {}", path.display())
                })?;
            tracing::info!(path = %path.display(), stage = stage.name(), "Wrote the latency distribution.");
        }
    }
    if !complete {
        sink.flush(FINAL_FLUSH);
        // The writer may still be blocked in the kernel: do not wait for it.
        std::process::exit(EXIT_NOT_ALL_WRITTEN);
    }
    Ok(())
}

/// Sends a state to systemd if it listens; a failure is worth a warning,
/// not a stop (the logs matter more than the service manager's view).
fn notify(notifier: &Notifier, state: &str) {
    if let Err(e) = notifier.notify(state) {
        tracing::warn!(error = %e, "Cannot notify systemd.");
    }
}

/// Exit status when not every accepted message was written (lost, skipped,
/// abandoned at the deadline, or a server thread died).
const EXIT_NOT_ALL_WRITTEN: i32 = 1;
/// Exit status when a second SIGINT/SIGTERM cut the shutdown short.
const EXIT_SECOND_SIGNAL: i32 = 2;
/// How often the main thread checks that the server's threads are alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(200);
/// How long the last diagnostics may take to reach stderr before exit.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Bytes of free memory glibc's allocator keeps in an arena before it
/// gives any back, and the size from which it maps allocations of their
/// own (both fixed: by default they move at run time, to 32 MiB).
const MALLOC_KEEP: libc::c_int = 4 * 1024 * 1024;

/// Keeps glibc from handing freed memory back to the kernel at every free.
/// Each record's lines are allocated by an ingest thread and freed by the
/// writer once written; with the defaults (128 KiB) each such free at the
/// top of the ingest thread's arena trimmed it (madvise), and the next
/// records faulted the pages in again. Measured at the defaults, 2 M
/// messages over 2 connections at full speed, 4 runs each (issue 10): page
/// faults 35-45 k -> 10-24 k, server CPU 0.43 -> 0.39 us per message, peak
/// RSS in the same range (22-40 MiB against 28-36).
///
/// And one arena for all threads, not one per thread that allocates: each
/// ingest thread's arena held its own free memory (20-40 MiB each at 1,000
/// connections), and lines allocated in one were freed by the writer.
/// Measured at the defaults, alternating, 8 runs each of
/// `scripts/cpu-per-message.sh BIN 2000 1000 --io_engine uring`: peak RSS
/// 59-92 -> 52-62 MiB, server CPU 0.345-0.600 -> 0.375-0.410 us a message.
/// `scripts/bench-vs-peers.sh --only log-server`, 5 rounds: 1 connection
/// 3.46-3.75 -> 3.53-3.75 M msg/s, 2 connections 4.06-4.91 -> 4.46-5.11 M,
/// alike within the noise. (glibc's per-thread cache still serves small
/// allocations without the arena's lock.) A user's own `GLIBC_TUNABLES`
/// for malloc win.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
            return;
        }
        // SAFETY: mallopt only sets allocator parameters, under the
        // allocator's own lock; no memory is touched.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_KEEP);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_KEEP);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// File-size limit (`RLIMIT_FSIZE`): ignore SIGXFSZ, whose default action
/// kills the process, so that a write past the limit fails with `EFBIG`
/// and the writer's retry path holds the data until the limit is raised.
/// (SIGPIPE is already ignored by the Rust runtime: a client or stderr gone
/// away is an `EPIPE` error, not a death.)
fn ignore_sigxfsz() {
    // SAFETY: installs the SIG_IGN disposition; no handler code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The signals thread: SIGINT/SIGTERM ask for a shutdown (the first one) or
/// end the process at once (the second); SIGHUP is logged and ignored.
mod signals {
    use std::{
        sync::mpsc::{self, Receiver},
        thread,
    };

    use tokio::signal::unix::{signal, SignalKind};

    use super::{diagnostics::Sink, EXIT_SECOND_SIGNAL, FINAL_FLUSH};

    /// What a signal asks of the main thread.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Ask {
        /// The first SIGINT or SIGTERM: shut down.
        Stop,
        /// SIGHUP: reopen `_main.log`.
        Reopen,
    }

    /// Registers the handlers (before this returns) and starts the thread.
    /// The receiver gets [`Ask::Stop`] once, at the first SIGINT or SIGTERM,
    /// and [`Ask::Reopen`] at each SIGHUP.
    pub(crate) fn start(sink: Sink) -> std::io::Result<Receiver<Ask>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (mut term, mut int, mut hup) = rt.block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::hangup())?,
            ))
        })?;
        // Room for the stop and a few reopens; more SIGHUPs while reopens
        // wait add nothing.
        let (tx, rx) = mpsc::sync_channel(4);
        thread::Builder::new().name("signals".into()).spawn(move || {
            rt.block_on(async move {
                let mut first = true;
                loop {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                        _ = hup.recv() => {
                            tracing::info!("SIGHUP received: reopening _main.log.");
                            let _ = tx.try_send(Ask::Reopen);
                            continue;
                        }
                    };
                    if first {
                        first = false;
                        tracing::info!(signal = name, "Shutdown requested.");
                        let _ = tx.send(Ask::Stop);
                        continue;
                    }
                    // The files need no flush (the writer keeps no data of
                    // its own: what it wrote is in the kernel); the last
                    // diagnostics do.
                    tracing::error!(
                        signal = name,
                        "Second signal: exiting now, without waiting for the shutdown; messages not yet written are lost."
                    );
                    sink.flush(FINAL_FLUSH);
                    std::process::exit(EXIT_SECOND_SIGNAL);
                }
            })
        })?;
        Ok(rx)
    }
}

/// One stats line every `interval` until `stop`: rates over the interval,
/// queue and reorder depth, and the receive-to-written latency of the lines
/// written during the interval.
fn stats_loop(
    interval: Duration,
    ingest: &IngestStats,
    writer: &WriterStats,
    forward: Option<&ForwardStats>,
    queue_len: impl Fn() -> usize,
    stop: &AtomicBool,
) {
    let mut last_forwarded = 0;
    let mut last = Instant::now();
    let (mut last_tcp, mut last_grpc, mut last_otlp, mut last_lines, mut last_bytes) =
        (0, 0, 0, 0, 0);
    while !stop.load(Ordering::Relaxed) {
        thread::park_timeout(interval.saturating_sub(last.elapsed()));
        if stop.load(Ordering::Relaxed) || last.elapsed() < interval {
            continue;
        }
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let per_s = |now: u64, before: u64| ((now - before) as f64 / secs) as u64;
        let tcp = ingest.tcp_messages.get();
        let grpc = ingest.grpc_messages.get();
        let otlp = ingest.otlp_records.get();
        let lines = writer.lines.get();
        let bytes = writer.bytes.get();
        let [latency, to_queue, queue_to_written] = writer.take_interval_latencies();
        tracing::info!(
            tcp_in_per_s = per_s(tcp, last_tcp),
            grpc_in_per_s = per_s(grpc, last_grpc),
            otlp_in_per_s = per_s(otlp, last_otlp),
            written_per_s = per_s(lines, last_lines),
            mb_written_per_s = format!("{:.1}", (bytes - last_bytes) as f64 / secs / 1e6),
            queue = queue_len(),
            reorder = writer.reorder_waiting.get(),
            connections = ingest.connections_open.get(),
            ingest_memory_mb = format!("{:.1}", ingest.ingest_memory_bytes.get() as f64 / 1e6),
            latency = %latency,
            to_queue = %to_queue,
            queue_to_written = %queue_to_written,
            retries = writer.retries.get(),
            rotations = writer.rotations.get(),
            "stats"
        );
        if let Some(f) = forward {
            let forwarded = f.lines.get();
            tracing::info!(
                forwarded_per_s = per_s(forwarded, last_forwarded),
                lag_lines = f.lag_lines(lines),
                lag_s = format!("{:.1}", f.lag_seconds(lines)),
                lost_lines = f.lost_lines.get(),
                lost_files = f.lost_files.get(),
                rejected = f.rejected.get(),
                retries = f.retries.get(),
                resent = f.resent.get(),
                "forward stats"
            );
            last_forwarded = forwarded;
        }
        (last_tcp, last_grpc, last_otlp, last_lines, last_bytes) = (tcp, grpc, otlp, lines, bytes);
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
        assert_eq!(parse_mode("0640"), Ok(Mode(0o640)));
        assert_eq!(parse_mode("750"), Ok(Mode(0o750)));
        assert_eq!(parse_mode("0o600"), Ok(Mode(0o600)));
        assert!(parse_mode("0948").is_err());
        assert!(parse_mode("4755").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("rw-r-----").is_err());
        let args = Args::try_parse_from(["log-server"]).unwrap();
        assert_eq!((args.file_mode, args.dir_mode), (Mode(0o640), Mode(0o750)));
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
        assert_eq!(
            (config.writer.dir.file_mode, config.writer.dir.dir_mode),
            (0o600, 0o700)
        );
        assert!(config.writer.dir.allow_shared);
    }

    #[test]
    fn a_startup_error_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(log_server::writer::file::DirError::Open {
            path: "/x".into(),
            source: io,
        })
        .context("cannot start");
        assert_eq!(
            one_sentence(&e),
            "cannot start: cannot open the log directory /x: No such file"
        );
    }

    /// `--queue_memory` (either spelling) reaches the queue's byte cap.
    #[test]
    fn queue_memory_sets_the_queue_byte_cap() {
        for flag in ["--queue_memory", "--queue-memory"] {
            let config = Args::try_parse_from(["log-server", flag, "1048576"])
                .unwrap()
                .config();
            assert_eq!(config.queue_max_bytes, 1 << 20);
        }
        assert!(Args::try_parse_from(["log-server", "--queue_memory", "-1"]).is_err());
    }

    /// The flags' defaults are the library's: every default is written
    /// once (in `server`, `writer` and the ingest modules), and the binary
    /// run without flags is configured exactly like `ServerConfig::default()`.
    #[test]
    fn the_flags_default_to_server_config_default() {
        let config = Args::try_parse_from(["log-server"]).unwrap().config();
        assert_eq!(
            format!("{config:?}"),
            format!("{:?}", ServerConfig::default())
        );
    }
}
