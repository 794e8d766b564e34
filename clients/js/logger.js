'use strict';
// A minimal Node.js logger for log-server over gRPC, as an example for
// users: @grpc/grpc-js with @grpc/proto-loader reading the server's own
// proto/log_service.proto (the copy shipped in this package's proto/,
// which test/package.test.js keeps equal to it).
//
//   const { Logger } = require('./logger');
//   const log = new Logger({ address: '127.0.0.1:4021', loggerName: 'web' });
//   await log.info('started', { module: 'main' });
//   await log.close();

const path = require('node:path');
const os = require('node:os');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, 'proto', 'log_service.proto');

const LEVELS = ['NOTSET', 'DEBUG', 'STREAM', 'INFO', 'LOGON', 'LOGOUT', 'TRADE',
  'SCHEDULE', 'REPORT', 'WARNING', 'ERROR', 'CRITICAL'];

function loadService(protoPath = PROTO) {
  const definition = protoLoader.loadSync(protoPath, {
    keepCase: true, // field names as in the proto: logger_name, ...
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).logservice;
}

class Logger {
  /**
   * @param {object} options
   * @param {string} [options.address] host:port of the gRPC port (4021)
   * @param {string} [options.loggerName]
   * @param {boolean} [options.legacy] call the older service name LogService
   */
  constructor({ address = '127.0.0.1:4021', loggerName = 'node', legacy = false } = {}) {
    const service = loadService();
    const Client = legacy ? service.LogService : service.LogBridge;
    this.client = new Client(address, grpc.credentials.createInsecure());
    this.defaults = {
      hostname: os.hostname(),
      logger_name: loggerName,
      process_id: String(process.pid),
      process_name: path.basename(process.argv[1] || 'node'),
    };
  }

  /** Builds a LogRequest from a level name, a message and other fields. */
  request(level, message, fields = {}) {
    return {
      timestamp: new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000000Z'),
      ...this.defaults,
      level: String(level).toUpperCase(),
      message: String(message),
      ...fields,
    };
  }

  /** Sends one message; resolves once the server answers success. */
  log(level, message, fields = {}) {
    const req = this.request(level, message, fields);
    return new Promise((resolve, reject) => {
      this.client.LogMessage(req, (err, res) => {
        if (err) return reject(err);
        if (!res.success) return reject(new Error('log-server answered success=false'));
        resolve(res);
      });
    });
  }

  /**
   * Opens a client stream (LogStream, a log-server extension; not named
   * `stream`, which is the method of the STREAM level). Write
   * requests from `request()` with `write`, then `end()` resolves with the
   * count of messages the server accepted.
   */
  openStream() {
    let resolve;
    let reject;
    const done = new Promise((res, rej) => { resolve = res; reject = rej; });
    const call = this.client.LogStream((err, summary) => (err ? reject(err) : resolve(summary)));
    return {
      write: (req) => call.write(req),
      end: () => { call.end(); return done.then((s) => Number(s.accepted)); },
    };
  }

  close() {
    this.client.close();
  }
}

for (const name of LEVELS) {
  Logger.prototype[name.toLowerCase()] = function logAt(message, fields) {
    return this.log(name, message, fields);
  };
}

module.exports = { Logger, LEVELS, loadService };
