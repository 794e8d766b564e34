//! `loadgen`: a bounded stress tool for log-server.
//!
//! Sends many messages over TCP (length-prefixed packed Cap'n Proto, the
//! library's own encoder), gRPC (unary or client-streaming) or plain syslog
//! lines (for the side-by-side benchmark against rsyslog and syslog-ng),
//! reports messages/s, MB/s and gRPC latency percentiles, and with
//! `--verify DIR` checks that every message is in the files exactly once
//! and in per-connection order.
//!
//! Layout: `template` pre-encodes one message per stream and patches its
//! counter in place (the generator is never the bottleneck); `send` has the
//! TCP, syslog and gRPC senders; `verify` reads the files back.

mod send;
mod template;
mod verify;

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use log_server_latency::LatencySummary;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// log-server's TCP port: packed Cap'n Proto frames.
    Tcp,
    /// log-server's gRPC port.
    Grpc,
    /// Any syslog TCP input (rsyslog imtcp, syslog-ng network()): RFC 5424
    /// lines, newline-framed. For benchmarks against peers.
    Syslog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GrpcMode {
    /// One LogMessage call per message, `--concurrency` in flight per connection.
    Unary,
    /// One LogStream call per connection.
    Stream,
}

/// Stress tool for log-server: sends messages, reports rates and latencies,
/// and verifies that every message is in the log files once, in order.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
struct Args {
    /// Protocol to send with.
    #[arg(value_enum)]
    target: Target,
    /// Server address (loopback or an address you own).
    #[arg(long, default_value = "127.0.0.1:4020")]
    addr: SocketAddr,
    /// Connections (each its own thread or gRPC channel).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Messages per connection.
    #[arg(
        long,
        conflicts_with = "duration",
        required_unless_present = "duration"
    )]
    messages: Option<u64>,
    /// Seconds to send for, instead of a message count.
    #[arg(long)]
    duration: Option<f64>,
    /// Total messages per second over all connections (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Approximate bytes per message on the wire.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Send a hello frame first on each TCP connection.
    #[arg(long)]
    hello: bool,
    /// Send a heartbeat frame every this many seconds on TCP connections.
    #[arg(long)]
    heartbeat: Option<f64>,
    /// gRPC call style.
    #[arg(long = "grpc_mode", alias = "grpc-mode", value_enum, default_value_t = GrpcMode::Unary)]
    grpc_mode: GrpcMode,
    /// Unary calls in flight per gRPC connection.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// After sending, check the server's log directory: every message once, in order.
    #[arg(long)]
    verify: Option<PathBuf>,
    /// Seconds to wait for the server to write everything before verifying.
    #[arg(
        long = "verify_timeout",
        alias = "verify-timeout",
        default_value_t = 60.0
    )]
    verify_timeout: f64,
    /// The server's --max_files: a missing oldest prefix counts as rotated out only once that many files exist.
    #[arg(long = "max_files", alias = "max-files", default_value_t = 10)]
    max_files: usize,
}

/// How much to send: a count or a deadline, and an optional pace.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Messages per stream; `u64::MAX` with a deadline.
    pub messages: u64,
    pub deadline: Option<Instant>,
    /// Messages per second for one stream.
    pub rate: Option<f64>,
    pub size: usize,
    pub hello: bool,
    pub heartbeat: Option<Duration>,
}

impl Plan {
    /// Whether the stream that has sent `sent` messages should stop.
    pub fn done(&self, sent: u64) -> bool {
        sent >= self.messages || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps as needed to keep `sent` messages since `start` at the rate.
    pub fn pace(&self, start: Instant, sent: u64) {
        if let Some(rate) = self.rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub messages: u64,
    pub bytes: u64,
    /// Per-call latency (gRPC unary) or per-stream latency (gRPC stream).
    pub latency: Option<LatencySummary>,
    /// Messages sent per stream, for verification.
    pub per_stream: Vec<u64>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.messages == Some(0) {
        bail!("--messages must be at least 1");
    }
    if let Some(d) = args.duration {
        if !(d > 0.0 && d <= 86_400.0) {
            bail!("--duration must be between 0 and 86400 seconds");
        }
    }
    if args.rate == Some(0) {
        bail!("--rate must be at least 1 message per second");
    }
    if !(64..=1 << 20).contains(&args.size) {
        bail!("--size must be between 64 and 1048576 bytes");
    }
    let streams = match (args.target, args.grpc_mode) {
        (Target::Grpc, GrpcMode::Unary) => args.connections * args.concurrency,
        _ => args.connections,
    };
    if streams > 9_999 {
        bail!("at most 9999 streams (connections x concurrency) can be told apart in the files");
    }
    let start = Instant::now();
    let plan = Plan {
        messages: args.messages.unwrap_or(u64::MAX),
        deadline: args.duration.map(|d| start + Duration::from_secs_f64(d)),
        rate: args.rate.map(|r| r as f64 / streams as f64),
        size: args.size,
        hello: args.hello,
        heartbeat: args.heartbeat.map(Duration::from_secs_f64),
    };

    let sent = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let progress = progress_bar(
        args.messages.map(|m| m * args.connections as u64),
        &sent,
        &finished,
    );

    let outcome = match args.target {
        Target::Tcp | Target::Syslog => send::tcp(
            args.addr,
            args.connections,
            plan,
            args.target == Target::Syslog,
            &sent,
        ),
        Target::Grpc => send::grpc(
            args.addr,
            args.connections,
            args.concurrency,
            args.grpc_mode == GrpcMode::Stream,
            plan,
            &sent,
        ),
    }
    .with_context(|| format!("sending to {}", args.addr))?;
    let elapsed = start.elapsed();
    finished.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }

    let verdict = match &args.verify {
        Some(dir) => Some(verify::verify(
            dir,
            &outcome.per_stream,
            args.max_files,
            Duration::from_secs_f64(args.verify_timeout),
        )?),
        None => None,
    };
    report(&args, &outcome, elapsed, verdict.as_ref());
    Ok(verdict.is_none_or(|v| v.is_clean()))
}

/// A progress bar on stderr while sending, only when stderr is a terminal.
fn progress_bar(
    total: Option<u64>,
    sent: &Arc<AtomicU64>,
    finished: &Arc<AtomicBool>,
) -> Option<thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} msgs {per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (sent, finished) = (sent.clone(), finished.clone());
    Some(thread::spawn(move || {
        while !finished.load(Ordering::Relaxed) {
            bar.set_position(sent.load(Ordering::Relaxed));
            thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    }))
}

fn report(args: &Args, o: &Outcome, elapsed: Duration, verdict: Option<&verify::Verdict>) {
    let secs = elapsed.as_secs_f64();
    let rate = o.messages as f64 / secs;
    let mbps = o.bytes as f64 / secs / 1e6;
    if args.json {
        let mut json = format!(
            "{{\"target\":\"{:?}\",\"connections\":{},\"messages\":{},\"bytes\":{},\"elapsed_s\":{:.6},\"msgs_per_s\":{:.0},\"mb_per_s\":{:.2}",
            args.target, args.connections, o.messages, o.bytes, secs, rate, mbps
        )
        .to_lowercase();
        if let Some(l) = o.latency {
            json += &format!(
                ",\"latency_us\":{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
                l.count, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        if let Some(v) = verdict {
            json += &format!(
                ",\"verify\":{{\"found\":{},\"missing\":{},\"duplicate\":{},\"out_of_order\":{},\"rotated_out\":{}}}",
                v.found, v.missing, v.duplicate, v.out_of_order, v.rotated_out
            );
        }
        println!("{json}}}");
        return;
    }
    println!("target       {:?} {}", args.target, args.addr);
    println!("connections  {}", args.connections);
    println!("messages     {}", o.messages);
    println!("bytes        {}", o.bytes);
    println!("elapsed      {secs:.3} s");
    println!("rate         {rate:.0} msgs/s, {mbps:.1} MB/s");
    if let Some(l) = o.latency {
        println!("latency      {l}");
    }
    if let Some(v) = verdict {
        println!(
            "verify       found {} missing {} duplicate {} out-of-order {} rotated-out {} -> {}",
            v.found,
            v.missing,
            v.duplicate,
            v.out_of_order,
            v.rotated_out,
            if v.is_clean() { "OK" } else { "FAILED" }
        );
    }
}
