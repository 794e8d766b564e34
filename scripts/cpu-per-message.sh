#!/usr/bin/env bash
# Server CPU per message and peak RSS: starts log-server (TCP only, a temp
# log dir, the defaults unless given) under /usr/bin/time, sends it
# MSGS_PER_CONN messages on each of CONNS connections with loadgen, stops it
# with SIGTERM and prints one line: user+system CPU seconds over the
# messages written, minor faults, peak RSS, the lines its summary counted.
# Exits 1 (saying so) when fewer lines were written than sent.
#
#   scripts/cpu-per-message.sh BIN MSGS_PER_CONN CONNS [server flags...]
#   e.g. scripts/cpu-per-message.sh target/release/log-server 2000000 1 --io_engine uring
#
# LOADGEN picks the loadgen binary (default target/release/loadgen).
set -euo pipefail
bin=$1 msgs=$2 conns=$3
shift 3
loadgen=${LOADGEN:-target/release/loadgen}
port=$((20000 + RANDOM % 10000))
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
/usr/bin/time -f "%U %S %R %M" -o "$dir/time" "$bin" --port "$port" --only_tcp \
    --log_dir "$dir/out" --stats_interval 0 "$@" > "$dir/server.log" 2>&1 &
timed=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
server=$(pgrep -P "$timed")
"$loadgen" tcp --addr "127.0.0.1:$port" --connections "$conns" --messages "$msgs" --json > "$dir/loadgen.json"
kill -TERM "$server"
wait "$timed" || true
read -r user sys faults rss_kib < "$dir/time"
# The summary's own field (" lines=", not "forward_lost_lines=").
lines=$(grep -F 'Stopped;' "$dir/server.log" | tail -1 | grep -o ' lines=[0-9]*' | cut -d= -f2 || true)
total=$((msgs * conns))
cpu=$(echo "($user + $sys) * 1000000 / $total" | bc -l)
printf 'conns=%s messages=%s lines=%s cpu_us_per_msg=%.3f user_s=%s sys_s=%s minor_faults=%s peak_rss_mib=%s\n' \
    "$conns" "$total" "$lines" "$cpu" "$user" "$sys" "$faults" "$((rss_kib / 1024))"
# Every message sent must be written: a shortfall is a finding, not noise.
if [ "${lines:-0}" != "$total" ]; then
    echo "cpu-per-message: only ${lines:-no} of $total messages written; the server said:" >&2
    grep -E 'WARN|ERROR|Stopped;' "$dir/server.log" | tail -5 >&2 || true
    exit 1
fi
