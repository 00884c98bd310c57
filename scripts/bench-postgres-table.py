#!/usr/bin/env python3
"""Table (median [min-max] over runs) from bench-postgres.sh's JSON lines. CPU per message for
Missive on PostgreSQL counts missive-server and PostgreSQL together (total_cpu_us_per_msg)."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_table import load, median, print_table

TARGETS = ["missive-postgres", "missive-durable", "mqtt"]
NAMES = {"missive-postgres": "Missive on PostgreSQL", "missive-durable": "Missive on redb",
         "mqtt": "mosquitto QoS1"}
rows = load(sys.argv[1])

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

print_table(rows, kind, TARGETS, NAMES, ROWS)

def med(t, k, f):
    return median(rows, kind, t, k, f)

print()
print(f"PostgreSQL saturated / mosquitto: {med('missive-postgres', 'online-sat', 'msgs_per_s') / med('mqtt', 'online-sat', 'msgs_per_s'):.2f}x (target >= 1)")
print(f"PostgreSQL p99 at 10k / redb p99: {med('missive-postgres', 'online@10k', 'lat_p99_us') / med('missive-durable', 'online@10k', 'lat_p99_us'):.2f}x (target <= 3)")
