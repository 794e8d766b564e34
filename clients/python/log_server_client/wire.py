"""The TCP wire contract of log-server (PROTOCOL.md), on the client side.

Every frame is a big-endian u32 length and that many payload bytes; the
payload of a log record is one *packed* Cap'n Proto ``LoggerMsg``, the
optional first frame is an *unpacked* ``HelloMsg`` and a zero length is a
heartbeat. The schema files ship inside this package (copies of the
server's ``schema/``), so the client needs nothing from the server's source.
"""

import datetime
import os
import struct
import threading

import capnp

#: A zero-length frame: tells the server the connection is alive.
HEARTBEAT = b"\x00\x00\x00\x00"

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema")

_schemas = None
_schemas_lock = threading.Lock()


def schemas():
    """The loaded (logger, hello) schema modules, loaded once per process:
    pycapnp refuses to load the same file id twice into one loader."""
    global _schemas
    with _schemas_lock:
        if _schemas is None:
            logger = capnp.load(os.path.join(SCHEMA_DIR, "logger.capnp"))
            hello = capnp.load(os.path.join(SCHEMA_DIR, "hello.capnp"))
            _schemas = (logger, hello)
        return _schemas


def frame(payload):
    """One frame: the payload behind its big-endian u32 length."""
    return struct.pack(">I", len(payload)) + payload


def _clean(fields):
    """The same fields with every text made encodable as UTF-8 (a lone
    surrogate from os.fsdecode, say, becomes U+FFFD) so that one odd
    record cannot stop the sender."""
    return {
        k: (v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v)
        for k, v in fields.items()
    }


def logger_frame(fields):
    """The frame of one record: ``fields`` are ``LoggerMsg`` fields by their
    schema names, every one a str (``level`` the enum name, e.g. "info")."""
    logger, _ = schemas()
    try:
        msg = logger.LoggerMsg.new_message(**fields)
    except (UnicodeError, ValueError):
        msg = logger.LoggerMsg.new_message(**_clean(fields))
    # Loggers send records packed (PROTOCOL.md).
    return frame(msg.to_bytes_packed())


def hello_frame(from_name, from_host, from_address, to_address):
    """The optional first frame of a connection, naming the client. It goes
    unpacked: its root struct has no data section, which is how the server
    tells it from a LoggerMsg."""
    _, hello = schemas()
    msg = hello.HelloMsg.new_message(
        fromName=from_name,
        fromHost=from_host,
        fromAddress=from_address,
        toAddress=to_address,
    )
    return frame(msg.to_bytes())


def rfc3339(created):
    """A ``time.time()`` value as loggers send it:
    ``2026-01-02T15:04:05.123456000Z`` (UTC, nanosecond digits)."""
    dt = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%06d000Z" % dt.microsecond
