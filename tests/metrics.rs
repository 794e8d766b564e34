//! `GET /metrics` in the Prometheus text format, on the gRPC port's HTTP
//! side and on `--metrics_port`, read by a plain HTTP/1.1 client.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
};

use log_server_wire::proto::{log_bridge_client::LogBridgeClient, LogRequest};

use crate::util::*;

/// The response to `GET /metrics` on `addr`: status line and headers, body.
pub(crate) fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a whole HTTP response");
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_are_served_on_the_grpc_port_and_the_metrics_port() {
    let mut s = TestServer::start_with(|c| {
        c.only_tcp = false;
        c.grpc_port = 0;
        c.metrics_port = Some(0);
    });
    send(s.addr(), &frames(0, 100, true, None));
    let grpc = s.server().grpc_addr().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut client = LogBridgeClient::connect(format!("http://{grpc}"))
                .await
                .unwrap();
            for n in 0..5 {
                let r = LogRequest {
                    message: message(1, n),
                    ..LogRequest::default()
                };
                assert!(client.log_message(r).await.unwrap().into_inner().success);
            }
        });
    s.wait_written(105);
    for addr in [grpc, s.server().metrics_addr().unwrap()] {
        let (head, body) = scrape(addr);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        for expected in [
            "log_server_messages_received_total{transport=\"tcp\"} 100",
            "log_server_messages_received_total{transport=\"grpc\"} 5",
            "log_server_lines_written_total 105",
            "# TYPE log_server_connections_open gauge",
            "# TYPE log_server_writer_moves_total counter",
            "# TYPE log_server_receive_to_written_seconds histogram",
            "log_server_receive_to_written_seconds_count 105",
            "log_server_receive_to_written_seconds_bucket{le=\"+Inf\"} 105",
        ] {
            assert!(
                body.contains(expected),
                "{expected:?} missing from {addr}:\n{body}"
            );
        }
    }
    s.stop();
}
