#!/bin/sh
# cache_cost.sh - what the response cache and request capture cost on the
# hot path: requests/s and latency of one aigwd (4 workers) in front of
# aigw-mock, for the same small chat completion on models that differ only
# in their cache and capture settings, run by run, interleaved over rounds.
#
#   tests/bench/cache_cost.sh [build]    (BENCH_ROUNDS=3, BENCH_SECONDS=4, BENCH_CONNS=8)
#
# Scenarios: plain (no cache, no capture); cache miss (every request
# different: lookup, miss, store); cache hit (the same request: no upstream
# call); capture (a JSON line per request to a file); and, streamed with 16
# chunks, plain against capture (the stream put back together).
set -eu
BUILD=${1:-build}
ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-4}
CONNS=${BENCH_CONNS:-8}
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(mktemp -d /tmp/aigw-cache-bench-XXXXXX)
MOCK_PID=
GW_PID=
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

"$BUILD/aigw-mock" --port 0 >"$DIR/mock.out" 2>/dev/null &
MOCK_PID=$!
for _ in $(seq 50); do grep -q listening "$DIR/mock.out" && break; sleep 0.1; done
MOCK_PORT=$(sed -n 's/^listening 127.0.0.1:\([0-9]*\).*/\1/p' "$DIR/mock.out")
PORT=$((20000 + $$ % 20000))
cat >"$DIR/aigw.yaml" <<YAML
listen: ["127.0.0.1:$PORT"]
state_dir: $DIR/state
admin: { socket: $DIR/aigw.sock }
workers: 4
log: { level: warn, access: false }
cache: { max_size: 256m }
capture: { dir: $DIR/capture }
providers:
  - { name: local, type: openai, base_url: "http://127.0.0.1:$MOCK_PORT/v1" }
models:
  - { name: plain, targets: [ { provider: local, model: mock-small } ] }
  - { name: cached, cache: { ttl: 1h }, targets: [ { provider: local, model: mock-small } ] }
  - { name: captured, capture: true, targets: [ { provider: local, model: mock-small } ] }
YAML
"$BUILD/aigwd" -c "$DIR/aigw.yaml" 2>"$DIR/aigwd.log" &
GW_PID=$!
for _ in $(seq 100); do "$BUILD/aigwctl" -s "$DIR/aigw.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
KEY=$("$BUILD/aigwctl" -s "$DIR/aigw.sock" key create --name bench --json | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')

run() { # name model unique stream
    BENCH_KEY=$KEY BENCH_MODEL=$2 BENCH_UNIQUE=$3 BENCH_STREAM=$4 \
        wrk -t2 -c"$CONNS" -d"${SECS}s" -H "x-mock-chunks: 16" -s "$HERE/cache.lua" \
        "http://127.0.0.1:$PORT" 2>/dev/null | sed -n "s/^BENCH /$1 /p" >>"$DIR/results"
}
: >"$DIR/results"
run warmup plain 0 0
: >"$DIR/results"
for r in $(seq "$ROUNDS"); do
    run plain plain 0 0
    run cache_miss cached 1 0
    run cache_hit cached 0 0
    run capture captured 0 0
    run stream_plain plain 0 1
    run stream_capture captured 0 1
done
# median of the rounds per scenario
printf '%-16s %10s %10s %10s %8s\n' scenario req/s p50_us p99_us errors
for s in plain cache_miss cache_hit capture stream_plain stream_capture; do
    grep "^$s " "$DIR/results" | sort -k2 -n | awk -v s="$s" '
        { rps[NR]=$2; p50[NR]=$3; p99[NR]=$4; err+=$5 }
        END { m=int((NR+1)/2); printf "%-16s %10.0f %10d %10d %8d\n", s, rps[m], p50[m], p99[m], err }'
done
echo "capture files: $(du -sh "$DIR/capture" | cut -f1), cache entries: $("$BUILD/aigwctl" -s "$DIR/aigw.sock" cache stats --json | sed -n 's/^  "entries": \([0-9]*\).*/\1/p')"
