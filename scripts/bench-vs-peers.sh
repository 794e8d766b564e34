#!/usr/bin/env bash
# Benchmarks log-server against rsyslog and syslog-ng on this machine: each
# daemon is started fresh with its own config (scripts/peers/*.conf.in) and an
# empty output dir, loadgen sends TOTAL messages of ~200 bytes over 1 and then
# 2 connections on loopback, and the time runs from the start of sending until
# the last line is in the output file (the last change of the output's size,
# watched with stat while sending; lines are counted afterwards). Lines are counted, never assumed: a
# shortfall is printed as lost.
#
# log-server runs at the defaults a user gets (10 MiB files, 10 of them,
# --fsync rotate), so it rotates many times per run and its files keep only
# the last ~100 MiB: its count is the `lines=` of its shutdown summary (lines
# written, rotated out or not), checked against the files: `unwritten=0`, the
# last message of every connection is in the files, and the files hold
# whole lines only. `log-server-1g` is the same server with 1 GiB files (no
# rotation during a run), counted from the file like the peers, shown apart.
#
# rsyslog and syslog-ng come from Debian packages. They conflict as packages,
# so one is installed with apt-get (rsyslog, unless syslog-ng-core already is)
# and the other is unpacked with `dpkg -x` into a cache dir and run from there.
# No system service is started: every daemon runs under a temp dir with its
# own config, pid file and state, and is stopped when the script ends.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/bench-vs-peers.sh [--total N] [--only SYSTEM] [--no-build] [-h]

Compares log-server with rsyslog and syslog-ng: same message count, 1 and 2
connections, time until the last line is in the output file. log-server runs
at its defaults (10 MiB files, 10 files, --fsync rotate); log-server-1g is the
no-rotation variant (1 GiB files), labelled apart.

  --total N        messages per run, split over the connections (default 2000000;
                   env TOTAL)
  --only SYSTEM    run only rsyslog, syslog-ng, log-server or log-server-1g
                   (repeatable, or a comma-separated list)
  --no-build       use target/release/{log-server,loadgen} as they are instead
                   of running `cargo build --release` first
  -h, --help       this text

Env: TIMEOUT (seconds per run to wait for all lines, default 120),
     SETTLE (seconds the output must stay unchanged after sending, default 1.5),
     CONNECTIONS (default "1 2"), LOG_SERVER_BIN (the log-server binary, default
     target/release/log-server), PEERS_DIR (config templates, default
     scripts/peers), BENCH_CACHE (where the unpacked peer
     packages are kept, default ~/.cache/log-server-bench-peers),
     PEERS_PRIVATE=1 (unpack both peers there, install no package),
     LOG_SERVER_ARGS (more flags for the log-server run, printed with the
     table; e.g. "--forward_otlp http://127.0.0.1:4321").
Needs python3 (the output watcher) and root to install missing Debian packages (apt-get). Exits 1 if any run
lost lines (or wrote more lines than were sent).
EOF
}

CMDLINE="$0"
for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./,:=+@%-]+$ ]]; then CMDLINE+=" $a"; else CMDLINE+=" $(printf '%q' "$a")"; fi
done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$ROOT/scripts/peers}"
TOTAL="${TOTAL:-2000000}"
LOG_SERVER_ARGS="${LOG_SERVER_ARGS:-}"
TIMEOUT="${TIMEOUT:-120}"
# Seconds the output must stay unchanged after loadgen ends for a run to be over.
SETTLE="${SETTLE:-1.5}"
read -r -a CONNS <<<"${CONNECTIONS:-1 2}"
SIZE=200
PEERS_PRIVATE="${PEERS_PRIVATE:-0}"
CACHE="${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/log-server-bench-peers}"
ALL_SYSTEMS=(rsyslog syslog-ng log-server log-server-1g)
SYSTEMS=()
BUILD=1

die() { echo "bench-vs-peers: error: $*" >&2; exit 1; }
say() { echo "bench-vs-peers: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --total) [ $# -ge 2 ] || die "--total needs a value"; TOTAL="$2"; shift 2 ;;
        --total=*) TOTAL="${1#*=}"; shift ;;
        --only) [ $# -ge 2 ] || die "--only needs a value"; IFS=, read -r -a s <<<"$2"; SYSTEMS+=("${s[@]}"); shift 2 ;;
        --only=*) IFS=, read -r -a s <<<"${1#*=}"; SYSTEMS+=("${s[@]}"); shift ;;
        --no-build) BUILD=0; shift ;;
        *) echo "bench-vs-peers: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$TOTAL" =~ ^[1-9][0-9]*$ ]] || die "--total must be a positive integer, got '$TOTAL'"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "TIMEOUT must be a positive integer, got '$TIMEOUT'"
[ ${#CONNS[@]} -gt 0 ] || die "CONNECTIONS is empty"
for c in "${CONNS[@]}"; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be positive integers, got '$c'"
done
if [ ${#SYSTEMS[@]} -eq 0 ]; then
    SYSTEMS=("${ALL_SYSTEMS[@]}")
else
    for s in "${SYSTEMS[@]}"; do
        case "$s" in rsyslog|syslog-ng|log-server|log-server-1g) ;;
            *) die "--only: unknown system '$s' (rsyslog, syslog-ng, log-server, log-server-1g)" ;; esac
    done
fi
wants() { local s; for s in "${SYSTEMS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
wants_log_server() { wants log-server || wants log-server-1g; }
for t in bc ss stat dd tail wc awk sed timeout; do
    command -v "$t" >/dev/null || die "'$t' is needed but not installed"
done

echo "command: $CMDLINE"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"

# ---------------------------------------------------------------- cleanup
TMP="$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-peers.XXXXXX")"
PIDS=()
POLICY_RC_CREATED=0
cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid did not stop on SIGTERM within 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    [ "$POLICY_RC_CREATED" = 1 ] && rm -f /usr/sbin/policy-rc.d
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# ---------------------------------------------------------------- packages
APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return
    [ "$(id -u)" = 0 ] || die "peer packages are missing and installing them needs root (apt-get)"
    say "apt-get update"
    apt-get update -qq >"$TMP/apt-update.log" 2>&1 || { cat "$TMP/apt-update.log" >&2; die "apt-get update failed"; }
    APT_UPDATED=1
}
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }

apt_install() {
    apt_update_once
    # Never let the package start its system service: policy-rc.d exit 101
    # tells invoke-rc.d not to (kept if the machine already has one).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    say "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$TMP/apt-install.log" 2>&1 ||
        { tail -20 "$TMP/apt-install.log" >&2; die "apt-get install $* failed"; }
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

# Unpacks package $1 and its library dependencies that are not installed into
# $CACHE/$1/root (once). Sets PRIV_ROOT and PRIV_LIBS (an LD_LIBRARY_PATH).
private_unpack() {
    local pkg="$1" dir="$CACHE/$1" d deb deps=()
    if [ ! -e "$dir/.complete" ]; then
        apt_update_once
        rm -rf "$dir"
        mkdir -p "$dir/debs" "$dir/root"
        for d in $(apt-cache depends "$pkg" | awk '$1 == "Depends:" && $2 !~ /^</ { print $2 }' | sort -u); do
            case "$d" in lib*) installed "$d" || deps+=("$d") ;; esac
        done
        say "unpacking $pkg ${deps[*]} into $dir (apt-get download + dpkg -x)"
        (cd "$dir/debs" && apt-get download -o APT::Sandbox::User=root "$pkg" "${deps[@]+"${deps[@]}"}") \
            >"$TMP/apt-download.log" 2>&1 || { cat "$TMP/apt-download.log" >&2; die "apt-get download $pkg failed"; }
        for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root"; done
        touch "$dir/.complete"
    fi
    PRIV_ROOT="$dir/root"
    PRIV_LIBS="$(find "$PRIV_ROOT" -name '*.so*' \( -type f -o -type l \) -printf '%h\n' | sort -u | paste -sd:)"
}

check_libs() { # binary, LD_LIBRARY_PATH
    local missing
    missing="$(LD_LIBRARY_PATH="$2" ldd "$1" 2>&1 | awk '/not found/ { print $1 }' | paste -sd' ')" || true
    [ -z "$missing" ] || die "$1 misses libraries: $missing (remove $CACHE to unpack again)"
}

RSYSLOGD="" RSYSLOG_LIBS="" RSYSLOG_MODDIR=""
setup_rsyslog() {
    if [ "$PEERS_PRIVATE" != 1 ] && ! installed rsyslog && ! installed syslog-ng-core; then
        apt_install rsyslog
    fi
    if [ "$PEERS_PRIVATE" != 1 ] && installed rsyslog; then
        RSYSLOGD="$(command -v rsyslogd || echo /usr/sbin/rsyslogd)"
    else
        private_unpack rsyslog
        RSYSLOGD="$PRIV_ROOT/usr/sbin/rsyslogd"
        RSYSLOG_LIBS="$PRIV_LIBS"
        RSYSLOG_MODDIR="$(dirname "$(find "$PRIV_ROOT" -name imptcp.so | head -1)")"
    fi
    [ -x "$RSYSLOGD" ] || die "rsyslogd not found at $RSYSLOGD"
    check_libs "$RSYSLOGD" "$RSYSLOG_LIBS"
}

SYSLOGNG="" SYSLOGNG_LIBS="" SYSLOGNG_MODDIR=""
setup_syslog_ng() {
    if [ "$PEERS_PRIVATE" != 1 ] && installed syslog-ng-core; then
        SYSLOGNG="$(command -v syslog-ng || echo /usr/sbin/syslog-ng)"
    else
        private_unpack syslog-ng-core
        SYSLOGNG="$PRIV_ROOT/usr/sbin/syslog-ng"
        SYSLOGNG_LIBS="$PRIV_LIBS"
        SYSLOGNG_MODDIR="$(dirname "$(find "$PRIV_ROOT" -name libaffile.so | head -1)")"
    fi
    [ -x "$SYSLOGNG" ] || die "syslog-ng not found at $SYSLOGNG"
    check_libs "$SYSLOGNG" "$SYSLOGNG_LIBS"
}

wants rsyslog && setup_rsyslog
wants syslog-ng && setup_syslog_ng

# ---------------------------------------------------------------- binaries
LOG_SERVER="${LOG_SERVER_BIN:-$ROOT/target/release/log-server}"
LOADGEN="$ROOT/target/release/loadgen"
if [ "$BUILD" = 1 ]; then
    say "cargo build --release -p log-server -p loadgen"
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p log-server -p loadgen) ||
        die "cargo build failed (use --no-build to run the binaries already in target/release)"
fi
[ -x "$LOADGEN" ] || die "$LOADGEN missing: cargo build --release -p loadgen"
wants_log_server && { [ -x "$LOG_SERVER" ] || die "$LOG_SERVER missing: cargo build --release -p log-server"; }

# ---------------------------------------------------------------- helpers
# A port nobody listens on, below the ephemeral range so that no outgoing
# connection of another program holds it.
free_port() {
    local p i lo=32768 span
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    span=$((lo - 10000))
    [ "$span" -ge 1000 ] || span=20000
    for ((i = 0; i < 100; i++)); do
        p=$((10000 + RANDOM % span))
        if [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then echo "$p"; return; fi
    done
    die "found no free TCP port"
}

# wait_port PID PORT NAME: until 127.0.0.1:PORT accepts a connection (15 s).
# Returns 1 if the daemon exited first.
wait_port() {
    local pid="$1" port="$2" name="$3" deadline=$((SECONDS + 15))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        [ "$SECONDS" -lt "$deadline" ] || die "$name did not listen on 127.0.0.1:$port within 15 s"
        sleep 0.05
    done
}

render() { # template out: replaces @PORT@ @OUTFILE@ @WORKDIR@ @VERSION@
    sed -e "s|@PORT@|$PORT|g" -e "s|@OUTFILE@|$OUTFILE|g" -e "s|@WORKDIR@|$WORKDIR|g" \
        -e "s|@VERSION@|${VERSION:-}|g" "$1" >"$2"
}

# start_daemon SYSTEM RUNDIR: starts it on a free port and waits until it
# listens; sets DPID and PORT. Up to 3 attempts (another program may take
# the port between the check and the bind).
start_daemon() {
    local sys="$1" run="$2" attempt
    for attempt in 1 2 3; do
        launch_daemon "$sys" "$run"
        wait_port "$DPID" "$PORT" "$sys" && return 0
        wait "$DPID" 2>/dev/null || true
        forget_pid "$DPID"
        say "$sys exited before listening on 127.0.0.1:$PORT (attempt $attempt); its output:"
        tail -20 "$run/daemon.log" >&2 || true
    done
    die "$sys did not start, see its output above"
}

launch_daemon() {
    local sys="$1" run="$2"
    PORT="$(free_port)"
    WORKDIR="$run/state"
    mkdir -p "$WORKDIR" "$run/out"
    local logf="$run/daemon.log"
    case "$sys" in
        rsyslog)
            OUTFILE="$run/out/messages.log"
            render "$PEERS_DIR/rsyslog.conf.in" "$run/rsyslog.conf"
            local args=(-n -f "$run/rsyslog.conf" -i "$run/rsyslogd.pid")
            [ -n "$RSYSLOG_MODDIR" ] && args+=(-M "$RSYSLOG_MODDIR")
            LD_LIBRARY_PATH="$RSYSLOG_LIBS" "$RSYSLOGD" -N1 "${args[@]:1}" >"$logf" 2>&1 ||
                { cat "$logf" >&2; die "rsyslog rejects $PEERS_DIR/rsyslog.conf.in"; }
            LD_LIBRARY_PATH="$RSYSLOG_LIBS" "$RSYSLOGD" "${args[@]}" >"$logf" 2>&1 &
            ;;
        syslog-ng)
            OUTFILE="$run/out/messages.log"
            VERSION="$(LD_LIBRARY_PATH="$SYSLOGNG_LIBS" "$SYSLOGNG" --version | awk '/^Installer-Version:/ { split($2, v, "."); print v[1] "." v[2] }')"
            render "$PEERS_DIR/syslog-ng.conf.in" "$run/syslog-ng.conf"
            local args=(-f "$run/syslog-ng.conf" -R "$WORKDIR/syslog-ng.persist" -p "$run/syslog-ng.pid"
                        -c "$WORKDIR/syslog-ng.ctl" --no-caps)
            [ -n "$SYSLOGNG_MODDIR" ] && args+=(--module-path="$SYSLOGNG_MODDIR")
            LD_LIBRARY_PATH="$SYSLOGNG_LIBS" "$SYSLOGNG" --syntax-only "${args[@]}" >"$logf" 2>&1 ||
                { cat "$logf" >&2; die "syslog-ng rejects $PEERS_DIR/syslog-ng.conf.in"; }
            LD_LIBRARY_PATH="$SYSLOGNG_LIBS" "$SYSLOGNG" -F "${args[@]}" >"$logf" 2>&1 &
            ;;
        log-server)
            # The defaults, spelled out so that the table says what ran.
            "$LOG_SERVER" --port "$PORT" --only_tcp --log_dir "$run/out" --fsync rotate \
                --max_file_size 10485760 --max_files 10 --stats_interval 0 $LOG_SERVER_ARGS >"$logf" 2>&1 &
            ;;
        log-server-1g)
            "$LOG_SERVER" --port "$PORT" --only_tcp --log_dir "$run/out" --fsync rotate \
                --max_file_size 1073741824 --max_files 2 --stats_interval 0 >"$logf" 2>&1 &
            ;;
    esac
    DPID=$!
    PIDS+=("$DPID")
}

out_files() { # the output files that exist now
    local dir="$1" sys="$2"
    if [[ "$sys" == log-server* ]]; then
        # Oldest first (_main.log.9 .. _main.log.0, then _main.log), so that
        # the last line of the last file is the last line written.
        { compgen -G "$dir/_main.log.*" || true; } | awk '{ n = $0; sub(/.*\./, "", n); print n "\t" $0 }' |
            sort -k1,1nr | cut -f2-
        [ ! -f "$dir/_main.log" ] || echo "$dir/_main.log"
    else
        [ -f "$dir/messages.log" ] && echo "$dir/messages.log"
    fi
}

# stop_daemon SYSTEM RUNDIR: SIGTERM, wait up to 30 s, SIGKILL.
stop_daemon() {
    local sys="$1" run="$2" i rc=0
    kill -TERM "$DPID" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$DPID" 2>/dev/null; then
        say "$sys did not exit within 30 s of SIGTERM: SIGKILL"
        kill -KILL "$DPID" 2>/dev/null || true
    fi
    wait "$DPID" 2>/dev/null || rc=$?
    forget_pid "$DPID"
    if [ "$rc" != 0 ]; then
        say "$sys exited with status $rc; last lines of its output:"
        tail -5 "$run/daemon.log" >&2 || true
    fi
}

# ---------------------------------------------------------------- runs
declare -A R_MSGS=() R_SECS=() R_RATE=() R_MBS=() R_LOST=() R_NOTE=() R_RSS=()

# summary_field LOG NAME: NAME=value from log-server's shutdown summary.
summary_field() {
    grep -F 'Stopped;' "$1" | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2; exit }'
}

# log_server_check RUN C PER: what log-server's own summary and its files
# say about a run of C connections of PER messages each; prints "lines bytes
# problem" (problem "-" when none). With rotation the files keep only the
# newest ~100 MiB, so the count is the summary's lines=, and the files must
# agree with it: nothing unwritten, whole lines, and what they kept of each
# connection (loadgen numbers its messages "c=CCCC n=NNNNNNNNNN") is a run
# without a gap that ends at that connection's last message. A connection
# that finished early may have been rotated out entirely; the newest file's
# last line must then still be some connection's last message.
log_server_check() {
    local run="$1" c="$2" per="$3" lines bytes unwritten i f problem="-" files=()
    lines=$(summary_field "$run/daemon.log" lines)
    bytes=$(summary_field "$run/daemon.log" bytes)
    unwritten=$(summary_field "$run/daemon.log" unwritten)
    if [ -z "$lines" ] || [ -z "$bytes" ]; then
        echo "0 0 no-summary"
        return
    fi
    [ "$unwritten" = 0 ] || problem="unwritten=$unwritten"
    mapfile -t files < <(out_files "$run/out" log-server)
    if [ ${#files[@]} -eq 0 ]; then
        problem="no-files"
    else
        # Whole lines: every file ends with a newline.
        for f in "${files[@]}"; do
            if [ -s "$f" ] && [ "$(tail -c 1 "$f" | od -An -tx1 | tr -d ' ')" != 0a ]; then
                problem="partial-line"
            fi
        done
        local gaps
        gaps=$(cat "${files[@]}" | awk -v last=$((per - 1)) '
            match($0, / c=[0-9]+ n=[0-9]+ /) {
                split(substr($0, RSTART + 1, RLENGTH - 2), f, /[ =]/)
                k = f[2] + 0; n = f[4] + 0
                if ((k in prev) && n != prev[k] + 1) { print "gap-in-c" k; bad = 1; exit }
                prev[k] = n; tail = n
            }
            END {
                if (bad) exit
                for (k in prev) if (prev[k] != last) { print "c" k "-ends-at-" prev[k]; exit }
                if (tail != last) print "last-line-is-not-a-last-message"
            }')
        [ -z "$gaps" ] || problem="$gaps"
    fi
    echo "$lines $bytes $problem"
}
run_one() { # SYSTEM CONNECTIONS
    local sys="$1" c="$2" per total run t0 t1 files mode prefix status=ok
    per=$((TOTAL / c))
    total=$((per * c))
    [ "$per" -gt 0 ] || die "--total $TOTAL is smaller than $c connections"
    run="$TMP/$sys-c$c"
    rm -rf "$run"
    mkdir -p "$run"
    start_daemon "$sys" "$run"
    # The sender's protocol, and the log files the watcher sizes: not the
    # forwarder's checkpoint (LOG_SERVER_ARGS may turn forwarding on).
    case "$sys" in
        log-server*) mode=tcp prefix=_main.log ;;
        *) mode=syslog prefix=messages.log ;;
    esac
    say "$sys, $c connection(s): $total messages (loadgen $mode, port $PORT)"
    # Timing: loadgen runs while one watcher process polls the output
    # files' sizes every 5 ms (stat only, no reading; a shell loop forking
    # stat, awk and date took CPU from the daemon being measured). The run
    # ends at the last size change once loadgen is done and the files have
    # stayed the same for SETTLE seconds; every line is counted afterwards,
    # untimed.
    t0=$(date +%s.%N)
    python3 "$PEERS_DIR/watch-output.py" "$run/out" "$run/loadgen.done" "$DPID" "$SETTLE" "$TIMEOUT" "$prefix" \
        >"$run/watch.out" &
    local watcher=$! verdict
    if ! timeout "$TIMEOUT" "$LOADGEN" "$mode" --addr "127.0.0.1:$PORT" --connections "$c" \
        --messages "$per" --size "$SIZE" --json >"$run/loadgen.json" 2>"$run/loadgen.err"; then
        cat "$run/loadgen.err" >&2
        say "loadgen failed or timed out against $sys (${TIMEOUT} s); counting what arrived"
        status=loadgen-failed
    fi
    touch "$run/loadgen.done"
    wait "$watcher" || true
    read -r verdict t1 <"$run/watch.out" || { verdict=missing; t1=$t0; }
    case "$verdict" in
        ok) ;;
        died)
            say "$sys died; last lines of its output:"
            tail -5 "$run/daemon.log" >&2 || true
            status=timeout
            ;;
        *)
            say "$sys: output still changing or missing after ${TIMEOUT} s"
            status=timeout
            ;;
    esac
    # Peak resident memory of the daemon over the run (VmHWM), before it
    # exits.
    R_RSS[$sys,$c]=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$DPID/status" 2>/dev/null || echo "?")
    stop_daemon "$sys" "$run"
    # Final exact count, after the daemon flushed and exited: log-server at
    # its defaults rotates its oldest lines away, so its summary counts (see
    # log_server_check); every other run counts the lines in its file.
    local lines=0 bytes=0
    if [ "$sys" = log-server ]; then
        local problem
        read -r lines bytes problem < <(log_server_check "$run" "$c" "$per")
        if [ "$problem" != - ]; then
            say "$sys, $c connection(s): $problem"
            [ "$status" = ok ] && status="$problem"
            # A run whose files disagree with its summary counts as lossy.
            [ "$lines" -eq "$total" ] && lines=$((total - 1))
        fi
    else
        mapfile -t files < <(out_files "$run/out" "$sys")
        if [ ${#files[@]} -gt 0 ]; then
            lines=$(cat "${files[@]}" | wc -l)
            bytes=$(cat "${files[@]}" | wc -c)
        fi
    fi
    local secs rate mbs
    secs=$(echo "$t1 - $t0" | bc -l)
    rate=$(echo "$lines / $secs" | bc -l)
    mbs=$(echo "$bytes / $secs / 1000000" | bc -l)
    R_MSGS[$sys,$c]=$total
    R_SECS[$sys,$c]=$secs
    R_RATE[$sys,$c]=$rate
    R_MBS[$sys,$c]=$mbs
    R_LOST[$sys,$c]=$((total - lines))
    R_NOTE[$sys,$c]=""
    [ "$status" = ok ] || R_NOTE[$sys,$c]="$status"
    if [ "$lines" -ne "$total" ]; then
        say "$sys, $c connection(s): $lines lines in the file for $total sent: $((total - lines)) lost (negative: extra)"
    fi
    printf 'bench-vs-peers: %s, %s connection(s): %.3f s, %.0f msgs/s (%s)\n' "$sys" "$c" "$secs" "$rate" "$status" >&2
    rm -rf "$run"
}

# ---------------------------------------------------------------- header
vers="loadgen $SIZE-byte messages, total $TOTAL per run"
wants rsyslog && vers+="; $(LD_LIBRARY_PATH="$RSYSLOG_LIBS" "$RSYSLOGD" -v 2>/dev/null | head -1 | awk '{ print $1, $2 }')"
wants syslog-ng && vers+="; syslog-ng $(LD_LIBRARY_PATH="$SYSLOGNG_LIBS" "$SYSLOGNG" --version 2>/dev/null | awk '/^Installer-Version:/ { print $2 }')"
wants_log_server && vers+="; log-server $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
echo "versions: $vers"
echo

for sys in "${ALL_SYSTEMS[@]}"; do
    wants "$sys" || continue
    for c in "${CONNS[@]}"; do run_one "$sys" "$c"; done
done

# ---------------------------------------------------------------- table
printf '%-13s %5s %10s %9s %11s %8s %10s %6s %8s\n' system conns messages seconds msgs/s MB/s ls/system lost 'RSS MiB'
for sys in "${ALL_SYSTEMS[@]}"; do
    wants "$sys" || continue
    for c in "${CONNS[@]}"; do
        ratio="-"
        if [ -n "${R_RATE[log-server,$c]:-}" ] && [ "$(echo "${R_RATE[$sys,$c]} > 0" | bc)" = 1 ]; then
            ratio=$(printf '%.2f' "$(echo "${R_RATE[log-server,$c]} / ${R_RATE[$sys,$c]}" | bc -l)")
        fi
        line=$(printf '%-13s %5s %10s %9.3f %11.0f %8.1f %10s %6s %8s %s' "$sys" "$c" "${R_MSGS[$sys,$c]}" \
            "${R_SECS[$sys,$c]}" "${R_RATE[$sys,$c]}" "${R_MBS[$sys,$c]}" "$ratio" "${R_LOST[$sys,$c]}" \
            "${R_RSS[$sys,$c]}" "${R_NOTE[$sys,$c]}")
        echo "${line% }"
    done
done
echo "(seconds: from the start of sending until the last line is in the file; MB/s: output file bytes / seconds, 1 MB = 10^6 B;"
echo " ls/system: log-server (defaults) msgs/s over that system's at the same connection count; lost: lines sent minus"
echo " lines written (log-server: its summary's lines=, checked against its files; others: lines in the file);"
echo " RSS MiB: the daemon's peak resident memory (VmHWM) over the run; log-server: defaults, 10 MiB x 10 files,"
echo " --fsync rotate; log-server-1g: 1 GiB files, no rotation during the run)"
[ -z "$LOG_SERVER_ARGS" ] || echo " log-server ran with: $LOG_SERVER_ARGS"
lost_any=0
for k in "${!R_LOST[@]}"; do [ "${R_LOST[$k]}" = 0 ] || lost_any=1; done
exit "$lost_any"
