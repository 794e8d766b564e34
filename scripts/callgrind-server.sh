#!/usr/bin/env bash
# Instructions per message of the server, repeatable whatever else the
# machine does: runs log-server under valgrind's callgrind (TCP only, epoll,
# 1 GiB files so no rotation, a temp log dir), sends MESSAGES messages over
# CONNS connections with loadgen, stops it and prints the total and the
# per-message count; the profile stays in OUT (callgrind_annotate OUT).
#
#   scripts/callgrind-server.sh BIN MESSAGES CONNS OUT [server flags...]
#   e.g. scripts/callgrind-server.sh target/release/log-server 300000 1 /tmp/cg.out
#
# LOADGEN picks the loadgen binary (default target/release/loadgen).
set -euo pipefail
bin=$1 msgs=$2 conns=$3 out=$4
shift 4
loadgen=${LOADGEN:-target/release/loadgen}
port=$((20000 + RANDOM % 10000))
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --port "$port" --only_tcp \
    --log_dir "$dir/out" --stats_interval 0 --io_engine epoll \
    --max_file_size 1073741824 --max_files 2 "$@" > "$dir/server.log" 2>&1 &
server=$!
for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.3
done
"$loadgen" tcp --addr "127.0.0.1:$port" --connections "$conns" --messages "$((msgs / conns))" --json > /dev/null
sleep 2
kill -TERM "$server"
wait "$server" || true
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "lines=$(grep -o 'lines=[0-9]*' "$dir/server.log" | tail -1 | cut -d= -f2) instructions=$total per_message=$((total / msgs))"
