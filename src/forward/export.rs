//! The forwarder's last step: one encoded `ExportLogsServiceRequest` ->
//! the receiver (an OpenTelemetry Collector, or another log-server's OTLP
//! ingest) over OTLP/gRPC or OTLP/HTTP (protobuf) -> one [`Outcome`] that
//! says, by the OTLP specification's rules, what the forwarder does with
//! the batch next: move on, retry (and when), split it, drop it, or hold it.
//!
//! The request's bytes are sent as they are (no decoding, no re-encoding);
//! only the receiver's small answer is decoded, and it is read with a
//! bound. Every failure, from a refused connection to a malformed answer,
//! is an [`Outcome`]: nothing here panics or returns an error once the
//! [`Exporter`] is built. [`backoff`] is the delay between attempts.

use std::{
    error::Error as StdError,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::{Buf as _, BufMut as _, Bytes};
use http::{header, uri::PathAndQuery, HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use log_server_wire::otlp::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use thiserror::Error;

use crate::rpc_status::{retry_delay, RpcStatus};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
    Code, Status,
};

#[cfg(test)]
mod tests;

/// How the forwarder speaks to its receiver (`--forward_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP/gRPC: `LogsService/Export` on the URL's host and port.
    Grpc,
    /// OTLP/HTTP with protobuf bodies: `POST URL/v1/logs`.
    Http,
}

/// What the [`Exporter`] needs to know about its receiver.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `http://host:port` or `https://host:port` (OTLP/HTTP: a path may
    /// follow, `/v1/logs` is appended unless it already ends so).
    pub url: String,
    /// gRPC or HTTP.
    pub protocol: Protocol,
    /// Longest time one [`Exporter::send`] may take, connecting included;
    /// past it the outcome is [`Outcome::Retry`].
    pub timeout: Duration,
    /// A PEM file of CA certificates trusted besides the system's, for a
    /// receiver whose certificate a private CA signed.
    pub ca_file: Option<PathBuf>,
}

/// Why an [`Exporter`] could not be built: the configuration is wrong, so
/// the server should not start.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The URL does not parse, or lacks a piece OTLP needs.
    #[error("the forward URL {url:?} is not usable: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it, a sentence fragment.
        reason: &'static str,
    },
    /// The CA file could not be read.
    #[error("cannot read the CA file {}: {source}", path.display())]
    CaRead {
        /// The file as given.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The CA file holds no certificate rustls accepts.
    #[error("the CA file {} holds no usable PEM certificate", path.display())]
    CaEmpty {
        /// The file as given.
        path: PathBuf,
    },
    /// An `https://` URL, but nothing to check the receiver's certificate
    /// against.
    #[error(
        "the forward URL is https:// but the system has no CA certificates and no CA file was given"
    )]
    NoRoots,
    /// The client could not be set up (TLS configuration refused).
    #[error("the OTLP client could not be set up: {0}")]
    Client(String),
}

/// What became of one request, by the OTLP specification's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken. `rejected` and `message` from partial_success (0 / empty when
    /// absent); `message` is the receiver's text, escaped and cut to fit a
    /// log line.
    Accepted { rejected: u64, message: String },
    /// Retryable per the spec (gRPC CANCELLED, DEADLINE_EXCEEDED, ABORTED,
    /// OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, RESOURCE_EXHAUSTED only with
    /// google.rpc.RetryInfo in the status details; HTTP 429/502/503/504;
    /// connection and TLS errors and timeouts). `after`: the server's
    /// Retry-After (seconds or HTTP date) / RetryInfo delay.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The request is too large for the receiver (HTTP 413, gRPC
    /// RESOURCE_EXHAUSTED without RetryInfo, a gRPC message-size error):
    /// the caller splits the batch.
    TooLarge { reason: String },
    /// Not retryable because of the data (HTTP 400, gRPC INVALID_ARGUMENT):
    /// the caller drops and counts it.
    BadData { reason: String },
    /// Not retryable because of the endpoint (404, 401, 403, 405, 415, other
    /// 4xx and 5xx; UNIMPLEMENTED, UNAUTHENTICATED, PERMISSION_DENIED and
    /// the other codes): the caller holds the data and tries again slowly,
    /// loudly (dropping every line because of a typo in a URL would be
    /// worse than the spec's "do not retry").
    Refused { reason: String },
}

/// The OTLP/gRPC method every request goes to.
pub const EXPORT_METHOD: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The OTLP/HTTP path for logs.
const LOGS_PATH: &str = "/v1/logs";

/// Most bytes of an OTLP/HTTP answer read. An ExportLogsServiceResponse or
/// a google.rpc.Status is a few hundred bytes; a proxy's error page may be
/// larger and only its start matters for the diagnostic.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Most characters of receiver-supplied text kept in a reason: enough for
/// any real status message, and a hostile receiver cannot flood the
/// diagnostics.
const MAX_TEXT_CHARS: usize = 512;

/// First delay of [`backoff`]: a receiver's brief stall (a collector's
/// queue full for a moment) costs little lag, and the next attempts grow
/// quickly enough not to hammer one that is down.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);

/// Largest delay [`backoff`] picks by itself: the lines wait in the files
/// meanwhile, so once the receiver is back the forwarder catches up after
/// at most this long; it is also the exporter helper's cap in the
/// OpenTelemetry Collector.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Longest server-requested delay honoured: a receiver's `Retry-After` of a
/// day (or a clock far off in an HTTP date) must not stall forwarding that
/// long.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

/// Delay before attempt `attempt` (0-based) after a retryable outcome.
///
/// Exponential from [`BACKOFF_BASE`] doubling to [`BACKOFF_CAP`], with equal
/// jitter (half the step fixed, half random): the random half spreads the
/// forwarders of many hosts after a shared receiver restarts, and the fixed
/// half keeps one forwarder from retrying at once, which full jitter
/// sometimes does. Never below the server's `after`, itself capped at
/// [`MAX_SERVER_DELAY`].
pub fn backoff(attempt: u32, after: Option<Duration>) -> Duration {
    // 2^7 * 250 ms is past the cap already: no overflow, whatever `attempt`.
    let step = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(7))
        .min(BACKOFF_CAP);
    let half = step / 2;
    let jitter_nanos = fastrand::u64(0..=half.as_nanos() as u64);
    let own = half + Duration::from_nanos(jitter_nanos);
    match after {
        Some(after) => own.max(after.min(MAX_SERVER_DELAY)),
        None => own,
    }
}

/// Sends encoded export requests to one receiver.
pub struct Exporter {
    /// gRPC or HTTP, with its connection pool.
    transport: Transport,
    /// Bound of one send, connecting included.
    timeout: Duration,
}

/// The client of one protocol.
enum Transport {
    Grpc(tonic::client::Grpc<Channel>),
    Http {
        /// Boxed: it is much larger than the gRPC client, and built once.
        client: Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
        /// `URL/v1/logs`.
        uri: Uri,
    },
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.transport {
            Transport::Grpc(_) => "grpc".to_owned(),
            Transport::Http { uri, .. } => format!("http {uri}"),
        };
        f.debug_struct("Exporter")
            .field("transport", &target)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Exporter {
    /// Checks the URL (http:// or https:// with a host and port; typed error
    /// with a clear message otherwise) and builds the client; connects
    /// lazily. Called inside a tokio runtime (current-thread) the forwarder
    /// owns.
    pub fn new(config: &ExportConfig) -> Result<Self, ExportError> {
        let target = Target::parse(&config.url)?;
        let ca = config.ca_file.as_deref().map(read_ca).transpose()?;
        let agent = concat!("log-server/", env!("CARGO_PKG_VERSION"));
        let transport = match config.protocol {
            Protocol::Grpc => {
                let origin = format!(
                    "{}://{}",
                    target.uri.scheme_str().unwrap_or("http"),
                    target.authority()
                );
                let mut endpoint = Endpoint::from_shared(origin)
                    .map_err(|e| ExportError::Client(e.to_string()))?
                    .connect_timeout(config.timeout)
                    .tcp_nodelay(true)
                    .user_agent(agent)
                    .map_err(|e| ExportError::Client(e.to_string()))?;
                if target.tls {
                    // Checked here too so that a machine without CA
                    // certificates fails at startup, not at every send.
                    if ca.is_none() && native_roots().is_empty() {
                        return Err(ExportError::NoRoots);
                    }
                    let mut tls = ClientTlsConfig::new()
                        .with_native_roots()
                        .domain_name(target.host.clone());
                    if let Some(ca) = &ca {
                        tls = tls.ca_certificate(Certificate::from_pem(&ca.pem));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| ExportError::Client(chain(&e)))?;
                }
                Transport::Grpc(tonic::client::Grpc::new(endpoint.connect_lazy()))
            }
            Protocol::Http => {
                let tls = rustls_config(target.tls, ca.as_ref())?;
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(config.timeout));
                http.set_nodelay(true);
                // The TLS connector in front of it takes https:// URLs.
                http.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                let client = Client::builder(TokioExecutor::new()).build(connector);
                Transport::Http {
                    client: Box::new(client),
                    uri: target.http_uri(&config.url)?,
                }
            }
        };
        Ok(Exporter {
            transport,
            timeout: config.timeout,
        })
    }

    /// Sends one encoded ExportLogsServiceRequest. Never panics; every
    /// failure is an Outcome.
    pub async fn send(&mut self, request: Bytes) -> Outcome {
        let timeout = self.timeout;
        let sent = match &mut self.transport {
            Transport::Grpc(grpc) => tokio::time::timeout(timeout, send_grpc(grpc, request)).await,
            Transport::Http { client, uri } => {
                tokio::time::timeout(timeout, send_http(client, uri, request)).await
            }
        };
        sent.unwrap_or_else(|_| Outcome::Retry {
            after: None,
            reason: format!(
                "The receiver did not answer within {} ms.",
                timeout.as_millis()
            ),
        })
    }
}

/// The checked pieces of the URL.
struct Target {
    uri: Uri,
    host: String,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Self, ExportError> {
        let bad = |reason| ExportError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("it does not parse as a URL"))?;
        let tls = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            _ => return Err(bad("it must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or(bad("it names no host"))?;
        if authority.as_str().contains('@') {
            // Credentials would end up in every diagnostic naming the URL.
            return Err(bad("user names and passwords in the URL are not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        if authority.port_u16().is_none() {
            return Err(bad(
                "it names no port (OTLP receivers listen on 4317 for gRPC, 4318 for HTTP)",
            ));
        }
        // `[::1]` -> `::1` for the TLS server name.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target { uri, host, tls })
    }

    fn authority(&self) -> &str {
        self.uri.authority().map_or("", |a| a.as_str())
    }

    /// `URL/v1/logs`, or the URL itself when it already ends so.
    fn http_uri(&self, url: &str) -> Result<Uri, ExportError> {
        let path = self.uri.path().trim_end_matches('/');
        let path = if path.ends_with(LOGS_PATH) {
            path.to_owned()
        } else {
            format!("{path}{LOGS_PATH}")
        };
        let path_and_query = match self.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query =
            Some(
                PathAndQuery::try_from(path_and_query).map_err(|_| ExportError::Url {
                    url: url.to_owned(),
                    reason: "its path does not parse",
                })?,
            );
        Uri::from_parts(parts).map_err(|_| ExportError::Url {
            url: url.to_owned(),
            reason: "its path does not parse",
        })
    }
}

/// The CA file's PEM text and its certificates.
struct CaFile {
    pem: Vec<u8>,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

fn read_ca(path: &Path) -> Result<CaFile, ExportError> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let pem = std::fs::read(path).map_err(|source| ExportError::CaRead {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ExportError::CaEmpty {
            path: path.to_owned(),
        });
    }
    Ok(CaFile { pem, certs })
}

/// The system's CA certificates; those that do not load are skipped (one
/// broken file in /etc/ssl must not stop forwarding).
fn native_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// The rustls configuration of the HTTP client: the system's roots and the
/// CA file's. Over plain http:// it is never used, so it loads no roots.
fn rustls_config(tls: bool, ca: Option<&CaFile>) -> Result<rustls::ClientConfig, ExportError> {
    let mut roots = rustls::RootCertStore::empty();
    if tls {
        roots.add_parsable_certificates(native_roots());
        if let Some(ca) = ca {
            let (added, _) = roots.add_parsable_certificates(ca.certs.iter().cloned());
            if added == 0 {
                return Err(ExportError::Client(
                    "no certificate of the CA file is a usable trust anchor".into(),
                ));
            }
        }
        if roots.is_empty() {
            return Err(ExportError::NoRoots);
        }
    }
    // The provider is named rather than taken from the process default, which
    // is ambiguous (a panic) when a dependency enables a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExportError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

// ---- OTLP/gRPC ----

async fn send_grpc(grpc: &mut tonic::client::Grpc<Channel>, request: Bytes) -> Outcome {
    if let Err(e) = grpc.ready().await {
        return Outcome::Retry {
            after: None,
            reason: format!(
                "The connection to the receiver failed: {}.",
                chain(&e).trim_end_matches('.')
            ),
        };
    }
    // No grpc-timeout: tonic's channel would enforce it too, racing
    // `Exporter::send`'s own bound and naming the timeout CANCELLED.
    let request = tonic::Request::new(request);
    let path = PathAndQuery::from_static(EXPORT_METHOD);
    match grpc.unary(request, path, RawCodec).await {
        Ok(response) => accepted(response.into_inner()),
        Err(status) => grpc_outcome(&status),
    }
}

/// The outcome of a gRPC call that ended in `status`.
fn grpc_outcome(status: &Status) -> Outcome {
    let code = status.code();
    let message = status.message();
    // "ended in", not "the receiver answered": tonic reports a connection
    // that failed on our side as UNAVAILABLE too.
    let reason = if message.is_empty() {
        format!("The OTLP/gRPC call ended in {}.", code_name(code))
    } else {
        format!(
            "The OTLP/gRPC call ended in {}: {}.",
            code_name(code),
            escape(message).trim_end_matches('.')
        )
    };
    let after = retry_delay(status.details());
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Unavailable
        | Code::DataLoss => Outcome::Retry { after, reason },
        // tonic's words for a message over its size limit, on either side;
        // log-server's transport refuses requests above twice its frame size
        // so. Retrying the same bytes could never succeed.
        Code::OutOfRange if message.contains("message length too large") => {
            Outcome::TooLarge { reason }
        }
        Code::OutOfRange => Outcome::Retry { after, reason },
        // The spec: retryable only when the server says when (RetryInfo);
        // without it the request itself is too much (e.g. over the
        // receiver's size limit).
        Code::ResourceExhausted => match after {
            Some(after) => Outcome::Retry {
                after: Some(after),
                reason,
            },
            None => Outcome::TooLarge { reason },
        },
        Code::InvalidArgument => Outcome::BadData { reason },
        // A transport failure on our side (a reset mid-call) that tonic
        // could not name: the status carries the error, a server's does not.
        Code::Unknown if StdError::source(status).is_some() => Outcome::Retry { after, reason },
        _ => Outcome::Refused { reason },
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Sends the request's bytes as they are and decodes the answer with prost
/// (also the OTLP bench's client codec: requests encoded before the clock
/// starts).
#[derive(Debug, Clone, Copy)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportLogsServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        match ExportLogsServiceResponse::decode(&mut *src) {
            Ok(response) => Ok(Some(response)),
            Err(e) => {
                // The receiver took the request and said OK; only its
                // answer is unreadable. Sending again would duplicate the
                // batch, so this stays a success, with a warning.
                src.advance(src.remaining());
                Ok(Some(ExportLogsServiceResponse {
                    partial_success: Some(
                        log_server_wire::otlp::collector::logs::v1::ExportLogsPartialSuccess {
                            rejected_log_records: 0,
                            error_message: format!("the receiver's answer does not decode: {e}"),
                        },
                    ),
                }))
            }
        }
    }
}

/// The outcome of an answer that took the request.
fn accepted(response: ExportLogsServiceResponse) -> Outcome {
    let partial = response.partial_success.unwrap_or_default();
    Outcome::Accepted {
        rejected: u64::try_from(partial.rejected_log_records).unwrap_or(0),
        message: escape(&partial.error_message),
    }
}

// ---- OTLP/HTTP ----

async fn send_http(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: &Uri,
    request: Bytes,
) -> Outcome {
    let request = Request::post(uri.clone())
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(
            header::USER_AGENT,
            concat!("log-server/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(request));
    let request = match request {
        Ok(r) => r,
        // Unreachable with a checked URI and static headers; still an
        // outcome rather than a panic.
        Err(e) => {
            return Outcome::Refused {
                reason: format!("The request could not be built: {e}."),
            }
        }
    };
    let response = match client.request(request).await {
        Ok(r) => r,
        Err(e) => {
            // hyper-util's own text ("client error (Connect)") says less
            // than its source does.
            let (what, detail) = match (e.is_connect(), StdError::source(&e)) {
                (true, Some(source)) => ("The connection to the receiver failed", chain(source)),
                _ => ("The request to the receiver failed", chain(&e)),
            };
            return Outcome::Retry {
                after: None,
                reason: format!("{what}: {}.", detail.trim_end_matches('.')),
            };
        }
    };
    let (parts, body) = response.into_parts();
    let body = read_bounded(body, MAX_RESPONSE_BYTES).await;
    http_outcome(parts.status, &parts.headers, body)
}

/// The first `max` bytes of `body` (all of it when shorter), reading no
/// further: a receiver's answer of any size costs at most `max` bytes and
/// one frame. The rest is left unread (hyper then closes the connection
/// rather than reusing it).
async fn read_bounded<B>(mut body: B, max: usize) -> Result<Bytes, Box<dyn StdError + Send + Sync>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut out = bytes::BytesMut::new();
    while out.len() < max {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(mut data) = frame.map_err(Into::into)?.into_data() {
            data.truncate(max - out.len());
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The outcome of an OTLP/HTTP answer: its status, headers and body (or
/// why the body could not be read).
fn http_outcome(
    status: StatusCode,
    headers: &HeaderMap,
    body: Result<Bytes, Box<dyn StdError + Send + Sync>>,
) -> Outcome {
    if status.is_success() {
        // Taken, whatever the body: sending again would duplicate it.
        return match body {
            Ok(body) => match ExportLogsServiceResponse::decode(body) {
                Ok(response) => accepted(response),
                Err(e) => Outcome::Accepted {
                    rejected: 0,
                    message: format!("the receiver's answer does not decode: {e}"),
                },
            },
            Err(e) => Outcome::Accepted {
                rejected: 0,
                message: format!(
                    "the receiver's answer could not be read: {}",
                    escape(&e.to_string())
                ),
            },
        };
    }
    let detail = match &body {
        Ok(body) => error_text(body),
        Err(_) => String::new(),
    };
    let reason = if detail.is_empty() {
        format!("The receiver answered HTTP {status}.")
    } else {
        format!("The receiver answered HTTP {status}: {detail}.")
    };
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retry {
            after: retry_after(headers, SystemTime::now()),
            reason,
        },
        413 => Outcome::TooLarge { reason },
        400 => Outcome::BadData { reason },
        _ => Outcome::Refused { reason },
    }
}

/// What an error body says: a google.rpc.Status's message, or else the
/// start of the body as text (a proxy's error page), escaped.
fn error_text(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    match RpcStatus::decode(body) {
        Ok(status) if !status.message.is_empty() => escape(&status.message),
        _ => escape(&String::from_utf8_lossy(body)),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (a date past is no delay).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

// ---- text ----

/// An error and its sources, `: `-separated (hyper's and tonic's top-level
/// messages alone, e.g. "client error (Connect)", say too little).
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    escape(&text)
}

/// Receiver-supplied text made fit for a log line: control characters and
/// quotes escaped, cut to [`MAX_TEXT_CHARS`] characters.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_CHARS));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_TEXT_CHARS {
            out.push_str("...");
            break;
        }
        if c == '\'' {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}
