#!/usr/bin/env bash
# The hardening figures of README's Guarantees, for one or more builds of
# log-server side by side (e.g. an older build and this one):
#
#   scripts/hardening-figures.sh OLD_BINARY target/release/log-server
#
# For each binary, one run each of:
#  1. bomb:    20 amplification frames (scripts/attack/bomb-frames.py, 84 KB
#              sent): server peak RSS, bytes written, server CPU seconds.
#  2. trickle: 4,000 connections each announcing a 4 MiB frame and trickling
#              it for 20 s (scripts/trickle-rss.py): server peak RSS.
#  3. stderr:  stderr a pipe whose reader exits, one message, _main.log
#              renamed (a warning), then 50,000 messages (loadgen): lines
#              written of 50,001, and the exit status after SIGTERM.
# Needs python3 and a built loadgen (cargo build --release -p loadgen).
set -euo pipefail
cd "$(dirname "$0")/.."
LOADGEN=${LOADGEN:-target/release/loadgen}
[ -x "$LOADGEN" ] || cargo build --release --quiet -p loadgen
ulimit -n 20000

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bomb() { # binary
    local dir port pid
    dir=$(mktemp -d); port=$(free_port)
    /usr/bin/time -v "$1" --only_tcp --port "$port" --log_dir "$dir/logs" --stats_interval 0 2>"$dir/err" &
    pid=$!
    sleep 1
    python3 scripts/attack/bomb-frames.py "$port" 20 >/dev/null
    local prev=-1 cur
    for _ in $(seq 120); do # until the files stop growing, at most 60 s
        cur=$(du -sb "$dir/logs" | cut -f1)
        [ "$cur" = "$prev" ] && break
        prev=$cur; sleep 0.5
    done
    kill -TERM "$(pgrep -P $pid)"; wait $pid || true
    echo "bomb: peak RSS $(awk '/Maximum resident/ {print int($6/1024)}' "$dir/err") MiB," \
         "written $(cat "$dir"/logs/* | wc -c) bytes," \
         "CPU $(awk '/User time/ {print $4}' "$dir/err") s"
    rm -rf "$dir"
}

trickle() { # binary
    local dir port pid
    dir=$(mktemp -d); port=$(free_port)
    /usr/bin/time -v "$1" --only_tcp --port "$port" --log_dir "$dir/logs" --max_connections 5000 \
        --stats_interval 0 2>"$dir/err" &
    pid=$!
    sleep 1
    python3 scripts/trickle-rss.py --port "$port" --connections 4000 --seconds 20 --interval 0.2 >"$dir/client" 2>&1
    kill -TERM "$(pgrep -P $pid)"; wait $pid || true
    echo "trickle: peak RSS $(awk '/Maximum resident/ {print int($6/1024)}' "$dir/err") MiB ($(tail -1 "$dir/client"))"
    rm -rf "$dir"
}

dead_stderr() { # binary
    local dir
    dir=$(mktemp -d)
    python3 - "$1" "$LOADGEN" "$dir" <<'PY'
import glob, os, re, subprocess, sys, time
binary, loadgen, d = sys.argv[1:4]
logs = os.path.join(d, "logs")
p = subprocess.Popen([binary, "--port", "0", "--only_tcp", "--stats_interval", "0",
                      "--log_dir", logs], stderr=subprocess.PIPE)
while True:
    line = p.stderr.readline().decode()
    m = re.search(r"127\.0\.0\.1:(\d+)", line)
    if m or not line:
        break
addr = "127.0.0.1:" + m.group(1)
p.stderr.close()  # the reader of stderr goes away
run = lambda n: subprocess.run([loadgen, "tcp", "--addr", addr, "--connections", "1",
                                "--messages", str(n)], capture_output=True)
run(1)
time.sleep(0.5)
os.rename(os.path.join(logs, "_main.log"), os.path.join(logs, "moved.log"))  # provokes a warning
time.sleep(0.3)
run(50_000)
time.sleep(3)
n = sum(open(f, errors="replace").read().count("\n") for f in glob.glob(logs + "/*"))
p.terminate()
try:
    rc = p.wait(timeout=40)
except subprocess.TimeoutExpired:
    p.kill(); rc = "hung"
print(f"stderr: {n} of 50001 lines written, exit status {rc}")
PY
    rm -rf "$dir"
}

for bin in "$@"; do
    echo "== $bin"
    bomb "$bin"
    trickle "$bin"
    dead_stderr "$bin"
done
