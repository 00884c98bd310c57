#!/usr/bin/env bash
# End-to-end load: missive-server (durable redb store and --memory) vs mosquitto (QoS 1) and
# peer-bench's raw relay, same scenarios, one sitting, runs interleaved, fresh server per run.
# Needs: `apt-get install -y mosquitto`, cargo, python3, the peer harness (PEER, read-only is
# fine: it is copied; by default `../shared/peer-bench` beside the repository) and, for
# STORES=postgres, PostgreSQL's binaries (`apt-get install -y postgresql`: a private server is
# started in $WORK, as the `postgres` user when run as root). Loopback only. Results: $OUT
# (one JSON line per run), then the table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-$ROOT/../shared/peer-bench}
# MISSIVE_TREE: build and run Missive from another checkout (a before/after in one sitting,
# e.g. a `git worktree` of the commit before a change); this script and PEER stay.
MISSIVE_TREE=${MISSIVE_TREE:-$ROOT}
WORK=${WORK:-/tmp/missive-e2e}
OUT=${OUT:-$WORK/results.jsonl}
RUNS=${RUNS:-3}            # online / offline-drain repetitions (median of RUNS)
IDLE_RUNS=${IDLE_RUNS:-1}  # idle-conns repetitions (slow: two RSA signatures per connection)
CONNS=${CONNS:-5000}       # idle connections (one fd per connection on each side; 10000 fits ulimit 20000)
SAT_MSGS=${SAT_MSGS:-2000} # messages per sender, saturated runs (relay: 10x)
RATE_MSGS=${RATE_MSGS:-300} # messages per sender at 10k msgs/s (3 s per run)
SCENARIOS=${SCENARIOS:-"sat rate offline idle"} # subset, e.g. SCENARIOS=rate RUNS=5
STORES=${STORES:-"durable memory"} # Missive's stores (durable, memory, postgres), each run
                                   # against a fresh server (and a fresh PostgreSQL database)
# Missive's transports: tcp (--plaintext), tls (TLS 1.3, logins bound to the exporter),
# ws (WebSocket, --plaintext), wss (WebSocket over TLS). Offline-drain runs over the first only.
TRANSPORTS=${TRANSPORTS:-tcp}
PEERS=${PEERS:-"mqtt relay"} # peer-bench targets (a subset, e.g. PEERS=mqtt)
MQTT_PORT=18830; RELAY_PORT=18840; MISSIVE_PORT=17878; MISSIVE_WS_PORT=17879; PG_PORT=18850
# MISSIVE_THREADS: missive-server's --threads (unset: its default).
THREADS_FLAG=(); [ -n "${MISSIVE_THREADS:-}" ] && THREADS_FLAG=(--threads "$MISSIVE_THREADS")
# Benchmark limits for missive-server (defaults are for a public server: 100 sends/s/user,
# 1000 queued per recipient, 50% per sender); the window stays at its default (256).
SRVFLAGS=(--send-rate 10000000 --send-burst 10000000 --queue-max-messages 1000000
          --queue-max-bytes 4294967296 --sender-share 100 --max-outstanding 10000000
          --max-connections 25000)

ulimit -n "$(ulimit -Hn)"  # 20000 here: enough for 10,000 conns (each process holds one side)
mkdir -p "$WORK"
(cd "$MISSIVE_TREE" && cargo build --release -q -p missive-bench -p missive-cli --bins)
MS="$MISSIVE_TREE/target/release/missive-server"; MB="$MISSIVE_TREE/target/release/missive-bench"
mkdir -p "$WORK/peer-bench"; tar -C "$PEER" --exclude=./target -cf - . | tar -C "$WORK/peer-bench" -xf -
(cd "$WORK/peer-bench" && cargo build --release -q)
PB="$WORK/peer-bench/target/release/peer-bench"; PR="$WORK/peer-bench/target/release/peer-relay"
: > "$OUT"
{
  echo "# missive $(git -C "$MISSIVE_TREE" rev-parse --short HEAD 2>/dev/null) from $MISSIVE_TREE"
  echo "# $(date -u +%FT%TZ) nproc=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) kernel=$(uname -r)"
  echo "# $(mosquitto -h 2>/dev/null | head -1); loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# bench, servers and other agents share these cores (no pinning)"
} | tee "$WORK/env.txt"

# TLS servers share one self-signed certificate (made by a first start), which the bench
# trusts with --ca.
CERT="$WORK/cert/tls/cert.pem"; KEY="$WORK/cert/tls/key.pem"
if [[ " $TRANSPORTS " == *" tls "* || " $TRANSPORTS " == *" wss "* ]] && [ ! -f "$CERT" ]; then
  "$MS" --listen 127.0.0.1:$MISSIVE_PORT --data "$WORK/cert" >> "$WORK/missive.log" 2>&1 &
  CPID=$!
  for _ in $(seq 200); do [ -f "$KEY" ] && [ -f "$CERT" ] && break; sleep 0.05; done
  sleep 0.5; kill "$CPID"; wait "$CPID" 2>/dev/null || true
fi

PID=""
wait_port() { for _ in $(seq 200); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; echo "port $1 not up" >&2; return 1; }
stop() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi; }
# PostgreSQL (STORES=postgres): one private server for the whole sitting, a new database per
# run. initdb refuses root: then everything runs as the postgres user.
PGDIR="$WORK/pg"; PGBIN=""; PG_DB=0
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop_pg() { if [ -n "$PGBIN" ] && [ -f "$PGDIR/data/postmaster.pid" ]; then
  as_pg "$PGBIN/pg_ctl" stop -D "$PGDIR/data" -m fast >/dev/null || true; fi; }
start_pg() {
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$PGBIN/initdb" ] || PGBIN=$(dirname "$(command -v initdb)")
  rm -rf "$PGDIR"; mkdir -p "$PGDIR"; [ "$(id -u)" = 0 ] && chown postgres: "$PGDIR"
  as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U missive -A trust -E UTF8 --locale C >/dev/null
  as_pg "$PGBIN/pg_ctl" start -D "$PGDIR/data" -l "$PGDIR/log" -w -o \
    "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='$PGDIR' -c fsync=on" >/dev/null
}
new_pg_database() { PG_DB=$((PG_DB + 1))
  as_pg "$PGBIN/psql" -h 127.0.0.1 -p $PG_PORT -U missive -d postgres -qc "CREATE DATABASE run$PG_DB" >/dev/null
  echo "postgres://missive@127.0.0.1:$PG_PORT/run$PG_DB"; }
trap 'stop; stop_pg' EXIT
if [[ " $STORES " == *" postgres "* ]]; then start_pg; fi
start_missive() { # $1 = durable | memory | postgres, $2 = tcp | tls | ws | wss
  rm -rf "$WORK/data"; mkdir -p "$WORK/data"
  local store=(--data "$WORK/data")
  case "$1" in memory) store=(--memory) ;; postgres) store=(--postgres "$(new_pg_database)") ;; esac
  local tls=(--plaintext) port=$MISSIVE_PORT
  case "$2" in tls | wss) tls=(--tls-cert "$CERT" --tls-key "$KEY") ;; esac
  case "$2" in ws | wss) tls+=(--ws-listen 127.0.0.1:$MISSIVE_WS_PORT); port=$MISSIVE_WS_PORT ;; esac
  RUST_LOG=warn "$MS" --listen 127.0.0.1:$MISSIVE_PORT "${tls[@]}" "${store[@]}" "${SRVFLAGS[@]}" "${THREADS_FLAG[@]}" >> "$WORK/missive.log" 2>&1 &
  PID=$!; wait_port $port
}
start_mosq() {
  rm -rf "$WORK/mdata"; mkdir -p "$WORK/mdata"
  if id mosquitto >/dev/null 2>&1; then chown mosquitto: "$WORK/mdata"; fi
  sed "s#@DATA@#$WORK/mdata#" "$PEER/mosquitto.conf.in" > "$WORK/mosquitto.conf"
  mosquitto -c "$WORK/mosquitto.conf" >> "$WORK/mosquitto.log" 2>&1 &
  PID=$!; wait_port $MQTT_PORT
}
start_relay() { "$PR" --listen 127.0.0.1:$RELAY_PORT >> "$WORK/relay.log" 2>&1 & PID=$!; wait_port $RELAY_PORT; }
mb() { # $1 = store, $2 = transport, then missive-bench's arguments
  local store=$1 transport=$2 target="missive-$1" flags=() port=$MISSIVE_PORT; shift 2
  [ "$transport" = tcp ] || target="$target-$transport"
  case "$transport" in tls | wss) flags+=(--tls --ca "$CERT") ;; esac
  case "$transport" in ws | wss) flags+=(--ws); port=$MISSIVE_WS_PORT ;; esac
  # PostgreSQL's CPU counts as the server's: its postmaster and every process under it.
  local pids=(--server-pid "$PID")
  if [ "$store" = postgres ]; then
    local pm; pm=$(head -1 "$PGDIR/data/postmaster.pid")
    for p in $pm $(pgrep -P "$pm"); do pids+=(--server-pid "$p"); done
  fi
  echo "+ missive-bench $* ${flags[*]} ($store)" >&2
  "$MB" "$@" "${flags[@]}" --addr 127.0.0.1:$port "${pids[@]}" | sed "s/\"target\":\"missive\"/\"target\":\"$target\"/" | tee -a "$OUT"; }
# Every Missive store over every transport (offline-drain: over the first transport only).
missive_runs() { local scenario_transports=$1; shift
  for t in $scenario_transports; do for s in $STORES; do start_missive $s $t; mb $s $t "$@"; stop; done; done; }
has_peer() { [[ " $PEERS " == *" $1 "* ]]; }
pb() { echo "+ peer-bench $*" >&2; "$PB" "$@" --server-pid "$PID" | tee -a "$OUT"; }

for i in $(seq "$RUNS"); do
  L="--label run$i"
  if [[ " $SCENARIOS " == *" sat "* ]]; then
    missive_runs "$TRANSPORTS" online --pairs 100 --msgs "$SAT_MSGS" $L
    if has_peer mqtt; then start_mosq;  pb online --target mqtt --pairs 100 --msgs "$SAT_MSGS" $L; stop; fi
    if has_peer relay; then start_relay; pb online --target relay --pairs 100 --msgs $((SAT_MSGS * 10)) $L; stop; fi
  fi
  if [[ " $SCENARIOS " == *" rate "* ]]; then
    missive_runs "$TRANSPORTS" online --pairs 100 --msgs "$RATE_MSGS" --rate 10000 $L
    if has_peer mqtt; then start_mosq;  pb online --target mqtt --pairs 100 --msgs "$RATE_MSGS" --rate 10000 $L; stop; fi
    if has_peer relay; then start_relay; pb online --target relay --pairs 100 --msgs "$RATE_MSGS" --rate 10000 $L; stop; fi
  fi
  if [[ " $SCENARIOS " == *" offline "* ]]; then
    missive_runs "${TRANSPORTS%% *}" offline-drain --pairs 100 --msgs "$SAT_MSGS" $L
    if has_peer mqtt; then start_mosq;  pb offline-drain --target mqtt --pairs 100 --msgs "$SAT_MSGS" $L; stop; fi
  fi
done
[[ " $SCENARIOS " == *" idle "* ]] || IDLE_RUNS=0
for i in $(seq "$IDLE_RUNS"); do
  L="--label run$i"
  missive_runs "$TRANSPORTS" idle-conns --conns "$CONNS" --timeout 300 $L
  if has_peer mqtt; then start_mosq;  pb idle-conns --target mqtt --conns "$CONNS" $L; stop; fi
  if has_peer relay; then start_relay; pb idle-conns --target relay --conns "$CONNS" $L; stop; fi
done
echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$WORK/env.txt"
python3 "$ROOT/scripts/bench-e2e-table.py" "$OUT"
