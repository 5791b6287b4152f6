#!/usr/bin/env python3
"""Table of tools/gemm_same_harness.sh output: median GFLOP/s over rounds per shape, thread
count and system, and convkit's ratio to the gemm crate per round (median [range]).

usage: python3 tools/gemm_same_harness_report.py OUT.jsonl
"""
import collections
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rows = [r for r in rows if r.get("bench") == "sgemm"]
gflops = collections.defaultdict(list)
per_round = collections.defaultdict(dict)
for r in rows:
    gflops[(r["threads"], r["shape"], r["system"])].append(r["gflops"])
    per_round[(r["threads"], r["shape"], r["round"])][r["system"]] = r["gflops"]
systems = ["convkit", "gemm", "matrixmultiply"]
for t in sorted({k[0] for k in gflops}):
    print(f"\n{t} thread(s): median GFLOP/s over rounds; convkit / gemm per round, median [range]")
    print("| shape | " + " | ".join(systems) + " | convkit / gemm |")
    print("|---|" + "---|" * (len(systems) + 1))
    shapes = sorted({k[1] for k in gflops if k[0] == t}, key=lambda s: (not s.startswith("sq"), len(s), s))
    for s in shapes:
        cells = []
        for sy in systems:
            v = gflops.get((t, s, sy))
            cells.append(f"{statistics.median(v):.1f}" if v else "-")
        ratios = [
            d["convkit"] / d["gemm"]
            for (tt, ss, _), d in per_round.items()
            if tt == t and ss == s and "convkit" in d and "gemm" in d
        ]
        ratio = f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]" if ratios else "-"
        print(f"| {s} | " + " | ".join(cells) + f" | {ratio} |")
