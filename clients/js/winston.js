'use strict';
// log-server-client/winston: a winston transport (winston-transport) that
// sends every log entry to log-server over gRPC through the batching client.
//
//   const winston = require('winston');
//   const { LogServerTransport } = require('log-server-client/winston');
//   const logger = winston.createLogger({
//     transports: [new LogServerTransport({ address: '127.0.0.1:4021', serviceName: 'web' })],
//   });
//
// npm levels: error -> ERROR, warn -> WARNING, info and http -> INFO,
// verbose, debug and silly -> DEBUG; syslog's emerg, alert and crit ->
// CRITICAL, notice -> INFO; other names -> INFO. `message` is the message,
// `stack` (winston.format.errors({ stack: true })) the stack trace, the
// transport's `loggerName` option (or the entry's `logger_name`) the logger.
// `logger.end()` then the logger's 'finish' event: everything is sent.

const Transport = require('winston-transport');
const { createClient } = require('./client');

const WINSTON_LEVELS = {
  emerg: 'CRITICAL',
  alert: 'CRITICAL',
  crit: 'CRITICAL',
  error: 'ERROR',
  warn: 'WARNING',
  warning: 'WARNING',
  notice: 'INFO',
  info: 'INFO',
  http: 'INFO',
  verbose: 'DEBUG',
  debug: 'DEBUG',
  silly: 'DEBUG',
};

/** Keys of a winston `info` that map to columns. */
const WINSTON_OWN = new Set(['level', 'message', 'stack', 'logger_name', 'timestamp']);

/** A winston level name as a server level. */
function winstonLevel(level) {
  return WINSTON_LEVELS[String(level)] || 'INFO';
}

class LogServerTransport extends Transport {
  /** Options: winston-transport's (level, format, ...) and createClient's. */
  constructor(options = {}) {
    super(options);
    this.client = createClient(options);
  }

  log(info, callback) {
    // The level before any colorize format touched `info.level`.
    const level = info[Symbol.for('level')] || info.level;
    const fields = {};
    if (typeof info.stack === 'string') fields.stack_trace = info.stack;
    if (info.logger_name) fields.logger_name = info.logger_name;
    // The meta winston merged into `info` (its symbols aside) is the
    // record's structured fields.
    const attributes = {};
    for (const [key, value] of Object.entries(info)) {
      if (!WINSTON_OWN.has(key)) attributes[key] = value;
    }
    fields.attributes = attributes;
    this.client.log(winstonLevel(level), info.message, fields);
    setImmediate(() => this.emit('logged', info));
    callback();
  }

  /** Called when the logger ends (`logger.end()`), after every entry
   * reached log(): sends what is pending within the client's timeout, so
   * that the logger's 'finish' means sent. */
  _final(callback) {
    this.client.close().then(() => callback(), callback);
  }

  /** Resolves true once every entry that reached this transport is
   * accepted by the server (winston hands entries over asynchronously:
   * to wait for all of them, end the logger and wait for its 'finish'). */
  flush(timeoutMs) {
    return this.client.flush(timeoutMs);
  }

  /** Sends what is pending, then closes; winston calls it when the logger
   * is closed. Resolves whether everything was sent. */
  close(timeoutMs) {
    return this.client.close(timeoutMs);
  }
}

module.exports = { LogServerTransport, winstonLevel };
