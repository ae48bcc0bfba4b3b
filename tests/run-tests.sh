#!/bin/sh
# run-tests.sh BUILD_DIR [FUZZ_BUILD] - run every unit test, the fuzz
# targets of FUZZ_BUILD (if given) over their stored inputs, then the
# integration tests against the binaries in BUILD_DIR, twice: with one
# connection per worker and with workers.connections 16.  Ends with one
# line naming every part that failed (or saying that all passed); exits
# non-zero if anything failed.
set -u
build=${1:-build}
fuzzbuild=${2:-}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
failed=0
# What failed, named again at the very end: a unit test's failure must not
# scroll away above two integration runs' summaries.
failures=""
fail() {
    failed=1
    failures="$failures
  $1"
}

echo "== unit tests ($build)"
for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    "$t" || fail "unit: $t"
done

if [ -n "$fuzzbuild" ]; then
    echo "== fuzz targets over their stored inputs ($fuzzbuild)"
    tests/fuzz/run.sh check "$fuzzbuild" || fail "fuzz: stored inputs"
fi

echo "== man pages"
if make --no-print-directory -s man-lint; then
    echo "mandoc -T lint: clean (style notes too), no quote left open"
else
    fail "man pages (make man-lint)"
fi

echo "== integration tests ($build)"
cd tests/integration || exit 1
if [ ! -d node_modules/openai ]; then
    npm ci --no-audit --no-fund --loglevel=error || exit 1
fi
# One file at a time: each starts its own gateways.  --test-concurrency
# exists from Node 20.10; Debian 12's Node 18 runs files one by one anyway.
conc=""
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=10)?0:1)' &&
    conc="--test-concurrency=1"
AIGW_BUILD="$top/$build" node --test $conc ./*.test.mjs || fail "integration tests"

# Once more with every gateway's workers serving 16 connections at once
# (workers.connections; see lib/harness.mjs), where the tests do not pin
# it: the same behaviour is expected of both process models.  Every wait
# on a client's or an upstream's socket then goes through the workers'
# park set (AIGW_PARK_FROM=1, aigwd(8)), which by default only a worker
# with 8 connections or requests in progress uses.
echo "== integration tests ($build), workers.connections 16"
AIGW_PARK_FROM=1 AIGW_TEST_CONNECTIONS=16 AIGW_BUILD="$top/$build" node --test $conc ./*.test.mjs ||
    fail "integration tests, workers.connections 16"

echo "=="
if [ $failed -ne 0 ]; then
    echo "FAILED:$failures"
else
    echo "all tests passed ($build)"
fi
exit $failed
