'use strict';
// Loads a LogBridge server from Node's own gRPC client (@grpc/grpc-js), the
// client JavaScript applications use, and reports what the application
// sees: messages per second, call latency, and how much the event loop was
// delayed while logging (perf_hooks.monitorEventLoopDelay).
//
//   node bench/grpc-load.js --address 127.0.0.1:4021 --mode unary --inflight 8 --messages 20000
//   node bench/grpc-load.js --address 127.0.0.1:4021 --mode rounds --inflight 8 --messages 20000
//   node bench/grpc-load.js --address 127.0.0.1:4021 --mode stream --messages 1000000
//
// Prints one JSON object on stdout. Used by scripts/bench-node-grpc.sh
// (against log-server and a no-op grpc-js server in the same run) and by
// the Nagle regression test in tests/interop.rs.

const { performance, monitorEventLoopDelay } = require('node:perf_hooks');
const grpc = require('@grpc/grpc-js');
const { loadService } = require('../logger');

function parseArgs(argv) {
  const args = { address: '127.0.0.1:4021', mode: 'unary', inflight: 8, messages: 10000, size: 200 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args)) throw new Error(`unknown option --${key}`);
    args[key] = key === 'address' || key === 'mode' ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (!['unary', 'rounds', 'stream'].includes(args.mode)) throw new Error('--mode is unary, rounds or stream');
  return args;
}

function request(n, size) {
  const message = `lg c=0000 n=${String(n).padStart(10, '0')} `;
  return {
    timestamp: '2026-01-02T15:04:05.000000000Z',
    hostname: 'bench-host',
    logger_name: 'node-bench',
    level: 'INFO',
    filename: 'grpc-load.js',
    function_name: 'run',
    line_number: '1',
    message: message + 'x'.repeat(Math.max(0, size - 120 - message.length)),
  };
}

function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function call(client, n, size, latencies) {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    client.LogMessage(request(n, size), (err, res) => {
      if (err) reject(err);
      else if (!res.success) reject(new Error('success: false'));
      else {
        latencies.push(performance.now() - start);
        resolve();
      }
    });
  });
}

// Closed loop: `inflight` calls outstanding at all times, a new one as soon
// as one is answered (the client always has data to send, so its ACKs ride
// on its requests).
async function unary(client, { inflight, messages, size }) {
  const latencies = [];
  let next = 0;
  async function worker() {
    while (next < messages) await call(client, next++, size, latencies);
  }
  await Promise.all(Array.from({ length: inflight }, worker));
  return latencies;
}

// Rounds: `inflight` calls at once, then wait for all of them, like an
// application logging from a burst of concurrent requests. Here the client
// is silent while it waits, so its ACKs are delayed: the pattern that
// exposes Nagle's algorithm on the server's socket.
async function rounds(client, { inflight, messages, size }) {
  const latencies = [];
  for (let n = 0; n < messages; n += inflight) {
    const round = [];
    for (let i = n; i < Math.min(messages, n + inflight); i++) round.push(call(client, i, size, latencies));
    await Promise.all(round);
  }
  return latencies;
}

function stream(client, { messages, size }) {
  return new Promise((resolve, reject) => {
    const call = client.LogStream((err, summary) => {
      if (err) reject(err);
      else if (Number(summary.accepted) !== messages) reject(new Error(`accepted ${summary.accepted} of ${messages}`));
      else resolve([]);
    });
    let n = 0;
    function pump() {
      // Respect the stream's backpressure: write until it says stop.
      while (n < messages) {
        if (!call.write(request(n++, size))) {
          call.once('drain', pump);
          return;
        }
      }
      call.end();
    }
    pump();
  });
}

async function main() {
  const args = parseArgs(process.argv);
  const service = loadService();
  const client = new service.LogBridge(args.address, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) =>
    client.waitForReady(Date.now() + 5000, (e) => (e ? reject(e) : resolve())));
  // Warm up the connection and both sides' code paths.
  await unary(client, { inflight: 1, messages: 50, size: args.size });
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const cpu = process.cpuUsage();
  const start = performance.now();
  const run = { unary, rounds, stream }[args.mode];
  const latencies = await run(client, args);
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  loop.disable();
  latencies.sort((a, b) => a - b);
  const ms = (v) => Math.round(v * 1000) / 1000;
  console.log(JSON.stringify({
    mode: args.mode,
    inflight: args.mode === 'stream' ? 1 : args.inflight,
    messages: args.messages,
    seconds: ms(seconds),
    msgs_per_s: Math.round(args.messages / seconds),
    call_ms: { p50: ms(percentile(latencies, 0.5)), p99: ms(percentile(latencies, 0.99)), max: ms(latencies.at(-1) || 0) },
    // Share of one core this client used: near 1 means the client itself
    // is the limit, whatever the server.
    client_cpu: Math.round(((used.user + used.system) / 1e6 / seconds) * 100) / 100,
    event_loop_delay_ms: { p50: ms(loop.percentile(50) / 1e6), p99: ms(loop.percentile(99) / 1e6), max: ms(loop.max / 1e6) },
  }));
  client.close();
}

main().catch((e) => {
  console.error(`grpc-load: ${e.message || e}`);
  process.exit(1);
});
