'use strict';
// log-server-client: the batching gRPC client behind the pino and winston
// transports, usable on its own.
//
// Where it sits: the application calls `log()`, which only appends a
// LogRequest to a bounded in-memory buffer (the oldest are dropped and
// counted when it is full) and schedules a send. One `LogStream` call at a
// time takes a batch from the front of the buffer. When a stream fails, the
// server's trailer `log-server-accepted` says how many of its first messages
// it accepted; only the rest go back to the front of the buffer and are sent
// again after a backoff, so a failed stream loses nothing and writes nothing
// twice. After a reconnect the drop count goes first, as a WARNING record.
//
//   const { createClient } = require('log-server-client');
//   const client = createClient({ address: '127.0.0.1:4021', serviceName: 'web' });
//   client.log('info', 'started', { module: 'main' });
//   await client.close();

const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// A copy of the server's proto/log_service.proto, shipped with the package
// (test/package.test.js checks that it is the same).
const PROTO = path.join(__dirname, 'proto', 'log_service.proto');

const LEVELS = ['NOTSET', 'DEBUG', 'STREAM', 'INFO', 'LOGON', 'LOGOUT', 'TRADE',
  'SCHEDULE', 'REPORT', 'WARNING', 'ERROR', 'CRITICAL'];

// Names other loggers use, by the server level they mean.
const ALIASES = { TRACE: 'DEBUG', WARN: 'WARNING', FATAL: 'CRITICAL', CRIT: 'CRITICAL' };

// The string fields of LogRequest (everything but `level`): `fields` of
// `log()` may set any of them.
const FIELDS = ['timestamp', 'hostname', 'logger_name', 'module', 'filename', 'function_name',
  'line_number', 'message', 'path_name', 'process_id', 'process_name', 'thread_id',
  'thread_name', 'service_name', 'stack_trace'];

/** Trailer of a failed LogStream: how many of its first messages were accepted. */
const ACCEPTED_TRAILER = 'log-server-accepted';

let service;
function loadService() {
  if (!service) {
    const definition = protoLoader.loadSync(PROTO, { keepCase: true, enums: String, defaults: true });
    service = grpc.loadPackageDefinition(definition).logservice;
  }
  return service;
}

/**
 * Structured fields as one compact JSON object ('' for none): an object is
 * serialized (values JSON cannot hold, such as BigInt, as strings; cycles
 * as "[Circular]"), a string passed as it is.
 */
function attributesJson(attributes) {
  if (attributes === undefined || attributes === null) return '';
  if (typeof attributes === 'string') return attributes;
  if (typeof attributes !== 'object' || Object.keys(attributes).length === 0) return '';
  const seen = new WeakSet();
  try {
    return JSON.stringify(attributes, (key, value) => {
      if (typeof value === 'bigint') return value.toString();
      if (typeof value === 'object' && value !== null) {
        if (seen.has(value)) return '[Circular]';
        seen.add(value);
      }
      return value;
    });
  } catch (e) {
    return JSON.stringify({ attributes_error: String(e && e.message ? e.message : e) });
  }
}

/** A level name or number as a server level name; unknown ones as INFO. */
function levelName(level) {
  if (typeof level === 'number' && Number.isInteger(level) && level >= 0 && level < LEVELS.length) {
    return LEVELS[level];
  }
  const upper = String(level).toUpperCase();
  if (LEVELS.includes(upper)) return upper;
  return ALIASES[upper] || 'INFO';
}

/** An epoch time in milliseconds as loggers send it: 2026-01-02T15:04:05.123000000Z. */
function timestamp(ms = Date.now()) {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000000Z');
}

/** Bytes a request takes in protobuf, or a little more: a tag and a length
 * of at most 5 bytes each field. */
function encodedSizeBound(req) {
  let size = 2;
  for (const key of FIELDS) {
    if (req[key]) size += 6 + Buffer.byteLength(req[key]);
  }
  return size;
}

class LogServerClient {
  /**
   * @param {object} [options]
   * @param {string} [options.address] host:port of log-server's gRPC port
   * @param {string} [options.serviceName] service_name of every record
   * @param {string} [options.loggerName] logger_name when a record has none
   * @param {string} [options.hostname] defaults to os.hostname()
   * @param {number} [options.capacity] records the buffer holds (10000)
   * @param {number} [options.batchSize] most records one LogStream carries (500)
   * @param {number} [options.maxMessageBytes] larger records are dropped and
   *   counted instead of sent (4194304, the server's default --max_frame_size)
   * @param {number} [options.backoffInitialMs] first wait after a failure (100)
   * @param {number} [options.backoffMaxMs] longest wait between attempts (5000)
   * @param {number} [options.callTimeoutMs] deadline of one LogStream call (30000)
   * @param {number} [options.closeTimeoutMs] default wait of flush() and close() (5000)
   */
  constructor(options = {}) {
    this.address = options.address || '127.0.0.1:4021';
    this.capacity = options.capacity || 10000;
    this.batchSize = options.batchSize || 500;
    this.maxMessageBytes = options.maxMessageBytes || 4194304;
    this.backoffInitialMs = options.backoffInitialMs || 100;
    this.backoffMaxMs = options.backoffMaxMs || 5000;
    this.callTimeoutMs = options.callTimeoutMs || 30000;
    this.closeTimeoutMs = options.closeTimeoutMs || 5000;
    this.defaults = {
      hostname: options.hostname || os.hostname(),
      logger_name: options.loggerName || '',
      process_id: String(process.pid),
      process_name: path.basename(process.argv[1] || process.argv0 || 'node'),
      service_name: options.serviceName || '',
    };
    // grpc-js waits up to 120 s between reconnects by default: a restarted
    // server would wait that long for its records.
    this.client = new (loadService().LogBridge)(this.address, grpc.credentials.createInsecure(), {
      'grpc.initial_reconnect_backoff_ms': this.backoffInitialMs,
      'grpc.max_reconnect_backoff_ms': this.backoffMaxMs,
    });
    // The buffer: records from `head` on, oldest first (an index instead of
    // Array#shift, which copies the whole array).
    this.queue = [];
    this.head = 0;
    this.inflight = null;
    this.timer = null;
    this.backoffMs = this.backoffInitialMs;
    this.closed = false;
    this.shutDown = false;
    // Dropped since the last warning reached the server, by reason.
    this.droppedFull = 0;
    this.droppedRejected = 0;
    this.waiters = [];
    /** Counters for the application and the tests. */
    this.stats = { sent: 0, dropped: 0, rejected: 0, failedCalls: 0 };
  }

  /** Records waiting or being sent. */
  pending() {
    return this.queue.length - this.head + (this.inflight ? this.inflight.records.length : 0);
  }

  /**
   * Queues one record; never waits. `fields` may set any LogRequest string
   * field by its protobuf name (logger_name, module, stack_trace, ...), and
   * `attributes`: an object of structured fields, sent as one JSON object
   * (docs/PROTOCOL.md, "Structured fields"). Returns false once the client
   * is closed.
   */
  log(level, message, fields = {}) {
    if (this.closed) return false;
    const req = { timestamp: timestamp(), ...this.defaults };
    for (const key of FIELDS) {
      const value = fields[key];
      if (value !== undefined && value !== null && value !== '') req[key] = String(value);
    }
    const attributes = attributesJson(fields.attributes);
    if (attributes) req.attributes = attributes;
    req.level = levelName(level);
    req.message = message === undefined || message === null ? '' : String(message);
    if (encodedSizeBound(req) > this.maxMessageBytes) {
      this.droppedRejected += 1;
      this.stats.rejected += 1;
    } else {
      this.queue.push(req);
      this.trim();
    }
    this.schedule(0);
    return true;
  }

  /** Drops the oldest records beyond the capacity, counting them. */
  trim() {
    while (this.queue.length - this.head > this.capacity) {
      this.head += 1;
      this.droppedFull += 1;
      this.stats.dropped += 1;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  schedule(ms) {
    if (this.timer || this.inflight || this.shutDown) return;
    if (ms === 0) {
      // After the current tick, so that records logged together go in one
      // stream.
      this.timer = setImmediate(() => { this.timer = null; this.send(); });
    } else {
      // Not holding the process open for a server that is away.
      this.timer = setTimeout(() => { this.timer = null; this.send(); }, ms);
      this.timer.unref();
    }
  }

  dropWarning() {
    const parts = [];
    if (this.droppedFull) {
      parts.push(`${this.droppedFull} log records were dropped: the buffer of ${this.capacity} records was full while log-server at ${this.address} could not be reached`);
    }
    if (this.droppedRejected) {
      parts.push(`${this.droppedRejected} log records were dropped: larger than ${this.maxMessageBytes} bytes or refused by the server as invalid`);
    }
    return {
      timestamp: timestamp(),
      ...this.defaults,
      logger_name: 'log-server-client',
      level: 'WARNING',
      message: `${parts.join('; ')}.`,
    };
  }

  send() {
    // After close() the channel is shut down: a call now would throw.
    if (this.inflight || this.shutDown) return;
    const waiting = this.queue.length - this.head;
    const warn = this.droppedFull + this.droppedRejected > 0;
    if (waiting === 0 && !warn) {
      this.settle();
      return;
    }
    const records = this.queue.slice(this.head, this.head + this.batchSize);
    this.head += records.length;
    this.trim();
    const batch = warn ? [this.dropWarning(), ...records] : records;
    const warned = warn ? { full: this.droppedFull, rejected: this.droppedRejected } : null;
    this.droppedFull = 0;
    this.droppedRejected = 0;
    this.inflight = { records, warned };
    const call = this.client.LogStream(
      { deadline: Date.now() + this.callTimeoutMs },
      (err, summary) => this.done(batch, err, summary),
    );
    for (const req of batch) call.write(req);
    call.end();
  }

  done(batch, err, summary) {
    const { records, warned } = this.inflight;
    this.inflight = null;
    let accepted = batch.length;
    if (err) {
      this.stats.failedCalls += 1;
      const trailer = err.metadata && err.metadata.get(ACCEPTED_TRAILER)[0];
      accepted = Math.min(batch.length, Number(trailer) || 0);
    } else if (summary && Number(summary.accepted) < batch.length) {
      accepted = Number(summary.accepted);
    }
    let taken = accepted;
    if (warned) {
      if (taken > 0) {
        taken -= 1;
      } else {
        this.droppedFull += warned.full;
        this.droppedRejected += warned.rejected;
      }
    }
    this.stats.sent += taken;
    let rest = records.slice(taken);
    const permanent = err && (err.code === grpc.status.INVALID_ARGUMENT
      || (err.code === grpc.status.RESOURCE_EXHAUSTED && /exceeds the maximum/.test(err.details || '')));
    if (permanent && accepted < batch.length && !(warned && accepted === 0)) {
      // The message right after the accepted ones is the one the server
      // refuses: sending it again would fail the same way forever.
      rest = rest.slice(1);
      this.droppedRejected += 1;
      this.stats.rejected += 1;
    }
    if (rest.length > 0) {
      // Back at the front, in order; the oldest go if that overflows.
      this.queue = rest.concat(this.queue.slice(this.head));
      this.head = 0;
      this.trim();
    }
    if (err && !permanent) {
      const wait = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, this.backoffMaxMs);
      this.schedule(wait);
    } else {
      this.backoffMs = this.backoffInitialMs;
      this.schedule(0);
    }
    this.settle();
  }

  /** Resolves flush() waiters once nothing is pending. */
  settle() {
    if (this.pending() > 0 || this.droppedFull + this.droppedRejected > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(true);
  }

  /**
   * Resolves true once every record logged so far is accepted by the
   * server, or false after `timeoutMs`.
   */
  flush(timeoutMs = this.closeTimeoutMs) {
    if (this.pending() === 0 && this.droppedFull + this.droppedRejected === 0) {
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = (ok) => { clearTimeout(timer); resolve(ok); };
      this.waiters.push(done);
      this.schedule(0);
    });
  }

  /** Sends what is pending (at most `timeoutMs`), then closes the channel.
   * Resolves whether everything was sent. */
  async close(timeoutMs = this.closeTimeoutMs) {
    if (this.closed) return this.pending() === 0;
    this.closed = true;
    if (this.timer && this.inflight === null) {
      // A backoff wait: try now, the caller is waiting.
      clearTimeout(this.timer);
      clearImmediate(this.timer);
      this.timer = null;
    }
    const ok = await this.flush(timeoutMs);
    clearTimeout(this.timer);
    clearImmediate(this.timer);
    this.timer = null;
    this.shutDown = true;
    this.client.close();
    return ok;
  }
}

/** A client for log-server's gRPC port; see LogServerClient for the options. */
function createClient(options) {
  return new LogServerClient(options);
}

module.exports = {
  createClient, LogServerClient, levelName, timestamp, LEVELS, ACCEPTED_TRAILER, loadService,
};
