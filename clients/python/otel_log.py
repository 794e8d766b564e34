"""Logs N records through the real OpenTelemetry Python SDK, as an
application would: the stdlib `logging` module, OpenTelemetry's logging
handler, a BatchLogRecordProcessor at its default settings and the OTLP/gRPC
log exporter; then flushes and shuts down. tests/interop.rs runs it against
an in-process log-server and checks the lines.

    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:4021 \\
        python otel_log.py --count 200

Record n's message is "conn=0 n=<n> ..." (the form the Rust test helpers
parse) with a line break in it; records alternate info and warning, and
every 10th is logged with logger.exception (a traceback). Prints one JSON
summary line on stdout; exits 1 unless every record was exported.

Needs clients/python/requirements-otel.txt (scripts/setup-python.sh).
"""

import argparse
import json
import logging
import sys
import threading
import time

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource

# The SDK's BatchLogRecordProcessor default queue: past it, records are
# dropped, so the loop below never has more than this many unsettled.
MAX_QUEUE_SIZE = 2048


class CountingExporter(LogRecordExporter):
    """Wraps the real exporter to count what it settled: the SDK does not say
    how many records reached the server, and the pacing below needs it."""

    def __init__(self, inner):
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self.settled = threading.Condition()

    def export(self, batch):
        result = self.inner.export(batch)
        with self.settled:
            if result.name == "SUCCESS":
                self.exported += len(batch)
            else:
                self.failed += len(batch)
                print(f"otel_log: export of {len(batch)} records failed: {result}", file=sys.stderr)
            self.settled.notify_all()
        return result

    def wait_below(self, emitted, limit):
        with self.settled:
            self.settled.wait_for(lambda: emitted - self.exported - self.failed < limit)

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)

    def shutdown(self):
        self.inner.shutdown()


class RetryCounter(logging.Handler):
    """The exporter's retries are only visible in its own log records (it logs
    through `logging`, not through the OpenTelemetry handler): says its
    warnings on stderr and counts the retries (a test waits for the first)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.retries = 0

    def emit(self, record):
        message = record.getMessage()
        if "retrying in" in message:
            self.retries += 1
            print(f"otel_log: retry: {message}", file=sys.stderr, flush=True)
        else:
            print(f"otel_log: {record.levelname.lower()}: {message}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="the exporter's endpoint; default: OTEL_EXPORTER_OTLP_* env")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--batch", type=int, help="max_export_batch_size (default: the SDK's, 512)")
    args = parser.parse_args()

    retries = RetryCounter()
    logging.getLogger("opentelemetry.exporter.otlp").addHandler(retries)

    exporter = CountingExporter(OTLPLogExporter(endpoint=args.endpoint) if args.endpoint else OTLPLogExporter())
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "otel-python", "host.name": "py-host"})
    )
    batch = {} if args.batch is None else {"max_export_batch_size": args.batch}
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, **batch))

    # The application's logger: only its records go to OpenTelemetry.
    log = logging.getLogger("otel.python.interop")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(LoggingHandler(logger_provider=provider, log_code_attributes=True))

    started = time.perf_counter()
    for n in range(args.count):
        exporter.wait_below(n, MAX_QUEUE_SIZE)
        message = "conn=0 n=%d from the python grpc exporter\nsecond line of %d"
        if n % 10 == 9:
            try:
                raise ValueError(f"failure {n}")
            except ValueError:
                log.exception(message, n, n)
        elif n % 2:
            log.warning(message, n, n)
        else:
            log.info(message, n, n)
    provider.force_flush()
    seconds = time.perf_counter() - started
    provider.shutdown()

    print(
        json.dumps(
            {
                "exporter": "python-grpc",
                "count": args.count,
                "exported": exporter.exported,
                "failed": exporter.failed,
                "retries": retries.retries,
                "seconds": seconds,
                "records_per_second": round(args.count / seconds) if seconds else None,
            }
        )
    )
    return 0 if exporter.exported == args.count and exporter.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
