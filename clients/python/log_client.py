#!/usr/bin/env python3
"""A minimal log-server client in Python, using pycapnp (the C++ Cap'n Proto
library), written as an example for users and used by the interop test.

It speaks the TCP wire contract of PROTOCOL.md: an optional unpacked HelloMsg
first, then frames of a big-endian u32 length and a packed LoggerMsg, and
zero-length heartbeats when idle.

    pip install pycapnp
    python3 log_client.py --port 4020 --count 10
"""

import argparse
import datetime
import os
import socket
import struct

import capnp

HEARTBEAT = b"\x00\x00\x00\x00"


def load_schemas(schema_dir):
    """Loads logger.capnp and hello.capnp from the server's schema/ folder."""
    capnp.remove_import_hook()
    logger = capnp.load(os.path.join(schema_dir, "logger.capnp"))
    hello = capnp.load(os.path.join(schema_dir, "hello.capnp"))
    return logger, hello


def utc_timestamp():
    """The timestamp format loggers send: 2026-01-02T15:04:05.000000000Z."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond * 1000:09d}Z"


class LogClient:
    """One TCP connection to log-server."""

    def __init__(self, host, port, schema_dir, name="python-client"):
        self.logger_schema, hello_schema = load_schemas(schema_dir)
        self.sock = socket.create_connection((host, port))
        self.hostname = socket.gethostname()
        hello = hello_schema.HelloMsg.new_message(
            fromName=name,
            fromHost=self.hostname,
            fromAddress="%s:%d" % self.sock.getsockname()[:2],
            toAddress="%s:%d" % (host, port),
        )
        # The hello goes unpacked: its root struct has no data section,
        # which is how the server tells it from a LoggerMsg.
        self._send_frame(hello.to_bytes())

    def _send_frame(self, payload):
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def log(self, message, level="info", **fields):
        """Sends one message. `fields` are other LoggerMsg fields by their
        schema names (loggerName, filename, lineNumber, module, ...)."""
        msg = self.logger_schema.LoggerMsg.new_message()
        msg.timestamp = fields.pop("timestamp", None) or utc_timestamp()
        msg.hostname = fields.pop("hostname", None) or self.hostname
        msg.level = level
        msg.message = message
        for key, value in fields.items():
            setattr(msg, key, value)
        self._send_frame(msg.to_bytes_packed())

    def heartbeat(self):
        self.sock.sendall(HEARTBEAT)

    def close(self):
        self.sock.close()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4020)
    parser.add_argument("--schema-dir", default=os.path.join(here, "..", "..", "schema"))
    parser.add_argument("--count", type=int, default=10, help="messages to send")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="first send three messages that show columns, metadata and escaping",
    )
    args = parser.parse_args()

    client = LogClient(args.host, args.port, args.schema_dir, name="interop")
    fixed = "2026-01-02T15:04:05.000000000Z"
    if args.demo:
        client.log(
            "first line\nsecond line",
            level="warning",
            timestamp=fixed,
            hostname="py-host",
            loggerName="python.interop",
            filename="log_client.py",
            functionName="main",
            lineNumber="42",
            module="interop",
            processId="4242",
            threadName="MainThread",
            serviceName="demo",
        )
        client.log(
            "ünïcödé ✓",
            level="critical",
            timestamp=fixed,
            hostname="hôst-ünïcödé-and-more",
        )
        client.log(
            "boom",
            level="error",
            timestamp=fixed,
            stackTrace="Traceback (most recent call last):\r\n  File \"x.py\", line 1\nValueError",
        )
    for i in range(args.count):
        if i % 100 == 0:
            client.heartbeat()
        client.log(f"python message {i}", loggerName="python.interop")
    client.close()


if __name__ == "__main__":
    main()
