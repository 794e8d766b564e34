//! Many clients at once: 2,000 TCP connections and 200 gRPC streams sending
//! together. Bounded: a few messages each, on loopback.

use std::{io::Write, net::TcpStream, thread};

use log_server::server::ServerConfig;
use log_server_wire::proto::{log_bridge_client::LogBridgeClient, LogRequest};
use tonic::transport::Channel;

use crate::util::*;

const TCP_CONNECTIONS: usize = 2_000;
const GRPC_STREAMS: usize = 200;
const PER_CLIENT: usize = 20;

/// Raises the open-files limit as far as allowed and returns it: 2,000
/// connections need about 4,000 descriptors (both ends in this process).
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

/// Peak resident memory of this process so far, KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn two_thousand_connections_and_two_hundred_streams_at_once() {
    let fds = raise_fd_limit();
    // Both ends of every connection live in this process, plus the test
    // harness's own descriptors.
    let tcp_connections = TCP_CONNECTIONS.min((fds.saturating_sub(512) / 2) as usize);
    if tcp_connections < TCP_CONNECTIONS {
        eprintln!("NOTE: the open-files limit ({fds}) allows {tcp_connections} TCP connections, not {TCP_CONNECTIONS}");
    }
    let mut s = TestServer::start_with(|c: &mut ServerConfig| {
        c.only_tcp = false;
        c.grpc_port = 0;
        c.max_connections = 4_096;
    });
    let tcp = s.addr();
    let grpc = s.server().grpc_addr().unwrap();
    // Open every TCP connection first, so that all of them are open at once.
    let tcp_clients = thread::spawn(move || {
        let mut conns: Vec<TcpStream> = (0..tcp_connections)
            .map(|_| TcpStream::connect(tcp).unwrap())
            .collect();
        for (c, conn) in conns.iter_mut().enumerate() {
            conn.write_all(&frames(c, PER_CLIENT, c % 2 == 0, None))
                .unwrap();
        }
        conns
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let calls: Vec<_> = (0..GRPC_STREAMS)
            .map(|k| {
                let mut client = LogBridgeClient::new(channel.clone());
                tokio::spawn(async move {
                    let requests: Vec<LogRequest> = (0..PER_CLIENT)
                        .map(|n| LogRequest {
                            timestamp: "2026-01-02T15:04:05.000000000Z".into(),
                            message: message(tcp_connections + k, n),
                            ..LogRequest::default()
                        })
                        .collect();
                    client
                        .log_stream(tokio_stream::iter(requests))
                        .await
                        .unwrap()
                        .into_inner()
                        .accepted
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), PER_CLIENT as u64);
        }
    });
    let conns = tcp_clients.join().unwrap();
    let stats = s.server().ingest_stats().clone();
    let total = (tcp_connections + GRPC_STREAMS) * PER_CLIENT;
    s.wait_written(total as u64);
    drop(conns);
    let lines = s.stop();
    // Every client, TCP or gRPC, got every message through: none starved.
    assert_all_once_in_order(&lines, &vec![PER_CLIENT; tcp_connections + GRPC_STREAMS]);
    // What the server's TCP side held for 2,000 connections, as
    // --ingest_memory counts it: a 16 KiB read buffer each, plus the lines
    // and decoder scratch of the read in hand (these clients send ~2 KiB a
    // connection). About 28 KiB a connection measured; 32 KiB allowed.
    let ingest_peak = stats.ingest_memory_peak_bytes.get();
    let bound = tcp_connections as u64 * 32 * 1024;
    eprintln!(
        "ingest memory peak {} KiB for {tcp_connections} connections (bound {} KiB); \
         peak RSS of this test process (server, clients and any test running beside) {} MiB",
        ingest_peak / 1024,
        bound / 1024,
        peak_rss_kib() / 1024
    );
    assert!(
        ingest_peak <= bound,
        "ingest memory peaked at {ingest_peak} bytes for {tcp_connections} connections"
    );
}
