"""Shared by the bench-*-table.py scripts: rows of one JSON line per run, grouped by target and
scenario kind, shown as median [min-max] over runs."""
import json, statistics


def load(path):
    return [json.loads(l) for l in open(path) if l.startswith("{")]


def vals(rows, kind, t, k, f):
    """Values of field (or function) `f` of target `t`'s runs of kind `k` ("*": every kind)."""
    get = f if callable(f) else (lambda r: r.get(f))
    return [get(r) for r in rows if r["target"] == t and (k == "*" or kind(r) == k)
            and isinstance(get(r), (int, float))]


def fmt(v, k):
    """Median [min-max]; a sum for the "*" rows (lost, duplicates)."""
    if not v:
        return "-"
    if k == "*":
        return f"{int(sum(v))}"
    s = lambda x: f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"
    m = statistics.median(v)
    return s(m) if len(v) == 1 else f"{s(m)} [{s(min(v))}-{s(max(v))}]"


def median(rows, kind, t, k, f):
    v = vals(rows, kind, t, k, f)
    return statistics.median(v) if v else float("nan")


def print_table(rows, kind, targets, names, table_rows):
    """A markdown table: one column per target present, one row per (kind, field, label)."""
    present = [t for t in targets if any(r["target"] == t for r in rows)]
    print("| metric | " + " | ".join(names[t] for t in present) + " |")
    print("|---|" + "---|" * len(present))
    for k, f, label in table_rows:
        print(f"| {label} | " + " | ".join(fmt(vals(rows, kind, t, k, f), k) for t in present) + " |")
