'use strict';
// Logs through the package's pino or winston transport (or createClient
// directly) as an application does, and reports what the application
// sees: how long N log calls take to be sent, and how much the event loop
// was delayed meanwhile (perf_hooks.monitorEventLoopDelay).
//
//   node bench/transport-load.js --address 127.0.0.1:4021 --via pino --messages 200000
//
// Prints one JSON object. Used by scripts/bench-node-grpc.sh.

const { performance, monitorEventLoopDelay } = require('node:perf_hooks');
const { once } = require('node:events');

function parseArgs(argv) {
  const args = { address: '127.0.0.1:4021', via: 'client', messages: 100000 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args)) throw new Error(`unknown option --${key}`);
    args[key] = key === 'messages' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!['client', 'pino', 'winston'].includes(args.via)) throw new Error('--via is client, pino or winston');
  return args;
}

const payload = 'x'.repeat(120);

async function viaClient({ address, messages }) {
  const { createClient } = require('../client');
  const client = createClient({ address, capacity: messages + 1 });
  for (let i = 0; i < messages; i += 1) {
    client.log('info', `lg n=${i} ${payload}`, { logger_name: 'bench' });
    if (i % 1000 === 999) await new Promise(setImmediate); // let the loop breathe, as an app would
  }
  if (!(await client.close(120000))) throw new Error('not everything was sent');
}

async function viaPino({ address, messages }) {
  const pino = require('pino');
  const transport = pino.transport({
    target: require.resolve('../pino'),
    options: { address, capacity: messages + 1, closeTimeoutMs: 120000 },
  });
  const logger = pino({ name: 'bench' }, transport);
  for (let i = 0; i < messages; i += 1) {
    logger.info(`lg n=${i} ${payload}`);
    if (i % 1000 === 999) await new Promise(setImmediate);
  }
  const closed = once(transport, 'close');
  // Keeps the process alive until the worker has sent everything.
  const keepAlive = setInterval(() => {}, 1000);
  transport.end();
  await closed;
  clearInterval(keepAlive);
}

async function viaWinston({ address, messages }) {
  const winston = require('winston');
  const { LogServerTransport } = require('../winston');
  const transport = new LogServerTransport({ address, capacity: messages + 1, closeTimeoutMs: 120000 });
  const logger = winston.createLogger({ transports: [transport] });
  for (let i = 0; i < messages; i += 1) {
    logger.info(`lg n=${i} ${payload}`);
    if (i % 1000 === 999) await new Promise(setImmediate);
  }
  logger.end();
  await once(logger, 'finish');
}

async function main() {
  const args = parseArgs(process.argv);
  const run = { client: viaClient, pino: viaPino, winston: viaWinston }[args.via];
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const start = performance.now();
  await run(args);
  const seconds = (performance.now() - start) / 1000;
  loop.disable();
  const ms = (v) => Math.round(v * 1000) / 1000;
  console.log(JSON.stringify({
    via: args.via,
    messages: args.messages,
    seconds: ms(seconds),
    msgs_per_s: Math.round(args.messages / seconds),
    event_loop_delay_ms: { p50: ms(loop.percentile(50) / 1e6), p99: ms(loop.percentile(99) / 1e6), max: ms(loop.max / 1e6) },
  }));
}

main().catch((e) => {
  console.error(`transport-load: ${e.message || e}`);
  process.exit(1);
});
