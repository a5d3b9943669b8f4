#!/usr/bin/env python3
"""Tabulates the floor JSONs written by run.sh: per server, protocol and callers, the median
over rounds of server CPU per exchange (every round in brackets), p50 and exchanges/s."""
import glob
import json
import statistics
import sys
from collections import defaultdict

rows = defaultdict(lambda: defaultdict(list))
for path in sorted(glob.glob(f"{sys.argv[1]}/*floor-*.json")):
    f = json.load(open(path))["floor"]
    key = (f["server"], f["protocol"], f["callers"])
    rows[key]["cpu"].append(f["usage"]["server_cpu_us_per_invoke"])
    rows[key]["rcpu"].append(f["usage"]["runtime_cpu_us_per_invoke"])
    rows[key]["p50"].append(f["latency"]["p50_ms"])
    rows[key]["errors"].append(f["errors"])
    if f.get("measured_s"):
        rows[key]["tput"].append(f["invokes"] / f["measured_s"])


def cell(v, fmt):
    return f"{fmt.format(statistics.median(v))} [{', '.join(fmt.format(x) for x in v)}]" if v else "–"


print("| server | runtime exchange | callers | server CPU µs/exchange | runtime CPU µs/exchange | p50 ms | exchanges/s | errors |")
print("|---|---|---|---|---|---|---|---|")
for key in sorted(rows, key=lambda k: (k[2], k[1], k[0])):
    r = rows[key]
    print(
        f"| {key[0]} | {key[1]} | {key[2]} | {cell(r['cpu'], '{:.1f}')} | {cell(r['rcpu'], '{:.1f}')} | "
        f"{cell(r['p50'], '{:.3f}')} | {cell(r['tput'], '{:.0f}')} | {sum(r['errors'])} |"
    )
