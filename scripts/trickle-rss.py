#!/usr/bin/env python3
"""Slowloris memory check (issue 9, point 5): N connections each announce a
maximum-size frame and trickle its bytes; the server's peak RSS is what
`/usr/bin/time -v` reports for it.

    ulimit -n 20000
    /usr/bin/time -v target/debug/log-server --only_tcp --port 4099 \
        --log_dir /tmp/trickle-logs --max_connections 5000 2> server.txt &
    scripts/trickle-rss.py --port 4099 --connections 4000 --seconds 60
    kill -TERM %1; wait; grep 'Maximum resident' server.txt

Every connection sends the 4-byte length prefix of a --frame bytes frame,
then --chunk bytes every --interval seconds while the kernel accepts them,
for --seconds; then all close. Python standard library only.
"""
import argparse
import socket
import struct
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4020)
    p.add_argument("--connections", type=int, default=4000)
    p.add_argument("--frame", type=int, default=4 * 1024 * 1024)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--seconds", type=float, default=60)
    a = p.parse_args()
    conns = []
    for _ in range(a.connections):
        s = socket.create_connection((a.host, a.port))
        s.sendall(struct.pack(">I", a.frame))
        s.setblocking(False)
        conns.append([s, 0, True])
    chunk = b"\x55" * a.chunk
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        for c in conns:
            if not c[2] or c[1] + a.chunk >= a.frame:
                continue
            try:
                c[1] += c[0].send(chunk)
            except BlockingIOError:
                pass
            except OSError:
                c[2] = False  # closed by the server
        time.sleep(a.interval)
    sent = sum(c[1] for c in conns)
    open_ = sum(1 for c in conns if c[2])
    print(f"connections={a.connections} still_open={open_} sent_mib={sent >> 20}")
    for c in conns:
        c[0].close()


if __name__ == "__main__":
    main()
