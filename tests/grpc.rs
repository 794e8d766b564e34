//! gRPC ingest end to end with a tonic client on loopback.

use std::{net::SocketAddr, thread, time::Duration};

use log_server::{
    format::LineFormat,
    ingest::grpc::AckMode,
    server::ServerConfig,
    writer::{FsyncPolicy, WriterConfig},
};
use log_server_wire::proto::{
    log_bridge_client::LogBridgeClient, log_service_client::LogServiceClient, LogRequest,
    LogResponse,
};
use tonic::{codec::CompressionEncoding, transport::Channel, Code, Request, Status};

use crate::util::*;

fn grpc_server(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
        tweak(c);
    })
}

fn request(conn: usize, n: usize) -> LogRequest {
    LogRequest {
        timestamp: "2026-01-02T15:04:05.000000000Z".into(),
        hostname: "grpc-host".into(),
        logger_name: "js".into(),
        level: 3,
        message: message(conn, n),
        ..LogRequest::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One unary call that must be answered `success: true`.
async fn log_ok(client: &mut LogBridgeClient<Channel>, r: LogRequest) {
    assert!(client.log_message(r).await.unwrap().into_inner().success);
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[test]
fn unary_on_both_service_names_and_the_line_is_written_before_the_answer() {
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    let dir = s.log_dir();
    runtime().block_on(async {
        let ch = channel(addr).await;
        let mut bridge = LogBridgeClient::new(ch.clone());
        let mut legacy = LogServiceClient::new(ch);
        for n in 0..50 {
            let r = if n % 2 == 0 {
                bridge.log_message(request(0, n)).await
            } else {
                legacy.log_message(request(0, n)).await
            };
            assert_eq!(r.unwrap().into_inner(), LogResponse { success: true });
            // --grpc_ack written (the default): the line is in the file now.
            let lines = read_lines(&dir, 10);
            assert_eq!(lines.len(), n + 1, "after message {n}");
        }
    });
    let lines = s.stop();
    assert_all_once_in_order(&lines, &[50]);
}

#[test]
fn a_stream_is_accepted_whole_and_in_order() {
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let mut client =
            LogBridgeClient::new(channel(addr).await).send_compressed(CompressionEncoding::Gzip);
        let requests: Vec<LogRequest> = (0..5_000).map(|n| request(0, n)).collect();
        let summary = client
            .log_stream(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(summary.accepted, 5_000);
    });
    let lines = s.stop();
    assert_all_once_in_order(&lines, &[5_000]);
}

#[test]
fn every_ack_mode_answers_success() {
    for (ack, fsync) in [
        (AckMode::Queued, FsyncPolicy::Rotate),
        (AckMode::Written, FsyncPolicy::None),
        (AckMode::Synced, FsyncPolicy::Batch),
    ] {
        let mut s = grpc_server(|c| {
            c.grpc_ack = ack;
            c.writer.fsync = fsync;
        });
        let addr = s.server().grpc_addr().unwrap();
        let progress = s.server().progress().clone();
        runtime().block_on(async {
            let mut client = LogBridgeClient::new(channel(addr).await);
            for n in 0..20 {
                log_ok(&mut client, request(0, n)).await;
                match ack {
                    AckMode::Queued => {}
                    AckMode::Written => assert!(progress.written() > n as u64),
                    AckMode::Synced => assert!(progress.synced() > n as u64),
                }
            }
        });
        assert_all_once_in_order(&s.stop(), &[20]);
    }
}

#[test]
fn synced_acks_without_fsync_batch_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let err = log_server::server::Server::start(ServerConfig {
        port: 0,
        grpc_port: 0,
        log_dir: dir.path().into(),
        grpc_ack: AckMode::Synced,
        writer: WriterConfig {
            fsync: FsyncPolicy::Rotate,
            ..WriterConfig::default()
        },
        ..ServerConfig::default()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("--grpc_ack synced needs --fsync batch"),
        "{err}"
    );
}

#[test]
fn only_tcp_leaves_the_grpc_port_closed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = TestServer::start_with(|c| {
        c.only_tcp = true;
        c.grpc_port = port;
    });
    assert!(s.server().grpc_addr().is_none());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    s.stop();
}

#[test]
fn oversized_and_malformed_requests_get_clear_status_codes() {
    let mut s = grpc_server(|c| c.max_frame_size = 4096);
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let ch = channel(addr).await;
        let mut client = LogBridgeClient::new(ch.clone());
        let mut big = request(0, 0);
        big.message = "x".repeat(6_000);
        let err = client.log_message(big).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");

        // A string field holding invalid UTF-8 (field 9, message): the bytes
        // go out as they are through a raw codec.
        let mut raw = tonic::client::Grpc::new(ch.clone());
        raw.ready().await.unwrap();
        let bad_utf8 = vec![0x4a, 3, b'a', 0xff, b'b'];
        let err = raw
            .unary(
                Request::new(bad_utf8),
                http::uri::PathAndQuery::from_static("/logservice.LogBridge/LogMessage"),
                raw_codec::RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");

        // Bytes that are no protobuf at all.
        raw.ready().await.unwrap();
        let err = raw
            .unary(
                Request::new(vec![0xff; 16]),
                http::uri::PathAndQuery::from_static("/logservice.LogBridge/LogMessage"),
                raw_codec::RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");

        // The server still serves well-formed calls.
        log_ok(&mut client, request(0, 0)).await;
    });
    assert_all_once_in_order(&s.stop(), &[1]);
}

#[test]
fn an_unknown_level_is_kept() {
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let mut client = LogBridgeClient::new(channel(addr).await);
        let mut r = request(0, 0);
        r.level = 77;
        log_ok(&mut client, r).await;
    });
    let lines = s.stop();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains(" LEVEL(77)  "), "{}", lines[0]);
}

#[test]
fn a_cancelled_stream_keeps_what_was_accepted() {
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    let progress = s.server().progress().clone();
    runtime().block_on(async {
        let mut client = LogBridgeClient::new(channel(addr).await);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let call = tokio::spawn(async move {
            client
                .log_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        for n in 0..300 {
            tx.send(request(0, n)).await.unwrap();
        }
        while progress.written() < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The client goes away without ending the stream.
        call.abort();
        let _ = call.await;
        drop(tx);
    });
    thread::sleep(Duration::from_millis(100));
    assert_all_once_in_order(&s.stop(), &[300]);
}

#[test]
fn health_service_says_serving() {
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr).await);
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "logservice.LogBridge".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
    s.stop();
}

#[test]
fn tcp_and_grpc_at_once_make_one_global_order() {
    let mut s = grpc_server(|c| c.format = LineFormat::Json);
    let tcp = s.addr();
    let grpc = s.server().grpc_addr().unwrap();
    let tcp_clients: Vec<_> = (0..2)
        .map(|c| thread::spawn(move || send(tcp, &frames(c, 3_000, true, Some(100)))))
        .collect();
    runtime().block_on(async {
        let ch = channel(grpc).await;
        let unary = {
            let mut client = LogBridgeClient::new(ch.clone());
            tokio::spawn(async move {
                for n in 0..500 {
                    log_ok(&mut client, request(2, n)).await;
                }
            })
        };
        let mut client = LogBridgeClient::new(ch);
        let requests: Vec<LogRequest> = (0..3_000).map(|n| request(3, n)).collect();
        assert_eq!(
            client
                .log_stream(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner()
                .accepted,
            3_000
        );
        unary.await.unwrap();
    });
    for c in tcp_clients {
        c.join().unwrap();
    }
    s.wait_written(9_500);
    let lines = s.stop();
    assert_all_once_in_order(&lines, &[3_000, 3_000, 500, 3_000]);
    // One global order: seq runs 0, 1, 2, ... through the file.
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("{{\"seq\":{i},")),
            "line {i}: {line}"
        );
    }
}

/// A codec that sends bytes as they are and decodes `LogResponse`.
mod raw_codec {
    use bytes::BufMut;
    use log_server_wire::proto::LogResponse;
    use prost::Message;
    use tonic::{
        codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
        Status,
    };

    pub(super) struct RawCodec;
    pub(super) struct RawEncoder;
    pub(super) struct ResponseDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = LogResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for ResponseDecoder {
        type Item = LogResponse;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<LogResponse>, Status> {
            LogResponse::decode(src)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }
}

#[test]
fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    let names = runtime().block_on(async {
        let mut client = ServerReflectionClient::new(channel(addr).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        match responses.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    });
    assert!(
        names.contains(&"logservice.LogBridge".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"logservice.LogService".to_string()),
        "{names:?}"
    );
    s.stop();
}

/// With the writer stuck (its file is a FIFO nobody reads), the queue fills
/// and a call is refused with UNAVAILABLE after the queue wait; once the
/// FIFO is read, everything that was accepted comes out, exactly once.
#[test]
fn a_full_queue_answers_unavailable_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, fifo) = stuck_grpc_server(dir.path());
    let addr = server.grpc_addr().unwrap();
    let accepted = runtime().block_on(async {
        let mut client = LogBridgeClient::new(channel(addr).await);
        let mut accepted = 0;
        loop {
            match client.log_message(request(0, accepted)).await {
                Ok(r) => {
                    assert!(r.into_inner().success);
                    accepted += 1;
                    assert!(accepted < 100_000, "the queue never filled");
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status}");
                    break accepted;
                }
            }
        }
    });
    // Read the FIFO until the writer is done.
    let (report, lines) = shutdown_reading_fifo(server, fifo);
    assert_eq!(report.grpc_messages, accepted as u64);
    assert_eq!(report.writer.lines, accepted as u64);
    assert_all_once_in_order(&lines, &[accepted]);
}

/// The server's end of every connection to `port` in this process (the
/// in-process server's accepted sockets), as raw fds.
fn accepted_sockets(port: u16) -> Vec<i32> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&sock);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        if let (Some(local), Some(_)) = (local, peer) {
            if local.port() == port {
                fds.push(fd);
            }
        }
    }
    fds
}

/// Nagle's algorithm held each small response until the client's delayed
/// ACK (~40 ms a round of concurrent calls from Node's grpc-js) because
/// the accepted sockets kept the kernel defaults: every accepted gRPC
/// socket must have TCP_NODELAY and TCP keepalive.
#[test]
fn accepted_grpc_sockets_have_nodelay_and_keepalive() {
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let mut client = LogBridgeClient::new(channel(addr).await);
        log_ok(&mut client, request(0, 0)).await;
        let fds = accepted_sockets(addr.port());
        assert_eq!(fds.len(), 1, "one accepted gRPC connection");
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fds[0]) };
        let sock = socket2::SockRef::from(&sock);
        assert!(
            sock.tcp_nodelay().unwrap(),
            "TCP_NODELAY on the accepted socket"
        );
        assert!(
            sock.keepalive().unwrap(),
            "SO_KEEPALIVE on the accepted socket"
        );
        assert_eq!(
            sock.tcp_keepalive_time().unwrap(),
            log_server::server::TCP_KEEPALIVE
        );
    });
    s.stop();
}

/// `--grpc_max_connections`: a connection past the cap is closed at once
/// (the client sees UNAVAILABLE), the others keep working, and a slot
/// freed by a closed connection serves a new one.
#[test]
fn grpc_connections_beyond_the_limit_are_refused_and_others_keep_working() {
    let mut s = grpc_server(|c| c.grpc_max_connections = 2);
    let addr = s.server().grpc_addr().unwrap();
    let stats = s.server().ingest_stats().clone();
    runtime().block_on(async {
        let mut first = LogBridgeClient::new(channel(addr).await);
        let mut second = LogBridgeClient::new(channel(addr).await);
        log_ok(&mut first, request(0, 0)).await;
        log_ok(&mut second, request(1, 0)).await;
        // The third connection is accepted by the kernel, then closed by the
        // server: the call (or the connect) fails.
        let third = match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => LogBridgeClient::new(ch)
                .log_message(request(2, 0))
                .await
                .err(),
            Err(e) => Some(Status::unavailable(e.to_string())),
        };
        // The connection closes under the client; tonic reports UNAVAILABLE,
        // CANCELLED or a broken pipe depending on when it notices.
        let err = third.expect("a third connection past the cap of 2 is refused");
        eprintln!("third connection: {err}");
        assert!(stats.grpc_connections_refused.get() >= 1);
        log_ok(&mut first, request(0, 1)).await;
        // Free a slot: a new connection is served.
        drop(second);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.grpc_connections_open.get() > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the closed connection kept its slot"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut fourth = LogBridgeClient::new(channel(addr).await);
        log_ok(&mut fourth, request(3, 0)).await;
    });
    let lines = s.stop();
    assert_eq!(lines.len(), 4, "{lines:#?}");
}

/// A stream that fails half way (here on a message that is not valid
/// protobuf) keeps what it accepted and says how many in the trailer, so
/// the client resends only the rest: nothing lost, nothing twice.
#[test]
fn a_stream_that_fails_half_way_says_how_many_it_accepted() {
    use prost::Message as _;
    let mut s = grpc_server(|_| {});
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let ch = channel(addr).await;
        let mut raw = tonic::client::Grpc::new(ch);
        raw.ready().await.unwrap();
        let mut messages: Vec<Vec<u8>> = (0..10).map(|n| request(0, n).encode_to_vec()).collect();
        messages.push(vec![0xff; 16]);
        let err = raw
            .client_streaming(
                Request::new(tokio_stream::iter(messages)),
                http::uri::PathAndQuery::from_static("/logservice.LogBridge/LogStream"),
                raw_codec::RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        let accepted = err
            .metadata()
            .get(log_server::ingest::grpc::ACCEPTED_TRAILER)
            .expect("the accepted count in the trailer")
            .to_str()
            .unwrap();
        assert_eq!(accepted, "10", "{err}");
        assert!(err.message().contains("first 10 messages"), "{err}");
        // The client resends what was not accepted (nothing here but a
        // good message after the bad one).
        let mut client = LogBridgeClient::new(channel(addr).await);
        let rest = vec![request(0, 10)];
        assert_eq!(
            client
                .log_stream(tokio_stream::iter(rest))
                .await
                .unwrap()
                .into_inner()
                .accepted,
            1
        );
    });
    assert_all_once_in_order(&s.stop(), &[11]);
}

/// Starts a raw HTTP/2 gRPC call to `LogStream` that announces a message
/// of `announced` bytes and sends only `sent` of them, then goes silent.
async fn partial_message(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
    announced: u32,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/logservice.LogBridge/LogStream"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, mut body) = ready.send_request(request, false).unwrap();
    let mut data = vec![0u8];
    data.extend_from_slice(&announced.to_be_bytes());
    data.resize(5 + sent, b'x');
    body.send_data(data.into(), false).unwrap();
    (response, body)
}

/// The gRPC status of a raw call's answer (trailers-only or in trailers).
/// A call's `grpc-status` and, when there is one, the RetryInfo delay in
/// its `grpc-status-details-bin`.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<(String, Option<Duration>)> {
    let response = response.await.ok()?;
    let read = |headers: &http::HeaderMap| {
        let status = headers.get("grpc-status")?.to_str().unwrap().to_string();
        let delay = headers.get("grpc-status-details-bin").and_then(|v| {
            use base64::Engine as _;
            let padded = v.to_str().ok()?.trim_end_matches('=');
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(padded)
                .ok()?;
            log_server::rpc_status::retry_delay(&bytes)
        });
        Some((status, delay))
    };
    if let Some(s) = read(response.headers()) {
        return Some(s);
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.ok()??;
    read(&trailers)
}

/// Many calls each announcing a large message and sending part of it would
/// make tonic buffer all of them; under `--grpc_max_inflight_bytes` the
/// bytes held stay within the budget, calls that find it spent wait and
/// are refused with RESOURCE_EXHAUSTED, calls silent in the middle of a
/// message are ended after `--grpc_message_timeout`, and then the server
/// serves a good client again.
#[test]
fn grpc_requests_in_flight_stay_within_the_memory_budget() {
    const BUDGET: usize = 256 * 1024;
    let mut s = grpc_server(|c| {
        c.max_frame_size = 64 * 1024;
        c.grpc_max_inflight_bytes = BUDGET;
        c.grpc_queue_wait = Duration::from_secs(1);
        c.grpc_message_timeout = Duration::from_secs(2);
    });
    let addr = s.server().grpc_addr().unwrap();
    let stats = s.server().ingest_stats().clone();
    let inflight = || stats.grpc_inflight_bytes.get() as usize;
    runtime().block_on(async {
        let mut calls = Vec::new();
        let mut connections = Vec::new();
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            connections.push(tokio::spawn(connection));
            let mut client = client;
            // 10 calls x 40,000 bytes a connection: 800,000 bytes offered.
            for _ in 0..10 {
                calls.push(partial_message(&mut client, addr, 60_000, 40_000).await);
            }
        }
        let mut peak = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            peak = peak.max(inflight());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(peak <= BUDGET, "{peak} bytes held, budget {BUDGET}");
        assert!(
            peak > BUDGET / 2,
            "the calls were not buffered at all ({peak} bytes)"
        );
        // Every call ends: RESOURCE_EXHAUSTED (waited for budget) or
        // DEADLINE_EXCEEDED (silent mid-message), and nothing is held after.
        let mut codes = Vec::new();
        for (response, body) in calls {
            let status = tokio::time::timeout(Duration::from_secs(10), grpc_status(response))
                .await
                .expect("every call is ended by the server");
            codes.push(status);
            drop(body);
        }
        // RESOURCE_EXHAUSTED says when to retry (RetryInfo): OTLP clients
        // (the forwarder among them) retry it only then.
        let exhausted = (Code::ResourceExhausted as i32).to_string();
        let exhausted: Vec<_> = codes
            .iter()
            .flatten()
            .filter(|c| c.0 == exhausted)
            .collect();
        assert!(!exhausted.is_empty(), "{codes:?}");
        assert!(
            exhausted
                .iter()
                .all(|c| c.1 == Some(Duration::from_secs(1))),
            "{codes:?}"
        );
        let deadline_exceeded = (Code::DeadlineExceeded as i32).to_string();
        assert!(
            codes.iter().flatten().any(|c| c.0 == deadline_exceeded),
            "{codes:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while inflight() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes still held",
                inflight()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut good = LogBridgeClient::new(channel(addr).await);
        log_ok(&mut good, request(0, 0)).await;
    });
    assert_all_once_in_order(&s.stop(), &[1]);
}

/// With `--grpc_ack queued`, a call whose record did not fit in the queue
/// at once used to be answered `success` while a spawned task still held
/// the record; shutdown then dropped those tasks, losing messages the
/// clients were told were queued (and leaving gaps). Now the answer waits
/// for the push, and shutdown waits for every pending push.
#[test]
fn queued_acks_are_not_lost_at_shutdown() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let (logs, fifo) = fifo_log_dir(dir.path());
    let server = log_server::server::Server::start(ServerConfig {
        port: 0,
        grpc_port: 0,
        log_dir: logs,
        // Three lines fit; the fourth passes the byte cap while the queue
        // still "has room", so its push must wait.
        queue_max_bytes: 1024,
        grpc_ack: AckMode::Queued,
        grpc_queue_wait: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.grpc_addr().unwrap();
    let answered = runtime().block_on(async {
        let mut client = LogBridgeClient::new(channel(addr).await);
        let mut answered = 0;
        while answered < 300 {
            let mut r = request(0, answered);
            r.message.push_str(&" padding".repeat(20));
            match tokio::time::timeout(Duration::from_millis(500), client.log_message(r)).await {
                Ok(Ok(r)) => {
                    assert!(r.into_inner().success);
                    answered += 1;
                }
                Ok(Err(status)) => panic!("{status}"),
                // Waiting for room: not answered, so not promised.
                Err(_) => break,
            }
        }
        answered
    });
    // A slow disk: the FIFO is read a little at a time, so the queue stays
    // full through the shutdown.
    let reader = thread::spawn(move || {
        let mut f = std::fs::File::open(fifo).unwrap();
        let (mut all, mut buf) = (Vec::new(), [0u8; 512]);
        loop {
            match f.read(&mut buf).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    let report = server.shutdown();
    let text = String::from_utf8(reader.join().unwrap()).unwrap();
    let mut seen = vec![0u32; 300];
    for line in text.lines() {
        let (_, n) = parse_message(line).expect("a line of this test");
        seen[n] += 1;
    }
    assert!(
        seen[..answered].iter().all(|&c| c == 1),
        "every message answered `queued` is written once ({answered} answered)"
    );
    assert_eq!(
        report.writer.lines, report.grpc_messages,
        "every sequenced message is written"
    );
}

/// Structured fields reach the line over gRPC and over TCP: an object in
/// JSON lines, `attrs=` in the text metadata (docs/PROTOCOL.md).
#[test]
fn structured_fields_reach_the_line_over_grpc_and_tcp() {
    let mut s = grpc_server(|c| c.format = LineFormat::Json);
    let addr = s.server().grpc_addr().unwrap();
    runtime().block_on(async {
        let mut client = LogBridgeClient::new(channel(addr).await);
        let mut r = request(0, 0);
        r.attributes = r#"{"user":"ada","ms":12}"#.into();
        log_ok(&mut client, r).await;
    });
    let attrs = r#"{"route":"/a"}"#;
    let mut frame = Vec::new();
    let msg = message(1, 0);
    log_server_wire::encode::push_logger_frame(
        &mut frame,
        &log_server_wire::fields::Fields {
            message: &msg,
            attributes: attrs,
            ..Default::default()
        },
        log_server_wire::encode::Packing::Packed,
    );
    send(s.addr(), &frame);
    s.wait_written(2);
    let lines = s.stop();
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects[0]["attributes"]["user"], "ada", "{}", lines[0]);
    assert_eq!(objects[0]["attributes"]["ms"], 12, "{}", lines[0]);
    assert_eq!(objects[1]["attributes"]["route"], "/a", "{}", lines[1]);
}
