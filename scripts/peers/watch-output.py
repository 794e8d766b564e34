#!/usr/bin/env python3
"""When did a daemon write its last byte? Used by scripts/bench-vs-peers.sh.

    watch-output.py DIR DONE_FILE DAEMON_PID SETTLE TIMEOUT [PREFIX]

Polls the total size of the regular files in DIR whose names start with
PREFIX (all of them without one) every 5 ms (stat calls
only, from this one process: the shell loop it replaces forked ~7
processes a poll, ~1,400 a second, and took CPU from the daemon being
measured). Once DONE_FILE exists (the sender finished) and the size has
not changed for SETTLE seconds, prints "ok T" where T is the wall-clock time
(seconds since the epoch) of the last change. Prints "timeout T" after
TIMEOUT seconds, "died T" if DAEMON_PID exits first. Standard library only.

PREFIX keeps other files of the daemon out of the timing: log-server's
forwarder rewrites `_forward.checkpoint` after every batch, through a
temporary file, so counting it timed the forwarder catching up, not ingest.
"""
import os
import sys
import time


def total_size(path, prefix):
    size = 0
    try:
        with os.scandir(path) as entries:
            for e in entries:
                if not e.name.startswith(prefix):
                    continue
                try:
                    if e.is_file(follow_symlinks=False):
                        size += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    # Rotated away between the listing and the stat: the
                    # next poll sees the new names.
                    pass
    except FileNotFoundError:
        pass
    return size


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main():
    out, done_file, pid, settle, timeout = sys.argv[1:6]
    prefix = sys.argv[6] if len(sys.argv) > 6 else ""
    pid, settle, timeout = int(pid), float(settle), float(timeout)
    start = time.time()
    last_size, t_last = -1, start
    while True:
        size = total_size(out, prefix)
        now = time.time()
        if size != last_size:
            last_size, t_last = size, now
        if os.path.exists(done_file) and size > 0 and now - t_last > settle:
            print(f"ok {t_last:.6f}")
            return
        if now - start > timeout:
            print(f"timeout {t_last:.6f}")
            return
        if not alive(pid):
            print(f"died {t_last:.6f}")
            return
        time.sleep(0.005)


if __name__ == "__main__":
    main()
