#!/usr/bin/env python3
"""Side-by-side table (median [min-max] over runs) from bench-e2e.sh's JSON lines."""
import json, statistics, sys

TARGETS = ["missive-durable", "missive-memory", "mqtt", "relay"]
NAMES = {"missive-durable": "Missive durable (redb)", "missive-memory": "Missive --memory",
         "mqtt": "mosquitto QoS1", "relay": "raw relay"}
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]

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
m = lambda t: med(t, "online-sat", "msgs_per_s") / med("mqtt", "online-sat", "msgs_per_s")
print(f"online saturated / mosquitto: memory {m('missive-memory'):.2f}x (target >= 3), durable {m('missive-durable'):.2f}x (target >= 2)")
for t in ["missive-memory", "missive-durable"]:
    p = med(t, "online@10k", "lat_p99_us"); q = med("mqtt", "online@10k", "lat_p99_us")
    print(f"p99 at 10k/s {t}: {p:,.0f} us vs mosquitto {q:,.0f} us ({p / q:.2f}x; target <= 1)")
    d = med(t, "offline-drain", "drain_msgs_per_s") / med("mqtt", "offline-drain", "drain_msgs_per_s")
    print(f"offline drain {t} / mosquitto: {d:.2f}x (target >= 1.5)")
