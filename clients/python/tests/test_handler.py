"""LogServerHandler against the real log-server (see conftest.py), installed
as a user installs it (`pip install ./clients/python`)."""

import logging
import logging.config
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import log_server_client
from log_server_client import LogServerHandler, level_name

from conftest import ROOT, WAIT, Server, free_port


@pytest.fixture
def logger(request):
    """A fresh logger of its own, at every level, not propagating to root."""
    log = logging.getLogger("test." + request.node.name)
    log.setLevel(1)
    log.propagate = False
    handlers = []
    yield log, handlers
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def attach(logger, **kwargs):
    log, _ = logger
    handler = LogServerHandler(**kwargs)
    log.addHandler(handler)
    return handler


def messages(records, prefix):
    return [r["message"] for r in records if r["message"].startswith(prefix)]


def test_every_record_arrives_once_with_its_fields(server, logger):
    log, _ = logger
    handler = attach(logger, port=server.port, service_name="billing")
    n = 2000
    for i in range(n):
        log.info("rec %d of %s", i, "many")
    line = sys._getframe().f_lineno - 1
    assert handler.flush(WAIT)
    records = server.wait_count(n)
    assert messages(records, "rec ") == ["rec %d of many" % i for i in range(n)]
    r = records[0]
    assert r["level"] == "INFO"
    assert r["logger_name"] == log.name
    assert r["service_name"] == "billing"
    assert r["hostname"] == socket.gethostname()
    assert r["filename"] == "test_handler.py"
    assert r["module"] == "test_handler"
    assert r["function_name"] == "test_every_record_arrives_once_with_its_fields"
    assert r["line_number"] == str(line)
    assert r["path_name"] == os.path.abspath(__file__)
    assert r["process_id"] == str(os.getpid())
    assert r["process_name"] == "MainProcess"
    assert r["thread_id"] == str(threading.get_ident())
    assert r["thread_name"] == threading.current_thread().name
    assert r["stack_trace"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", r["timestamp"]), r["timestamp"]
    assert handler.sent == n
    assert handler.dropped_total == 0


def test_extra_fields_arrive_as_the_attributes_object(server, logger):
    log, _ = logger
    handler = attach(logger, port=server.port)
    log.info("with extra", extra={"user": "ada", "ms": 12, "tags": ["a", "b"], "obj": object()})
    log.info("without extra")
    assert handler.flush(WAIT)
    first, second = server.wait_count(2)
    attributes = first["attributes"]
    assert attributes["user"] == "ada"
    assert attributes["ms"] == 12
    assert attributes["tags"] == ["a", "b"]
    assert attributes["obj"].startswith("<object object at ")
    assert "attributes" not in second


def test_records_from_many_threads_arrive_once_each_thread_in_order(server, logger):
    log, _ = logger
    handler = attach(logger, port=server.port)
    threads, per_thread = 4, 1000

    def work(t):
        for i in range(per_thread):
            log.info("thread %d rec %d", t, i)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)
    assert handler.flush(WAIT)
    records = server.wait_count(threads * per_thread)
    assert len(records) == threads * per_thread
    for t in range(threads):
        mine = [r for r in records if r["message"].startswith("thread %d " % t)]
        assert [r["message"] for r in mine] == ["thread %d rec %d" % (t, i) for i in range(per_thread)]
        assert len({r["thread_id"] for r in mine}) == 1


def test_levels_map_to_the_nearest_server_level(server, logger):
    log, _ = logger
    handler = attach(logger, port=server.port)
    cases = [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARNING"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "CRITICAL"),
        (5, "DEBUG"),
        (22, "INFO"),
        (25, "WARNING"),  # a tie goes to the more severe level
        (38, "ERROR"),
        (99, "CRITICAL"),
    ]
    for number, _ in cases:
        log.log(number, "level %d", number)
    assert handler.flush(WAIT)
    records = server.wait_count(len(cases))
    assert [(r["message"], r["level"]) for r in records] == [("level %d" % n, want) for n, want in cases]
    assert level_name(0) == "debug"


def test_exc_info_and_stack_info_become_the_stack_trace(server, logger):
    log, _ = logger
    handler = attach(logger, port=server.port)
    try:
        {}["missing key"]
    except KeyError:
        log.exception("lookup failed")
    log.warning("where am I", stack_info=True)
    assert handler.flush(WAIT)
    failed, where = server.wait_count(2)
    assert failed["level"] == "ERROR"
    assert failed["message"] == "lookup failed"
    assert failed["stack_trace"].startswith("Traceback (most recent call last):\n")
    assert "{}[\"missing key\"]" in failed["stack_trace"]
    assert failed["stack_trace"].endswith("KeyError: 'missing key'")
    assert where["stack_trace"].startswith("Stack (most recent call last):\n")
    assert "test_exc_info_and_stack_info_become_the_stack_trace" in where["stack_trace"]


def test_a_server_restart_in_the_middle_loses_and_repeats_nothing(server, logger):
    log, _ = logger
    handler = attach(logger, port=server.port, backoff_initial=0.05, backoff_max=0.2)
    for i in range(500):
        log.info("restart %d", i)
    # Flushed: every frame is written to the connection, and the server
    # writes every frame sent before its SIGTERM.
    assert handler.flush(WAIT)
    server.stop()
    # Logged while the server is away: these wait in the buffer. The
    # connection the server closed must not swallow them.
    for i in range(500, 1000):
        log.info("restart %d", i)
    server.start()
    for i in range(1000, 1500):
        log.info("restart %d", i)
    assert handler.flush(WAIT)
    records = server.wait_count(1500)
    assert messages(records, "restart ") == ["restart %d" % i for i in range(1500)]
    assert handler.connects == 2
    assert handler.dropped_total == 0


def test_a_full_buffer_drops_the_oldest_counts_them_and_says_so(tmp_path, logger):
    log, _ = logger
    port = free_port()
    handler = attach(logger, port=port, capacity=100, backoff_initial=0.05, backoff_max=0.2)
    # No server yet: the handler keeps trying while the records pile up.
    for i in range(350):
        log.info("full %d", i)
    assert handler.dropped_total == 250
    assert handler.pending() == 100
    s = Server(tmp_path / "logs", port=port)
    try:
        assert handler.flush(WAIT)
        records = s.wait_count(101)
        warning = records[0]
        assert warning["level"] == "WARNING"
        assert warning["logger_name"] == "log_server_client"
        assert warning["message"].startswith("250 log records were dropped: the buffer of 100 records was full")
        # The newest 100, in order, after the warning.
        assert messages(records, "full ") == ["full %d" % i for i in range(250, 350)]
        assert len(records) == 101
    finally:
        s.stop()


def test_a_record_above_the_servers_frame_limit_is_dropped_not_sent(tmp_path, logger):
    # The server closes a connection that sends a frame above its
    # --max_frame_size, losing what follows on it; the handler keeps the
    # records after it by never sending the large one.
    s = Server(tmp_path / "logs", args=["--max_frame_size", "2048"])
    try:
        log, _ = logger
        handler = attach(logger, port=s.port, max_frame_size=2048)
        log.info("small 1")
        log.info("large %s", "x" * 3000)
        log.info("small 2")
        assert handler.flush(WAIT)
        records = s.wait_count(3)
        assert [r["level"] for r in records] == ["WARNING", "INFO", "INFO"]
        assert records[0]["message"] == "1 log records were dropped: larger than max_frame_size (2048 bytes) or not encodable."
        assert messages(records, "small") == ["small 1", "small 2"]
        assert handler.rejected_total == 1
        assert handler.connects == 1
    finally:
        s.stop()


def test_the_connection_may_have_a_descriptor_above_1023(server, logger):
    # Busy applications hold many descriptors; select() cannot watch one
    # above 1023, so the sender must not use it.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1200
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip("the hard limit of open files (%d) is below %d" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    held = []
    try:
        with open(os.devnull) as f:
            while len(held) < 1100:
                held.append(os.dup(f.fileno()))
        log, _ = logger
        handler = attach(logger, port=server.port)
        for i in range(10):
            log.info("high fd %d", i)
        assert handler.flush(WAIT)
        records = server.wait_count(10)
        assert messages(records, "high fd ") == ["high fd %d" % i for i in range(10)]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_emit_never_waits_for_a_server_that_does_not_read(logger):
    # A server that accepts connections into its backlog and never reads:
    # the sender thread blocks once the socket buffers are full, emit must
    # not.
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)
    try:
        log, _ = logger
        handler = attach(logger, port=stalled.getsockname()[1], capacity=1000, timeout=1.0)
        payload = "x" * 1024
        slowest = 0.0
        started = time.monotonic()
        for i in range(20000):
            t = time.monotonic()
            log.info("stalled %d %s", i, payload)
            slowest = max(slowest, time.monotonic() - t)
        # Bounds far above a buffer append, far below a network wait (the
        # handler's socket timeout is 1 s).
        assert slowest < 0.5, slowest
        assert time.monotonic() - started < 30
        # 20 MB cannot fit in the socket buffers plus 1000 records.
        assert handler.dropped_total > 0
        assert handler.pending() <= 1000 + 256
        t = time.monotonic()
        assert not handler.flush(0.2)
        log.removeHandler(handler)
        handler.close()
        assert time.monotonic() - t < 10
    finally:
        stalled.close()


def test_dictconfig_sets_up_the_handler(server):
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "server": {
                    "class": "log_server_client.LogServerHandler",
                    "level": "INFO",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "service_name": "from-dictconfig",
                    "capacity": 500,
                }
            },
            "loggers": {"dictconfig": {"handlers": ["server"], "level": "DEBUG", "propagate": False}},
        }
    )
    log = logging.getLogger("dictconfig")
    try:
        (handler,) = log.handlers
        assert isinstance(handler, LogServerHandler)
        assert handler.capacity == 500
        log.debug("below the handler's level")
        log.info("configured")
        assert handler.flush(WAIT)
        (r,) = server.wait_count(1)
        assert (r["message"], r["service_name"], r["logger_name"]) == ("configured", "from-dictconfig", "dictconfig")
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()


def test_pending_records_are_sent_at_interpreter_exit(server):
    # No flush, no close: logging's own exit hook must send them.
    script = textwrap.dedent(
        """
        import logging, sys
        from log_server_client import LogServerHandler
        logging.basicConfig(level=logging.INFO, handlers=[LogServerHandler(port=int(sys.argv[1]))])
        for i in range(300):
            logging.getLogger("exiting").info("exit %d", i)
        """
    )
    subprocess.run([sys.executable, "-c", script, str(server.port)], check=True, timeout=WAIT)
    records = server.wait_count(300)
    assert messages(records, "exit ") == ["exit %d" % i for i in range(300)]


def test_wire_bytes_hello_first_packed_records_and_idle_heartbeats(logger):
    """Byte-level check against a plain socket: an unpacked HelloMsg first
    (its stream header starts with four zero bytes), then u32 big-endian
    length-prefixed packed LoggerMsg frames, then zero-length heartbeats."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(WAIT)
    try:
        log, _ = logger
        attach(logger, port=listener.getsockname()[1], heartbeat_interval=0.05, client_name="wire-test")
        conn, _ = listener.accept()
        conn.settimeout(WAIT)

        def read_frame():
            header = b""
            while len(header) < 4:
                header += conn.recv(4 - len(header))
            (length,) = struct.unpack(">I", header)
            body = b""
            while len(body) < length:
                body += conn.recv(length - len(body))
            return body

        logger_schema, hello_schema = log_server_client.wire.schemas()
        hello = read_frame()
        assert hello[:4] == b"\x00\x00\x00\x00"
        with hello_schema.HelloMsg.from_bytes(hello) as msg:
            assert msg.fromName == "wire-test"
        log.error("on the wire")
        frames = [read_frame()]
        while frames[-1] == b"":
            frames.append(read_frame())
        record = frames[-1]
        assert record[:4] != b"\x00\x00\x00\x00"
        msg = logger_schema.LoggerMsg.from_bytes_packed(record)
        assert (msg.message, str(msg.level)) == ("on the wire", "error")
        # Idle now: heartbeats only.
        assert [read_frame() for _ in range(3)] == [b"", b"", b""]
        conn.close()
    finally:
        listener.close()


def test_the_shipped_schemas_are_the_servers(logger):
    here = os.path.dirname(log_server_client.wire.__file__)
    for name in ("logger.capnp", "hello.capnp"):
        with open(os.path.join(ROOT, "schema", name), "rb") as a, open(os.path.join(here, "schema", name), "rb") as b:
            assert a.read() == b.read(), "clients/python/log_server_client/schema/%s differs from schema/%s" % (
                name,
                name,
            )
