#!/usr/bin/env bash
# Side-by-side convolution timing against the peers of ../shared/anchors, interleaved per
# shape: for every round and every shape, convkit's `compare --json` (Auto, 1 and 2
# threads), then PyTorch and ONNX Runtime on that shape alone (1 and 2 threads). Slow
# spells of this shared machine last minutes, so each shape's convkit and peer figures are
# taken within seconds of each other; `side_by_side_report.py` then pairs them per round.
#
# usage: tools/side_by_side.sh OUT.jsonl
# env:   ROUNDS (4), SHAPES (comma list; default the whole suite), PASSES (forward,
#        backward_data,backward_weight), BWD (1: also PyTorch's backward), MIN_TIME (0.3),
#        ANCHORS (../shared/anchors), PY (the anchors' venv python)
# needs: `cargo build --release --example compare` done first (no build while timing).
set -euo pipefail
out=${1:?usage: tools/side_by_side.sh OUT.jsonl}
root=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$root/../shared/anchors}
py=${PY:-$anchors/.venv/bin/python}
rounds=${ROUNDS:-4}
passes=${PASSES:-forward,backward_data,backward_weight}
min_time=${MIN_TIME:-0.3}
shapes=${SHAPES:-seed_tiny,lenet_c1,lenet_c3,cifar_c1_b1,alexnet_c1,vgg_c3,resnet_c2,resnet_c2_b16,resnet_down,resnet_1x1,resnet_1x1_s2,mobilenet_dw,dilated,resnet_c2_s1p0,resnet_c2_s2p0,resnet_c2_s2p1,resnet_c2_s1p1_same}
compare=$root/target/release/examples/compare
[ -x "$compare" ] || { echo "build first: cargo build --release --example compare" >&2; exit 1; }
# The harness selects shapes by substring; a copy selecting by exact name (resnet_c2 alone,
# not its five variants).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/py"
sed 's/filt not in s\["name"\]/s["name"] not in filt.split(",")/g' "$anchors/py/bench_conv.py" > "$tmp/py/bench_conv.py"
cp "$anchors/shapes.json" "$tmp/"
parts="torch_conv ort_conv"
[ "${BWD:-1}" = 1 ] && parts="$parts torch_bwd"
: > "$out"
for round in $(seq 1 "$rounds"); do
  for s in ${shapes//,/ }; do
    "$compare" --json --algorithms auto --only "$s" --passes "$passes" --min-time "$min_time" \
      | sed "s/^{/{\"round\":$round,\"system\":\"convkit\",/" >> "$out"
    for t in 1 2; do
      for part in $parts; do
        (cd "$anchors/py" && env OMP_NUM_THREADS=$t MKL_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t \
          "$py" "$tmp/py/bench_conv.py" --part "$part" --threads "$t" --min-time "$min_time" --filter "$s" 2>/dev/null) \
          | sed "s/^{/{\"round\":$round,/" >> "$out" || true
      done
    done
  done
done
