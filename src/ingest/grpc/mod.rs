//! gRPC ingest: the tonic server on its own thread and multi-thread tokio
//! runtime, feeding the same sequencer, queue and writer as TCP.
//!
//! The other front door of the pipeline: `LogRequest` (protobuf) ->
//! [`fields_from_request`] -> [`Ingress`] -> queue. Serves
//! `logservice.LogBridge/LogMessage`, the same handler under the legacy
//! `logservice.LogService/LogMessage`, the client-streaming
//! `LogBridge/LogStream`, the standard health service and server
//! reflection.
//!
//! A response means what `--grpc_ack` says: the message is queued, or its
//! line is in the file (default), or it is in the file and fsynced. Waiting
//! for that is asynchronous. A request that finds the queue full waits a
//! bounded time for room *before* taking a sequence number, then answers
//! UNAVAILABLE: the client knows it was not accepted. What a client sees
//! (methods, acknowledgements, trailers, status codes, limits) is specified
//! in `docs/PROTOCOL.md`, "Added by log-server".

pub mod budget;
pub mod codec;
pub mod incoming;
pub mod service;

use std::{
    future::Future,
    net::SocketAddr,
    pin::pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use prost::Message as _;
use thiserror::Error;
use tokio::sync::{watch, Notify};
use tonic::{
    codec::CompressionEncoding, metadata::MetadataMap, Request, Response, Status, Streaming,
};

use self::{
    budget::{Budget, BudgetConfig, BudgetLayer, Charge},
    incoming::AcceptLimits,
};
use log_server_wire::{
    decode::fields_from_request,
    proto::{LogRequest, LogResponse, LogSummary, FILE_DESCRIPTOR_SET},
};

use self::service::{
    log_bridge_server::{LogBridge, LogBridgeServer},
    log_service_server::{LogService, LogServiceServer},
    otlp::logs_service_server::LogsServiceServer,
};
use super::ingress::Ingress;
use crate::{
    format::ClientText,
    metrics::{IngestStats, RateLimiter},
    progress::Progress,
    prometheus::{self, Exporter},
    record::Record,
};

/// When a gRPC response is sent (`--grpc_ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AckMode {
    /// Once the message is in the queue (it will be written unless the
    /// machine fails).
    Queued,
    /// Once its line is in the log file (in the page cache).
    #[default]
    Written,
    /// Once its line is in the log file and fsynced (needs `--fsync batch`).
    Synced,
}

/// Settings of the gRPC ingest.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub addr: SocketAddr,
    /// Worker threads of the gRPC runtime.
    pub threads: usize,
    pub ack: AckMode,
    /// Largest request, bytes (`--max_frame_size`).
    pub max_message_bytes: usize,
    /// How long a request waits for room in a full queue before UNAVAILABLE.
    pub queue_wait: Duration,
    /// At shutdown, how long in-flight calls may take to finish.
    pub drain_timeout: Duration,
    /// Connection cap and socket settings of accepted connections.
    pub accept: AcceptLimits,
    /// HTTP/2 limits of each connection.
    pub http2: Http2Limits,
    /// The memory budget of requests in flight across all calls.
    pub budget: BudgetConfig,
}

/// HTTP/2 settings of every gRPC connection. tonic's defaults leave the
/// first two unlimited and keepalive off; each default here says why.
#[derive(Debug, Clone)]
pub struct Http2Limits {
    /// Concurrent calls (streams) on one connection. 256: well above the 64
    /// in flight a busy Node process keeps, far below unlimited.
    pub max_concurrent_streams: u32,
    /// Streams the server may reset for protocol errors on one connection
    /// before it closes it (the "rapid reset" and "MadeYouReset" floods).
    pub max_local_error_reset_streams: usize,
    /// Interval of HTTP/2 PING keepalives on an idle connection.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Flow-control windows a client may fill before the server reads:
    /// large enough that a `LogStream` or an OTLP export from Node is never
    /// window-bound on loopback (its bandwidth-delay product is a few KiB),
    /// small enough to bound what one connection can park in memory.
    pub stream_window: u32,
    pub connection_window: u32,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 256,
            max_local_error_reset_streams: 256,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            stream_window: 1024 * 1024,
            connection_window: 2 * 1024 * 1024,
        }
    }
}

/// Why gRPC ingest could not start.
#[derive(Debug, Error)]
pub enum GrpcError {
    #[error("cannot listen for gRPC on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the gRPC thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(String),
}

/// The running gRPC server thread.
#[derive(Debug)]
pub struct GrpcIngest {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcIngest {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The gRPC thread has ended. Before a shutdown that means it died.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops accepting calls and waits (up to the drain timeout) for the
    /// calls in flight, whose accepted messages are all queued by then.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("The gRPC thread panicked.");
            }
        }
    }
}

impl Drop for GrpcIngest {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The handlers, shared by both service names and OTLP's `LogsService`
/// (`src/ingest/otlp`).
#[derive(Debug, Clone)]
pub(crate) struct Handler {
    ingress: Arc<Ingress>,
    /// The writer's watermarks, for `--grpc_ack written` and `synced`.
    progress: Arc<Progress>,
    stats: Arc<IngestStats>,
    ack: AckMode,
    queue_wait: Duration,
    /// Records sequenced but still waiting for room in the queue.
    pushes: Arc<Pushes>,
    /// Largest request, bytes (`--max_frame_size`).
    max_message_bytes: usize,
}

/// Counts records that hold sequence numbers but are not in the queue
/// yet. Shutdown waits for them: a record dropped there would leave a gap
/// the writer waits on, and lose messages a client was told are accepted.
#[derive(Debug, Default)]
struct Pushes {
    pending: AtomicUsize,
    done: Notify,
}

/// One pending push; dropping it (the push finished, or its task was
/// cancelled) counts it off.
#[derive(Debug)]
struct PushGuard(Arc<Pushes>);

impl Drop for PushGuard {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

impl Pushes {
    fn start(self: &Arc<Self>) -> PushGuard {
        self.pending.fetch_add(1, Ordering::AcqRel);
        PushGuard(self.clone())
    }

    /// Waits until no push is pending or `limit` passes; returns how many
    /// are still pending.
    async fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.done.notified();
            let pending = self.pending.load(Ordering::Acquire);
            if pending == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pending.load(Ordering::Acquire);
            }
        }
    }
}

/// Diagnostics of the accept loop let through per second.
const DIAGNOSTICS_PER_SECOND: u64 = 20;

/// Most messages of a stream taken into one record when they are already
/// there (no waiting for more).
const STREAM_BATCH: usize = 256;

impl Handler {
    /// Accepts messages: waits for room, sequences them into one record and
    /// queues it. Returns the sequence number after the last one.
    async fn accept(&self, requests: &[LogRequest], received: Instant) -> Result<u64, Status> {
        self.accept_record(&self.stats.grpc_messages, |ingress| {
            ingress.sequence_fields(requests.iter().map(fields_from_request), received)
        })
        .await
    }

    /// Waits for room in the queue, then has `make` sequence one record
    /// (`None`: nothing to take) and queues it, counting its lines in
    /// `counter`. Returns the sequence number after its last line (0 when
    /// there was nothing). UNAVAILABLE, before anything is taken, when the
    /// queue stays full.
    pub(crate) async fn accept_record(
        &self,
        counter: &crate::metrics::Counter,
        make: impl FnOnce(&Ingress) -> Option<Record>,
    ) -> Result<u64, Status> {
        if !self.ingress.wait_for_room(self.queue_wait).await {
            return Err(Status::unavailable(
                "the log server is overloaded (its queue stayed full); nothing was accepted, retry later",
            ));
        }
        let Some(record) = make(&self.ingress) else {
            return Ok(0);
        };
        let end = record.end_seq();
        counter.add(u64::from(record.count));
        self.push(record).await;
        Ok(end)
    }

    pub(crate) fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Largest request accepted, bytes (`--max_frame_size`).
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Pushes a sequenced record without blocking the runtime thread: at
    /// once if there is room (the common case, since we waited for it),
    /// else from a task of its own, so that a caller going away cannot
    /// leave its sequence numbers unpushed. The caller waits for that task
    /// (so `--grpc_ack queued` means queued), and so does shutdown.
    async fn push(&self, record: Record) {
        let Err(record) = self.ingress.queue().try_push(record) else {
            return;
        };
        let guard = self.pushes.start();
        let ingress = self.ingress.clone();
        let task = tokio::spawn(async move {
            ingress.queue().push_async(record).await;
            drop(guard);
        });
        // An error here means the runtime is shutting down; the guard
        // then tells shutdown the push never finished.
        let _ = task.await;
    }

    /// Waits until the messages below `end` are as far as `--grpc_ack` asks.
    pub(crate) async fn acknowledge(&self, end: u64) {
        match self.ack {
            AckMode::Queued => {}
            AckMode::Written => self.progress.wait_written(end).await,
            AckMode::Synced => self.progress.wait_synced(end).await,
        }
    }

    async fn log_message(
        &self,
        request: Request<LogRequest>,
    ) -> Result<Response<LogResponse>, Status> {
        let received = Instant::now();
        // The request's bytes stay charged until its line is formatted.
        let charge = request.extensions().get::<Arc<Charge>>().cloned();
        let end = self.accept(&[request.into_inner()], received).await?;
        drop(charge);
        self.acknowledge(end).await;
        Ok(Response::new(LogResponse { success: true }))
    }

    async fn log_stream(
        &self,
        request: Request<Streaming<LogRequest>>,
    ) -> Result<Response<LogSummary>, Status> {
        let charge = request.extensions().get::<Arc<Charge>>().cloned();
        let mut stream = request.into_inner();
        let mut pending = Vec::with_capacity(STREAM_BATCH);
        let mut accepted = 0u64;
        let mut end = 0;
        loop {
            // Wait for one message, then take those already buffered.
            let first = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => return Err(self.stream_failed(status, accepted, end).await),
            };
            let received = Instant::now();
            pending.push(first);
            let mut failed = None;
            while pending.len() < STREAM_BATCH {
                match ready_now(stream.message()) {
                    Some(Ok(Some(m))) => pending.push(m),
                    Some(Ok(None)) | None => break,
                    Some(Err(status)) => {
                        failed = Some(status);
                        break;
                    }
                }
            }
            match self.accept(&pending, received).await {
                Ok(e) => end = e,
                Err(status) => return Err(self.stream_failed(status, accepted, end).await),
            }
            if let Some(charge) = &charge {
                // What was taken in is in the queue's records now.
                charge.release(pending.iter().map(|m| m.encoded_len() + 5).sum());
            }
            accepted += pending.len() as u64;
            pending.clear();
            if let Some(status) = failed {
                return Err(self.stream_failed(status, accepted, end).await);
            }
        }
        self.acknowledge(end).await;
        Ok(Response::new(LogSummary { accepted }))
    }
}

/// Trailer of a failed `LogStream`: how many of its first messages were
/// accepted. A client resends only the messages after them, so a stream
/// that fails half way (a bad message, a full queue, a cancel) is neither
/// lost nor written twice (`docs/PROTOCOL.md`, `LogBridge/LogStream`).
pub const ACCEPTED_TRAILER: &str = "log-server-accepted";

impl Handler {
    /// The status a stream ends with when it fails after `accepted`
    /// messages were taken in: once they are as far as `--grpc_ack` asks,
    /// the same code, the count in the message and in [`ACCEPTED_TRAILER`].
    async fn stream_failed(&self, status: Status, accepted: u64, end: u64) -> Status {
        if accepted > 0 {
            self.acknowledge(end).await;
        }
        tracing::debug!(
            accepted,
            status = %ClientText(status.message()),
            code = ?status.code(),
            "A gRPC stream ended with an error."
        );
        let mut metadata = MetadataMap::new();
        metadata.insert(ACCEPTED_TRAILER, accepted.into());
        // The details (a RetryInfo, say) stay: clients act on them.
        Status::with_details_and_metadata(
            status.code(),
            format!(
                "{}; the first {accepted} messages of this stream were accepted, resend only those after them",
                status.message()
            ),
            bytes::Bytes::copy_from_slice(status.details()),
            metadata,
        )
    }
}

/// The output of a future if it is ready at its first poll. Used on
/// `Streaming::message`, which keeps its state in the stream, so dropping
/// the pending future loses nothing.
fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

#[tonic::async_trait]
impl LogBridge for Handler {
    async fn log_message(
        &self,
        request: Request<LogRequest>,
    ) -> Result<Response<LogResponse>, Status> {
        Handler::log_message(self, request).await
    }

    async fn log_stream(
        &self,
        request: Request<Streaming<LogRequest>>,
    ) -> Result<Response<LogSummary>, Status> {
        Handler::log_stream(self, request).await
    }
}

/// The legacy service name of older JavaScript and Python clients.
#[tonic::async_trait]
impl LogService for Handler {
    async fn log_message(
        &self,
        request: Request<LogRequest>,
    ) -> Result<Response<LogResponse>, Status> {
        Handler::log_message(self, request).await
    }
}

/// Binds the gRPC port and starts the gRPC thread.
pub fn start(
    config: GrpcConfig,
    ingress: Arc<Ingress>,
    progress: Arc<Progress>,
    stats: Arc<IngestStats>,
    exporter: Arc<Exporter>,
) -> Result<GrpcIngest, GrpcError> {
    let listener = std::net::TcpListener::bind(config.addr).map_err(|source| GrpcError::Bind {
        addr: config.addr,
        source,
    })?;
    let bind_err = |source| GrpcError::Bind {
        addr: config.addr,
        source,
    };
    let local_addr = listener.local_addr().map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| GrpcError::Reflection(e.to_string()))?;
    let pushes = Arc::new(Pushes::default());
    let handler = Handler {
        ingress,
        progress,
        stats,
        ack: config.ack,
        queue_wait: config.queue_wait,
        pushes: pushes.clone(),
        max_message_bytes: config.max_message_bytes,
    };
    let (stop, stop_rx) = watch::channel(false);
    let thread = thread::Builder::new()
        .name("grpc".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.threads.max(1))
                .thread_name("grpc-worker")
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    let drain = config.drain_timeout;
                    rt.block_on(async {
                        serve(listener, handler, reflection, exporter, config, stop_rx).await;
                        // Records already sequenced must reach the queue
                        // (the writer is still draining it) before the
                        // runtime and its tasks go.
                        let lost = pushes.wait_idle(drain).await;
                        if lost > 0 {
                            tracing::error!(records = lost, "gRPC records could not be queued before shutdown; their messages are lost.");
                        }
                    });
                    // Calls still running after the drain timeout end here.
                    rt.shutdown_timeout(Duration::from_millis(100));
                }
                Err(e) => tracing::error!(error = %e, "Cannot start the gRPC runtime; gRPC is not served."),
            }
        })
        .map_err(GrpcError::Spawn)?;
    Ok(GrpcIngest {
        local_addr,
        stop,
        thread: Some(thread),
    })
}

async fn serve<R>(
    listener: std::net::TcpListener,
    handler: Handler,
    reflection: R,
    exporter: Arc<Exporter>,
    config: GrpcConfig,
    stop: watch::Receiver<bool>,
) where
    R: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    R::Future: Send + 'static,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Cannot register the gRPC listener; gRPC is not served.");
            return;
        }
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LogBridgeServer<Handler>>()
        .await;
    health_reporter
        .set_serving::<LogServiceServer<Handler>>()
        .await;
    health_reporter
        .set_serving::<LogsServiceServer<Handler>>()
        .await;
    // tonic refuses messages above its limit before reading them (OUT_OF_RANGE);
    // between --max_frame_size and this, our codec answers RESOURCE_EXHAUSTED.
    let transport_limit = config.max_message_bytes.saturating_mul(2);
    let stats = handler.stats.clone();
    let budget = Budget::new(config.budget.clone(), stats.clone());
    let bridge = LogBridgeServer::new(handler.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(transport_limit);
    let legacy = LogServiceServer::new(handler.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(transport_limit);
    let otlp_http = crate::ingest::otlp::http::router(handler.clone(), config.max_message_bytes);
    let otlp = LogsServiceServer::new(handler)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(transport_limit);
    let mut graceful = stop.clone();
    let h2 = &config.http2;
    let incoming = incoming::incoming(
        listener,
        config.accept.clone(),
        stats,
        Arc::new(RateLimiter::new(DIAGNOSTICS_PER_SECOND)),
        stop.clone(),
    );
    // The gRPC services and, on the same port's HTTP side, /metrics and
    // OTLP/HTTP's POST /v1/logs.
    let routes = tonic::service::Routes::new(health)
        .add_service(reflection)
        .add_service(bridge)
        .add_service(legacy)
        .add_service(otlp)
        .into_axum_router()
        .merge(prometheus::router(exporter))
        .merge(otlp_http)
        // A 404 for HTTP requests to unknown paths, UNIMPLEMENTED for gRPC.
        .fallback(crate::ingest::otlp::http::fallback);
    let routes = tonic::service::Routes::from(routes);
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(h2.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(h2.max_local_error_reset_streams))
        .http2_keepalive_interval(Some(h2.keepalive_interval))
        .http2_keepalive_timeout(Some(h2.keepalive_timeout))
        .initial_stream_window_size(h2.stream_window)
        .initial_connection_window_size(h2.connection_window)
        // HTTP/1.1 too, for `GET /metrics` (Prometheus scrapes over it) and
        // OTLP/HTTP exporters.
        .accept_http1(true)
        .layer(BudgetLayer(budget))
        // The decoder's size limit, per call (see codec.rs).
        .layer(codec::MessageLimitLayer(config.max_message_bytes))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = graceful.wait_for(|s| *s).await;
        });
    let mut deadline = stop;
    let drain = config.drain_timeout;
    tokio::select! {
        result = server => {
            if let Err(e) = result {
                tracing::error!(error = %e, "The gRPC server failed.");
            }
        }
        _ = async move {
            let _ = deadline.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
        } => tracing::warn!("gRPC calls still running after the drain timeout are cancelled."),
    }
}
