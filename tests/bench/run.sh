#!/bin/bash
# run.sh BUILD_DIR - `make bench`: measure aigwd against nginx as a plain
# reverse proxy and against the mock upstream itself, on this machine, in
# this run (issue 4).  See tests/bench/README.md for what each scenario
# measures.
#
# Prints a table and writes BUILD_DIR/bench/results-<time>.json and
# BUILD_DIR/bench/latest.json.  It is not a test: it exits 0 whatever the
# figures, and non-zero only when it could not set itself up.  Every
# process it starts is stopped on exit, Ctrl-C included.
#
# Environment:
#   BENCH_QUICK=1   a smoke run of about a minute (1 round, short runs)
#   BENCH_ROUNDS=N  rounds of the interleaved scenarios (default 5, quick 1)
#   BENCH_RATE=R    the fixed load's requests a second (default: a quarter
#                   of nginx's throughput in the first round)
#   BENCH_LIGHT_RATE=R  the light load's (default: a sixteenth of it)
#   BENCH_PERF=1    also record a perf profile of aigwd's workers under load
#                   (perf report in BUILD_DIR/bench/perf-<time>.txt)
#   BENCH_KEEP=1    keep the temporary directory (configs, logs, raw data)
#   BENCH_PROXY_CPUS=N  give nginx and aigwd N workers each, pinned to the
#                   last N cores when 4 or more are left for the mock and
#                   the load generator (unpinned otherwise): the proxies are
#                   then what limits throughput, not the mock or the load
#   BENCH_HELPERS=DIR   take sse_client and malloc_count.so ready-built from
#                   DIR instead of compiling them (a machine without cc)
#
# Without node, the run still measures everything and keeps the raw figures
# in BUILD_DIR/bench/raw-<time>.jsonl and meta-<time>.json; report them on
# another machine with: node tests/bench/report.mjs META RAW OUT.json
set -u

build=${1:-build}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
case $build in /*) ;; *) build="$top/$build" ;; esac
here="$top/tests/bench"

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
    rounds=${BENCH_ROUNDS:-1}
    dur64=2 dur1=1 warm=1 dur_fixed=2
    stream_n=3 tap_n=5
    conc_ns="100 500"
    conc_timeout=20
    alloc_dur=1 alloc_streams=3
else
    rounds=${BENCH_ROUNDS:-5}
    dur64=6 dur1=3 warm=2 dur_fixed=4
    stream_n=10 tap_n=20
    conc_ns="100 500 1000 2000"
    conc_timeout=60
    alloc_dur=3 alloc_streams=10
fi
conns=64
big_kb=64 big_conns=8
stream_chunks=50 stream_delay=5
conc_chunks=20 conc_delay=100
max_workers=1024 # aigw.yaml(5): workers is at most 1024

# Messages go to the stderr the script was started with, even from a trap
# that fires while a function's output is redirected to a file.
exec {errfd}>&2
say() { printf '%s\n' "bench: $*" >&"$errfd"; }
die() {
    say "$*"
    exit 1
}

# --- what it needs -----------------------------------------------------------

for b in aigwd aigwctl aigw-mock; do
    [ -x "$build/$b" ] || die "$build/$b is missing: run make first (make bench builds it)"
done
missing=""
need=(wrk)
[ -n "${BENCH_HELPERS:-}" ] || need+=(cc)
for c in "${need[@]}"; do
    command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
have_node=1
command -v node >/dev/null 2>&1 || have_node=0
# nginx lives in /usr/sbin, which a user's PATH may lack.
nginx_bin=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || missing="$missing nginx"
[ -z "$missing" ] || die "missing:$missing (tests/deps.sh build test bench installs them)"

tmp=$(mktemp -d /tmp/aigw-bench.XXXXXX) || die "mktemp failed"
raw="$tmp/raw.jsonl"
: >"$raw"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
outdir="$build/bench" # results stay in BUILD_DIR/bench
mkdir -p "$outdir" || die "cannot create $outdir"

# --- processes: every one we start is listed, and stopped on exit -----------

pids=()
stopping=0

# Stop PID and the processes it forked: TERM, then KILL after a grace.
tree_stop() {
    local pid=$1 grace=${2:-15} kids i
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(children "$pid")
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid did not stop in ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    for k in $kids; do kill -KILL "$k" 2>/dev/null; done
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    [ "$stopping" = 1 ] && return
    stopping=1
    trap - INT TERM EXIT
    local p
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        p=${pids[i]}
        [ -n "$p" ] && tree_stop "$p" 5
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        say "kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
on_signal() {
    say "interrupted: stopping what it started"
    cleanup
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

forget() { # drop a stopped pid from the list
    local i
    for i in "${!pids[@]}"; do [ "${pids[i]}" = "$1" ] && unset 'pids[i]'; done
}

# Run a command as one of ours and wait for it.  Bash defers a Ctrl-C while
# a foreground child that handles SIGINT itself (wrk) runs, and then
# forgets it; a wait is interrupted at once, the trap runs, and the
# cleanup stops the command with the rest.
run() {
    "$@" &
    local p=$! rc
    pids+=("$p")
    wait "$p"
    rc=$?
    forget "$p"
    return $rc
}

# Stop the run when a server we started died under us.
alive() { # NAME PID...
    local name=$1
    shift
    for p in "$@"; do kill -0 "$p" 2>/dev/null || die "$name (pid $p) died; see $tmp (BENCH_KEEP=1 keeps it)"; done
}

children() {
    cat /proc/"$1"/task/*/children 2>/dev/null
}

# The process and its children, one pid a line.
tree() {
    echo "$1"
    children "$1" | tr ' ' '\n' | grep -v '^$'
}

# Sum of Pss: over a process tree, in KiB.
pss_kb() {
    local f=()
    for p in $(tree "$1"); do f+=("/proc/$p/smaps_rollup"); done
    awk '/^Pss:/ { s += $2 } END { print s + 0 }' "${f[@]}" 2>/dev/null
}

# CPU time and context switches of a process tree:
#   "UTIME STIME NS CSW"
# utime and stime from /proc/PID/stat (clock ticks), the scheduler's run
# time in ns from /proc/PID/task/*/schedstat, and the voluntary plus
# involuntary context switches of every task from /proc/PID/task/*/status.
cpu_of() {
    local st=() ss=() cs=()
    for p in $(tree "$1"); do
        st+=("/proc/$p/stat")
        ss+=(/proc/"$p"/task/*/schedstat)
        cs+=(/proc/"$p"/task/*/status)
    done
    local ticks ns csw
    ticks=$(awk '{ sub(/^.*\) /, ""); u += $12; s += $13 } END { print u + 0, s + 0 }' "${st[@]}" 2>/dev/null)
    ns=$(awk '{ t += $1 } END { printf "%.0f\n", t }' "${ss[@]}" 2>/dev/null)
    csw=$(awk '/_ctxt_switches:/ { t += $2 } END { print t + 0 }' "${cs[@]}" 2>/dev/null)
    echo "${ticks:-0 0} ${ns:-0} ${csw:-0}"
}

# A TCP port nothing listens on, outside the ephemeral range.
used_ports=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((12000 + RANDOM % 20000))
        case $used_ports in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]; then
            used_ports="$used_ports$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}

wait_port() { # PORT PID: until something accepts on 127.0.0.1:PORT
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ] && return 0
        sleep 0.1
    done
    return 1
}

# --- CPUs: who runs where ----------------------------------------------------

ncpu=$(nproc)
if [ -n "${BENCH_PROXY_CPUS:-}" ]; then
    # Each proxy gets that many workers, the load generator as many threads
    # as there are cores left (at most 8).  With 4 cores or more left over,
    # the proxies get the last N cores to themselves and the mock and the
    # load generator share the others, so that neither takes a proxy's CPU
    # in the middle of a request; with fewer, the scheduler places them.
    [[ $BENCH_PROXY_CPUS =~ ^[1-9][0-9]*$ ]] || die "BENCH_PROXY_CPUS=$BENCH_PROXY_CPUS: a number of workers (1 or more)"
    proxy_n=$BENCH_PROXY_CPUS
    load_n=$((ncpu - proxy_n > 8 ? 8 : (ncpu - proxy_n < 1 ? 1 : ncpu - proxy_n)))
    if [ $((ncpu - proxy_n)) -ge 4 ]; then
        proxy_cpus="$((ncpu - proxy_n))-$((ncpu - 1))" rest_cpus="0-$((ncpu - proxy_n - 1))"
        pin_mock=(taskset -c "$rest_cpus")
        pin_load=(taskset -c "$rest_cpus")
        pin_proxy=(taskset -c "$proxy_cpus")
        cpu_plan="$ncpu CPUs: nginx and aigwd $proxy_n workers each on CPUs $proxy_cpus, mock and load ($load_n threads) on CPUs $rest_cpus"
    else
        pin_mock=() pin_load=() pin_proxy=()
        cpu_plan="$ncpu CPUs, nothing pinned: nginx and aigwd $proxy_n workers each, load $load_n threads"
    fi
elif [ "$ncpu" -gt 2 ]; then
    # The mock gets one core, the load generators one (two on bigger
    # machines), the proxies the rest, and nginx as many workers as aigwd
    # has cores.
    mock_cpus=0
    if [ "$ncpu" -ge 6 ]; then load_cpus=1,2 load_n=2 first=3; else load_cpus=1 load_n=1 first=2; fi
    proxy_cpus="$first-$((ncpu - 1))"
    proxy_n=$((ncpu - first))
    pin_mock=(taskset -c "$mock_cpus")
    pin_load=(taskset -c "$load_cpus")
    pin_proxy=(taskset -c "$proxy_cpus")
    cpu_plan="mock on CPU $mock_cpus, load on CPU $load_cpus, nginx and aigwd on CPUs $proxy_cpus"
else
    load_n=$ncpu proxy_n=$ncpu
    pin_mock=() pin_load=() pin_proxy=()
    cpu_plan="$ncpu CPUs: nothing pinned, mock, load, nginx and aigwd share them"
fi
wrk_threads=$load_n
say "$cpu_plan"

# --- helpers built for this run ----------------------------------------------

# The binaries under test are copied first: a rebuild while the benchmark
# runs (make in another terminal) must not change what is measured halfway,
# and perf needs the file its samples came from.
mkdir -p "$tmp/bin"
for b in aigwd aigwctl aigw-mock; do
    cp "$build/$b" "$tmp/bin/$b" || die "cannot copy $build/$b"
done
build="$tmp/bin"

if [ -n "${BENCH_HELPERS:-}" ]; then
    cp "$BENCH_HELPERS/sse_client" "$BENCH_HELPERS/malloc_count.so" "$tmp/" ||
        die "BENCH_HELPERS=$BENCH_HELPERS lacks sse_client or malloc_count.so"
else
    cc -O2 -g -Wall -Wextra -pthread -o "$tmp/sse_client" "$here/sse_client.c" ||
        die "cannot build sse_client"
    cc -O2 -g -Wall -Wextra -shared -fPIC -o "$tmp/malloc_count.so" "$here/malloc_count.c" ||
        die "cannot build malloc_count.so"
fi

# --- the mock upstream -------------------------------------------------------

"${pin_mock[@]}" "$build/aigw-mock" --port 0 >"$tmp/mock.out" 2>"$tmp/mock.err" &
mock_pid=$!
pids+=("$mock_pid")
for _ in $(seq 50); do
    grep -q '^listening' "$tmp/mock.out" 2>/dev/null && break
    sleep 0.1
done
mock_port=$(sed -n 's/^listening .*:\([0-9]*\)$/\1/p' "$tmp/mock.out")
[ -n "$mock_port" ] || die "aigw-mock did not start: $(cat "$tmp/mock.err")"

# The timestamping upstream for the per-chunk forwarding delay, beside it.
"${pin_mock[@]}" "$tmp/sse_client" tap >"$tmp/tap.out" 2>"$tmp/tap.err" &
tap_pid=$!
pids+=("$tap_pid")
for _ in $(seq 50); do
    grep -q '^listening' "$tmp/tap.out" 2>/dev/null && break
    sleep 0.1
done
tap_port=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$tmp/tap.out")
[ -n "$tap_port" ] || die "the tap upstream did not start: $(cat "$tmp/tap.err")"

# --- nginx -------------------------------------------------------------------

nginx_port=$(free_port) || die "no free port"
mkdir -p "$tmp/nginx-tmp"
sed -e "s|@WORKERS@|$proxy_n|g" -e "s|@TMP@|$tmp|g" -e "s|@MOCK_PORT@|$mock_port|g" \
    -e "s|@TAP_PORT@|$tap_port|g" -e "s|@PORT@|$nginx_port|g" "$here/nginx.conf" >"$tmp/nginx.conf"
"$nginx_bin" -t -q -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf" 2>"$tmp/nginx-t.err" ||
    die "nginx -t failed: $(cat "$tmp/nginx-t.err")"
"${pin_proxy[@]}" "$nginx_bin" -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf" \
    2>>"$tmp/nginx-error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_port "$nginx_port" "$nginx_pid" || die "nginx did not start: $(cat "$tmp/nginx-error.log")"

# --- aigwd ---------------------------------------------------------------------

# gw_config NAME WORKERS MODE PORT: write $tmp/NAME.yaml.  MODE plain: no
# access log; checks: access log to a file and the metrics listener too.
gw_config() {
    local name=$1 workers=$2 mode=$3 port=$4 conns=${5:-1} log metrics="" metrics_port
    # workers.connections: one connection per worker process (1), or an
    # event loop per worker serving that many at once.
    [ "$conns" -gt 1 ] && workers="{ start: $workers, connections: $conns }"
    mkdir -p "$tmp/$name-state"
    if [ "$mode" = checks ]; then
        log="{ level: warn, access: true, access_file: $tmp/$name-access.log }"
        metrics_port=$(free_port)
        printf -v "metrics_port_$name" %s "$metrics_port"
        metrics="metrics: { listen: \"127.0.0.1:$metrics_port\" }"
    else
        log="{ level: warn, access: false }"
    fi
    cat >"$tmp/$name.yaml" <<EOF
listen: "127.0.0.1:$port"
state_dir: $tmp/$name-state
admin: { socket: $tmp/$name.sock, mode: "0600" }
workers: $workers
shutdown_timeout: 5s
log: $log
$metrics
http: { keepalive_timeout: 75s }
providers:
  - { name: mock, type: openai, base_url: "http://127.0.0.1:$mock_port/v1" }
  - { name: tap, type: openai, base_url: "http://127.0.0.1:$tap_port/v1" }
models:
  - name: bench
    targets: [ { provider: mock, model: mock-small } ]
  - name: tap
    targets: [ { provider: tap, model: tap } ]
EOF
    "$build/aigwd" -t -c "$tmp/$name.yaml" >"$tmp/$name-t.err" 2>&1 && return 0
    # The configuration keys move while aigw grows: fall back to the
    # smallest file that has what the benchmark needs.
    say "aigwd -t: $(head -1 "$tmp/$name-t.err"); trying a plainer configuration"
    [ "$mode" = checks ] && log="{ level: warn, access: true }" || log="{ level: warn, access: false }"
    cat >"$tmp/$name.yaml" <<EOF
listen: "127.0.0.1:$port"
state_dir: $tmp/$name-state
admin: { socket: $tmp/$name.sock, mode: "0600" }
workers: $workers
log: $log
providers:
  - { name: mock, type: openai, base_url: "http://127.0.0.1:$mock_port/v1" }
  - { name: tap, type: openai, base_url: "http://127.0.0.1:$tap_port/v1" }
models:
  - name: bench
    targets: [ { provider: mock, model: mock-small } ]
  - name: tap
    targets: [ { provider: tap, model: tap } ]
EOF
    "$build/aigwd" -t -c "$tmp/$name.yaml" >"$tmp/$name-t.err" 2>&1 || {
        say "aigwd -t: $(cat "$tmp/$name-t.err")"
        return 1
    }
}

# Set by gw_start for each instance (plain, checks, prefork, conc, alloc).
# shellcheck disable=SC2034 # read through port_of and key_of
gw_pid_plain='' gw_port_plain='' gw_key_plain=''
gw_pid_prefork='' gw_port_prefork='' gw_key_prefork=''
gw_pid_checks='' gw_port_checks='' gw_key_checks=''
gw_pid_conc='' gw_port_conc='' gw_key_conc=''
gw_pid_alloc='' gw_port_alloc='' gw_key_alloc=''

# gw_start NAME WORKERS MODE [PRELOAD] [CONNS]: start aigwd with WORKERS
# workers of CONNS connections each (default 1), wait for its workers,
# make a key.  Sets gw_pid_NAME, gw_port_NAME, gw_key_NAME.
gw_start() {
    local name=$1 workers=$2 mode=$3 preload=${4:-} conns=${5:-1} port pid key i models=()
    port=$(free_port) || return 1
    gw_config "$name" "$workers" "$mode" "$port" "$conns" || return 1
    # More open files than the workers need, in every process it forks.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null
    if [ -n "$preload" ]; then
        mkdir -p "$tmp/$name-mc"
        MALLOC_COUNT_DIR="$tmp/$name-mc" LD_PRELOAD="$preload" \
            "${pin_proxy[@]}" "$build/aigwd" -c "$tmp/$name.yaml" 2>"$tmp/$name.err" &
    else
        "${pin_proxy[@]}" "$build/aigwd" -c "$tmp/$name.yaml" 2>"$tmp/$name.err" &
    fi
    pid=$!
    pids+=("$pid")
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        if [ "$(children "$pid" | wc -w)" -ge "$workers" ] &&
            "$build/aigwctl" -s "$tmp/$name.sock" status >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    if ! kill -0 "$pid" 2>/dev/null || ! wait_port "$port" "$pid"; then
        say "aigwd ($name) did not start: $(tail -3 "$tmp/$name.err")"
        return 1
    fi
    # The checks instance's key may use the benchmark's model only, so the
    # authorization step has a list to look through.
    [ "$mode" = checks ] && models=(--models "bench,tap")
    key=$("$build/aigwctl" -s "$tmp/$name.sock" key create --name "bench-$name" "${models[@]}" \
        --json 2>>"$tmp/$name.err" | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
    [ -n "$key" ] || {
        say "aigwctl key create failed for $name"
        return 1
    }
    printf -v "gw_pid_$name" %s "$pid"
    printf -v "gw_port_$name" %s "$port"
    printf -v "gw_key_$name" %s "$key"
}

gw_stop() {
    local pid_var="gw_pid_$1"
    tree_stop "${!pid_var}" 15
    forget "${!pid_var}"
}

# --- measuring -----------------------------------------------------------------

# One JSON line into the raw data.
emit() { printf '%s\n' "$1" >>"$raw"; }

cpu_json() { # BEFORE... AFTER... (cpu_of's four numbers each) -> JSON members
    printf '"cpu_utime":%s,"cpu_stime":%s,"cpu_ticks":%s,"cpu_ns":%s,"csw":%s' \
        $(($5 - $1)) $(($6 - $2)) $(($5 + $6 - $1 - $2)) $(($7 - $3)) $(($8 - $4))
}

# wrk_run LABEL PORT KEY CONNS SECONDS PID_FOR_CPU SCENARIO ROUND
wrk_run() {
    local label=$1 port=$2 key=$3 c=$4 d=$5 cpid=$6 scen=$7 round=$8 t=$wrk_threads
    local before after line m0 m1
    [ "$c" -lt "$t" ] && t=$c
    before=$(cpu_of "$cpid")
    m0=$(cpu_of "$mock_pid")
    BENCH_KEY=$key run "${pin_load[@]}" wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s --latency \
        -s "$here/chat.lua" "http://127.0.0.1:$port" >"$tmp/wrk.out" 2>&1
    after=$(cpu_of "$cpid")
    m1=$(cpu_of "$mock_pid")
    line=$(sed -n 's/^BENCH //p' "$tmp/wrk.out")
    if [ -z "$line" ]; then
        say "wrk against $label gave no figures: $(tail -2 "$tmp/wrk.out")"
        return 0
    fi
    set -- $m0 $m1
    emit "{\"kind\":\"rps\",\"scenario\":\"$scen\",\"target\":\"$label\",\"round\":$round,\"conns\":$c,$(cpu_json $before $after),\"mock_cpu_ticks\":$(($5 + $6 - $1 - $2)),\"wrk\":$line}"
}

# fixed_run SCENARIO LABEL PORT KEY RATE SECONDS PID_FOR_CPU ROUND:
# sse_client's open loop, RATE requests a second whatever the answers do,
# after a second of warm-up; recorded as an "rps" run of SCENARIO, its figures in
# the shape of chat.lua's.  cpu_requests: the requests the CPU was spent on
# (the warm-up's too).
fixed_run() {
    local scen=$1 label=$2 port=$3 key=$4 rate=$5 d=$6 cpid=$7 round=$8
    local before after line m0 m1
    before=$(cpu_of "$cpid")
    m0=$(cpu_of "$mock_pid")
    run "${pin_load[@]}" "$tmp/sse_client" rate -p "$port" -k "$key" -n "$conns" -r "$rate" \
        -S "$d" -W 1 >"$tmp/rate.out" 2>"$tmp/rate.err"
    after=$(cpu_of "$cpid")
    m1=$(cpu_of "$mock_pid")
    line=$(grep '^{' "$tmp/rate.out")
    if [ -z "$line" ]; then
        say "sse_client rate against $label gave no figures: $(tail -2 "$tmp/rate.err")"
        return 0
    fi
    set -- $m0 $m1
    emit "{\"kind\":\"rps\",\"scenario\":\"$scen\",\"target\":\"$label\",\"round\":$round,\"conns\":$conns,\"cpu_requests\":$((rate * (d + 1))),$(cpu_json $before $after),\"mock_cpu_ticks\":$(($5 + $6 - $1 - $2)),\"wrk\":$line}"
}

# --- start ---------------------------------------------------------------------

# aigwd as it is deployed for throughput: as many workers as nginx has,
# each an event loop of up to 1024 connections; and, for comparison, the
# pre-fork model (a process per connection, 80 for 64 connections).
gw_start plain "$proxy_n" plain "" 1024 || die "cannot start aigwd (plain)"
gw_start checks "$proxy_n" checks "" 1024 || die "cannot start aigwd (checks)"
gw_start prefork 80 checks || die "cannot start aigwd (prefork)"
hz=$(getconf CLK_TCK)

targets_rps="mock nginx plain checks prefork"
port_of() {
    case $1 in
    mock) echo "$mock_port" ;;
    nginx) echo "$nginx_port" ;;
    *)
        local v="gw_port_$1"
        echo "${!v}"
        ;;
    esac
}
key_of() {
    case $1 in mock | nginx) echo "$gw_key_checks" ;; *)
        local v="gw_key_$1"
        echo "${!v}"
        ;;
    esac
}
pid_of() {
    case $1 in
    mock) echo "$mock_pid" ;;
    nginx) echo "$nginx_pid" ;;
    *)
        local v="gw_pid_$1"
        echo "${!v}"
        ;;
    esac
}

t_start=$(date +%s)

# --- 1 + 2: non-streaming throughput and latency ------------------------------

say "warming up ($warm s each)"
for t in $targets_rps; do
    BENCH_KEY=$(key_of $t) run "${pin_load[@]}" wrk -t"$wrk_threads" -c"$conns" -d"${warm}s" \
        -s "$here/chat.lua" "http://127.0.0.1:$(port_of $t)" >/dev/null 2>&1
done

# Records a worker stored itself because the ring was full (aigwd(8),
# Usage records): each such write stalls that worker's event loop.
written_through() {
    local port_var="metrics_port_$1"
    [ -n "${!port_var:-}" ] && command -v curl >/dev/null || {
        echo null
        return
    }
    curl -s "http://127.0.0.1:${!port_var}/metrics" |
        sed -n 's/^aigw_usage_records_written_through_total \([0-9]*\)$/\1/p' | grep . || echo null
}
fixed_rate=${BENCH_RATE:-}
light_rate=${BENCH_LIGHT_RATE:-}
usage_before=$("$build/aigwctl" -s "$tmp/checks.sock" usage --json 2>/dev/null | tr -d '\n ')
through_before=$(written_through checks)
for ((r = 1; r <= rounds; r++)); do
    alive "a server" "$mock_pid" "$nginx_pid" "$gw_pid_plain" "$gw_pid_checks" "$gw_pid_prefork"
    say "round $r/$rounds: chat completions, $conns connections ${dur64}s, 1 connection ${dur1}s, two fixed loads ${dur_fixed}s"
    for t in $targets_rps; do
        wrk_run "$t" "$(port_of $t)" "$(key_of $t)" "$conns" "$dur64" "$(pid_of $t)" load "$r"
    done
    for t in $targets_rps; do
        wrk_run "$t" "$(port_of $t)" "$(key_of $t)" 1 "$dur1" "$(pid_of $t)" serial "$r"
    done
    # Latency at loads every target carries with room to spare: a quarter
    # and a sixteenth of what nginx did flat out in the first round
    # (BENCH_RATE and BENCH_LIGHT_RATE to choose), the same offered load
    # for the mock, nginx and aigwd alike.  Flat out, latency is queueing:
    # 64 connections over the throughput.
    if [ -z "$fixed_rate" ] || [ -z "$light_rate" ]; then
        top_rps=$(sed -n 's/.*"scenario":"load","target":"nginx","round":1,.*"rps":\([0-9]*\).*/\1/p' "$raw" |
            head -1)
        top_rps=${top_rps:-4000}
        if [ -z "$fixed_rate" ]; then
            fixed_rate=$(((top_rps / 4 + 500) / 1000 * 1000))
            [ "$fixed_rate" -ge 1000 ] || fixed_rate=1000
        fi
        if [ -z "$light_rate" ]; then
            light_rate=$(((top_rps / 16 + 250) / 500 * 500))
            [ "$light_rate" -ge 500 ] || light_rate=500
        fi
        say "fixed loads: $fixed_rate and $light_rate requests a second"
    fi
    for t in mock nginx plain checks; do
        fixed_run fixed "$t" "$(port_of $t)" "$(key_of $t)" "$fixed_rate" "$dur_fixed" "$(pid_of $t)" "$r"
    done
    for t in mock nginx plain checks; do
        fixed_run light "$t" "$(port_of $t)" "$(key_of $t)" "$light_rate" "$dur_fixed" "$(pid_of $t)" "$r"
    done
done
# The same with a large prompt (BENCH_PROMPT_KB), fewer connections: what
# a body costs that the gateway parses and writes out again.
for ((r = 1; r <= rounds && r <= 3; r++)); do
    say "round $r: chat completions with a ${big_kb} KiB prompt, $big_conns connections ${dur1}s"
    for t in mock nginx checks; do
        BENCH_PROMPT_KB=$big_kb wrk_run "$t" "$(port_of $t)" "$(key_of $t)" "$big_conns" "$dur1" \
            "$(pid_of $t)" large "$r"
    done
done
sleep 1.5 # the master drains the usage ring
usage_after=$("$build/aigwctl" -s "$tmp/checks.sock" usage --json 2>/dev/null | tr -d '\n ')
through_after=$(written_through checks)
emit "{\"kind\":\"usage\",\"before\":${usage_before:-null},\"after\":${usage_after:-null},\"through\":[$through_before,$through_after]}"

# --- 3: streaming ----------------------------------------------------------------

# Streams from the mock (time to first byte, gaps, batching), then from the
# tap (each event stamped when written: the exact forwarding delay).
stream_args() { # TARGET UPSTREAM -> sse_client arguments for that path
    local t=$1 up=$2
    case $t/$up in
    mock/mock) echo "-p $mock_port" ;;
    mock/tap) echo "-p $tap_port" ;;
    nginx/mock) echo "-p $nginx_port" ;;
    nginx/tap) echo "-p $nginx_port -P /tap/v1/chat/completions" ;;
    */mock) echo "-p $(port_of $t) -k $(key_of $t)" ;;
    */tap) echo "-p $(port_of $t) -k $(key_of $t) -m tap" ;;
    esac
}
for ((r = 1; r <= rounds && r <= 3; r++)); do
    alive "a server" "$mock_pid" "$tap_pid" "$nginx_pid" "$gw_pid_checks"
    say "round $r: streaming, $stream_n + $tap_n streams of $stream_chunks chunks ${stream_delay} ms apart"
    for up in mock tap; do
        [ "$up" = mock ] && n=$stream_n || n=$tap_n
        for t in mock nginx checks; do
            # shellcheck disable=SC2046
            run "${pin_load[@]}" "$tmp/sse_client" stream $(stream_args $t $up) \
                -c "$stream_chunks" -d "$stream_delay" -n "$n" >"$tmp/stream.out" 2>"$tmp/stream.err" ||
                say "sse_client against $t ($up): $(cat "$tmp/stream.err")"
            while IFS= read -r line; do
                emit "{\"kind\":\"stream\",\"upstream\":\"$up\",\"target\":\"$t\",\"round\":$r,\"s\":$line}"
            done <"$tmp/stream.out"
        done
    done
done

# --- optional: a perf profile of aigwd under load -------------------------------

if [ "${BENCH_PERF:-0}" = 1 ] && command -v perf >/dev/null 2>&1; then
    say "perf: profiling aigwd (all checks) under load, 64 connections"
    wpids=$(tree "$gw_pid_checks" | paste -sd, -)
    perf record -q -F 499 --call-graph dwarf,16384 -o "$tmp/perf.data" -p "$wpids" -- sleep 4 \
        >/dev/null 2>&1 &
    perf_pid=$!
    pids+=("$perf_pid")
    sleep 0.3
    BENCH_KEY=$gw_key_checks run "${pin_load[@]}" wrk -t"$wrk_threads" -c"$conns" -d5s \
        -s "$here/chat.lua" "http://127.0.0.1:$gw_port_checks" >/dev/null 2>&1
    wait "$perf_pid"
    forget "$perf_pid"
    {
        echo "== by shared object (self)"
        perf report -i "$tmp/perf.data" --no-children --sort dso -g none --stdio 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo "== by symbol (self, >= 0.5%)"
        perf report -i "$tmp/perf.data" --no-children --sort dso,sym -g none --percent-limit 0.5 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$'
        echo "== by symbol, callees included (>= 1.5%)"
        perf report -i "$tmp/perf.data" --children --sort sym -g none --percent-limit 1.5 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$'
    } >"$outdir/perf-$stamp.txt"
    say "perf report: $outdir/perf-$stamp.txt"
fi

gw_stop plain
gw_stop checks
gw_stop prefork

# --- 4: concurrency ----------------------------------------------------------------

# conc_run LABEL PORT KEY N PID: N streams at once; PSS of PID's tree sampled
# every half second while they run, the largest kept.
conc_run() {
    local label=$1 port=$2 key=$3 n=$4 cpid=$5 extra=${6:-} idle peak=0 cur samples=0 cp
    idle=$(pss_kb "$cpid")
    "${pin_load[@]}" "$tmp/sse_client" conc -p "$port" -k "$key" -c "$conc_chunks" \
        -d "$conc_delay" -n "$n" -T "$conc_timeout" >"$tmp/conc.out" 2>"$tmp/conc.err" &
    cp=$!
    pids+=("$cp")
    sleep 0.5
    while kill -0 "$cp" 2>/dev/null; do
        cur=$(pss_kb "$cpid")
        samples=$((samples + 1))
        [ "${cur:-0}" -gt "$peak" ] && peak=$cur
        sleep 0.5
    done
    wait "$cp"
    forget "$cp"
    local res
    res=$(cat "$tmp/conc.out")
    [ -n "$res" ] || res=null
    emit "{\"kind\":\"conc\",\"target\":\"$label\",\"n\":$n,\"pss_idle_kb\":${idle:-0},\"pss_peak_kb\":$peak,\"samples\":$samples$extra,\"r\":$res}"
}

for n in $conc_ns; do
    alive "a server" "$mock_pid" "$nginx_pid"
    say "concurrency: $n streams at once ($conc_chunks chunks ${conc_delay} ms apart)"
    conc_run mock "$mock_port" none "$n" "$mock_pid"
    sleep 1
    conc_run nginx "$nginx_port" none "$n" "$nginx_pid"
    sleep 1
    # aigwd as nginx runs: a worker per CPU, each with room for all the
    # streams (the kernel spreads the connections over them).
    if gw_start conc "$proxy_n" plain "" "$n"; then
        conc_run aigw "$gw_port_conc" "$gw_key_conc" "$n" "$gw_pid_conc" ",\"workers\":$proxy_n,\"connections\":$n"
        gw_stop conc
        rm -rf "$tmp/conc-state"
    fi
    sleep 1
    # The pre-fork model sized for the load: a worker per stream, up to
    # the maximum.
    w=$n
    [ "$w" -gt "$max_workers" ] && w=$max_workers
    if gw_start conc "$w" plain; then
        conc_run aigw-prefork "$gw_port_conc" "$gw_key_conc" "$n" "$gw_pid_conc" ",\"workers\":$w,\"connections\":1"
        gw_stop conc
        rm -rf "$tmp/conc-state"
    fi
    sleep 1
done

# --- 5: cost per request: allocations and system calls ----------------------------

# Sum of the malloc_count files of a process tree: "MALLOCS REALLOCS FREES BYTES".
alloc_of() {
    local f=()
    for p in $(tree "$1"); do
        [ -f "$tmp/$2-mc/$p.cnt" ] && f+=("$tmp/$2-mc/$p.cnt")
    done
    [ ${#f[@]} -gt 0 ] || {
        echo "0 0 0 0"
        return
    }
    for x in "${f[@]}"; do od -An -t u8 -N 48 "$x"; done | tr -s ' \n' '  ' |
        awk '{ for (i = 1; i <= NF; i += 6) { m += $(i+2); r += $(i+3); f += $(i+4); b += $(i+5) } }
             END { printf "%.0f %.0f %.0f %.0f\n", m, r, f, b }'
}

# System calls of the workers of a tree while CMD runs, counted by perf's
# raw_syscalls:sys_enter tracepoint where perf can record it, else by
# strace -c.  strace stops the process at every call, tens of microseconds
# each: a worker then finds a serial client's next request whenever it
# looks, which it does not at its own speed (tests/bench/README.md,
# thirteenth pass).  The tracepoint costs far less.
sc_counter=none
if command -v perf >/dev/null 2>&1 && command -v cc >/dev/null 2>&1 &&
    perf stat -e raw_syscalls:sys_enter -o /dev/null -- true >/dev/null 2>&1 &&
    printf '#include <sys/syscall.h>\n' | cc -E -dM - 2>/dev/null |
    awk '$1 == "#define" && $2 ~ /^__NR_/ && $3 ~ /^[0-9]+$/ { print $3, substr($2, 6) }' \
        >"$tmp/syscall-names" && [ -s "$tmp/syscall-names" ]; then
    sc_counter=perf
elif command -v strace >/dev/null 2>&1; then
    sc_counter=strace
fi
syscalls_during() { # FILE ROOT_PID CMD...: the counts in FILE, "NAME N" a line
    local file=$1 root=$2 sp args=() pl
    shift 2
    if [ "$sc_counter" = none ]; then
        run "$@"
        return
    fi
    if [ "$sc_counter" = perf ]; then
        pl=$(children "$root" | tr -s ' \n' ',')
        pl=${pl#,}
        perf record -q -e raw_syscalls:sys_enter -p "${pl%,}" -o "$file.data" 2>/dev/null &
    else
        for p in $(children "$root"); do args+=(-p "$p"); done
        strace -c -f -q -o "$file.strace" "${args[@]}" 2>/dev/null &
    fi
    sp=$!
    pids+=("$sp")
    sleep 0.5
    run "$@"
    sleep 0.2
    kill -INT "$sp" 2>/dev/null
    wait "$sp" 2>/dev/null
    forget "$sp"
    if [ "$sc_counter" = perf ]; then
        perf script -i "$file.data" -F trace 2>/dev/null | sed -n 's/.*NR \([0-9]*\).*/\1/p' |
            sort | uniq -c | awk 'NR == FNR { name[$1] = $2; next }
                                  { print ($2 in name ? name[$2] : "nr" $2), $1 }' \
            "$tmp/syscall-names" - >"$file"
    else
        awk '/^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ && $NF != "total" { print $NF, $4 }' \
            "$file.strace" >"$file" 2>/dev/null
    fi
}

# "NAME N" lines -> {"total":N,"calls":{"name":n,...}}
syscalls_json() {
    [ -s "$1" ] || {
        echo null
        return
    }
    awk 'BEGIN { printf "{\"calls\":{" }
         { printf "%s\"%s\":%d", sep, $1, $2; sep = ","; total += $2 }
         END { printf "},\"total\":%d}\n", total }' "$1"
}

say "cost: allocations and system calls per request"
# One worker: every run lands on the same process.  With two, a run that
# landed on the worker that had served nothing yet carried that worker's
# first-connection allocations (about 350, the same in every build) and
# showed them as 0.66-0.70 allocations more per stream event.
if gw_start alloc 1 checks "$tmp/malloc_count.so" 64; then
    sleep 0.5
    # Allocations: a serial run of chat completions (counted by wrk), then
    # streams of 50 and of 5 chunks (the difference is what each event costs),
    # after one stream of each kind so that first-use costs are not counted.
    run "${pin_load[@]}" "$tmp/sse_client" stream -p "$gw_port_alloc" -k "$gw_key_alloc" \
        -c 5 -d 1 -n 2 >/dev/null 2>&1
    a0=$(alloc_of "$gw_pid_alloc" alloc)
    BENCH_KEY=$gw_key_alloc run "${pin_load[@]}" wrk -t1 -c1 -d"${alloc_dur}s" \
        -s "$here/chat.lua" "http://127.0.0.1:$gw_port_alloc" >"$tmp/wrk-alloc.out" 2>&1
    a1=$(alloc_of "$gw_pid_alloc" alloc)
    nreq=$(sed -n 's/^BENCH {"requests":\([0-9]*\).*/\1/p' "$tmp/wrk-alloc.out")
    run "${pin_load[@]}" "$tmp/sse_client" stream -p "$gw_port_alloc" -k "$gw_key_alloc" \
        -c "$stream_chunks" -d 1 -n "$alloc_streams" >/dev/null 2>&1
    a2=$(alloc_of "$gw_pid_alloc" alloc)
    run "${pin_load[@]}" "$tmp/sse_client" stream -p "$gw_port_alloc" -k "$gw_key_alloc" \
        -c 5 -d 1 -n "$alloc_streams" >/dev/null 2>&1
    a3=$(alloc_of "$gw_pid_alloc" alloc)
    emit "{\"kind\":\"alloc\",\"requests\":${nreq:-0},\"streams\":$((alloc_streams + 1)),\"chunks\":[$stream_chunks,5],\"a0\":[${a0// /,}],\"a1\":[${a1// /,}],\"a2\":[${a2// /,}],\"a3\":[${a3// /,}]}"

    # System calls: the same, counted in the workers (syscalls_during); and
    # the same streams through nginx.  A stream is the warm-up plus n-1.
    sc_json=""
    for t in alloc nginx; do
        if [ "$t" = alloc ]; then
            root=$gw_pid_alloc port=$gw_port_alloc key=$gw_key_alloc name=aigw
        else
            root=$nginx_pid port=$nginx_port key=none name=nginx
        fi
        syscalls_during "$tmp/syscalls-$name-chat.txt" "$root" \
            env BENCH_KEY="$key" "${pin_load[@]}" wrk -t1 -c1 -d2s \
            -s "$here/chat.lua" "http://127.0.0.1:$port" >"$tmp/wrk-syscalls.out" 2>&1
        sc_n=$(sed -n 's/^BENCH {"requests":\([0-9]*\).*/\1/p' "$tmp/wrk-syscalls.out")
        for c in "$stream_chunks" 5; do
            syscalls_during "$tmp/syscalls-$name-s$c.txt" "$root" \
                "${pin_load[@]}" "$tmp/sse_client" stream -p "$port" -k "$key" \
                -c "$c" -d 1 -n "$((alloc_streams - 1))" >/dev/null 2>&1
        done
        sc_json="$sc_json,\"$name\":{\"chat_requests\":${sc_n:-0},\"chat\":$(syscalls_json "$tmp/syscalls-$name-chat.txt"),\"long\":$(syscalls_json "$tmp/syscalls-$name-s$stream_chunks.txt"),\"short\":$(syscalls_json "$tmp/syscalls-$name-s5.txt")}"
    done
    emit "{\"kind\":\"syscalls\",\"counter\":\"$sc_counter\",\"streams\":$alloc_streams,\"chunks\":[$stream_chunks,5]$sc_json}"
    gw_stop alloc
fi

# --- report ----------------------------------------------------------------------

t_end=$(date +%s)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
cat >"$tmp/meta.json" <<EOF
{"time":"$stamp","quick":$([ "$quick" = 1 ] && echo true || echo false),"rounds":$rounds,
 "seconds":$((t_end - t_start)),"nproc":$ncpu,"cpu_model":"$cpu_model","mem_kb":${mem_kb:-0},
 "kernel":"$(uname -r)","hz":$hz,"cpu_plan":"$cpu_plan","nginx":"$("$nginx_bin" -v 2>&1 | sed 's/.*: //')",
 "wrk_threads":$wrk_threads,"conns":$conns,"big_kb":$big_kb,"big_conns":$big_conns,"dur64_s":$dur64,"dur1_s":$dur1,
 "fixed":{"rps":${fixed_rate:-null},"seconds":$dur_fixed},"light":{"rps":${light_rate:-null},"seconds":$dur_fixed},
 "stream":{"n":$stream_n,"tap_n":$tap_n,"chunks":$stream_chunks,"delay_ms":$stream_delay},
 "conc":{"chunks":$conc_chunks,"delay_ms":$conc_delay,"timeout_s":$conc_timeout},
 "commit":"$(git -C "$top" rev-parse --short HEAD 2>/dev/null)$(git -C "$top" diff --quiet 2>/dev/null || echo +dirty)"}
EOF
if [ "$have_node" = 0 ]; then
    cp "$tmp/meta.json" "$outdir/meta-$stamp.json"
    cp "$raw" "$outdir/raw-$stamp.jsonl"
    say "no node here: raw figures in $outdir/raw-$stamp.jsonl and $outdir/meta-$stamp.json"
    say "report them with: node tests/bench/report.mjs META RAW OUT.json"
elif node "$here/report.mjs" "$tmp/meta.json" "$raw" "$outdir/results-$stamp.json"; then
    cp "$outdir/results-$stamp.json" "$outdir/latest.json"
    say "wrote $outdir/results-$stamp.json and $outdir/latest.json"
else
    say "report failed; raw figures in $raw"
    BENCH_KEEP=1
fi
exit 0
