//! Wires the pipeline together: writer thread, queue, sequencer, TCP ingest
//! threads (and the gRPC thread once it exists), from one [`ServerConfig`].
//!
//! `main.rs` turns command-line flags into a [`ServerConfig`]; tests start a
//! [`Server`] in-process on `127.0.0.1:0`. Startup checks every limit and
//! opens the log file and the listeners before anything runs, so a bad flag,
//! a port in use or an unwritable directory is one clear error.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;

use log_server_wire::frame::DEFAULT_MAX_FRAME_SIZE;

use crate::{
    format::{LineFormat, LineFormatter, LINE_OVERHEAD},
    forward::{self, ForwardConfig, ForwardError, ForwardHandle, LossBook},
    ingest::{
        budget::{MemoryBudget, DEFAULT_INGEST_MEMORY},
        conn::ConnShared,
        grpc::{
            self, budget::BudgetConfig, incoming::AcceptLimits, AckMode, GrpcConfig, GrpcError,
            GrpcIngest, Http2Limits,
        },
        ingress::Ingress,
        tcp::{self, IoEngine, TcpConfig, TcpError, TcpIngest},
    },
    metrics::{IngestStats, RateLimiter},
    progress::Progress,
    prometheus::{Exporter, MetricsError, MetricsServer, Sources},
    queue::{RecordQueue, DEFAULT_QUEUE_CAPACITY, DEFAULT_QUEUE_MAX_BYTES},
    writer::{
        self, FsyncPolicy, WriterConfig, WriterError, WriterHandle, WriterReport, WriterShared,
    },
};

/// Default `--host`: loopback, since loggers run on the same machine.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Default `--log_dir`.
pub const DEFAULT_LOG_DIR: &str = "./logs";
/// Default `--port`.
pub const DEFAULT_PORT: u16 = 4020;
/// Default `--grpc_port`.
pub const DEFAULT_GRPC_PORT: u16 = 4021;
/// Default `--max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default `--grpc_max_connections`: one process needs one connection; a
/// thousand leaves room for many, while bounding what the HTTP/2 windows
/// of all of them can hold.
pub const DEFAULT_GRPC_MAX_CONNECTIONS: usize = 1024;
/// Default `--grpc_max_inflight_bytes`: request bytes all gRPC calls may
/// hold at once; room for 8 messages of the default largest size.
pub const DEFAULT_GRPC_MAX_INFLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Idle time before TCP keepalive probes start on accepted connections.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Default `--frame_timeout`.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--grpc_threads`.
pub const DEFAULT_GRPC_THREADS: usize = 2;
/// Default `--grpc_message_timeout`.
pub const DEFAULT_GRPC_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Diagnostics about bad input let through per second, server-wide.
const DIAGNOSTICS_PER_SECOND: u64 = 20;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub port: u16,
    pub grpc_port: u16,
    pub only_tcp: bool,
    pub log_dir: PathBuf,
    pub max_frame_size: usize,
    pub format: LineFormat,
    pub queue_capacity: usize,
    pub queue_max_bytes: usize,
    pub tcp_threads: usize,
    pub io_engine: IoEngine,
    pub max_connections: usize,
    pub idle_timeout: Option<Duration>,
    /// Close a TCP connection silent this long in the middle of a frame
    /// (slowloris), or that waited this long for memory for its frame.
    pub frame_timeout: Option<Duration>,
    /// Bytes all TCP connections' buffers may hold together.
    pub ingest_memory: usize,
    /// File descriptors kept free below the open-files limit for the writer.
    pub fd_reserve: u64,
    /// At shutdown, how long connections may take to hand over what the
    /// kernel buffered for them.
    pub drain_timeout: Duration,
    /// Initial read buffer per TCP connection, bytes.
    pub read_buffer: usize,
    /// Worker threads of the gRPC runtime.
    pub grpc_threads: usize,
    /// When a gRPC call is answered.
    pub grpc_ack: AckMode,
    /// How long a gRPC call waits for room in a full queue before it is
    /// answered UNAVAILABLE.
    pub grpc_queue_wait: Duration,
    /// Most gRPC connections open at once.
    pub grpc_max_connections: usize,
    /// HTTP/2 limits of each gRPC connection.
    pub grpc_http2: Http2Limits,
    /// Request bytes all gRPC calls may hold in memory at once.
    pub grpc_max_inflight_bytes: usize,
    /// How long a gRPC call may be silent in the middle of a message.
    pub grpc_message_timeout: Duration,
    /// Port of its own for `GET /metrics` (besides the gRPC port), on `host`.
    pub metrics_port: Option<u16>,
    /// Everything about the files, in one place: `--max_files`,
    /// `--max_file_size`, `--fsync`, `--file_mode`, `--dir_mode`,
    /// `--allow_shared_log_dir` (in `dir`) and `--shutdown_timeout`, plus
    /// retries and the gap timeout.
    pub writer: WriterConfig,
    /// `--forward_otlp` and its options; `None`: no forwarding.
    pub forward: Option<ForwardConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: DEFAULT_HOST,
            port: DEFAULT_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            only_tcp: false,
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            format: LineFormat::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            tcp_threads: default_tcp_threads(),
            io_engine: IoEngine::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: None,
            frame_timeout: Some(DEFAULT_FRAME_TIMEOUT),
            ingest_memory: DEFAULT_INGEST_MEMORY,
            fd_reserve: tcp::DEFAULT_FD_RESERVE,
            drain_timeout: Duration::from_secs(2),
            read_buffer: 64 * 1024,
            grpc_threads: DEFAULT_GRPC_THREADS,
            grpc_ack: AckMode::default(),
            grpc_queue_wait: Duration::from_secs(5),
            grpc_max_connections: DEFAULT_GRPC_MAX_CONNECTIONS,
            grpc_http2: Http2Limits::default(),
            grpc_max_inflight_bytes: DEFAULT_GRPC_MAX_INFLIGHT_BYTES,
            metrics_port: None,
            grpc_message_timeout: DEFAULT_GRPC_MESSAGE_TIMEOUT,
            writer: WriterConfig::default(),
            forward: None,
        }
    }
}

/// One ingest thread per core: the writer thread mostly copies into the
/// page cache and needs little.
pub fn default_tcp_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Flags that contradict each other or are out of range.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Tcp(#[from] TcpError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

impl ServerConfig {
    /// Checks the limits against each other.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |msg: String| Err(ServerError::Config(msg));
        if self.writer.max_files == 0 {
            return bad("--max_files must be at least 1".into());
        }
        if self.max_frame_size == 0 {
            return bad("--max_frame_size must be at least 1 byte".into());
        }
        if self.max_frame_size > u32::MAX as usize {
            return bad(format!(
                "--max_frame_size cannot exceed {} (a frame length is a u32)",
                u32::MAX
            ));
        }
        let needed = self.max_frame_size as u64 + 2 * LINE_OVERHEAD as u64;
        if self.writer.max_file_size < needed.max(writer::MIN_MAX_FILE_SIZE) {
            return bad(format!(
                "--max_file_size {} cannot hold a line of the largest frame allowed by --max_frame_size {}: \
                 it must be at least {} bytes (or lower --max_frame_size)",
                self.writer.max_file_size,
                self.max_frame_size,
                needed.max(writer::MIN_MAX_FILE_SIZE)
            ));
        }
        if self.queue_capacity == 0 {
            return bad("--queue_capacity must be at least 1".into());
        }
        if self.tcp_threads == 0 {
            return bad("--tcp_threads must be at least 1".into());
        }
        if self.grpc_ack == AckMode::Synced && self.writer.fsync != FsyncPolicy::Batch {
            return bad("--grpc_ack synced needs --fsync batch (otherwise nothing is fsynced until rotation)".into());
        }
        if self.grpc_threads == 0 {
            return bad("--grpc_threads must be at least 1".into());
        }
        if self.max_connections == 0 {
            return bad("--max_connections must be at least 1".into());
        }
        if self.grpc_max_connections == 0 {
            return bad("--grpc_max_connections must be at least 1".into());
        }
        // One call may read up to twice --max_frame_size before the codec
        // refuses the message; it must fit in the budget, or it could never
        // complete.
        let one_call = self.max_frame_size.saturating_mul(2).saturating_add(5);
        if self.grpc_max_inflight_bytes < one_call
            || self.grpc_max_inflight_bytes > u32::MAX as usize
        {
            return bad(format!(
                "--grpc_max_inflight_bytes must be between {one_call} (twice --max_frame_size, plus 5) and {}",
                u32::MAX
            ));
        }
        if self.grpc_message_timeout.is_zero() {
            return bad("--grpc_message_timeout must be at least 1 second".into());
        }
        if self.grpc_http2.max_concurrent_streams == 0 {
            return bad("--grpc_max_streams must be at least 1".into());
        }
        if self.grpc_http2.keepalive_interval.is_zero()
            || self.grpc_http2.keepalive_timeout.is_zero()
        {
            return bad(
                "--grpc_keepalive and --grpc_keepalive_timeout must be at least 1 second".into(),
            );
        }
        // One connection must be able to hold its base read buffer and the
        // largest frame allowed, or such a frame could never be read.
        let one_frame = self.max_frame_size + tcp::BASE_READ_BUFFER;
        if self.ingest_memory < one_frame {
            return bad(format!(
                "--ingest_memory {} cannot hold one frame of --max_frame_size {}: it must be at least {one_frame} bytes",
                self.ingest_memory, self.max_frame_size
            ));
        }
        self.validate_modes()
    }

    /// Modes are permission bits only; the server must be able to read and
    /// write its files and use its directories; and nobody else may write
    /// them unless a shared log directory is allowed.
    fn validate_modes(&self) -> Result<(), ServerError> {
        let bad = |msg: String| Err(ServerError::Config(msg));
        for (flag, mode, needed) in [
            ("--file_mode", self.writer.dir.file_mode, 0o600),
            ("--dir_mode", self.writer.dir.dir_mode, 0o700),
        ] {
            if mode & !0o777 != 0 {
                return bad(format!(
                    "{flag} {mode:04o} has bits beyond the permissions (at most 0777)"
                ));
            }
            if mode & needed != needed {
                return bad(format!(
                    "{flag} {mode:04o} must give the owner at least {needed:04o}, or the server cannot use what it creates"
                ));
            }
            if mode & 0o022 != 0 && !self.writer.dir.allow_shared {
                return bad(format!(
                    "{flag} {mode:04o} lets others write the logs; pass --allow_shared_log_dir if that is intended"
                ));
            }
        }
        Ok(())
    }
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    tcp: Option<TcpIngest>,
    grpc: Option<GrpcIngest>,
    /// `--metrics_port`, if given.
    metrics: Option<MetricsServer>,
    writer: Option<WriterHandle>,
    /// `--forward_otlp`, if given.
    forward: Option<ForwardHandle>,
    /// The writer's watermarks; kept here so they outlive the writer.
    progress: Arc<Progress>,
    ingress: Arc<Ingress>,
    ingest_stats: Arc<IngestStats>,
    tcp_addr: SocketAddr,
    engine: IoEngine,
    /// How long a shutdown may take, from its request.
    shutdown_timeout: Duration,
}

/// What a server did, returned by [`Server::shutdown`].
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    pub writer: WriterReport,
    pub tcp_messages: u64,
    pub grpc_messages: u64,
    pub otlp_records: u64,
    pub decode_errors: u64,
    /// What forwarding did, if it was on.
    pub forward: Option<ForwardSummary>,
    /// Messages given a sequence number: every message accepted, plus any a
    /// connection had decoded but could not queue before the shutdown
    /// deadline.
    pub sequenced: u64,
}

/// Forwarding's counts at the stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSummary {
    /// Lines the destination acknowledged.
    pub lines: u64,
    /// Lines rotation removed before they were forwarded.
    pub lost: u64,
    /// Lines written and not forwarded yet: the next start sends them.
    pub behind: u64,
    /// Lines sent again after an earlier unclean stop.
    pub resent: u64,
    /// Lines the destination rejected.
    pub rejected: u64,
}

impl ShutdownReport {
    /// Sequenced messages whose line is not in the files: gaps skipped,
    /// lines abandoned at the deadline, and whatever a dead or stuck writer
    /// never got to.
    pub fn unwritten(&self) -> u64 {
        self.sequenced.saturating_sub(self.writer.lines)
    }

    /// Whether every accepted message is in the files: the only case in
    /// which the binary says so and exits 0.
    pub fn complete(&self) -> bool {
        self.writer.complete() && self.unwritten() == 0
    }
}

impl Server {
    /// Validates `config`, opens the log file, binds the listeners and
    /// starts every thread.
    pub fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let queue = Arc::new(RecordQueue::new(
            config.queue_capacity,
            config.queue_max_bytes,
        ));

        // Beside the queue: the writer advances it, gRPC waits on it.
        let progress = Arc::new(Progress::new(0));
        // The forwarder learns from the writer's finisher which rotated
        // files were compressed or removed.
        let loss_book = config
            .forward
            .as_ref()
            .map(|_| LossBook::new(config.writer.max_files));
        let mut writer_config = config.writer.clone();
        if let Some(book) = &loss_book {
            writer_config.on_removed = Some(Arc::new(book.clone()));
        }
        let writer = writer::spawn(
            &config.log_dir,
            writer_config,
            queue.clone(),
            progress.clone(),
        )?;
        // Before ingest: the backlog it counts and the writer's line count
        // from here on add up to the lines not yet forwarded.
        let forward = match (&config.forward, loss_book) {
            (Some(f), Some(book)) => {
                let queue = queue.clone();
                Some(forward::start(
                    f.clone(),
                    &config.log_dir,
                    config.writer.max_files,
                    config.writer.dir.file_mode,
                    book,
                    Box::new(move || !queue.is_empty()),
                )?)
            }
            _ => None,
        };
        let formatter = LineFormatter::new(
            config.format,
            config.writer.max_file_size.try_into().unwrap_or(usize::MAX),
        );
        let ingress = Arc::new(Ingress::new(queue, formatter, 0));
        let ingest_stats = Arc::new(IngestStats::default());
        let conn = Arc::new(ConnShared {
            stats: ingest_stats.clone(),
            budget: Arc::new(MemoryBudget::new(
                config.ingest_memory,
                ingest_stats.clone(),
            )),
            diag: RateLimiter::new(DIAGNOSTICS_PER_SECOND),
            max_frame_size: config.max_frame_size,
            formatter,
        });
        if !config.host.is_loopback() {
            tracing::warn!(
                host = %config.host,
                "Listening on a non-loopback address: any host that can reach it can write logs."
            );
        }
        let tcp = tcp::start(
            TcpConfig {
                addr: SocketAddr::new(config.host, config.port),
                threads: config.tcp_threads,
                engine: config.io_engine,
                max_connections: config.max_connections,
                idle_timeout: config.idle_timeout,
                frame_timeout: config.frame_timeout,
                fd_reserve: config.fd_reserve,
                drain_timeout: config.drain_timeout,
                read_buffer: config.read_buffer,
            },
            ingress.clone(),
            conn,
        )?;
        let tcp_addr = tcp.local_addr();
        let engine = tcp.engine();
        let exporter = Arc::new(Exporter::new(Sources {
            ingest: ingest_stats.clone(),
            writer: writer.shared().clone(),
            ingress: ingress.clone(),
            forward: forward.as_ref().map(|f| f.stats().clone()),
        }));
        let metrics = match config.metrics_port {
            Some(port) => Some(MetricsServer::start(
                SocketAddr::new(config.host, port),
                exporter.clone(),
            )?),
            None => None,
        };
        let grpc = if config.only_tcp {
            None
        } else {
            Some(grpc::start(
                GrpcConfig {
                    addr: SocketAddr::new(config.host, config.grpc_port),
                    threads: config.grpc_threads,
                    ack: config.grpc_ack,
                    max_message_bytes: config.max_frame_size,
                    queue_wait: config.grpc_queue_wait,
                    drain_timeout: config.drain_timeout,
                    accept: AcceptLimits {
                        max_connections: config.grpc_max_connections,
                        tcp_keepalive: TCP_KEEPALIVE,
                    },
                    http2: config.grpc_http2.clone(),
                    budget: BudgetConfig {
                        max_bytes: config.grpc_max_inflight_bytes,
                        wait: config.grpc_queue_wait,
                        idle: config.grpc_message_timeout,
                    },
                },
                ingress.clone(),
                progress.clone(),
                ingest_stats.clone(),
                exporter,
            )?)
        };
        Ok(Server {
            tcp: Some(tcp),
            grpc,
            metrics,
            writer: Some(writer),
            forward,
            progress,
            ingress,
            ingest_stats,
            tcp_addr,
            engine,
            shutdown_timeout: config.writer.shutdown_timeout,
        })
    }

    /// The TCP address being served (the real port when 0 was asked for).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The address of `--metrics_port`, if given.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// The gRPC address being served, unless `only_tcp`.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(GrpcIngest::local_addr)
    }

    /// The I/O engine of the TCP ingest.
    pub fn io_engine(&self) -> IoEngine {
        self.engine
    }

    pub fn ingest_stats(&self) -> &Arc<IngestStats> {
        &self.ingest_stats
    }

    pub fn ingress(&self) -> &Arc<Ingress> {
        &self.ingress
    }

    /// The written/synced watermarks.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The forwarder's counters, if `--forward_otlp` is on.
    pub fn forward_stats(&self) -> Option<&Arc<crate::metrics::ForwardStats>> {
        self.forward.as_ref().map(ForwardHandle::stats)
    }

    /// The writer's counters.
    pub fn writer(&self) -> &Arc<WriterShared> {
        self.writer
            .as_ref()
            .expect("present until shutdown")
            .shared()
    }

    /// Stops accepting, drains every connection, then the queue and the
    /// writer; fsyncs (unless `--fsync none`). Every message that reached
    /// the server's sockets before this call is in the files when it
    /// returns, unless the file system fails for the whole shutdown timeout
    /// (the writer's `shutdown_timeout`, counted from this call): see
    /// [`Server::shutdown_by`].
    pub fn shutdown(self) -> ShutdownReport {
        let deadline = Instant::now() + self.shutdown_timeout;
        self.shutdown_by(deadline)
    }

    /// [`Server::shutdown`] with one deadline for all of it, set when the
    /// shutdown was asked for (the signal). At the deadline, connections
    /// still waiting for room in a full queue give up, the writer gives up
    /// on failing writes, and a writer blocked in the kernel is left behind,
    /// so this returns shortly after `deadline` even with a stuck file
    /// system. The report counts what was not written.
    pub fn shutdown_by(mut self, deadline: Instant) -> ShutdownReport {
        let writer = self.writer.take().expect("present until shutdown");
        writer.set_deadline(deadline);
        if let Some(tcp) = self.tcp.take() {
            tcp.shutdown_by(deadline);
        }
        if let Some(grpc) = self.grpc.take() {
            grpc.shutdown();
        }
        let writer = writer.shutdown();
        // After the writer: the forwarder's count of what is left includes
        // the last lines written.
        let forward = self.forward.take().map(|f| {
            let stats = f.stats().clone();
            f.stop();
            ForwardSummary {
                lines: stats.lines.get(),
                lost: stats.lost_lines.get(),
                behind: stats.lag_lines(writer.lines),
                resent: stats.resent.get(),
                rejected: stats.rejected.get(),
            }
        });
        let s = &self.ingest_stats;
        ShutdownReport {
            writer,
            forward,
            tcp_messages: s.tcp_messages.get(),
            grpc_messages: s.grpc_messages.get(),
            otlp_records: s.otlp_records.get(),
            decode_errors: s.decode_errors.get(),
            sequenced: self.ingress.sequencer().issued(),
        }
    }

    /// Which of the server's threads has ended while it should be running
    /// (it panicked, or could not start its runtime), if any: the server
    /// can no longer keep its promises, and the binary exits non-zero.
    pub fn dead_thread(&self) -> Option<&'static str> {
        if self.writer.as_ref().is_some_and(WriterHandle::is_finished) {
            return Some("writer");
        }
        if self
            .tcp
            .as_ref()
            .is_some_and(TcpIngest::any_thread_finished)
        {
            return Some("TCP ingest");
        }
        if self.grpc.as_ref().is_some_and(GrpcIngest::is_finished) {
            return Some("gRPC");
        }
        if self
            .forward
            .as_ref()
            .is_some_and(ForwardHandle::is_finished)
        {
            return Some("forwarder");
        }
        None
    }

    /// Sequence numbers handed out so far: messages taken in.
    pub fn sequenced(&self) -> u64 {
        self.ingress.sequencer().issued()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Ingest first, so the writer's drain sees every last record.
        drop(self.tcp.take());
        drop(self.grpc.take());
        drop(self.writer.take());
        drop(self.forward.take());
    }
}
