#!/bin/sh
# run-dev.sh BUILD_DIR - `make run`: the mock upstream and aigwd on
# etc/aigw.dev.yaml, a demo key made on first start, both stopped by Ctrl-C.
set -eu
build=${1:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
mkdir -p run
chmod 700 run
sock=run/aigw.sock

"$build"/aigw-mock --port 9090 >/dev/null &
mock=$!
"$build"/aigwd -c etc/aigw.dev.yaml -p run/aigwd.pid &
gw=$!

stop() {
    trap - INT TERM EXIT
    kill -TERM "$gw" "$mock" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
    wait "$mock" 2>/dev/null || true
    echo "stopped"
}
trap stop INT TERM EXIT

i=0
until "$build"/aigwctl -s "$sock" status >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 50 ] || ! kill -0 "$gw" 2>/dev/null; then
        echo "aigwd did not start; see the messages above" >&2
        exit 1
    fi
    sleep 0.1
done

# The demo key is shown once by aigwctl; for this development setup only
# it is also kept in run/state/demo-key (mode 0600) so every `make run` shows it.
if [ ! -s run/state/demo-key ]; then
    umask 077
    "$build"/aigwctl -s "$sock" key create --name demo --json |
        sed -n 's/.*"key": *"\([^"]*\)".*/\1/p' > run/state/demo-key
fi
key=$(cat run/state/demo-key)
cat <<MSG

aigw is running on http://127.0.0.1:8080 (mock upstream on 127.0.0.1:9090).
Demo API key: $key

  curl http://127.0.0.1:8080/v1/chat/completions \\
    -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
    -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello"}]}'

  $build/aigwctl -s $sock key list

Press Ctrl-C to stop.
MSG
wait "$gw"
