'use strict';
// Structured fields (docs/PROTOCOL.md, "Structured fields"): createClient's
// `attributes`, pino's merged object and winston's meta reach the line as
// one JSON object, with real pino and winston against the real log-server.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const pino = require('pino');
const winston = require('winston');

const { createClient } = require('log-server-client');
const { LogServerTransport } = require('log-server-client/winston');
const { startServer, WAIT_MS } = require('./server');

const servers = [];
after(() => servers.forEach((s) => s.cleanup()));

async function server() {
  const s = await startServer();
  servers.push(s);
  return s;
}

test('createClient sends attributes as one JSON object, and none when there are none', async () => {
  const s = await server();
  const client = createClient({ address: s.address });
  client.log('info', 'with', { attributes: { user: 'ada', ms: 12, big: 10n, nested: { a: [1, 2] } } });
  client.log('info', 'without');
  assert.equal(await client.close(WAIT_MS), true);
  const [withAttrs, without] = await s.waitCount(2);
  assert.deepEqual(withAttrs.attributes, { user: 'ada', ms: 12, big: '10', nested: { a: [1, 2] } });
  assert.equal(without.attributes, undefined);
});

test("pino's merged object reaches the line as attributes", async () => {
  const s = await server();
  const transport = pino.transport({ target: 'log-server-client/pino', options: { address: s.address } });
  const logger = pino({ name: 'attrs' }, transport);
  logger.info({ user: 'ada', orderId: 42 }, 'with fields');
  logger.child({ requestId: 'r-1' }).warn('from a child');
  transport.end();
  await once(transport, 'close');
  const [first, second] = await s.waitCount(2);
  assert.deepEqual(first.attributes, { user: 'ada', orderId: 42 });
  assert.equal(first.logger_name, 'attrs');
  assert.deepEqual(second.attributes, { requestId: 'r-1' });
});

test("winston's meta reaches the line as attributes", async () => {
  const s = await server();
  const transport = new LogServerTransport({ address: s.address });
  const logger = winston.createLogger({ format: winston.format.json(), transports: [transport] });
  logger.info('with meta', { user: 'ada', ms: 12 });
  logger.end();
  await once(logger, 'finish');
  const [record] = await s.waitCount(1);
  assert.equal(record.message, 'with meta');
  assert.deepEqual(record.attributes, { user: 'ada', ms: 12 });
});
