#!/usr/bin/env python3
"""Tabulates an A/B directory written by ab.sh: per log level, scenario, runtime and
transport, the median over rounds of server CPU per invoke, p50 and throughput for A and B."""
import glob
import json
import re
import statistics
import sys
from collections import defaultdict

rows = defaultdict(lambda: defaultdict(list))
for path in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
    m = re.search(r"-(A|B)-(\w+)-r(\d+)-(warm|c10)\.json$", path)
    if not m:
        continue
    label, level, _round, _kind = m.groups()
    for p in json.load(open(path))["phases"]:
        key = (level, p["scenario"], p["runtime"], p["transport"])
        rows[key][label + "cpu"].append(p["usage"]["server_cpu_us_per_invoke"])
        rows[key][label + "p50"].append((p.get("latency") or {}).get("p50_ms"))
        rows[key][label + "tput"].append(p.get("throughput_per_s"))
        rows[key][label + "err"].append(sum(p["errors"].values()))


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def opt(v):
    return "–" if v is None else f"{v:.3f}"


def cell(v, fmt):
    m = med(v)
    rounds = ", ".join(fmt.format(x) for x in v if x is not None)
    return f"{fmt.format(m)} [{rounds}]" if m is not None else "–"


print("| log level | scenario | runtime | transport | A server CPU µs/inv | B server CPU µs/inv | B/A | A p50 ms | B p50 ms | A inv/s | B inv/s | errors A/B |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows):
    r = rows[key]
    a, b = med(r["Acpu"]), med(r["Bcpu"])
    ratio = f"{b / a:.2f}" if a and b else "–"
    tput = lambda v: cell(v, "{:.0f}") if key[1] == "throughput" else "–"
    print(
        f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cell(r['Acpu'], '{:.1f}')} | "
        f"{cell(r['Bcpu'], '{:.1f}')} | {ratio} | {opt(med(r['Ap50']))} | {opt(med(r['Bp50']))} | "
        f"{tput(r['Atput'])} | {tput(r['Btput'])} | {sum(r['Aerr'])}/{sum(r['Berr'])} |"
    )
