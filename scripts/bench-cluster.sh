#!/usr/bin/env bash
# Issue 13: the cluster in one sitting. One PostgreSQL, one nats-server, and missive-server
# --cluster nodes on 127.0.0.1 (one node) or 127.0.0.1-3 (three nodes), a fresh database per
# configuration; mosquitto (QoS 1) beside them as the peer. Scenarios: online at 1k msgs/s
# (p50, p99, CPU per message) and saturated. Three nodes run twice: receivers served by the
# sender's node (same-node) and by another node (cross-node: every message forwarded over NATS).
# CPU per message counts every node, every PostgreSQL process and nats-server (utime+stime).
# This machine has 2 cores: three nodes share them, so "three nodes" measures the cost of the
# hops, not scaling. Loopback only.
# Needs: PostgreSQL binaries (/usr/lib/postgresql/*/bin), nats-server, mosquitto, the peer
# harness (../shared/peer-bench, or PB=path/to/built/peer-bench), cargo, python3; run as root.
# Results: $OUT (one JSON line per run), then the table (scripts/bench-cluster-table.py).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-$ROOT/../shared/peer-bench}
WORK=${WORK:-/tmp/missive-cluster-bench}
OUT=${OUT:-$WORK/results.jsonl}
RUNS=${RUNS:-3}
SAT_MSGS=${SAT_MSGS:-1000}
RATE_MSGS=${RATE_MSGS:-100}
RATE=${RATE:-1000}
SHARDS=${SHARDS:-256}
CONFIGS=${CONFIGS:-"one three-same three-cross mqtt"}
MQTT_PORT=18832; NATS_PORT=14223; PG_PORT=15434; NODE_PORT=17890
SRVFLAGS=(--plaintext --send-rate 10000000 --send-burst 10000000 --queue-max-messages 1000000
          --queue-max-bytes 4294967296 --sender-share 100 --max-outstanding 10000000
          --max-connections 25000)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)

mkdir -p "$WORK"
(cd "$ROOT" && cargo build --release -q --locked -p missive-bench -p missive-cli --bins)
MS="$ROOT/target/release/missive-server"; MB="$ROOT/target/release/missive-bench"
if [ -z "${PB:-}" ]; then
  mkdir -p "$WORK/peer-bench"; tar -C "$PEER" --exclude=./target -cf - . | tar -C "$WORK/peer-bench" -xf -
  (cd "$WORK/peer-bench" && cargo build --release -q); PB="$WORK/peer-bench/target/release/peer-bench"
fi

PGDIR="$WORK/pg"; rm -rf "$PGDIR"; mkdir -p "$PGDIR"; chown postgres: "$PGDIR"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust --locale=C -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" start -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDIR" >/dev/null
"$NATS" -a 127.0.0.1 -p $NATS_PORT > "$WORK/nats.log" 2>&1 &
NATS_PID=$!
PIDS=()
stop() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
finish() { stop; kill $NATS_PID 2>/dev/null || true; wait $NATS_PID 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" stop -D "$PGDIR/data" -m fast -w >/dev/null 2>&1 || true; }
trap finish EXIT
# CPU ticks of every PostgreSQL process and of nats-server (utime + stime).
engine_ticks() { local t=0 p; for p in $(pgrep -u postgres -x postgres) $NATS_PID; do
  t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
psql_q() { as_pg "$PGBIN/psql" -qtA -h "$PGDIR" -p $PG_PORT "$@"; }
{
  echo "# $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r) $("$PGBIN/postgres" --version)"
  echo "# nats-server $("$NATS" --version 2>&1 | head -1); $(mosquitto -h 2>/dev/null | head -1)"
  echo "# loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$WORK/env.txt"
: > "$OUT"
wait_port() { for _ in $(seq 400); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }
DB=0
start_nodes() { # $1 = number of nodes; waits until every shard is owned and spread
  DB=$((DB + 1)); psql_q -c "CREATE DATABASE cluster$DB"
  local i url="postgres://postgres@127.0.0.1:$PG_PORT/cluster$DB"
  for i in $(seq "$1"); do
    local addr="127.0.0.$i:$NODE_PORT"
    RUST_LOG=warn "$MS" --cluster --node-id "n$i" --listen "$addr" --advertise "$addr" \
      --postgres "$url" --nats "nats://127.0.0.1:$NATS_PORT" --shards "$SHARDS" \
      --data "$WORK/data$i" "${SRVFLAGS[@]}" >> "$WORK/node$i.log" 2>&1 &
    PIDS+=($!); wait_port $NODE_PORT
  done
  local nodes=$1 fair=$(( (SHARDS + $1 - 1) / $1 + 1 )) owners most owned last_epochs=""
  for _ in $(seq 600); do
    read -r owners most owned < <(psql_q -d "cluster$DB" -c "SELECT count(*), coalesce(max(n), 0), coalesce(sum(n), 0)
      FROM (SELECT owner, count(*) AS n FROM leases WHERE owner IS NOT NULL AND expires_at > now()
            GROUP BY owner) o" -F ' ')
    if [ "$owners" = "$nodes" ] && [ "$most" -le "$fair" ] && [ "$owned" = "$SHARDS" ]; then
      # Settled: no shard moved for two lease rounds (a node hands extras back one round at a time).
      local epochs; epochs=$(psql_q -d "cluster$DB" -c "SELECT sum(epoch) FROM leases")
      if [ "$epochs" = "${last_epochs:-}" ]; then return 0; fi
      last_epochs=$epochs; sleep 4; continue
    fi
    sleep 0.1
  done
  echo "shards not spread over $1 nodes in time" >&2; return 1
}
run_missive() { # $1 = label of the configuration, rest = missive-bench arguments
  local config=$1; shift
  echo "+ missive-bench $* ($config)" >&2
  local pidargs=() p before
  for p in "${PIDS[@]}"; do pidargs+=(--server-pid "$p"); done
  before=$(engine_ticks)
  "$MB" "$@" --addr "127.0.0.1:$NODE_PORT" "${pidargs[@]}" > "$WORK/line.json"
  python3 - "$config" "$(python3 -c "print(($(engine_ticks) - $before) / $(getconf CLK_TCK))")" \
    "$WORK/line.json" <<'EOF' | tee -a "$OUT"
import json, sys
r = json.loads(open(sys.argv[3]).read())
r["target"] = sys.argv[1]
engines = float(sys.argv[2]); r["engines_cpu_s"] = engines
cpu, per = r.get("server_cpu_s"), r.get("server_cpu_us_per_msg")
if cpu and per:
    r["total_cpu_us_per_msg"] = round(per * (cpu + engines) / cpu, 2)
print(json.dumps(r))
EOF
}
run_mqtt() {
  rm -rf "$WORK/mdata"; mkdir -p "$WORK/mdata"
  if id mosquitto >/dev/null 2>&1; then chown mosquitto: "$WORK/mdata"; fi
  sed -e "s#@DATA@#$WORK/mdata#" -e "s#18830#$MQTT_PORT#" "$PEER/mosquitto.conf.in" > "$WORK/mosquitto.conf"
  mosquitto -c "$WORK/mosquitto.conf" >> "$WORK/mosquitto.log" 2>&1 &
  PIDS+=($!); wait_port $MQTT_PORT
  echo "+ peer-bench $*" >&2
  "$PB" "$@" --target mqtt --port $MQTT_PORT --server-pid "${PIDS[0]}" | tee -a "$OUT"
  stop
}
for i in $(seq "$RUNS"); do
  L="--label run$i"
  for c in $CONFIGS; do
    case $c in
      one) start_nodes 1
        run_missive one online --pairs 100 --msgs "$RATE_MSGS" --rate "$RATE" $L
        run_missive one online --pairs 100 --msgs "$SAT_MSGS" $L; stop ;;
      three-same|three-cross) start_nodes 3
        pairing=${c#three-}-node
        run_missive "$c" online --pairs 100 --msgs "$RATE_MSGS" --rate "$RATE" --pairing "$pairing" $L
        run_missive "$c" online --pairs 100 --msgs "$SAT_MSGS" --pairing "$pairing" $L; stop ;;
      mqtt)
        run_mqtt online --pairs 100 --msgs "$RATE_MSGS" --rate "$RATE" $L
        run_mqtt online --pairs 100 --msgs "$SAT_MSGS" $L ;;
    esac
  done
done
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$WORK/env.txt"
python3 "$ROOT/scripts/bench-cluster-table.py" "$OUT"
