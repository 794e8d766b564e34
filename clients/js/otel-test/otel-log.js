'use strict';
// Logs N records through the real OpenTelemetry JS SDK (LoggerProvider +
// BatchLogRecordProcessor at its default settings + one OTLP log exporter),
// as an application would, then flushes and shuts down. tests/interop.rs
// runs it against an in-process log-server and checks the lines.
//
//   OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:4021 \
//     node otel-log.js --exporter grpc --count 200
//
// --exporter grpc|proto|http   OTLP/gRPC, OTLP/HTTP protobuf, OTLP/HTTP JSON
// --endpoint URL               the exporter's `url` option; without it the
//                              exporter reads the OTEL_EXPORTER_OTLP_* env
// --count N                    records to log (default 200)
// --batch N                    maxExportBatchSize (default: the SDK's, 512)
//
// Record n's body is "conn=0 n=<n> ..." (the form the Rust test helpers
// parse) with a line break in it; every 10th record is an ERROR carrying an
// exception. Prints one JSON summary line on stdout; exits 1 unless every
// record was exported.

const { diag, DiagLogLevel } = require('@opentelemetry/api');
const { SeverityNumber } = require('@opentelemetry/api-logs');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');

const EXPORTERS = {
  grpc: '@opentelemetry/exporter-logs-otlp-grpc',
  proto: '@opentelemetry/exporter-logs-otlp-proto',
  http: '@opentelemetry/exporter-logs-otlp-http',
};

// The SDK's BatchLogRecordProcessor default queue: past it, records are
// dropped, so the loop below never has more than this many unsettled.
const MAX_QUEUE_SIZE = 2048;

// The line that calls this, as `code.line.number` says it.
function callerLine() {
  const match = /:(\d+):\d+\)?$/.exec(new Error().stack.split('\n')[2]);
  return match ? Number(match[1]) : 0;
}

// The SDK's diagnostics can carry whole stacks: their first 200 characters.
function short(msg) {
  const text = String(msg);
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

// Wraps the real exporter to count what it settled: the SDK does not say
// how many records reached the server, and the pacing below needs it.
class CountingExporter {
  constructor(inner) {
    this.inner = inner;
    this.exported = 0;
    this.failed = 0;
    this.waiters = [];
  }

  get settled() {
    return this.exported + this.failed;
  }

  export(records, done) {
    this.inner.export(records, (result) => {
      if (result.code === 0) {
        this.exported += records.length;
      } else {
        this.failed += records.length;
        console.error(`otel-log: export of ${records.length} records failed: ${result.error && result.error.message}`);
      }
      const waiters = this.waiters;
      this.waiters = [];
      waiters.forEach((wake) => wake());
      done(result);
    });
  }

  // Resolves at the next settled export.
  nextSettle() {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  forceFlush() {
    return this.inner.forceFlush();
  }

  shutdown() {
    return this.inner.shutdown();
  }
}

async function main() {
  const kind = arg('exporter', 'grpc');
  const count = Number(arg('count', '200'));
  const endpoint = arg('endpoint', undefined);
  const batch = arg('batch', undefined);
  if (!EXPORTERS[kind] || !Number.isInteger(count) || count < 0) {
    console.error('usage: node otel-log.js --exporter grpc|proto|http [--endpoint URL] [--count N] [--batch N]');
    process.exit(2);
  }

  // The exporters' retries are only visible in the SDK's diagnostics: count
  // them, and say each on stderr (a test waits for the first one).
  let retries = 0;
  diag.setLogger({
    verbose: (msg) => {
      if (msg.startsWith('Scheduling export retry')) {
        retries += 1;
        console.error(`otel-log: retry: ${msg}`);
      }
    },
    debug: () => {},
    info: (msg) => console.error(`otel-log: info: ${short(msg)}`),
    warn: (msg) => console.error(`otel-log: warn: ${short(msg)}`),
    // Failed exports are said once above; the SDK repeats them here with
    // their whole stack.
    error: (msg) => console.error(`otel-log: error: ${short(msg)}`),
  }, DiagLogLevel.VERBOSE);

  const { OTLPLogExporter } = require(EXPORTERS[kind]);
  const exporter = new CountingExporter(new OTLPLogExporter(endpoint ? { url: endpoint } : {}));
  const options = { exporter };
  if (batch !== undefined) {
    options.maxExportBatchSize = Number(batch);
  }
  const provider = new LoggerProvider({
    resource: resourceFromAttributes({
      'service.name': `otel-node-${kind}`,
      'host.name': 'node-host',
    }),
    processors: [new BatchLogRecordProcessor(options)],
  });
  const logger = provider.getLogger('otel.node.interop', '1.0.0');

  const started = process.hrtime.bigint();
  for (let n = 0; n < count; n += 1) {
    while (n - exporter.settled >= MAX_QUEUE_SIZE) {
      await exporter.nextSettle();
    }
    const error = n % 10 === 9;
    const attributes = {
      'code.file.path': __filename,
      'code.function.name': 'main',
      'code.line.number': callerLine(),
      'request.n': n,
    };
    if (error) {
      const err = new Error(`failure ${n}`);
      attributes['exception.type'] = err.name;
      attributes['exception.message'] = err.message;
      attributes['exception.stacktrace'] = err.stack;
    }
    logger.emit({
      severityNumber: error ? SeverityNumber.ERROR : SeverityNumber.INFO,
      severityText: error ? 'ERROR' : 'INFO',
      body: `conn=0 n=${n} from the node ${kind} exporter\nsecond line of ${n}`,
      attributes,
    });
  }
  await provider.forceFlush();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await provider.shutdown();

  console.log(JSON.stringify({
    exporter: kind,
    count,
    exported: exporter.exported,
    failed: exporter.failed,
    retries,
    seconds,
    records_per_second: Math.round(count / seconds),
  }));
  process.exit(exporter.exported === count && exporter.failed === 0 ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
