#!/usr/bin/env python3
"""Tables from tools/side_by_side.sh output (one or more JSONL files).

Forward: per round, the faster peer (any PyTorch or ONNX Runtime variant) over convkit's
Auto time on the same shape and thread count; the table gives convkit's and the best peer's
median ms over rounds, and the median (and range) of the per-round ratios (> 1: convkit
faster). Backward: PyTorch's autograd backward over convkit's backward_data +
backward_weight, per round, median. Thread scaling: convkit's 1-thread over 2-thread time,
per round, median. When the run measured `forward_packed` too, the forward comparison is
repeated with it (the weights packed once beforehand, as a session of ONNX Runtime does).

usage: tools/side_by_side_report.py OUT.jsonl [MORE.jsonl ...]
"""
import collections
import json
import math
import statistics
import sys

SUITE = [
    "seed_tiny", "lenet_c1", "lenet_c3", "cifar_c1_b1", "alexnet_c1", "vgg_c3", "resnet_c2",
    "resnet_c2_b16", "resnet_down", "resnet_1x1", "resnet_1x1_s2", "mobilenet_dw", "dilated",
    "resnet_c2_s1p0", "resnet_c2_s2p0", "resnet_c2_s2p1", "resnet_c2_s1p1_same",
]


def median(v):
    return statistics.median(v) if v else float("nan")


def geomean(v):
    return math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")


def ratio_line(label, per_shape):
    """Prints `label: shape median×, …` over the shapes with ratios, with their geometric mean."""
    parts, rs = [], []
    for shape, ratios in per_shape:
        if ratios:
            rs.append(median(ratios))
            parts.append(f"{shape} {median(ratios):.2f}×")
    if rs:
        print(f"{label}: " + ", ".join(parts)
              + f" (geomean {geomean(rs):.2f}×, slower on {sum(r < 1 for r in rs)} of {len(rs)}).\n")


def load(paths):
    """convkit[(shape, pass, threads, round)] = ms; peers[(shape, bench, threads, round)] = {system: ms}."""
    convkit, peers, chosen = {}, collections.defaultdict(dict), {}
    convkit_min, peers_min = {}, collections.defaultdict(dict)
    for file_no, path in enumerate(paths):
        for line in open(path):
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            rnd = (file_no, r.get("round"))
            if r.get("system") == "convkit" and r.get("algorithm") == "auto":
                convkit[(r["name"], r["pass"], r["threads"], rnd)] = r["ms"]
                chosen[r["name"]] = r.get("chosen")
                if "ms_min" in r:
                    convkit_min[(r["name"], r["pass"], r["threads"], rnd)] = r["ms_min"]
            elif r.get("bench") in ("conv_fwd", "conv_bwd"):
                peers[(r["shape"], r["bench"], r["threads"], rnd)][r["system"]] = r["ms_median"]
                if "ms_min" in r:
                    peers_min[(r["shape"], r["bench"], r["threads"], rnd)][r["system"]] = r["ms_min"]
    return convkit, peers, chosen, convkit_min, peers_min


def main(paths):
    convkit, peers, chosen, convkit_min, peers_min = load(paths)
    rounds = sorted({key[3] for key in convkit})

    def forward(shape, t):
        ours, best, ratios = [], [], []
        for rnd in rounds:
            a, p = convkit.get((shape, "forward", t, rnd)), peers.get((shape, "conv_fwd", t, rnd))
            if a is None or not p:
                continue
            b = min(p.values())
            ours.append(a), best.append(b), ratios.append(b / a)
        return ours, best, ratios

    print("| shape | 1T convkit Auto | 1T best peer | speed-up [range] | 2T convkit Auto | 2T best peer | speed-up [range] |")
    print("|---|---|---|---|---|---|---|")
    speedups = {1: [], 2: []}
    for shape in SUITE:
        cells = []
        for t in (1, 2):
            ours, best, ratios = forward(shape, t)
            if not ratios:
                cells.append("– | – | –")
                continue
            speedups[t].append((shape, median(ratios)))
            algo = f" ({chosen.get(shape)})" if t == 1 else ""
            cells.append(
                f"{median(ours):.4g}{algo} | {median(best):.4g} | "
                f"{median(ratios):.2f}× [{min(ratios):.2f}–{max(ratios):.2f}]"
            )
        print(f"| {shape} | " + " | ".join(cells) + " |")
    print()
    for t in (1, 2):
        rs = [r for _, r in speedups[t]]
        slow = [s for s, r in speedups[t] if r < 1]
        print(f"Geometric-mean speed-up, {t} thread(s): {geomean(rs):.2f}× over {len(rs)} shapes; "
              f"slower on {len(slow)} ({', '.join(slow)}).\n")
    # The same comparison on each measurement's fastest sample: slow spells of this shared
    # machine stretch samples but never shorten one, so this view separates a real gap
    # (every system at its best) from one a spell made.
    def against_best_peer(ours, theirs, pass_, t):
        """(shape, [best peer / convkit per round]) for every shape, from the given tables."""
        per_shape = []
        for shape in SUITE:
            ratios = []
            for rnd in rounds:
                a, p = ours.get((shape, pass_, t, rnd)), theirs.get((shape, "conv_fwd", t, rnd))
                if a is not None and p:
                    ratios.append(min(p.values()) / a)
            per_shape.append((shape, ratios))
        return per_shape

    for t in (1, 2):
        ratio_line(f"Fastest samples, {t} thread(s) (best peer's fastest / convkit's fastest, per round, median)",
                   against_best_peer(convkit_min, peers_min, "forward", t))
    # With the weights packed beforehand (`forward_packed`, present when the run measured
    # that pass): the same work as ONNX Runtime's session, which reorders its weights once
    # when it is created, not in each run.
    for t in (1, 2):
        ratio_line(f"Weights packed beforehand (forward_packed), {t} thread(s) (best peer / convkit, per round, median)",
                   against_best_peer(convkit, peers, "forward_packed", t))
    for t in (1, 2):
        per_shape = []
        for shape in SUITE:
            if not shape.startswith(("lenet", "resnet")):
                continue
            ratios = []
            for rnd in rounds:
                bd = convkit.get((shape, "backward_data", t, rnd))
                bw = convkit.get((shape, "backward_weight", t, rnd))
                torch = peers.get((shape, "conv_bwd", t, rnd), {}).get("torch")
                if None not in (bd, bw, torch):
                    ratios.append(torch / (bd + bw))
            per_shape.append((shape, ratios))
        ratio_line(f"Backward (data + weight) against PyTorch's autograd backward, {t} thread(s)", per_shape)
    parts = []
    for shape in SUITE:
        ratios = [convkit[(shape, "forward", 1, rnd)] / convkit[(shape, "forward", 2, rnd)]
                  for rnd in rounds if (shape, "forward", 1, rnd) in convkit and (shape, "forward", 2, rnd) in convkit]
        if ratios:
            parts.append(f"{shape} {median(ratios):.2f}×")
    print("2 threads over 1 (Auto forward, per-round ratio, median): " + ", ".join(parts) + ".")
    print(f"\n({len(rounds)} rounds)")


if __name__ == "__main__":
    main(sys.argv[1:])
