#!/usr/bin/env bash
# End-to-end load: missive-server (durable redb store and --memory) vs mosquitto (QoS 1) and
# peer-bench's raw relay, same scenarios, one sitting, runs interleaved, fresh server per run.
# Needs: `apt-get install -y mosquitto`, cargo, python3, the peer harness (PEER, read-only is
# fine: it is copied). Loopback only. Results: $OUT (one JSON line per run), then the table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-/work/shared/peer-bench}
WORK=${WORK:-/tmp/missive-e2e}
OUT=${OUT:-$WORK/results.jsonl}
RUNS=${RUNS:-3}            # online / offline-drain repetitions (median of RUNS)
IDLE_RUNS=${IDLE_RUNS:-1}  # idle-conns repetitions (slow: two RSA signatures per connection)
CONNS=${CONNS:-5000}       # idle connections (one fd per connection on each side; 10000 fits ulimit 20000)
SAT_MSGS=${SAT_MSGS:-2000} # messages per sender, saturated runs (relay: 10x)
RATE_MSGS=${RATE_MSGS:-300} # messages per sender at 10k msgs/s (3 s per run)
SCENARIOS=${SCENARIOS:-"sat rate offline idle"} # subset, e.g. SCENARIOS=rate RUNS=5
MQTT_PORT=18830; RELAY_PORT=18840; MISSIVE_PORT=17878
# Benchmark limits for missive-server (defaults are for a public server: 100 sends/s/user,
# 1000 queued per recipient, 50% per sender); the window stays at its default (256).
# --plaintext: missive-bench speaks the wire protocol on plain TCP.
SRVFLAGS=(--plaintext --send-rate 10000000 --send-burst 10000000 --queue-max-messages 1000000
          --queue-max-bytes 4294967296 --sender-share 100 --max-outstanding 10000000
          --max-connections 25000)

ulimit -n "$(ulimit -Hn)"  # 20000 here: enough for 10,000 conns (each process holds one side)
mkdir -p "$WORK"
(cd "$ROOT" && cargo build --release -q -p missive-bench -p missive-cli --bins)
MS="$ROOT/target/release/missive-server"; MB="$ROOT/target/release/missive-bench"
mkdir -p "$WORK/peer-bench"; tar -C "$PEER" --exclude=./target -cf - . | tar -C "$WORK/peer-bench" -xf -
(cd "$WORK/peer-bench" && cargo build --release -q)
PB="$WORK/peer-bench/target/release/peer-bench"; PR="$WORK/peer-bench/target/release/peer-relay"
: > "$OUT"
{
  echo "# $(date -u +%FT%TZ) nproc=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) kernel=$(uname -r)"
  echo "# $(mosquitto -h 2>/dev/null | head -1); loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# bench, servers and other agents share these cores (no pinning)"
} | tee "$WORK/env.txt"

PID=""
wait_port() { for _ in $(seq 200); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }
stop() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi; }
trap stop EXIT
start_missive() { # $1 = durable | memory
  rm -rf "$WORK/data"; mkdir -p "$WORK/data"
  local store=(--data "$WORK/data"); [ "$1" = memory ] && store=(--memory)
  RUST_LOG=warn "$MS" --listen 127.0.0.1:$MISSIVE_PORT "${store[@]}" "${SRVFLAGS[@]}" >> "$WORK/missive.log" 2>&1 &
  PID=$!; wait_port $MISSIVE_PORT
}
start_mosq() {
  rm -rf "$WORK/mdata"; mkdir -p "$WORK/mdata"
  if id mosquitto >/dev/null 2>&1; then chown mosquitto: "$WORK/mdata"; fi
  sed "s#@DATA@#$WORK/mdata#" "$PEER/mosquitto.conf.in" > "$WORK/mosquitto.conf"
  mosquitto -c "$WORK/mosquitto.conf" >> "$WORK/mosquitto.log" 2>&1 &
  PID=$!; wait_port $MQTT_PORT
}
start_relay() { "$PR" --listen 127.0.0.1:$RELAY_PORT >> "$WORK/relay.log" 2>&1 & PID=$!; wait_port $RELAY_PORT; }
mb() { local store=$1; shift; echo "+ missive-bench $* ($store)" >&2
  "$MB" "$@" --addr 127.0.0.1:$MISSIVE_PORT --server-pid "$PID" | sed "s/\"target\":\"missive\"/\"target\":\"missive-$store\"/" | tee -a "$OUT"; }
pb() { echo "+ peer-bench $*" >&2; "$PB" "$@" --server-pid "$PID" | tee -a "$OUT"; }

for i in $(seq "$RUNS"); do
  L="--label run$i"
  if [[ " $SCENARIOS " == *" sat "* ]]; then
    for s in durable memory; do start_missive $s; mb $s online --pairs 100 --msgs "$SAT_MSGS" $L; stop; done
    start_mosq;  pb online --target mqtt --pairs 100 --msgs "$SAT_MSGS" $L; stop
    start_relay; pb online --target relay --pairs 100 --msgs $((SAT_MSGS * 10)) $L; stop
  fi
  if [[ " $SCENARIOS " == *" rate "* ]]; then
    for s in durable memory; do start_missive $s; mb $s online --pairs 100 --msgs "$RATE_MSGS" --rate 10000 $L; stop; done
    start_mosq;  pb online --target mqtt --pairs 100 --msgs "$RATE_MSGS" --rate 10000 $L; stop
    start_relay; pb online --target relay --pairs 100 --msgs "$RATE_MSGS" --rate 10000 $L; stop
  fi
  if [[ " $SCENARIOS " == *" offline "* ]]; then
    for s in durable memory; do start_missive $s; mb $s offline-drain --pairs 100 --msgs "$SAT_MSGS" $L; stop; done
    start_mosq;  pb offline-drain --target mqtt --pairs 100 --msgs "$SAT_MSGS" $L; stop
  fi
done
[[ " $SCENARIOS " == *" idle "* ]] || IDLE_RUNS=0
for i in $(seq "$IDLE_RUNS"); do
  L="--label run$i"
  for s in durable memory; do start_missive $s; mb $s idle-conns --conns "$CONNS" --timeout 300 $L; stop; done
  start_mosq;  pb idle-conns --target mqtt --conns "$CONNS" $L; stop
  start_relay; pb idle-conns --target relay --conns "$CONNS" $L; stop
done
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$WORK/env.txt"
python3 "$ROOT/scripts/bench-e2e-table.py" "$OUT"
