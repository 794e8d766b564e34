"""Runs the real log-server binary for the tests: `LOG_SERVER_BIN`, by
default the debug build `target/debug/log-server` that `cargo test` builds,
on a port chosen by the kernel, writing JSON lines into a temp directory."""

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("LOG_SERVER_BIN", os.path.join(ROOT, "target", "debug", "log-server"))

#: Generous bound on anything the tests wait for (a server start, lines
#: reaching the file): a loaded 2-core CI machine is slow, never this slow.
WAIT = 60.0


class Server:
    """One log-server process; `restart()` starts it again on the same port
    and directory."""

    def __init__(self, log_dir, port=0, args=()):
        self.log_dir = str(log_dir)
        self.port = port
        self.args = list(args)
        self.proc = None
        self.stderr = []
        self.start()

    def start(self):
        if not os.path.exists(BIN):
            pytest.fail("no server binary at %s: run `cargo build` or set LOG_SERVER_BIN" % BIN)
        self.proc = subprocess.Popen(
            [BIN, "--only_tcp", "--port", str(self.port), "--log_dir", self.log_dir, "--format", "json", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()

        def read():
            # Keeps reading to the end so that the server never blocks on a
            # full stderr pipe.
            for line in self.proc.stderr:
                self.stderr.append(line)
                m = re.search(r"listening.*\btcp=127\.0\.0\.1:(\d+)", line)
                if m and not found.is_set():
                    self.port = int(m.group(1))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(WAIT):
            self.proc.kill()
            pytest.fail("log-server did not say it is listening:\n" + "".join(self.stderr))

    def stop(self):
        """SIGTERM: the server writes every frame already sent, then exits 0."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
            assert code == 0, "log-server exited %s:\n%s" % (code, "".join(self.stderr))

    def restart(self):
        self.stop()
        self.start()

    def records(self):
        """The JSON objects of every line written so far, oldest first."""
        out = []
        names = sorted(
            (n for n in os.listdir(self.log_dir) if n.startswith("_main.log")),
            key=lambda n: -1 if n == "_main.log" else int(n.rsplit(".", 1)[1]),
            reverse=True,
        )
        for name in names:
            with open(os.path.join(self.log_dir, name), encoding="utf-8") as f:
                out.extend(json.loads(line) for line in f if line.endswith("\n"))
        return out

    def wait_records(self, predicate, what):
        """Polls the files until `predicate(records)` holds; fails with the
        records after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while True:
            records = self.records() if os.path.isdir(self.log_dir) else []
            if predicate(records):
                return records
            if time.monotonic() > deadline:
                pytest.fail("timed out waiting for %s; %d records: %r" % (what, len(records), [r.get("message") for r in records[-5:]]))
            time.sleep(0.05)

    def wait_count(self, n):
        return self.wait_records(lambda r: len(r) >= n, "%d records" % n)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "logs")
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()


def free_port():
    """A port nothing listens on right now (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
