#!/bin/sh
# run.sh check|fuzz FUZZ_BUILD [SECONDS [NAME...]] - the fuzz targets of
# tests/fuzz/, all of them or those named.
#
#   check: run each target over its stored corpus, tests/fuzz/corpus/NAME/
#          (the seeds, and every input that once found a bug); fails when
#          any input crashes or breaks a promise.  Part of `make test`.
#   fuzz:  search for SECONDS (default 60) a target, starting from the
#          stored corpus; new inputs go to FUZZ_BUILD/corpus/NAME/, an
#          input that fails to FUZZ_BUILD/crash/NAME/.  Move one that
#          found a bug into tests/fuzz/corpus/NAME/ with its fix.
set -u
mode=${1:?check or fuzz}
build=${2:?the fuzz build directory}
seconds=${3:-60}
shift $(($# < 3 ? $# : 3))
only=" $* "
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
failed=""
for bin in "$build"/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=${bin##*/fuzz_}
    [ "$only" = "  " ] || case $only in *" $name "*) ;; *) continue ;; esac
    corpus="tests/fuzz/corpus/$name"
    [ -d "$corpus" ] || { echo "fuzz: $name has no corpus ($corpus)"; failed="$failed $name"; continue; }
    # Leaks are found by the asan build's run of the whole suite; here a
    # parser's every exit is not worth libFuzzer's leak check per input.
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
    case $mode in
    check)
        n=$(find "$corpus" -type f | wc -l)
        if "$bin" -runs=0 -artifact_prefix="$build/fuzz/$name-" "$corpus" \
            >"$build/fuzz/$name.log" 2>&1; then
            echo "fuzz: $name: $n stored inputs, no failure"
        else
            echo "fuzz: $name FAILED on its stored inputs:"
            tail -n 40 "$build/fuzz/$name.log"
            failed="$failed $name"
        fi
        ;;
    fuzz)
        mkdir -p "$build/corpus/$name" "$build/crash/$name"
        echo "fuzz: $name for ${seconds}s"
        if ! "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$build/crash/$name/" "$build/corpus/$name" "$corpus" \
            >"$build/fuzz/$name.log" 2>&1; then
            tail -n 40 "$build/fuzz/$name.log"
            failed="$failed $name"
        fi
        grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ *DONE' "$build/fuzz/$name.log"
        ;;
    *)
        echo "usage: run.sh check|fuzz FUZZ_BUILD [SECONDS]" >&2
        exit 2
        ;;
    esac
done
if [ -n "$failed" ]; then
    echo "fuzz: FAILED:$failed"
    exit 1
fi
