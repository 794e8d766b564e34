//! The exporter against fake receivers on loopback (a tonic server with the
//! generated `LogsService` stubs, a hyper server), each answering one way
//! the OTLP specification names, and against the real server's OTLP ingest.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use log_server_wire::otlp::{
    collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    common::v1::{any_value::Value, AnyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
};
use proptest::prelude::*;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    transport::{Identity, Server, ServerTlsConfig},
    Code, Status,
};

use super::*;
use crate::ingest::{
    grpc::{
        codec::MessageLimitLayer,
        service::otlp::logs_service_server::{LogsService, LogsServiceServer},
    },
    otlp::RawExport,
};
use crate::rpc_status::{ProtoAny, ProtoDuration, RetryInfo, RETRY_INFO_TYPE};

/// Bound of every send in these tests but the timeout's own.
const TIMEOUT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    // The forwarder's kind of runtime: one thread.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An encoded request of `n` records.
fn request(n: usize) -> Bytes {
    let records = (0..n)
        .map(|i| LogRecord {
            body: Some(AnyValue {
                value: Some(Value::StringValue(format!("forwarded line {i}"))),
            }),
            ..LogRecord::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
    .into()
}

fn config(url: String, protocol: Protocol) -> ExportConfig {
    ExportConfig {
        url,
        protocol,
        timeout: TIMEOUT,
        ca_file: None,
    }
}

fn retry_info_details(delay: Duration) -> Bytes {
    RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: "slow down".into(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: delay.as_secs() as i64,
                    nanos: delay.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        }],
    }
    .encode_to_vec()
    .into()
}

// ---- fake OTLP/gRPC receiver ----

type GrpcAnswer = Arc<dyn Fn() -> Result<ExportLogsServiceResponse, Status> + Send + Sync>;

/// Answers every Export with `answer` and keeps the requests' bytes.
#[derive(Clone)]
struct FakeGrpc {
    answer: GrpcAnswer,
    got: Arc<Mutex<Vec<Bytes>>>,
}

#[tonic::async_trait]
impl LogsService for FakeGrpc {
    async fn export(
        &self,
        request: tonic::Request<RawExport>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        self.got.lock().unwrap().push(request.into_inner().0);
        (self.answer)().map(tonic::Response::new)
    }
}

/// Starts a fake gRPC receiver on the current runtime; TLS with `identity`.
async fn grpc_receiver(
    answer: impl Fn() -> Result<ExportLogsServiceResponse, Status> + Send + Sync + 'static,
    identity: Option<Identity>,
) -> (SocketAddr, Arc<Mutex<Vec<Bytes>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let fake = FakeGrpc {
        answer: Arc::new(answer),
        got: got.clone(),
    };
    let mut builder = Server::builder();
    if let Some(identity) = identity {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    let router = builder
        .layer(MessageLimitLayer(1 << 20))
        .add_service(LogsServiceServer::new(fake));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, got)
}

// ---- fake OTLP/HTTP receiver ----

/// One answer of the fake HTTP receiver.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, body: Vec<u8>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }
}

/// What the fake HTTP receiver saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    content_type: Option<String>,
    body: Bytes,
}

/// Starts a fake HTTP/1.1 receiver on the current runtime; TLS with `tls`.
async fn http_receiver(
    reply: Reply,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            let log = log.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let reply = reply.clone();
                    let log = log.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let content_type = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await?.to_bytes();
                        log.lock().unwrap().push(Seen {
                            path,
                            content_type,
                            body,
                        });
                        let mut response = http::Response::new(Full::new(Bytes::from(reply.body)));
                        *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                        for (name, value) in reply.headers {
                            response
                                .headers_mut()
                                .insert(name, HeaderValue::from_str(&value).unwrap());
                        }
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                        // A client that refuses our certificate ends here.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn partial(rejected: i64, message: &str) -> ExportLogsServiceResponse {
    ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: rejected,
            error_message: message.into(),
        }),
    }
}

fn rpc_status(code: Code, message: &str) -> Vec<u8> {
    RpcStatus {
        code: code as i32,
        message: message.into(),
        details: Vec::new(),
    }
    .encode_to_vec()
}

/// Sends one request of 3 records to a gRPC receiver answering `answer`.
fn grpc_send(
    answer: impl Fn() -> Result<ExportLogsServiceResponse, Status> + Send + Sync + 'static,
) -> (Outcome, Vec<Bytes>) {
    runtime().block_on(async {
        let (addr, got) = grpc_receiver(answer, None).await;
        let mut exporter =
            Exporter::new(&config(format!("http://{addr}"), Protocol::Grpc)).unwrap();
        let outcome = exporter.send(request(3)).await;
        let got = got.lock().unwrap().clone();
        (outcome, got)
    })
}

/// Sends one request of 3 records to an HTTP receiver answering `reply`.
fn http_send(reply: Reply) -> (Outcome, Vec<Seen>) {
    runtime().block_on(async {
        let (addr, seen) = http_receiver(reply, None).await;
        let mut exporter =
            Exporter::new(&config(format!("http://{addr}"), Protocol::Http)).unwrap();
        let outcome = exporter.send(request(3)).await;
        let seen = seen.lock().unwrap().clone();
        (outcome, seen)
    })
}

// ---- gRPC outcomes ----

#[test]
fn grpc_partial_success_is_accepted_with_its_count_and_message() {
    let (outcome, got) = grpc_send(|| Ok(partial(2, "2 records had no body\n")));
    assert_eq!(
        outcome,
        Outcome::Accepted {
            rejected: 2,
            message: "2 records had no body\\n".into()
        }
    );
    // The bytes arrive as they were encoded: no re-encoding on the way.
    assert_eq!(got, vec![request(3)]);
}

#[test]
fn grpc_plain_success_is_accepted_with_nothing_rejected() {
    let (outcome, got) = grpc_send(|| Ok(ExportLogsServiceResponse::default()));
    assert_eq!(
        outcome,
        Outcome::Accepted {
            rejected: 0,
            message: String::new()
        }
    );
    assert_eq!(got.len(), 1);
}

#[test]
fn grpc_unavailable_is_retried_without_a_delay_of_its_own() {
    let (outcome, _) = grpc_send(|| Err(Status::unavailable("queue full")));
    match outcome {
        Outcome::Retry { after, reason } => {
            assert_eq!(after, None);
            assert!(
                reason.contains("UNAVAILABLE") && reason.contains("queue full"),
                "{reason}"
            );
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

/// UNAVAILABLE with RetryInfo, and RESOURCE_EXHAUSTED with RetryInfo (a
/// rate limit, not a size limit), are retried after the delay it gives.
#[test]
fn grpc_retry_info_sets_the_delay_of_a_retry() {
    for (code, delay) in [
        (Code::Unavailable, Duration::from_millis(1500)),
        (Code::ResourceExhausted, Duration::from_secs(3)),
    ] {
        let (outcome, _) = grpc_send(move || {
            Err(Status::with_details(
                code,
                "later",
                retry_info_details(delay),
            ))
        });
        assert!(
            matches!(outcome, Outcome::Retry { after: Some(d), .. } if d == delay),
            "{code:?}: {outcome:?}"
        );
    }
}

#[test]
fn grpc_resource_exhausted_without_retry_info_is_too_large() {
    let (outcome, _) =
        grpc_send(|| Err(Status::resource_exhausted("message of 9 bytes exceeds 8")));
    assert!(
        matches!(&outcome, Outcome::TooLarge { reason } if reason.contains("RESOURCE_EXHAUSTED")),
        "{outcome:?}"
    );
}

#[test]
fn grpc_message_size_error_of_the_transport_is_too_large() {
    // The receiver's transport refuses a message above its limit before the
    // service sees it (log-server above twice --max_frame_size).
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeGrpc {
            answer: Arc::new(|| Ok(ExportLogsServiceResponse::default())),
            got: Arc::new(Mutex::new(Vec::new())),
        };
        let service = LogsServiceServer::new(fake.clone()).max_decoding_message_size(64);
        tokio::spawn(
            Server::builder()
                .layer(MessageLimitLayer(1 << 20))
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let mut exporter =
            Exporter::new(&config(format!("http://{addr}"), Protocol::Grpc)).unwrap();
        let outcome = exporter.send(request(20)).await;
        assert!(matches!(outcome, Outcome::TooLarge { .. }), "{outcome:?}");
        assert!(fake.got.lock().unwrap().is_empty());
    });
}

#[test]
fn grpc_invalid_argument_is_bad_data() {
    let (outcome, _) = grpc_send(|| Err(Status::invalid_argument("not a valid protobuf message")));
    assert!(matches!(outcome, Outcome::BadData { .. }), "{outcome:?}");
}

#[test]
fn grpc_endpoint_codes_are_refused() {
    for code in [
        Code::Unimplemented,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::NotFound,
        Code::Internal,
        Code::FailedPrecondition,
        Code::Unknown,
    ] {
        let (outcome, _) = grpc_send(move || Err(Status::new(code, "no")));
        assert!(
            matches!(outcome, Outcome::Refused { .. }),
            "{code:?}: {outcome:?}"
        );
    }
}

#[test]
fn grpc_retryable_codes_are_retried() {
    for code in [
        Code::Cancelled,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::OutOfRange,
        Code::DataLoss,
    ] {
        let (outcome, _) = grpc_send(move || Err(Status::new(code, "again")));
        assert!(
            matches!(outcome, Outcome::Retry { .. }),
            "{code:?}: {outcome:?}"
        );
    }
}

#[test]
fn grpc_unknown_from_our_own_transport_is_retried() {
    // What tonic makes of a transport error it cannot name (a connection
    // reset mid-call): UNKNOWN, carrying the error. A receiver's UNKNOWN
    // (refused above) carries none.
    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
    let status = Status::from_error(Box::new(reset));
    assert_eq!(status.code(), Code::Unknown);
    assert!(
        matches!(grpc_outcome(&status), Outcome::Retry { after: None, .. }),
        "{status:?}"
    );
}

#[test]
fn grpc_receiver_text_is_escaped_and_cut() {
    let long = format!("line one\nline two\x1b[31m{}", "x".repeat(5000));
    let (outcome, _) = grpc_send(move || Err(Status::permission_denied(long.clone())));
    let Outcome::Refused { reason } = outcome else {
        panic!("expected Refused, got {outcome:?}");
    };
    assert!(!reason.chars().any(char::is_control), "{reason:?}");
    assert!(
        reason.contains("line one\\nline two\\u{1b}[31m"),
        "{reason}"
    );
    assert!(reason.len() < 700, "{} bytes", reason.len());
}

// ---- HTTP outcomes ----

#[test]
fn http_partial_success_is_accepted_and_the_request_is_protobuf_at_v1_logs() {
    let (outcome, seen) = http_send(Reply::new(200, partial(1, "one dropped").encode_to_vec()));
    assert_eq!(
        outcome,
        Outcome::Accepted {
            rejected: 1,
            message: "one dropped".into()
        }
    );
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/logs");
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(seen[0].body, request(3));
}

#[test]
fn http_url_ending_in_v1_logs_is_used_as_it_is_and_a_prefix_is_kept() {
    runtime().block_on(async {
        let (addr, seen) = http_receiver(Reply::new(200, Vec::new()), None).await;
        for (url, path) in [
            (format!("http://{addr}/v1/logs"), "/v1/logs"),
            (format!("http://{addr}/otlp/"), "/otlp/v1/logs"),
        ] {
            let mut exporter = Exporter::new(&config(url, Protocol::Http)).unwrap();
            let outcome = exporter.send(request(1)).await;
            assert!(
                matches!(outcome, Outcome::Accepted { rejected: 0, .. }),
                "{outcome:?}"
            );
            assert_eq!(seen.lock().unwrap().pop().unwrap().path, path);
        }
    });
}

#[test]
fn http_503_with_retry_after_seconds_is_retried_after_them() {
    let mut reply = Reply::new(503, rpc_status(Code::Unavailable, "queue full"));
    reply.headers.push(("retry-after", "2".into()));
    let (outcome, _) = http_send(reply);
    match outcome {
        Outcome::Retry { after, reason } => {
            assert_eq!(after, Some(Duration::from_secs(2)));
            assert!(
                reason.contains("503") && reason.contains("queue full"),
                "{reason}"
            );
        }
        other => panic!("expected Retry, got {other:?}"),
    }
}

#[test]
fn http_429_with_an_http_date_is_retried_after_it() {
    let when = SystemTime::now() + Duration::from_secs(120);
    let mut reply = Reply::new(429, Vec::new());
    reply
        .headers
        .push(("retry-after", httpdate::fmt_http_date(when)));
    let (outcome, _) = http_send(reply);
    let Outcome::Retry {
        after: Some(after), ..
    } = outcome
    else {
        panic!("expected Retry with a delay, got {outcome:?}");
    };
    // The date has whole seconds: up to 1 s early, and the send took some.
    assert!(
        after > Duration::from_secs(100) && after <= Duration::from_secs(120),
        "{after:?}"
    );
}

#[test]
fn http_gateway_errors_are_retried() {
    for status in [502, 504] {
        let (outcome, _) = http_send(Reply::new(status, b"<html>bad gateway</html>".to_vec()));
        assert!(
            matches!(&outcome, Outcome::Retry { after: None, reason } if reason.contains("bad gateway")),
            "{status}: {outcome:?}"
        );
    }
}

#[test]
fn http_400_is_bad_data_with_the_status_message() {
    let (outcome, _) = http_send(Reply::new(
        400,
        rpc_status(
            Code::InvalidArgument,
            "not a valid ExportLogsServiceRequest",
        ),
    ));
    assert!(
        matches!(&outcome, Outcome::BadData { reason } if reason.contains("not a valid ExportLogsServiceRequest")),
        "{outcome:?}"
    );
}

#[test]
fn http_413_is_too_large() {
    let (outcome, _) = http_send(Reply::new(413, Vec::new()));
    assert!(matches!(outcome, Outcome::TooLarge { .. }), "{outcome:?}");
}

#[test]
fn http_endpoint_errors_are_refused() {
    for status in [404, 401, 403, 405, 415, 500] {
        let (outcome, _) = http_send(Reply::new(status, Vec::new()));
        assert!(
            matches!(outcome, Outcome::Refused { .. }),
            "{status}: {outcome:?}"
        );
    }
}

#[test]
fn http_large_error_page_gives_its_start_as_the_reason() {
    let mut page = b"<html>no such route".to_vec();
    page.resize(1 << 20, b'a');
    let (outcome, _) = http_send(Reply::new(404, page));
    let Outcome::Refused { reason } = outcome else {
        panic!("expected Refused, got {outcome:?}");
    };
    assert!(reason.contains("<html>no such route"), "{reason}");
    assert!(reason.len() < 700, "{} bytes", reason.len());
}

#[test]
fn http_answer_is_read_only_up_to_its_bound() {
    // A 1 MiB answer in 1 KiB frames: the read stops at the bound, having
    // pulled no frame past the one that reached it.
    let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = pulled.clone();
    let frames = std::iter::repeat_with(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'a'; 1024])))
    })
    .take(1024);
    let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
    let read = runtime().block_on(read_bounded(body, 10_000)).unwrap();
    assert_eq!(read.len(), 10_000);
    assert_eq!(pulled.load(std::sync::atomic::Ordering::Relaxed), 10);
}

#[test]
fn http_success_with_an_unreadable_body_is_still_accepted() {
    let (outcome, _) = http_send(Reply::new(200, b"{\"json\": true}".to_vec()));
    assert!(
        matches!(&outcome, Outcome::Accepted { rejected: 0, message } if message.contains("does not decode")),
        "{outcome:?}"
    );
}

// ---- both protocols: the receiver is not there or does not answer ----

#[test]
fn connection_refused_is_retried() {
    runtime().block_on(async {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: nothing listens on `addr` now.
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let mut exporter = Exporter::new(&config(format!("http://{addr}"), protocol)).unwrap();
            let outcome = exporter.send(request(1)).await;
            assert!(
                matches!(&outcome, Outcome::Retry { after: None, reason } if reason.contains("onnect")),
                "{protocol:?}: {outcome:?}"
            );
        }
    });
}

#[test]
fn receiver_that_never_answers_is_retried_after_the_timeout() {
    runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and holds every connection, never reading or writing.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let mut config = config(format!("http://{addr}"), protocol);
            config.timeout = Duration::from_millis(300);
            let mut exporter = Exporter::new(&config).unwrap();
            let started = tokio::time::Instant::now();
            let outcome = exporter.send(request(1)).await;
            assert!(
                matches!(&outcome, Outcome::Retry { after: None, reason } if reason.contains("300 ms")),
                "{protocol:?}: {outcome:?}"
            );
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
    });
}

// ---- TLS ----

/// A self-signed certificate for 127.0.0.1, its key, and the CA file
/// trusting it.
struct SelfSigned {
    cert_pem: String,
    key_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
}

fn self_signed() -> SelfSigned {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        cert_der: certified.cert.der().clone(),
        key_der: certified.signing_key.serialize_der(),
        _dir: dir,
        ca_file,
    }
}

fn rustls_server(cert: &SelfSigned) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_der.clone()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert_der.clone()], key)
            .unwrap(),
    )
}

#[test]
fn https_to_a_private_ca_is_accepted_with_its_ca_file_and_refused_without() {
    let cert = self_signed();
    runtime().block_on(async {
        let identity = Identity::from_pem(&cert.cert_pem, &cert.key_pem);
        let (grpc_addr, grpc_got) =
            grpc_receiver(|| Ok(ExportLogsServiceResponse::default()), Some(identity)).await;
        let (http_addr, http_seen) =
            http_receiver(Reply::new(200, Vec::new()), Some(rustls_server(&cert))).await;
        for (protocol, addr) in [(Protocol::Grpc, grpc_addr), (Protocol::Http, http_addr)] {
            let mut trusted = config(format!("https://{addr}"), protocol);
            trusted.ca_file = Some(cert.ca_file.clone());
            let outcome = Exporter::new(&trusted).unwrap().send(request(2)).await;
            assert_eq!(
                outcome,
                Outcome::Accepted {
                    rejected: 0,
                    message: String::new()
                },
                "{protocol:?}"
            );

            let untrusted = config(format!("https://{addr}"), protocol);
            let outcome = Exporter::new(&untrusted).unwrap().send(request(2)).await;
            assert!(
                matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("certificate")),
                "{protocol:?}: {outcome:?}"
            );
        }
        // Only the trusted sends arrived.
        assert_eq!(grpc_got.lock().unwrap().len(), 1);
        assert_eq!(http_seen.lock().unwrap().len(), 1);
    });
}

// ---- the configuration ----

#[test]
fn bad_urls_are_refused_with_a_sentence() {
    for (url, says) in [
        ("localhost:4317", "http:// or https://"),
        ("ftp://localhost:4317", "http:// or https://"),
        ("http://localhost", "no port"),
        ("http://:4317", "no host"),
        ("http://user:secret@localhost:4317", "passwords"),
        ("http://local host:4317", "does not parse"),
    ] {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let err = runtime()
                .block_on(async { Exporter::new(&config(url.into(), protocol)) })
                .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(says), "{url}: {text}");
        }
    }
}

#[test]
fn missing_or_empty_ca_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (path, says) in [
        (dir.path().join("missing.pem"), "cannot read the CA file"),
        (empty, "no usable PEM certificate"),
    ] {
        let mut config = config("https://127.0.0.1:4317".into(), Protocol::Http);
        config.ca_file = Some(path);
        let err = runtime()
            .block_on(async { Exporter::new(&config) })
            .unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn retry_after_reads_seconds_and_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after(&headers, now), None);
    headers.insert("retry-after", HeaderValue::from_static(" 7 "));
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
    headers.insert("retry-after", HeaderValue::from_str(&later).unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(90)));
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
    headers.insert("retry-after", HeaderValue::from_str(&earlier).unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
    headers.insert("retry-after", HeaderValue::from_static("soon"));
    assert_eq!(retry_after(&headers, now), None);
}

proptest! {
    /// Every delay lies between half the nominal exponential step and the
    /// step itself, and never below the server's (capped) delay.
    #[test]
    fn backoff_stays_within_its_bounds(
        attempt in any::<u32>(),
        after_ms in proptest::option::of(0u64..10_000_000),
    ) {
        let after = after_ms.map(Duration::from_millis);
        let delay = backoff(attempt, after);
        let step = BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(BACKOFF_CAP);
        let floor = after.map_or(Duration::ZERO, |a| a.min(MAX_SERVER_DELAY));
        prop_assert!(delay >= step / 2, "{delay:?} below half of {step:?}");
        prop_assert!(delay >= floor, "{delay:?} below the server's {floor:?}");
        prop_assert!(delay <= step.max(floor), "{delay:?} above {step:?} and {floor:?}");
    }
}

#[test]
fn backoff_grows_from_the_base_to_the_cap() {
    assert!(backoff(0, None) <= BACKOFF_BASE);
    assert!(backoff(3, None) >= BACKOFF_BASE * 4);
    assert!(backoff(u32::MAX, None) <= BACKOFF_CAP);
    assert_eq!(
        backoff(0, Some(Duration::from_secs(86_400))),
        MAX_SERVER_DELAY
    );
}

// ---- the real server ----

#[test]
fn the_real_servers_otlp_ingest_accepts_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::server::Server::start(crate::server::ServerConfig {
        port: 0,
        grpc_port: 0,
        only_tcp: false,
        log_dir: dir.path().join("logs"),
        tcp_threads: 1,
        ..crate::server::ServerConfig::default()
    })
    .unwrap();
    let addr = server.grpc_addr().unwrap();
    runtime().block_on(async {
        for protocol in [Protocol::Grpc, Protocol::Http] {
            let mut exporter = Exporter::new(&config(format!("http://{addr}"), protocol)).unwrap();
            let outcome = exporter.send(request(3)).await;
            assert_eq!(
                outcome,
                Outcome::Accepted {
                    rejected: 0,
                    message: String::new()
                },
                "{protocol:?}"
            );
        }
    });
    // --grpc_ack written (the default): both answers came after the lines
    // were in the file.
    assert_eq!(server.progress().written(), 6);
    let report = server.shutdown();
    let text = std::fs::read_to_string(dir.path().join("logs/_main.log")).unwrap();
    assert_eq!(
        text.matches("forwarded line 0").count(),
        2,
        "{report:?}\n{text}"
    );
}
