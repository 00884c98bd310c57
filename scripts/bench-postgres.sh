#!/usr/bin/env bash
# Issue 12: missive-server on PostgreSQL vs on redb vs mosquitto (QoS 1), same scenarios as
# scripts/bench-e2e.sh (online saturated, online at 10k msgs/s, offline-drain), one sitting,
# runs interleaved, a fresh server (and a fresh database) per run. Server CPU for PostgreSQL
# counts missive-server AND every PostgreSQL process (postmaster and backends, utime+stime from
# /proc/PID/stat) over the run. Loopback only.
# Needs: PostgreSQL binaries (/usr/lib/postgresql/*/bin), mosquitto, a built peer-bench
# (PB=path/to/peer-bench, e.g. from scripts/bench-e2e.sh's $WORK/peer-bench), cargo, python3.
# Results: $OUT (one JSON line per run), then the table (scripts/bench-postgres-table.py).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-/work/shared/peer-bench}
WORK=${WORK:-/tmp/missive-pg-bench}
OUT=${OUT:-$WORK/results.jsonl}
RUNS=${RUNS:-3}
SAT_MSGS=${SAT_MSGS:-2000}
RATE_MSGS=${RATE_MSGS:-300}
SCENARIOS=${SCENARIOS:-"sat rate offline"}
TARGETS=${TARGETS:-"postgres durable mqtt"}
MQTT_PORT=18831; MISSIVE_PORT=17879; PG_PORT=15433
SRVFLAGS=(--plaintext --send-rate 10000000 --send-burst 10000000 --queue-max-messages 1000000
          --queue-max-bytes 4294967296 --sender-share 100 --max-outstanding 10000000
          --max-connections 25000)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

mkdir -p "$WORK"
(cd "$ROOT" && cargo build --release -q --locked -p missive-bench -p missive-cli --bins)
MS="$ROOT/target/release/missive-server"; MB="$ROOT/target/release/missive-bench"
if [ -z "${PB:-}" ]; then
  mkdir -p "$WORK/peer-bench"; tar -C "$PEER" --exclude=./target -cf - . | tar -C "$WORK/peer-bench" -xf -
  (cd "$WORK/peer-bench" && cargo build --release -q); PB="$WORK/peer-bench/target/release/peer-bench"
fi

# One PostgreSQL for the sitting (default settings: fsync on, synchronous_commit on).
PGDIR="$WORK/pg"; rm -rf "$PGDIR"; mkdir -p "$PGDIR"; chown postgres: "$PGDIR"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust --locale=C -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" start -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDIR" >/dev/null
PID=""
stop() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi; }
finish() { stop; as_pg "$PGBIN/pg_ctl" stop -D "$PGDIR/data" -m fast -w >/dev/null 2>&1 || true; }
trap finish EXIT
# CPU ticks of every PostgreSQL process (utime + stime).
pg_ticks() { local t=0 p; for p in $(pgrep -u postgres -x postgres); do
  t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
DB=0
{
  echo "# $(date -u +%FT%TZ) nproc=$(nproc) kernel=$(uname -r) $("$PGBIN/postgres" --version)"
  echo "# $(mosquitto -h 2>/dev/null | head -1); loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$WORK/env.txt"
: > "$OUT"
wait_port() { for _ in $(seq 400); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }
start() { # $1 = postgres | durable | mqtt
  case $1 in
    postgres) DB=$((DB + 1)); as_pg "$PGBIN/psql" -q -h "$PGDIR" -p $PG_PORT -c "CREATE DATABASE bench$DB"
      RUST_LOG=warn "$MS" --listen 127.0.0.1:$MISSIVE_PORT --data "$WORK/data" \
        --postgres "postgres://postgres@127.0.0.1:$PG_PORT/bench$DB" "${SRVFLAGS[@]}" >> "$WORK/missive.log" 2>&1 &
      PID=$!; wait_port $MISSIVE_PORT ;;
    durable) rm -rf "$WORK/data"; mkdir -p "$WORK/data"
      RUST_LOG=warn "$MS" --listen 127.0.0.1:$MISSIVE_PORT --data "$WORK/data" "${SRVFLAGS[@]}" >> "$WORK/missive.log" 2>&1 &
      PID=$!; wait_port $MISSIVE_PORT ;;
    mqtt) rm -rf "$WORK/mdata"; mkdir -p "$WORK/mdata"
      if id mosquitto >/dev/null 2>&1; then chown mosquitto: "$WORK/mdata"; fi
      sed -e "s#@DATA@#$WORK/mdata#" -e "s#18830#$MQTT_PORT#" "$PEER/mosquitto.conf.in" > "$WORK/mosquitto.conf"
      mosquitto -c "$WORK/mosquitto.conf" >> "$WORK/mosquitto.log" 2>&1 &
      PID=$!; wait_port $MQTT_PORT ;;
  esac
}
run() { # $1 = target, rest = scenario arguments
  local t=$1; shift; start "$t"
  if [ "$t" = mqtt ]; then
    echo "+ peer-bench $*" >&2
    "$PB" "$@" --target mqtt --port $MQTT_PORT --server-pid "$PID" | tee -a "$OUT"
  else
    echo "+ missive-bench $* ($t)" >&2
    local before; before=$(pg_ticks)
    "$MB" "$@" --addr 127.0.0.1:$MISSIVE_PORT --server-pid "$PID" > "$WORK/line.json"
    local pg_s; pg_s=$(python3 -c "print(($(pg_ticks) - $before) / $(getconf CLK_TCK))")
    [ "$t" = postgres ] || pg_s=0
    python3 - "$t" "$pg_s" "$WORK/line.json" <<'EOF' | tee -a "$OUT"
import json, sys
r = json.loads(open(sys.argv[3]).read())
r["target"] = "missive-" + sys.argv[1]
pg = float(sys.argv[2]); r["postgres_cpu_s"] = pg
cpu, per = r.get("server_cpu_s"), r.get("server_cpu_us_per_msg")
if cpu and per:
    r["total_cpu_us_per_msg"] = round(per * (cpu + pg) / cpu, 2)
elif r["scenario"] == "offline-drain" and r.get("sent"):
    # Enqueue and drain, each per message, plus PostgreSQL over both.
    per = r.get("enqueue_server_cpu_us_per_msg", 0) + r.get("drain_server_cpu_us_per_msg", 0)
    r["total_cpu_us_per_msg"] = round(per + pg * 1e6 / r["sent"], 2)
print(json.dumps(r))
EOF
  fi
  stop
}
for i in $(seq "$RUNS"); do
  L="--label run$i"
  for t in $TARGETS; do
    [[ " $SCENARIOS " == *" sat "* ]] && run "$t" online --pairs 100 --msgs "$SAT_MSGS" $L
    [[ " $SCENARIOS " == *" rate "* ]] && run "$t" online --pairs 100 --msgs "$RATE_MSGS" --rate 10000 $L
    [[ " $SCENARIOS " == *" offline "* ]] && run "$t" offline-drain --pairs 100 --msgs "$SAT_MSGS" $L
  done
done
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$WORK/env.txt"
python3 "$ROOT/scripts/bench-postgres-table.py" "$OUT"
