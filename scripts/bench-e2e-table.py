#!/usr/bin/env python3
"""Side-by-side table (median [min-max] over runs) from bench-e2e.sh's JSON lines."""
import json, statistics, sys

STORES = {"missive-durable": "Missive durable (redb)", "missive-memory": "Missive --memory",
          "missive-postgres": "Missive PostgreSQL"}
TRANSPORTS = ["tls", "ws", "wss"]  # plain TCP has no suffix
PEERS = {"mqtt": "mosquitto QoS1", "relay": "raw relay"}
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
present = {r["target"] for r in rows}
NAMES = {}
for t, name in STORES.items():
    NAMES[t] = name
    NAMES.update({f"{t}-{x}": f"{name} {x.upper()}" for x in TRANSPORTS})
NAMES.update(PEERS)
TARGETS = [t for t in NAMES if t in present]

def kind(r):
    s = r["scenario"]
    if s == "online":
        return "online@10k" if r.get("rate") else "online-sat"
    return s

ROWS = [
    ("online-sat", "msgs_per_s", "online saturated: msgs/s"),
    ("online-sat", "server_cpu_us_per_msg", "online saturated: server CPU us/msg"),
    ("online-sat", "lat_p50_us", "online saturated: p50 us (queueing)"),
    ("online@10k", "lat_p50_us", "10k msgs/s: p50 us"),
    ("online@10k", "lat_p99_us", "10k msgs/s: p99 us"),
    ("online@10k", "lat_p999_us", "10k msgs/s: p999 us"),
    ("online@10k", "server_cpu_us_per_msg", "10k msgs/s: server CPU us/msg"),
    ("offline-drain", "enqueue_per_s", "offline: enqueue msgs/s"),
    ("offline-drain", "drain_msgs_per_s", "offline: drain msgs/s"),
    ("offline-drain", "server_bytes_per_queued_msg", "offline: server RSS B/queued msg"),
    ("idle-conns", "server_rss_bytes_per_conn", "idle: server RSS B/conn"),
    ("idle-conns", "conns_ok", "idle: connections"),
    ("*", "lost", "lost (sum over runs)"),
    ("*", "duplicates", "duplicates (sum over runs)"),
]

def vals(t, k, f):
    return [r[f] for r in rows if r["target"] == t and (k == "*" or kind(r) == k)
            and isinstance(r.get(f), (int, float))]

def fmt(v, f, k):
    if not v:
        return "-"
    if k == "*":
        return f"{int(sum(v))}"
    m = statistics.median(v)
    s = lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"
    return s(m) if len(v) == 1 else f"{s(m)} [{s(min(v))}-{s(max(v))}]"

print("| metric | " + " | ".join(NAMES[t] for t in TARGETS) + " |")
print("|---|" + "---|" * len(TARGETS))
for k, f, label in ROWS:
    print(f"| {label} | " + " | ".join(fmt(vals(t, k, f), f, k) for t in TARGETS) + " |")

def med(t, k, f):
    v = vals(t, k, f)
    return statistics.median(v) if v else float("nan")

print()
stores = [t for t in STORES if t in present]
# Issue #16's targets, as ratios to mosquitto in the same sitting (a store's TLS/WS variants
# are reported against the same targets as the store over plain TCP).
SAT_TARGET = {"missive-memory": ">= 5", "missive-durable": ">= 2"}
AT_10K_TARGET = {"missive-memory": "<= 1", "missive-durable": "<= 1.5"}
def target(table, t):
    store = next((s for s in STORES if t == s or t.startswith(s + "-")), t)
    return f"target {table[store]}" if store in table and t == store else "reported"
for t in (t for t in TARGETS if t.startswith("missive-")):
    m = med(t, "online-sat", "msgs_per_s") / med("mqtt", "online-sat", "msgs_per_s")
    print(f"online saturated {t} / mosquitto: {m:.2f}x ({target(SAT_TARGET, t)})")
for t in (t for t in TARGETS if t.startswith("missive-")):
    for f, what in [("server_cpu_us_per_msg", "server CPU/msg"), ("lat_p99_us", "p99")]:
        p = med(t, "online@10k", f); q = med("mqtt", "online@10k", f)
        print(f"10k msgs/s {what} {t}: {p:,.1f} vs mosquitto {q:,.1f} "
              f"({p / q:.2f}x; {target(AT_10K_TARGET, t)})")
for t in stores:
    if vals(t, "offline-drain", "drain_msgs_per_s"):
        d = med(t, "offline-drain", "drain_msgs_per_s") / med("mqtt", "offline-drain", "drain_msgs_per_s")
        print(f"offline drain {t} / mosquitto: {d:.2f}x (target >= 1.5)")
# What each transport costs against plain TCP on the same store (issue #11 targets for TLS:
# <= 15 % of saturated throughput, <= 10 us of server CPU per message at 10k msgs/s,
# <= 8 KiB of server memory per idle connection).
for t in stores:
    for x in (x for x in TRANSPORTS if f"{t}-{x}" in present):
        o = f"{t}-{x}"
        cost = 1 - med(o, "online-sat", "msgs_per_s") / med(t, "online-sat", "msgs_per_s")
        cpu = med(o, "online@10k", "server_cpu_us_per_msg") - med(t, "online@10k", "server_cpu_us_per_msg")
        sat_cpu = med(o, "online-sat", "server_cpu_us_per_msg") - med(t, "online-sat", "server_cpu_us_per_msg")
        print(f"{o} vs {t}: saturated throughput cost {cost * 100:.1f} %, server CPU/msg "
              f"+{sat_cpu:.1f} us saturated, +{cpu:.1f} us at 10k msgs/s, idle conn "
              f"{med(o, 'idle-conns', 'server_rss_bytes_per_conn'):,.0f} B "
              f"(plain {med(t, 'idle-conns', 'server_rss_bytes_per_conn'):,.0f} B)")
