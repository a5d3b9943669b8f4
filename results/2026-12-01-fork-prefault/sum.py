"""Later-instance fork starts' Init Duration per run: python3 sum.py DIR"""
import glob, json, os, statistics, sys

for f in sorted(glob.glob(os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "*.json"))):
    d = json.load(open(f))
    for p in d["phases"]:
        if p["scenario"] != "cold-later":
            continue
        inits = [s["init_duration_ms"] for s in p["cold_samples"]
                 if s.get("init_duration_ms") and s.get("start") == "fork"]
        print(os.path.basename(f), p["transport"],
              "fork init p50 %.2f" % statistics.median(inits) if inits else "-",
              ["%.1f" % x for x in inits])
