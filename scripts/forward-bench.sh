#!/usr/bin/env bash
# Forwarding benchmarks (--forward_otlp), release build, at the defaults
# (10 MiB files, 10 of them, --fsync rotate) on both servers.
#
# 1. Forwarding rate: server A writes LINES messages of ~200 bytes (loadgen,
#    one connection) with forwarding off and stops; server B (another
#    log-server: OTLP ingest on its gRPC port, `written` acks) is started;
#    A is started again on the same files with --forward_otlp to B. The time
#    runs from A's start until A's /metrics says every line was acknowledged
#    (log_server_forwarded_lines_total == LINES), polled every 10 ms; B's
#    summary must count the same lines. Over gRPC, then over HTTP.
# 2. With --ingest: ingest while forwarding, scripts/bench-vs-peers.sh
#    (syslog-ng and log-server at the defaults) with log-server forwarding
#    every line to B over gRPC (LOG_SERVER_ARGS). B shares this machine's
#    CPUs, where a real destination (a Collector) runs elsewhere: B_NICE=19
#    (nice) or B_NICE=idle (SCHED_IDLE) runs it at a low priority, labelled,
#    to show A's own cost apart.
#
# Usage: scripts/forward-bench.sh [--lines N] [--runs R] [--ingest] [--no-build]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINES=400000 RUNS=3 INGEST=0 BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --lines) LINES="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --ingest) INGEST=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
cd "$ROOT"
[ "$BUILD" = 0 ] || cargo build --release --quiet -p log-server -p loadgen
BIN="${LOG_SERVER_BIN:-$ROOT/target/release/log-server}"
LOADGEN="$ROOT/target/release/loadgen"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done; echo "port $1 never opened" >&2; exit 1; }
stop() { kill -TERM "$1"; wait "$1" || true; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# B: the destination, at its defaults.
start_b() {
    BDIR="$WORK/b-$1"; BPORT=$(free_port); BGRPC=$(free_port)
    local prio=(nice -n "${2:-0}")
    [ "${2:-0}" != idle ] || prio=(chrt --idle 0)
    "${prio[@]}" "$BIN" --port "$BPORT" --grpc_port "$BGRPC" --log_dir "$BDIR" --stats_interval 0 >"$WORK/b-$1.log" 2>&1 &
    BPID=$!; PIDS+=("$BPID"); wait_port "$BGRPC"
}

rate_run() { # protocol run
    local proto="$1" run="$2"
    local adir="$WORK/a-$proto-$run" aport mport apid t0 t1 n
    aport=$(free_port)
    "$BIN" --port "$aport" --only_tcp --log_dir "$adir" --stats_interval 0 >"$WORK/a0.log" 2>&1 &
    apid=$!; PIDS+=("$apid"); wait_port "$aport"
    "$LOADGEN" tcp --addr "127.0.0.1:$aport" --messages "$LINES" --size 200 >/dev/null
    stop "$apid"
    start_b "$proto-$run"
    local url="http://127.0.0.1:$BGRPC"
    aport=$(free_port); mport=$(free_port)
    t0=$(date +%s.%N)
    "$BIN" --port "$aport" --only_tcp --log_dir "$adir" --stats_interval 0 --metrics_port "$mport" \
        --forward_otlp "$url" --forward_protocol "$proto" >"$WORK/a1.log" 2>&1 &
    apid=$!; PIDS+=("$apid")
    while :; do
        n=$(metric "$mport" log_server_forwarded_lines_total 2>/dev/null || true)
        [ "${n:-0}" = "$LINES" ] && break
        if [ "$(echo "$(date +%s.%N) - $t0 > 120" | bc)" = 1 ]; then echo "timed out at ${n:-0} lines" >&2; exit 1; fi
        sleep 0.01
    done
    t1=$(date +%s.%N)
    stop "$apid"; stop "$BPID"
    local got; got=$(grep -o 'lines=[0-9]*' "$WORK/b-$proto-$run.log" | tail -1 | cut -d= -f2)
    [ "$got" = "$LINES" ] || { echo "B wrote $got lines, not $LINES" >&2; exit 1; }
    printf '%-5s run %d: %d lines in %.3f s = %.0f lines/s (B wrote %s)\n' "$proto" "$run" "$LINES" \
        "$(echo "$t1 - $t0" | bc)" "$(echo "$LINES / ($t1 - $t0)" | bc -l)" "$got"
}

echo "# forwarding rate, $LINES lines of ~200 bytes from A's files to B (both at the defaults); $(nproc) CPUs"
for run in $(seq "$RUNS"); do rate_run grpc "$run"; rate_run http "$run"; done

if [ "$INGEST" = 1 ]; then
    start_b ingest "${B_NICE:-0}"
    echo "# ingest while forwarding every line to B over gRPC (B: $BIN at its defaults, on the same CPUs, nice ${B_NICE:-0})"
    LOG_SERVER_ARGS="--forward_otlp http://127.0.0.1:$BGRPC" \
        scripts/bench-vs-peers.sh --only syslog-ng,log-server --no-build | tail -12
    stop "$BPID"
    echo "# the same log-server without forwarding, for comparison"
    scripts/bench-vs-peers.sh --only log-server --no-build | tail -9
fi
