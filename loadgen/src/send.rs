//! The senders: one thread per TCP connection, or tokio tasks for gRPC.
//! Every stream sends its messages in counter order, 0, 1, 2, ...

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log_server_wire::{
    encode::{push_heartbeat, push_hello_frame},
    proto::{log_bridge_client::LogBridgeClient, LogRequest},
};
use tonic::transport::Channel;

use crate::{
    template::{message_text, Template, COUNTER_DIGITS},
    Outcome, Plan,
};
use log_server_latency::{new_latency_histogram, record_latency, LatencySummary};

/// Bytes handed to one `write` call.
const CHUNK: usize = 64 * 1024;

/// Sends TCP frames (or syslog lines) on `connections` connections.
pub(crate) fn tcp(
    addr: SocketAddr,
    connections: usize,
    plan: Plan,
    syslog: bool,
    sent: &Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let sent = sent.clone();
            thread::spawn(move || tcp_stream(addr, c, plan, syslog, &sent))
        })
        .collect();
    let mut outcome = Outcome::default();
    for h in handles {
        let (messages, bytes) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a sender thread panicked"))??;
        outcome.messages += messages;
        outcome.bytes += bytes;
        outcome.per_stream.push(messages);
    }
    Ok(outcome)
}

fn tcp_stream(
    addr: SocketAddr,
    stream: usize,
    plan: Plan,
    syslog: bool,
    sent: &AtomicU64,
) -> anyhow::Result<(u64, u64)> {
    let template = if syslog {
        Template::syslog(stream, plan.size)
    } else {
        Template::tcp(stream, plan.size)
    };
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(CHUNK + template.len());
    if plan.hello && !syslog {
        push_hello_frame(&mut buf, "loadgen", &format!("stream{stream}"));
    }
    // Small chunks at low rates, so pacing stays smooth.
    let per_chunk = match plan.rate {
        Some(rate) => ((rate / 100.0) as usize).clamp(1, CHUNK / template.len()),
        None => (CHUNK / template.len()).max(1),
    };
    let start = Instant::now();
    let mut last_heartbeat = start;
    let (mut n, mut bytes) = (0u64, 0u64);
    while !plan.done(n) {
        for _ in 0..per_chunk {
            if plan.done(n) {
                break;
            }
            template.push(n, &mut buf);
            n += 1;
        }
        if let Some(every) = plan.heartbeat.filter(|_| !syslog) {
            if last_heartbeat.elapsed() >= every {
                push_heartbeat(&mut buf);
                last_heartbeat = Instant::now();
            }
        }
        conn.write_all(&buf).context("writing to the server")?;
        bytes += buf.len() as u64;
        sent.fetch_add(per_chunk as u64, Ordering::Relaxed);
        buf.clear();
        plan.pace(start, n);
    }
    conn.flush()?;
    Ok((n, bytes))
}

/// A LogRequest of stream `stream` with counter `n`, about `size` bytes.
fn request(stream: usize, n: u64, padding: usize) -> LogRequest {
    let f = crate::template::fields("");
    LogRequest {
        timestamp: f.timestamp.into(),
        hostname: f.hostname.into(),
        logger_name: f.logger_name.into(),
        level: f.level.0,
        filename: f.filename.into(),
        function_name: f.function_name.into(),
        line_number: f.line_number.into(),
        message: message_text(
            stream,
            &format!("{n:0width$}", width = COUNTER_DIGITS),
            padding,
        ),
        ..LogRequest::default()
    }
}

/// Sends over gRPC: `concurrency` unary callers per connection, each its own
/// ordered stream of messages, or one LogStream call per connection.
pub(crate) fn grpc(
    addr: SocketAddr,
    connections: usize,
    concurrency: usize,
    streaming: bool,
    plan: Plan,
    sent: &Arc<AtomicU64>,
) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let padding = {
        let bare = prost_len(&request(0, 0, 0));
        plan.size.saturating_sub(bare)
    };
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for c in 0..connections {
            let channel = Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            let callers = if streaming { 1 } else { concurrency };
            for k in 0..callers {
                let stream = c * callers + k;
                let client = LogBridgeClient::new(channel.clone());
                let sent = sent.clone();
                tasks.push(tokio::spawn(async move {
                    if streaming {
                        grpc_stream(client, stream, plan, padding, &sent).await
                    } else {
                        grpc_unary(client, stream, plan, padding, &sent).await
                    }
                }));
            }
        }
        let mut outcome = Outcome::default();
        let mut h = new_latency_histogram();
        for t in tasks {
            let (n, bytes, latencies) = t.await??;
            outcome.messages += n;
            outcome.bytes += bytes;
            outcome.per_stream.push(n);
            for l in latencies {
                record_latency(&mut h, l, 1);
            }
        }
        outcome.latency = Some(LatencySummary::of(&h));
        Ok(outcome)
    })
}

fn prost_len(r: &LogRequest) -> usize {
    prost::Message::encoded_len(r)
}

async fn grpc_unary(
    mut client: LogBridgeClient<Channel>,
    stream: usize,
    plan: Plan,
    padding: usize,
    sent: &AtomicU64,
) -> anyhow::Result<(u64, u64, Vec<Duration>)> {
    let start = Instant::now();
    let mut latencies = Vec::new();
    let (mut n, mut bytes) = (0u64, 0u64);
    while !plan.done(n) {
        let r = request(stream, n, padding);
        bytes += prost_len(&r) as u64;
        let t = Instant::now();
        let ok = client.log_message(r).await?.into_inner().success;
        latencies.push(t.elapsed());
        anyhow::ensure!(ok, "the server answered success=false");
        n += 1;
        sent.fetch_add(1, Ordering::Relaxed);
        if let Some(rate) = plan.rate {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    Ok((n, bytes, latencies))
}

async fn grpc_stream(
    mut client: LogBridgeClient<Channel>,
    stream: usize,
    plan: Plan,
    padding: usize,
    sent: &Arc<AtomicU64>,
) -> anyhow::Result<(u64, u64, Vec<Duration>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let sent = sent.clone();
    let producer = tokio::spawn(async move {
        let start = Instant::now();
        let (mut n, mut bytes) = (0u64, 0u64);
        while !plan.done(n) {
            let r = request(stream, n, padding);
            bytes += prost_len(&r) as u64;
            if tx.send(r).await.is_err() {
                break;
            }
            n += 1;
            sent.fetch_add(1, Ordering::Relaxed);
            if let Some(rate) = plan.rate {
                tokio::time::sleep_until((start + Duration::from_secs_f64(n as f64 / rate)).into())
                    .await;
            }
        }
        (n, bytes)
    });
    let t = Instant::now();
    let summary = client
        .log_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let latency = t.elapsed();
    let (n, bytes) = producer.await?;
    anyhow::ensure!(
        summary.accepted == n,
        "the server accepted {} of {n} streamed messages",
        summary.accepted
    );
    Ok((n, bytes, vec![latency]))
}
