#!/usr/bin/env bash
# The browser's figures (issue 14; docs/BENCHMARKS.md "The browser"): starts a release
# missive-server (plaintext, WebSocket and the page on one loopback port, fresh data) and a
# headless Chromium (Debian's /usr/bin/chromium, or $MISSIVE_CHROMIUM; its own process group
# and profile), then runs scripts/bench-web.mjs against them, which prints the markdown table.
# Needs: cargo, node, web/node_modules (npm ci in web/), chromium, gzip.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/missive-web-bench}
CHROMIUM=${MISSIVE_CHROMIUM:-/usr/bin/chromium}
WS_PORT=${WS_PORT:-17889}; TCP_PORT=${TCP_PORT:-17888}

rm -rf "$WORK"; mkdir -p "$WORK/data" "$WORK/profile"
(cd "$ROOT" && cargo build --release -q --locked -p missive-cli --bin missive-server)
MS="$ROOT/target/release/missive-server"

SERVER_PID=""; CHROMIUM_PID=""
finish() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$CHROMIUM_PID" ]; then
    # The whole process group, then the crash handlers that left it (they name the profile).
    kill -KILL -- "-$CHROMIUM_PID" 2>/dev/null || true
    wait "$CHROMIUM_PID" 2>/dev/null || true
    for p in /proc/[0-9]*; do
      [ "${p#/proc/}" = "$$" ] || ! grep -qsF "$WORK/profile" "$p/cmdline" || kill -KILL "${p#/proc/}" 2>/dev/null || true
    done
  fi
}
trap finish EXIT

"$MS" --plaintext --listen "127.0.0.1:$TCP_PORT" --ws-listen "127.0.0.1:$WS_PORT" --data "$WORK/data" \
  >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
HOME="$WORK/profile" setsid "$CHROMIUM" --headless --no-sandbox --disable-gpu \
  --disable-background-networking --disable-component-update --disable-sync --no-first-run \
  --remote-debugging-port=0 --user-data-dir="$WORK/profile" about:blank \
  </dev/null >/dev/null 2>"$WORK/chromium.log" &
CHROMIUM_PID=$!

CDP=""
for _ in $(seq 300); do
  CDP=$(grep -o 'ws://127.0.0.1:[0-9]*/devtools/browser/[^ ]*' "$WORK/chromium.log" | head -n 1 || true)
  if [ -n "$CDP" ] && grep -q "127.0.0.1:$WS_PORT" "$WORK/server.out" 2>/dev/null; then break; fi
  sleep 0.1
done
[ -n "$CDP" ] || { echo "Chromium printed no DevTools URL:" >&2; tail -n 20 "$WORK/chromium.log" >&2; exit 1; }
grep -q "127.0.0.1:$WS_PORT" "$WORK/server.out" || { echo "missive-server is not listening:" >&2; cat "$WORK/server.log" >&2; exit 1; }

echo "# $(date -u +%FT%TZ) nproc=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) kernel=$(uname -r)"
echo "# $("$CHROMIUM" --version 2>/dev/null | head -n 1); node $(node --version); loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
MISSIVE_CDP="$CDP" MISSIVE_URL="http://127.0.0.1:$WS_PORT/" node "$ROOT/scripts/bench-web.mjs"
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
