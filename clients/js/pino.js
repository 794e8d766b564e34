'use strict';
// log-server-client/pino: a pino transport (pino-abstract-transport) that
// sends every line to log-server over gRPC through the batching client.
//
//   const pino = require('pino');
//   const logger = pino(pino.transport({
//     target: 'log-server-client/pino',
//     options: { address: '127.0.0.1:4021', serviceName: 'web' },
//   }));
//
// pino runs it in a worker thread; the options are those of createClient.
// Levels 10-60 (trace, debug, info, warn, error, fatal) become DEBUG, DEBUG,
// INFO, WARNING, ERROR, CRITICAL; a custom level number the nearest of them.
// `msg` is the message, `name` the logger name, `err.stack` the stack
// trace, `time`, `hostname` and `pid` their fields.

const build = require('pino-abstract-transport');
const { createClient, timestamp } = require('./client');

const PINO_LEVELS = [[10, 'DEBUG'], [20, 'DEBUG'], [30, 'INFO'], [40, 'WARNING'], [50, 'ERROR'], [60, 'CRITICAL']];

/** A pino level number as a server level: the nearest, the more severe on a tie. */
function pinoLevel(level) {
  const n = Number(level);
  if (!Number.isFinite(n)) return 'INFO';
  let best = PINO_LEVELS[0];
  for (const entry of PINO_LEVELS) {
    if (Math.abs(n - entry[0]) <= Math.abs(n - best[0])) best = entry;
  }
  return best[1];
}

/** The LogRequest fields of one pino line (an object). */
function pinoFields(obj) {
  const fields = {};
  // Epoch milliseconds by default; an ISO string with pino.stdTimeFunctions.isoTime.
  const time = typeof obj.time === 'string' ? Date.parse(obj.time) : obj.time;
  if (typeof time === 'number' && Number.isFinite(time)) fields.timestamp = timestamp(time);
  if (obj.hostname) fields.hostname = obj.hostname;
  if (obj.pid !== undefined) fields.process_id = obj.pid;
  if (obj.name) fields.logger_name = obj.name;
  const err = obj.err || obj.error;
  if (err && typeof err === 'object' && err.stack) fields.stack_trace = err.stack;
  else if (typeof obj.stack === 'string') fields.stack_trace = obj.stack;
  // Everything else pino merged into the line is a structured field.
  const attributes = {};
  for (const [key, value] of Object.entries(obj)) {
    if (!PINO_OWN.has(key)) attributes[key] = value;
  }
  if (err && typeof err === 'object') {
    const { stack, ...rest } = err;
    if (Object.keys(rest).length > 0) attributes[obj.err ? 'err' : 'error'] = rest;
  }
  fields.attributes = attributes;
  return fields;
}

/** Keys of a pino line that map to columns (or are pino's own). */
const PINO_OWN = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'err', 'error', 'stack', 'v']);

module.exports = async function logServerTransport(options = {}) {
  const client = createClient(options);
  return build(async (source) => {
    for await (const obj of source) {
      client.log(pinoLevel(obj.level), obj.msg, pinoFields(obj));
    }
  }, {
    // Called when the logger ends (and at process exit through pino's
    // transport handling): send what is pending within the client's timeout.
    async close() {
      await client.close();
    },
  });
};

module.exports.pinoLevel = pinoLevel;
module.exports.pinoFields = pinoFields;
