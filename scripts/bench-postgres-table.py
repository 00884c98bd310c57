#!/usr/bin/env python3
"""Table (median [min-max] over runs) from bench-postgres.sh's JSON lines. CPU per message for
Missive on PostgreSQL counts missive-server and PostgreSQL together (total_cpu_us_per_msg)."""
import json, statistics, sys

TARGETS = ["missive-postgres", "missive-durable", "mqtt"]
NAMES = {"missive-postgres": "Missive on PostgreSQL", "missive-durable": "Missive on redb",
         "mqtt": "mosquitto QoS1"}
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]

def kind(r):
    if r["scenario"] == "online":
        return "online@10k" if r.get("rate") else "online-sat"
    return r["scenario"]

def cpu(r):
    if "total_cpu_us_per_msg" in r:
        return r["total_cpu_us_per_msg"]
    if r["scenario"] == "offline-drain":
        return r.get("enqueue_server_cpu_us_per_msg", 0) + r.get("drain_server_cpu_us_per_msg", 0)
    return r.get("server_cpu_us_per_msg")

ROWS = [
    ("online-sat", "msgs_per_s", "online saturated: msgs/s"),
    ("online-sat", cpu, "online saturated: server (+ PostgreSQL) CPU us/msg"),
    ("online-sat", "lat_p99_us", "online saturated: p99 us (queueing)"),
    ("online@10k", "lat_p50_us", "10k msgs/s: p50 us"),
    ("online@10k", "lat_p99_us", "10k msgs/s: p99 us"),
    ("online@10k", cpu, "10k msgs/s: server (+ PostgreSQL) CPU us/msg"),
    ("offline-drain", "enqueue_per_s", "offline: enqueue msgs/s"),
    ("offline-drain", "drain_msgs_per_s", "offline: drain msgs/s"),
    ("offline-drain", cpu, "offline: server (+ PostgreSQL) CPU us/msg"),
    ("*", "lost", "lost (sum over runs)"),
    ("*", "duplicates", "duplicates (sum over runs)"),
]

def vals(t, k, f):
    get = f if callable(f) else (lambda r: r.get(f))
    return [get(r) for r in rows if r["target"] == t and (k == "*" or kind(r) == k)
            and isinstance(get(r), (int, float))]

def fmt(v, k):
    if not v:
        return "-"
    if k == "*":
        return f"{int(sum(v))}"
    s = lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"
    m = statistics.median(v)
    return s(m) if len(v) == 1 else f"{s(m)} [{s(min(v))}-{s(max(v))}]"

print("| metric | " + " | ".join(NAMES[t] for t in TARGETS) + " |")
print("|---|" + "---|" * len(TARGETS))
for k, f, label in ROWS:
    print(f"| {label} | " + " | ".join(fmt(vals(t, k, f), k) for t in TARGETS) + " |")

def med(t, k, f):
    v = vals(t, k, f)
    return statistics.median(v) if v else float("nan")

print()
print(f"PostgreSQL saturated / mosquitto: {med('missive-postgres', 'online-sat', 'msgs_per_s') / med('mqtt', 'online-sat', 'msgs_per_s'):.2f}x (target >= 1)")
print(f"PostgreSQL p99 at 10k / redb p99: {med('missive-postgres', 'online@10k', 'lat_p99_us') / med('missive-durable', 'online@10k', 'lat_p99_us'):.2f}x (target <= 3)")
