#!/bin/sh
# deps.sh GROUP... - install the Debian packages a group needs, only those
# that are missing.  Groups: build, test, bench.  Needs root (or sudo) only
# when something is actually missing.
set -eu

pkgs_build="make gcc pkg-config libcurl4-openssl-dev libjson-c-dev liblmdb-dev libyaml-dev
libssl-dev libsystemd-dev node-llhttp libxlsxwriter-dev libpcre2-dev zlib1g-dev libst-dev"
pkgs_test="libcmocka-dev mandoc nodejs npm curl systemd util-linux unzip clang libclang-rt-14-dev"
pkgs_bench="nginx wrk strace linux-perf"

want=""
for group in "$@"; do
    eval "want=\"\$want \$pkgs_$group\""
done

missing=""
for p in $want; do
    # npm ships with nodesource's nodejs; do not pull Debian's over it.
    if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
    if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
