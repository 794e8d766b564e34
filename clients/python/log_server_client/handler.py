"""``LogServerHandler``: a ``logging.Handler`` that sends records to
log-server over TCP.

Where it sits: the application's ``logging`` calls ``emit``, which only
turns the record into text fields and appends them to a bounded in-memory
buffer; one background thread per handler connects, sends the hello frame,
takes records from the buffer in order, frames them (``wire``) and writes
them, sending heartbeats when idle. If the server is away the thread
reconnects with backoff while records wait in the buffer; when the buffer
is full the oldest are dropped and counted, and the count goes to the
server as a WARNING record once connected again.

The TCP contract has no acknowledgements: a record counts as sent once its
whole frame is in the kernel's socket buffer. log-server writes every frame
a client finished writing before it shuts down (README "Shutdown"), and the
thread checks that the server has not closed the connection before each
write, so records logged while the server is stopped or restarting go out
after the reconnect. A frame cut by a failed write is sent again whole on
the next connection (the server drops a frame cut by a closed connection).
"""

import collections
import json
import logging
import os
import select
import socket
import sys
import threading
import time

from . import wire

#: Python level numbers and the log-server level each one names.
_LEVELS = (
    (logging.DEBUG, "debug"),
    (logging.INFO, "info"),
    (logging.WARNING, "warning"),
    (logging.ERROR, "error"),
    (logging.CRITICAL, "critical"),
)

#: Records written per batch: bounds what one failed write sends again.
_BATCH = 256


def level_name(levelno):
    """The log-server level of a Python level number: the standard levels by
    name, a custom level as the nearest standard one (the higher on a tie, so
    that a level between WARNING and ERROR never reads as less severe)."""
    best = None
    for number, name in _LEVELS:
        distance = abs(levelno - number)
        if best is None or distance <= best[0]:
            best = (distance, name)
    return best[1]


class LogServerHandler(logging.Handler):
    """Sends every record it handles to log-server's TCP port.

    ``emit`` never waits for the network: it appends to a buffer of at most
    ``capacity`` records. ``flush()`` and ``close()`` wait at most
    ``timeout`` seconds for what is pending to be written; ``logging``
    calls both at interpreter exit.

    Usable from ``logging.config.dictConfig``::

        "handlers": {"server": {
            "class": "log_server_client.LogServerHandler",
            "port": 4020, "service_name": "billing"}}
    """

    def __init__(
        self,
        host="127.0.0.1",
        port=4020,
        service_name=None,
        level=logging.NOTSET,
        capacity=10000,
        timeout=5.0,
        heartbeat_interval=5.0,
        backoff_initial=0.1,
        backoff_max=5.0,
        client_name=None,
        hostname=None,
        max_frame_size=4194304,
    ):
        super().__init__(level)
        if capacity < 1:
            raise ValueError("capacity must be at least 1 record")
        self.host = host
        self.port = int(port)
        self.service_name = service_name or ""
        self.capacity = int(capacity)
        self.timeout = float(timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.hostname = hostname or socket.gethostname()
        self.client_name = client_name or service_name or _program_name()
        # The server's --max_frame_size: it closes a connection that sends a
        # larger frame, losing what follows on it, so such records are
        # dropped here and counted instead.
        self.max_frame_size = int(max_frame_size)
        # Loaded here so that a broken install fails at configuration time,
        # not silently in the sender thread.
        wire.schemas()
        # Guards the buffer, the in-flight batch and the counters; emit
        # holds it only to append.
        self._cond = threading.Condition(threading.Lock())
        self._buffer = collections.deque()
        # Records taken by the sender and not yet written: flush waits for
        # them too, and a failed write puts the rest back at the front.
        self._inflight = 0
        # Records dropped since the last drop warning reached the server:
        # for a full buffer, and for being larger than max_frame_size.
        self._dropped = 0
        self._rejected = 0
        # Counters for the application and the tests.
        self.sent = 0
        self.dropped_total = 0
        self.rejected_total = 0
        self.connects = 0
        self._closing = False
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name="log-server-client %s:%d" % (host, self.port), daemon=True
        )
        self._thread.start()

    # -- the application's side -------------------------------------------

    def emit(self, record):
        try:
            fields = self._fields(record)
        except Exception:
            self.handleError(record)
            return
        with self._cond:
            if self._stop:
                return
            if len(self._buffer) >= self.capacity:
                # Oldest first: the newest records say most about now.
                self._buffer.popleft()
                self._dropped += 1
                self.dropped_total += 1
            self._buffer.append(fields)
            self._cond.notify_all()

    def flush(self, timeout=None):
        """Waits until every record handled so far is written to the server,
        at most ``timeout`` seconds (default: the handler's). Returns whether
        everything was written."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while self._buffer or self._inflight or self._dropped or self._rejected:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
            return True

    def close(self):
        """Sends what is pending (at most ``timeout`` seconds), then stops
        the sender thread and closes the connection."""
        with self._cond:
            already = self._closing
            self._closing = True
            self._cond.notify_all()
        if not already:
            self.flush()
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            self._thread.join(self.timeout)
        super().close()

    def pending(self):
        """Records waiting in the buffer or being written."""
        with self._cond:
            return len(self._buffer) + self._inflight

    def _fields(self, record):
        """The record as LoggerMsg text fields, taken now: the message's
        arguments may change after the call returns."""
        fields = {
            "timestamp": wire.rfc3339(record.created),
            "hostname": self.hostname,
            "loggerName": record.name,
            "module": record.module or "",
            "level": level_name(record.levelno),
            "filename": record.filename or "",
            "functionName": record.funcName or "",
            "lineNumber": str(record.lineno),
            "message": record.getMessage(),
            "pathName": record.pathname or "",
            "processId": "" if record.process is None else str(record.process),
            "processName": record.processName or "",
            "threadId": "" if record.thread is None else str(record.thread),
            "threadName": record.threadName or "",
            "serviceName": self.service_name,
        }
        stack = self._stack_trace(record)
        if stack:
            fields["stackTrace"] = stack
        attributes = _extra(record)
        if attributes:
            fields["attributes"] = attributes
        return fields

    def _stack_trace(self, record):
        formatter = self.formatter or _DEFAULT_FORMATTER
        parts = []
        if record.exc_info and record.exc_info[0] is not None:
            parts.append(formatter.formatException(record.exc_info))
        elif record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(formatter.formatStack(record.stack_info))
        return "\n".join(parts)

    # -- the sender thread ------------------------------------------------

    def _run(self):
        backoff = self.backoff_initial
        while True:
            with self._cond:
                if self._stop:
                    return
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError:
                # The server is away: records wait in the buffer. Wake early
                # only to stop.
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = self.backoff_initial
            self.connects += 1
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._serve(sock)
            except OSError:
                pass
            except Exception as e:
                # A bug must not end the thread: records would pile up with
                # nothing to send them. The batch in flight is lost.
                sys.stderr.write("log_server_client: the sender failed and reconnects: %r\n" % (e,))
                with self._cond:
                    self._inflight = 0
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._stop, backoff)
            finally:
                sock.close()

    def _serve(self, sock):
        """Sends on one connection until it fails or the handler stops."""
        local = "%s:%d" % sock.getsockname()[:2]
        _send_all(
            sock,
            wire.hello_frame(self.client_name, self.hostname, local, "%s:%d" % (self.host, self.port)),
        )
        while True:
            with self._cond:
                ready = self._cond.wait_for(
                    lambda: self._buffer or self._dropped or self._rejected or self._stop,
                    self.heartbeat_interval,
                )
                if self._stop:
                    return
                batch = []
                dropped = (0, 0)
                if ready:
                    while self._buffer and len(batch) < _BATCH:
                        batch.append(self._buffer.popleft())
                    self._inflight = len(batch)
                    dropped = (self._dropped, self._rejected)
                    self._dropped = self._rejected = 0
            # A server that shut down or restarted has closed this
            # connection: what is written to it now would be lost.
            if _peer_closed(sock):
                self._give_back(batch, dropped)
                return
            if not batch and not any(dropped):
                _send_all(sock, wire.HEARTBEAT)
                continue
            frames = []
            kept = []
            for fields in batch:
                try:
                    f = wire.logger_frame(fields)
                except Exception:
                    # Never seen with the str fields _fields makes; if it
                    # happens, one record is lost and counted, not the
                    # sender thread.
                    f = None
                if f is None or len(f) - 4 > self.max_frame_size:
                    dropped = (dropped[0], dropped[1] + 1)
                    with self._cond:
                        self.rejected_total += 1
                else:
                    frames.append(f)
                    kept.append(fields)
            batch = kept
            warned = any(dropped)
            if warned:
                frames.insert(0, wire.logger_frame(self._drop_warning(*dropped)))
            written = _send_frames(sock, frames)
            if warned and written > 0:
                written -= 1
                dropped = (0, 0)
            with self._cond:
                self.sent += written
                self._inflight = 0
            if written < len(batch) or any(dropped):
                self._give_back(batch[written:], dropped)
                return
            with self._cond:
                self._cond.notify_all()

    def _give_back(self, rest, dropped):
        """Puts records not written back at the front of the buffer, in
        order, dropping the oldest if that overflows it."""
        with self._cond:
            self._inflight = 0
            self._dropped += dropped[0]
            self._rejected += dropped[1]
            self._buffer.extendleft(reversed(rest))
            while len(self._buffer) > self.capacity:
                self._buffer.popleft()
                self._dropped += 1
                self.dropped_total += 1
            self._cond.notify_all()

    def _drop_warning(self, full, rejected):
        reasons = []
        if full:
            reasons.append(
                "%d log records were dropped: the buffer of %d records was full while "
                "log-server at %s:%d could not be reached" % (full, self.capacity, self.host, self.port)
            )
        if rejected:
            reasons.append(
                "%d log records were dropped: larger than max_frame_size (%d bytes) or not encodable"
                % (rejected, self.max_frame_size)
            )
        return {
            "timestamp": wire.rfc3339(time.time()),
            "hostname": self.hostname,
            "loggerName": "log_server_client",
            "level": "warning",
            "message": "; ".join(reasons) + ".",
            "processId": str(os.getpid()),
            "serviceName": self.service_name,
        }


_DEFAULT_FORMATTER = logging.Formatter()

# What every LogRecord has; anything else on a record came from `extra=`
# (or a filter) and goes out as the message's structured fields.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


def _extra(record):
    """The record's `extra` fields as one compact JSON object ("" if none);
    values JSON cannot hold are written as their str()."""
    extra = {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD_ATTRIBUTES and not k.startswith("_")
    }
    if not extra:
        return ""
    return json.dumps(extra, default=str, ensure_ascii=False, separators=(",", ":"))


def _program_name():
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name or "python"


def _peer_closed(sock):
    """Whether the server closed the connection. It never sends anything
    but heartbeats, which are read and ignored here. poll, not select:
    select fails on descriptors above 1023, common in busy applications."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        if not poller.poll(0):
            return False
        try:
            data = sock.recv(4096)
        except OSError:
            return True
        if not data:
            return True


def _send_all(sock, data):
    view = memoryview(data)
    while view:
        view = view[sock.send(view) :]


def _send_frames(sock, frames):
    """Writes the frames in order; returns how many were written whole. A
    failed write (an error or the socket timeout) ends the connection, so the
    frame it cut is sent again whole on the next one."""
    data = b"".join(frames)
    ends = []
    end = 0
    for f in frames:
        end += len(f)
        ends.append(end)
    view = memoryview(data)
    offset = 0
    try:
        while offset < len(data):
            offset += sock.send(view[offset:])
    except OSError:
        pass
    return sum(1 for e in ends if e <= offset)
