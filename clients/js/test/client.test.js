'use strict';
// createClient against the real log-server (test/server.js).

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const os = require('node:os');

const { createClient, levelName } = require('log-server-client');
const { startServer, Server, freePort, WAIT_MS } = require('./server');

const servers = [];
after(() => servers.forEach((s) => s.cleanup()));

async function server(args) {
  const s = await startServer(args);
  servers.push(s);
  return s;
}

const messages = (records, prefix) => records.map((r) => r.message).filter((m) => m.startsWith(prefix));
const range = (a, b, f) => Array.from({ length: b - a }, (_, i) => f(a + i));

test('every record arrives once, in order, with its fields', async () => {
  const s = await server();
  const client = createClient({ address: s.address, serviceName: 'web', loggerName: 'node.test' });
  const n = 3000;
  for (let i = 0; i < n; i += 1) client.log('info', `rec ${i}`, { module: 'm', thread_name: 't' });
  assert.equal(await client.close(WAIT_MS), true);
  const records = await s.waitCount(n);
  assert.deepEqual(messages(records, 'rec '), range(0, n, (i) => `rec ${i}`));
  const r = records[0];
  assert.equal(r.level, 'INFO');
  assert.equal(r.service_name, 'web');
  assert.equal(r.logger_name, 'node.test');
  assert.equal(r.hostname, os.hostname());
  assert.equal(r.process_id, String(process.pid));
  assert.equal(r.module, 'm');
  assert.equal(r.thread_name, 't');
  assert.match(r.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
  assert.equal(client.stats.sent, n);
  assert.equal(client.stats.dropped, 0);
});

test('level names and numbers map to the server levels', () => {
  assert.deepEqual(
    ['debug', 'INFO', 'warn', 'warning', 'error', 'fatal', 'critical', 'trace', 3, 'no such level'].map(levelName),
    ['DEBUG', 'INFO', 'WARNING', 'WARNING', 'ERROR', 'CRITICAL', 'CRITICAL', 'DEBUG', 'INFO', 'INFO'],
  );
});

test('a server restart in the middle loses and repeats nothing', async () => {
  const s = await server();
  const client = createClient({ address: s.address, backoffInitialMs: 50, backoffMaxMs: 200 });
  for (let i = 0; i < 500; i += 1) client.log('info', `restart ${i}`);
  assert.equal(await client.flush(WAIT_MS), true);
  await s.stop();
  // Logged while the server is away: they wait in the buffer.
  for (let i = 500; i < 1000; i += 1) client.log('info', `restart ${i}`);
  await new Promise((r) => setTimeout(r, 300)); // a few failed attempts
  await s.start();
  for (let i = 1000; i < 1500; i += 1) client.log('info', `restart ${i}`);
  assert.equal(await client.close(WAIT_MS), true);
  const records = await s.waitCount(1500);
  assert.deepEqual(messages(records, 'restart '), range(0, 1500, (i) => `restart ${i}`));
  assert.ok(client.stats.failedCalls > 0);
});

test('a full buffer drops the oldest, counts them and says so once connected', async () => {
  const s = new Server();
  servers.push(s);
  s.grpcPort = await freePort();
  const client = createClient({ address: s.address, capacity: 100, backoffInitialMs: 50, backoffMaxMs: 200 });
  for (let i = 0; i < 350; i += 1) client.log('info', `full ${i}`);
  assert.equal(client.stats.dropped, 250);
  assert.equal(client.pending(), 100);
  await s.start();
  assert.equal(await client.close(WAIT_MS), true);
  const records = await s.waitCount(101);
  assert.equal(records.length, 101);
  assert.equal(records[0].level, 'WARNING');
  assert.equal(records[0].logger_name, 'log-server-client');
  assert.match(records[0].message, /^250 log records were dropped: the buffer of 100 records was full/);
  assert.deepEqual(messages(records, 'full '), range(250, 350, (i) => `full ${i}`));
});

test('a stream the server fails half way is resent from the first record it did not accept', async () => {
  // The server refuses one record above its --max_frame_size; the stream
  // fails there and its trailer says how many came before.
  const s = await server(['--max_frame_size', '2048']);
  const client = createClient({ address: s.address, backoffInitialMs: 50 });
  for (let i = 0; i < 100; i += 1) {
    client.log('info', i === 50 ? `trailer ${i} ${'x'.repeat(3000)}` : `trailer ${i}`);
  }
  assert.equal(await client.close(WAIT_MS), true);
  const records = await s.waitRecords((r) => r.some((x) => x.level === 'WARNING'), 'the drop warning');
  await new Promise((r) => setTimeout(r, 200));
  const all = s.records();
  assert.deepEqual(messages(all, 'trailer '), range(0, 100, (i) => `trailer ${i}`).filter((m) => m !== 'trailer 50'));
  assert.equal(client.stats.rejected, 1);
  const warning = records.find((x) => x.level === 'WARNING');
  assert.match(warning.message, /^1 log records were dropped: larger than/);
});

test('a record above maxMessageBytes is dropped and counted before it is sent', async () => {
  const s = await server();
  const client = createClient({ address: s.address, maxMessageBytes: 1000 });
  client.log('info', 'small 1');
  client.log('info', 'y'.repeat(2000));
  client.log('info', 'small 2');
  assert.equal(await client.close(WAIT_MS), true);
  const records = await s.waitCount(3);
  // All three were logged before the first send: the warning goes first.
  assert.deepEqual(records.map((r) => r.level), ['WARNING', 'INFO', 'INFO']);
  assert.deepEqual(messages(records, 'small'), ['small 1', 'small 2']);
});

test('log() returns at once while the server is away', async () => {
  const port = await freePort();
  const client = createClient({ address: `127.0.0.1:${port}`, capacity: 1000, closeTimeoutMs: 200 });
  const started = process.hrtime.bigint();
  for (let i = 0; i < 20000; i += 1) client.log('info', `away ${i}`);
  // A generous bound: appending 20,000 records takes milliseconds; a
  // client that waited on the network would take seconds.
  assert.ok(Number(process.hrtime.bigint() - started) / 1e9 < 5);
  assert.equal(client.stats.dropped, 19000);
  assert.equal(await client.close(), false);
});

test('a call still in flight when close() gives up does not throw on the shut channel', async () => {
  // A server that accepts the connection and never answers: the call is
  // in flight when close() times out, and ends later at its deadline.
  const net = require('node:net');
  const held = [];
  const silent = net.createServer((socket) => held.push(socket));
  await new Promise((r) => silent.listen(0, '127.0.0.1', r));
  const client = createClient({
    address: `127.0.0.1:${silent.address().port}`, backoffInitialMs: 20, backoffMaxMs: 20, callTimeoutMs: 100,
  });
  const thrown = [];
  const onError = (err) => thrown.push(err);
  process.on('uncaughtException', onError);
  try {
    client.log('info', 'never sent');
    assert.equal(await client.close(50), false);
    // Past the call's deadline and several backoff periods: a retry on the
    // shut channel would throw "Channel has been shut down".
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    process.off('uncaughtException', onError);
    held.forEach((socket) => socket.destroy());
    silent.close();
  }
  assert.deepEqual(thrown.map(String), []);
  assert.equal(client.stats.failedCalls, 1);
});

test('records logged without pause through two server restarts arrive once, in order', async () => {
  // gRPC answers every stream: the server finishes streams in flight
  // before it stops and refuses new ones (UNAVAILABLE, nothing accepted),
  // so even records logged while it stops are neither lost nor doubled.
  const s = await server();
  const client = createClient({ address: s.address, backoffInitialMs: 20, backoffMaxMs: 100, batchSize: 50 });
  let n = 0;
  let stop = false;
  const writer = (async () => {
    while (!stop) {
      for (let k = 0; k < 20; k += 1) client.log('info', `cont ${n++}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  const pause = (ms) => new Promise((r) => setTimeout(r, ms));
  for (let round = 0; round < 2; round += 1) {
    await pause(300);
    await s.stop();
    await pause(200);
    await s.start();
  }
  await pause(300);
  stop = true;
  await writer;
  assert.equal(await client.close(WAIT_MS), true);
  const records = await s.waitCount(n);
  assert.equal(records.length, n);
  assert.deepEqual(records.map((r) => r.message), range(0, n, (i) => `cont ${i}`));
  assert.ok(client.stats.failedCalls > 0, 'no stream failed: the restarts were not seen');
});
