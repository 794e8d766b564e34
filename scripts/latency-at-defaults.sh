#!/usr/bin/env bash
# Receive-to-written latency of log-server at its defaults (10 MiB files,
# 10 of them, --fsync rotate: rotations included), under a steady load from
# loadgen on one connection, as the server's own summary reports it.
#
#   scripts/latency-at-defaults.sh                       # 1,000,000 msg/s for 10 s, 2 runs
#   RATE=500000 SECONDS_PER_RUN=20 RUNS=3 scripts/latency-at-defaults.sh
#   LOG_SERVER_BIN=/path/to/other/log-server scripts/latency-at-defaults.sh
#   CONNECTIONS=2 RATE=2250000 scripts/latency-at-defaults.sh   # RATE is the total
#
# Prints one line per run: the build, the rate sent, and p50/p90/p99/p99.9/max
# of the time from reading a message to its line being in the file. Extra
# server flags go in SERVER_ARGS (e.g. "--max_file_size 1073741824" for the
# no-rotation variant, shown apart).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-1000000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RUNS=${RUNS:-2}
CONNECTIONS=${CONNECTIONS:-1}
BIN=${LOG_SERVER_BIN:-target/release/log-server}
SERVER_ARGS=${SERVER_ARGS:-}
[ -n "${LOG_SERVER_BIN:-}" ] || cargo build --release --quiet --bin log-server
[ -x target/release/loadgen ] || cargo build --release --quiet -p loadgen
for run in $(seq "$RUNS"); do
    dir=$(mktemp -d)
    # shellcheck disable=SC2086
    "$BIN" --log_dir "$dir/logs" --port 0 --only_tcp --stats_interval 0 $SERVER_ARGS >/dev/null 2>"$dir/err" &
    pid=$!
    port=""
    for _ in $(seq 100); do
        port=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/err" | grep -o 'tcp=127.0.0.1:[0-9]*' | head -1 | cut -d: -f2 || true)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$dir/err" >&2; exit 1; }
    target/release/loadgen tcp --addr "127.0.0.1:$port" --connections "$CONNECTIONS" --rate "$RATE" \
        --duration "$SECONDS_PER_RUN" >/dev/null 2>&1
    kill -TERM "$pid"
    wait "$pid" || true
    latency=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/err" | grep -o 'latency=n=[^ ]* p50=[^ ]* p90=[^ ]* p99=[^ ]* p99.9=[^ ]* max=[^ ]*' | tail -1)
    # The same split by stage: receive -> queued, queued -> written.
    stages=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/err" | grep -o '\(to_queue\|queue_to_written\)=n=[^ ]* p50=[^ ]* p90=[^ ]* p99=[^ ]* p99.9=[^ ]* max=[^ ]*' | tail -2 | tr '\n' ' ')
    # Times the writer was moved off a CPU where it waited to run.
    moves=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/err" | grep -o 'writer_moves=[0-9]*' | tail -1 || true)
    echo "run $run: $BIN ${SERVER_ARGS:+($SERVER_ARGS) }at $RATE msg/s over $CONNECTIONS connection(s): $latency${moves:+ $moves}"
    [ -z "$stages" ] || echo "       by stage: $stages"
    rm -rf "$dir"
done
