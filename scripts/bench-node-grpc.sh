#!/usr/bin/env bash
# Node's @grpc/grpc-js (the client JavaScript applications use) against
# log-server at its defaults and against a no-op grpc-js server, in the
# same run: the no-op server is the client's own ceiling, so the ratio says
# how much of it log-server keeps. Prints a Markdown table.
#
#   scripts/bench-node-grpc.sh                  # defaults below
#   MESSAGES=20000 STREAM_MESSAGES=500000 scripts/bench-node-grpc.sh
#   BASELINE_BIN=/path/to/older/log-server scripts/bench-node-grpc.sh
#   TRANSPORT_MESSAGES=100000 scripts/bench-node-grpc.sh
#
# BASELINE_BIN adds an older build of log-server, started the same way, as
# a third server in the same run (before/after).
#
# Rows: unary calls in a closed loop (a new call as soon as one is
# answered) and in rounds (N at once, then wait for all: the client is
# silent while waiting, so its ACKs are delayed), at 1, 8 and 64 in flight;
# and one LogStream. "loop p99" is the 99th percentile of the Node event
# loop's delay while logging (perf_hooks.monitorEventLoopDelay).
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-20000}
STREAM_MESSAGES=${STREAM_MESSAGES:-500000}
TRANSPORT_MESSAGES=${TRANSPORT_MESSAGES:-100000}
BASELINE_BIN=${BASELINE_BIN:-}

cargo build --release --quiet --bin log-server
[ -d clients/js/node_modules/@grpc/grpc-js ] || npm ci --prefix clients/js --no-audit --no-fund --silent

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A log-server at its defaults (10 MiB files, 10 of them, --fsync rotate,
# --grpc_ack written), on free ports; sets `addr` to its gRPC address.
start_log_server() { # binary name
    mkdir -p "$work/$2"
    "$1" --log_dir "$work/$2/logs" --port 0 --grpc_port 0 --stats_interval 0 \
        >/dev/null 2>"$work/$2.err" &
    pids+=($!)
    addr=""
    for _ in $(seq 100); do
        addr=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$2.err" | grep -o 'grpc=127.0.0.1:[0-9]*' | head -1 | cut -d= -f2 || true)
        [ -n "$addr" ] && return
        sleep 0.1
    done
    echo "$1 did not start:" >&2
    cat "$work/$2.err" >&2
    exit 1
}
start_log_server target/release/log-server ours
ours=$addr
base=""
if [ -n "$BASELINE_BIN" ]; then
    start_log_server "$BASELINE_BIN" baseline
    base=$addr
fi
node clients/js/bench/noop-server.js >"$work/noop.port" &
pids+=($!)
for _ in $(seq 100); do
    noop=$(head -1 "$work/noop.port" 2>/dev/null || true)
    [ -n "$noop" ] && break
    sleep 0.1
done
[ -n "$noop" ] || { echo "the no-op server did not start" >&2; exit 1; }

run() { # address mode inflight messages -> JSON
    node clients/js/bench/grpc-load.js --address "$1" --mode "$2" --inflight "$3" --messages "$4"
}
field() { # json path -> value
    node -e 'const o=JSON.parse(process.argv[1]); console.log(process.argv[2].split(".").reduce((v,k)=>v[k],o))' "$1" "$2"
}

extra_head="" extra_rule=""
[ -n "$base" ] && extra_head=" baseline msg/s | baseline call p50 / p99 ms |" extra_rule=" --- | --- |"
echo "| Node grpc-js | log-server msg/s | no-op server msg/s | ratio | log-server call p50 / p99 ms | loop p99 ms (ours / no-op) | client CPU (ours / no-op) |$extra_head"
echo "| --- | --- | --- | --- | --- | --- | --- |$extra_rule"
for row in "unary 1" "unary 8" "unary 64" "rounds 8" "rounds 64" "stream 1"; do
    set -- $row
    n=$MESSAGES
    [ "$1" = stream ] && n=$STREAM_MESSAGES
    a=$(run "$ours" "$1" "$2" "$n")
    b=$(run "$noop" "$1" "$2" "$n")
    ra=$(field "$a" msgs_per_s)
    rb=$(field "$b" msgs_per_s)
    ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.2f", a / b }')
    extra=""
    if [ -n "$base" ]; then
        c=$(run "$base" "$1" "$2" "$n")
        extra=" $(field "$c" msgs_per_s) | $(field "$c" call_ms.p50) / $(field "$c" call_ms.p99) |"
    fi
    label="$1, $2 in flight"
    [ "$1" = stream ] && label="LogStream, one call"
    echo "| $label | $ra | $rb | $ratio | $(field "$a" call_ms.p50) / $(field "$a" call_ms.p99) | $(field "$a" event_loop_delay_ms.p99) / $(field "$b" event_loop_delay_ms.p99) | $(field "$a" client_cpu) / $(field "$b" client_cpu) |$extra"
done

# The package's own ways to log (clients/js): createClient, the pino and the
# winston transport, each logging TRANSPORT_MESSAGES lines as an application
# does, timed until all are sent; "loop" is the event loop's delay meanwhile.
echo
echo "| log-server-client (${TRANSPORT_MESSAGES} lines) | log-server msg/s | no-op server msg/s | ratio | loop p50 / p99 / max ms (log-server) |"
echo "| --- | --- | --- | --- | --- |"
for via in client pino winston; do
    a=$(node clients/js/bench/transport-load.js --address "$ours" --via "$via" --messages "$TRANSPORT_MESSAGES")
    b=$(node clients/js/bench/transport-load.js --address "$noop" --via "$via" --messages "$TRANSPORT_MESSAGES")
    ra=$(field "$a" msgs_per_s)
    rb=$(field "$b" msgs_per_s)
    ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.2f", a / b }')
    echo "| $via | $ra | $rb | $ratio | $(field "$a" event_loop_delay_ms.p50) / $(field "$a" event_loop_delay_ms.p99) / $(field "$a" event_loop_delay_ms.max) |"
done
