'use strict';
// The pino transport, run by real pino in its worker thread, against the
// real log-server.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const pino = require('pino');

const { pinoLevel } = require('log-server-client/pino');
const { startServer } = require('./server');

let s;
after(() => s && s.cleanup());

test('pino levels 10-60 map to the server levels', () => {
  assert.deepEqual([10, 20, 30, 40, 50, 60, 35, 45, 70, 0].map(pinoLevel),
    ['DEBUG', 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL', 'WARNING', 'ERROR', 'CRITICAL', 'DEBUG']);
});

test('pino time fields become the timestamp, epoch milliseconds or ISO', () => {
  const { pinoFields } = require('log-server-client/pino');
  assert.equal(pinoFields({ time: Date.UTC(2026, 0, 2, 15, 4, 5, 123) }).timestamp, '2026-01-02T15:04:05.123000000Z');
  assert.equal(pinoFields({ time: '2026-01-02T15:04:05.123Z' }).timestamp, '2026-01-02T15:04:05.123000000Z');
  assert.equal(pinoFields({ time: 'not a time' }).timestamp, undefined);
});

test('pino.transport sends every record once, levels mapped, err.stack as the stack trace', async () => {
  s = await startServer();
  const transport = pino.transport({
    target: 'log-server-client/pino',
    options: { address: s.address, serviceName: 'pino-svc' },
  });
  const logger = pino({ name: 'pino.test', level: 'trace' }, transport);
  const n = 1000;
  for (let i = 0; i < n; i += 1) logger.info(`pino ${i}`);
  const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
  for (const level of levels) logger[level](`at ${level}`);
  const boom = new Error('boom');
  logger.error({ err: boom }, 'failed');
  // Ending the transport ends the worker's stream: the transport's close
  // sends what is pending before the worker exits.
  transport.end();
  await once(transport, 'close');
  const total = n + levels.length + 1;
  const records = await s.waitCount(total);
  assert.equal(records.length, total);
  assert.deepEqual(records.slice(0, n).map((r) => r.message), Array.from({ length: n }, (_, i) => `pino ${i}`));
  assert.deepEqual(records.slice(n, n + levels.length).map((r) => [r.message, r.level]), [
    ['at trace', 'DEBUG'], ['at debug', 'DEBUG'], ['at info', 'INFO'],
    ['at warn', 'WARNING'], ['at error', 'ERROR'], ['at fatal', 'CRITICAL'],
  ]);
  const failed = records[total - 1];
  assert.equal(failed.message, 'failed');
  assert.equal(failed.level, 'ERROR');
  assert.equal(failed.stack_trace, boom.stack);
  for (const r of records) {
    assert.equal(r.logger_name, 'pino.test');
    assert.equal(r.service_name, 'pino-svc');
    assert.equal(r.process_id, String(process.pid));
  }
});
