#!/usr/bin/env python3
"""Table (median [min-max] over runs) from bench-cluster.sh's JSON lines. CPU per message counts
every node, PostgreSQL and nats-server together (total_cpu_us_per_msg); mosquitto's own."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_table import load, median, print_table

TARGETS = ["one", "three-same", "three-cross", "mqtt"]
NAMES = {"one": "1 node", "three-same": "3 nodes, same-node pairs",
         "three-cross": "3 nodes, cross-node pairs", "mqtt": "mosquitto QoS1"}
rows = load(sys.argv[1])

def kind(r):
    return "rate" if r.get("rate") else "sat"

def cpu(r):
    return r.get("total_cpu_us_per_msg", r.get("server_cpu_us_per_msg"))

ROWS = [
    ("rate", "lat_p50_us", "1k msgs/s: p50 us"),
    ("rate", "lat_p99_us", "1k msgs/s: p99 us"),
    ("rate", "server_cpu_us_per_msg", "1k msgs/s: nodes' CPU us/msg (the run only)"),
    ("rate", cpu, "1k msgs/s: CPU us/msg (nodes + PostgreSQL + NATS, engines over the whole invocation)"),
    ("sat", "msgs_per_s", "saturated: msgs/s"),
    ("sat", "server_cpu_us_per_msg", "saturated: nodes' CPU us/msg"),
    ("sat", cpu, "saturated: CPU us/msg (nodes + PostgreSQL + NATS, engines over the whole invocation)"),
    ("*", "lost", "lost (sum over runs)"),
    ("*", "duplicates", "duplicates (sum over runs)"),
]

print_table(rows, kind, TARGETS, NAMES, ROWS)

def med(t, k, f):
    return median(rows, kind, t, k, f)

print()
print(f"cross-node / same-node nodes' CPU per message at 1k msgs/s: "
      f"{med('three-cross', 'rate', 'server_cpu_us_per_msg') / med('three-same', 'rate', 'server_cpu_us_per_msg'):.2f}x; "
      f"p99: {med('three-cross', 'rate', 'lat_p99_us') / med('three-same', 'rate', 'lat_p99_us'):.2f}x")
print(f"three nodes / one node saturated (same-node pairs): "
      f"{med('three-same', 'sat', 'msgs_per_s') / med('one', 'sat', 'msgs_per_s'):.2f}x; "
      f"one node / mosquitto saturated: {med('one', 'sat', 'msgs_per_s') / med('mqtt', 'sat', 'msgs_per_s'):.2f}x")
