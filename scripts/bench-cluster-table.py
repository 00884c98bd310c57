#!/usr/bin/env python3
"""Table (median [min-max] over runs) from bench-cluster.sh's JSON lines. CPU per message counts
every node, PostgreSQL and nats-server together (total_cpu_us_per_msg); mosquitto's own."""
import json, statistics, sys

TARGETS = ["one", "three-same", "three-cross", "mqtt"]
NAMES = {"one": "1 node", "three-same": "3 nodes, same-node pairs",
         "three-cross": "3 nodes, cross-node pairs", "mqtt": "mosquitto QoS1"}
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]

def kind(r):
    return "rate" if r.get("rate") else "sat"

def cpu(r):
    return r.get("total_cpu_us_per_msg", r.get("server_cpu_us_per_msg"))

ROWS = [
    ("rate", "lat_p50_us", "1k msgs/s: p50 us"),
    ("rate", "lat_p99_us", "1k msgs/s: p99 us"),
    ("rate", cpu, "1k msgs/s: CPU us/msg (nodes + PostgreSQL + NATS)"),
    ("sat", "msgs_per_s", "saturated: msgs/s"),
    ("sat", cpu, "saturated: CPU us/msg (nodes + PostgreSQL + NATS)"),
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

present = [t for t in TARGETS if any(r["target"] == t for r in rows)]
print("| | " + " | ".join(NAMES[t] for t in present) + " |")
print("|---" * (len(present) + 1) + "|")
for k, f, label in ROWS:
    print(f"| {label} | " + " | ".join(fmt(vals(t, k, f), k) for t in present) + " |")
