#!/bin/bash
# kit.sh BUILD_DIR KIT_DIR - gather what the benchmark needs into KIT_DIR,
# for a machine of the same architecture that has none of it installed and
# no package archive to install it from (the 16-core machine of the fifth
# pass in tests/bench/README.md):
#
#   KIT_DIR/aigw/     aigwd, aigwctl, aigw-mock from BUILD_DIR
#   KIT_DIR/bin/      nginx, wrk, ss, and strace and perf where installed
#   KIT_DIR/lib/      every shared library those use, except glibc's own
#   KIT_DIR/helpers/  sse_client and malloc_count.so, built here
#
# There, from a checkout of the same commit:
#
#   export PATH=$KIT/bin:$PATH LD_LIBRARY_PATH=$KIT/lib
#   mkdir -p build && cp $KIT/aigw/* build/
#   BENCH_HELPERS=$KIT/helpers BENCH_PROXY_CPUS=2 tests/bench/run.sh build
#
# and, back here, node tests/bench/report.mjs META RAW OUT.json on the raw
# figures it kept (it needs no node there).  The target's glibc must be at
# least as new as this machine's.
set -eu

build=${1:?usage: kit.sh BUILD_DIR KIT_DIR}
kit=${2:?usage: kit.sh BUILD_DIR KIT_DIR}
here=$(cd "$(dirname "$0")" && pwd)

die() {
    echo "kit.sh: $*" >&2
    exit 1
}

mkdir -p "$kit/aigw" "$kit/bin" "$kit/lib" "$kit/helpers"
bins=()
for b in aigwd aigwctl aigw-mock; do
    [ -x "$build/$b" ] || die "$build/$b is missing: run make first"
    cp "$build/$b" "$kit/aigw/"
    bins+=("$build/$b")
done
for t in nginx wrk ss strace perf; do
    p=$(PATH=$PATH:/usr/sbin:/sbin command -v "$t" || true)
    case $t in strace | perf) [ -n "$p" ] || continue ;; esac
    [ -n "$p" ] || die "$t is not installed (tests/deps.sh build test bench)"
    cp "$p" "$kit/bin/"
    bins+=("$p")
done
# Every library the programs load, but the C library's own (the target's
# must be used: they go with its dynamic loader).
ldd "${bins[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv)\.so|/ld-linux' |
    while read -r lib; do cp -L "$lib" "$kit/lib/"; done
cc -O2 -g -Wall -Wextra -pthread -o "$kit/helpers/sse_client" "$here/sse_client.c"
cc -O2 -g -Wall -Wextra -shared -fPIC -o "$kit/helpers/malloc_count.so" "$here/malloc_count.c"
echo "kit.sh: $(du -sh "$kit" | cut -f1) in $kit"
