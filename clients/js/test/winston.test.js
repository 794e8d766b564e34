'use strict';
// The winston transport, with real winston, against the real log-server.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const winston = require('winston');

const { LogServerTransport, winstonLevel } = require('log-server-client/winston');
const { startServer } = require('./server');

let s;
after(() => s && s.cleanup());

test('winston levels map to the server levels', () => {
  assert.deepEqual(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly', 'emerg', 'crit', 'notice', 'odd'].map(winstonLevel),
    ['ERROR', 'WARNING', 'INFO', 'INFO', 'DEBUG', 'DEBUG', 'DEBUG', 'CRITICAL', 'CRITICAL', 'INFO', 'INFO']);
});

test('a winston logger sends every entry once, levels mapped, stacks kept', async () => {
  s = await startServer();
  const transport = new LogServerTransport({ address: s.address, serviceName: 'winston-svc', loggerName: 'winston.test' });
  const logger = winston.createLogger({
    level: 'silly',
    format: winston.format.combine(winston.format.errors({ stack: true }), winston.format.json()),
    transports: [transport],
  });
  const n = 1000;
  for (let i = 0; i < n; i += 1) logger.info(`winston ${i}`);
  const levels = ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'];
  for (const level of levels) logger.log(level, `at ${level}`);
  const boom = new Error('boom');
  logger.error(boom);
  // winston's 'finish' waits for the transport's, which waits for the send.
  logger.end();
  await once(logger, 'finish');
  assert.equal(transport.client.pending(), 0);
  const total = n + levels.length + 1;
  const records = await s.waitCount(total);
  assert.equal(records.length, total);
  assert.deepEqual(records.slice(0, n).map((r) => r.message), Array.from({ length: n }, (_, i) => `winston ${i}`));
  assert.deepEqual(records.slice(n, n + levels.length).map((r) => [r.message, r.level]), [
    ['at error', 'ERROR'], ['at warn', 'WARNING'], ['at info', 'INFO'], ['at http', 'INFO'],
    ['at verbose', 'DEBUG'], ['at debug', 'DEBUG'], ['at silly', 'DEBUG'],
  ]);
  const failed = records[total - 1];
  assert.equal(failed.message, 'boom');
  assert.equal(failed.level, 'ERROR');
  assert.equal(failed.stack_trace, boom.stack);
  for (const r of records) {
    assert.equal(r.logger_name, 'winston.test');
    assert.equal(r.service_name, 'winston-svc');
  }
});
