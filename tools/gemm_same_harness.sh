#!/usr/bin/env bash
# SGEMM side by side *in the peers' own harness*: a copy of ../shared/anchors/rust-peers
# with convkit added as a path dependency and timed by the same `bench` function, on the
# same data, in the same binary (same release profile: thin LTO, one codegen unit), right
# after the gemm crate on each shape. Removes every harness difference from the
# comparison with the gemm crate (gemm_peak's own figures ran 2-3% under this harness's
# on the same build).
#
# usage: tools/gemm_same_harness.sh OUT.jsonl
# env:   ROUNDS (3), THREADS ("1 2"), MIN_TIME (0.3), ANCHORS (../shared/anchors),
#        WORK (build directory, default target/gemm-same-harness; the first build compiles
#        candle and takes a few minutes)
# Then:  python3 tools/gemm_same_harness_report.py OUT.jsonl
set -euo pipefail
out=${1:?usage: tools/gemm_same_harness.sh OUT.jsonl}
root=$(cd "$(dirname "$0")/.." && pwd)
anchors=${ANCHORS:-$root/../shared/anchors}
work=${WORK:-$root/target/gemm-same-harness}
rounds=${ROUNDS:-3}
threads=${THREADS:-1 2}
min_time=${MIN_TIME:-0.3}

mkdir -p "$work"
cp "$anchors/rust-peers/Cargo.toml" "$anchors/rust-peers/Cargo.lock" "$work/"
rm -rf "$work/src" && cp -r "$anchors/rust-peers/src" "$work/src"
python3 - "$work" "$root" <<'PY'
import sys
work, root = sys.argv[1], sys.argv[2]
toml = open(f"{work}/Cargo.toml").read()
toml = toml.replace('serde_json = "1"\n', f'serde_json = "1"\nconvkit = {{ path = "{root}" }}\n', 1)
open(f"{work}/Cargo.toml", "w").write(toml)
src = open(f"{work}/src/main.rs").read()
anchor = "            // matrixmultiply: threads from MATMUL_NUM_THREADS"
assert anchor in src, "the anchors' rust-peers changed: update tools/gemm_same_harness.sh"
block = '''            // convkit, same harness and data: row-major C = A*B, C overwritten (beta = 0),
            // threads from RAYON_NUM_THREADS (the global pool, Parallelism::Auto).
            let mut c3 = vec![0f32; m * n];
            let p = convkit::gemm::GemmParams::default().parallelism(convkit::Parallelism::Auto);
            let (med, samples, inner, mn) = bench(
                || {
                    convkit::gemm::gemm(
                        convkit::gemm::MatRef::row_major(&a, m, k).unwrap(),
                        convkit::gemm::MatRef::row_major(&b, k, n).unwrap(),
                        convkit::gemm::MatMut::row_major(&mut c3, m, n).unwrap(),
                        &p,
                    )
                    .unwrap();
                },
                min_time,
            );
            let diff = c1.iter().zip(&c3).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            println!(
                "{}",
                json!({"system": "convkit", "variant": variant, "bench": "sgemm", "shape": name, "threads": threads,
                       "M": m, "K": k, "N": n, "flops": flops, "ms_median": med * 1e3, "ms_min": mn * 1e3,
                       "gflops": flops / med / 1e9, "samples": samples, "inner": inner,
                       "max_abs_diff_vs_gemm": diff})
            );

'''
open(f"{work}/src/main.rs", "w").write(src.replace(anchor, block + anchor, 1))
PY
echo "building $work (gemm's x86-v4 kernels, as the anchors' plain-x86v4 variant)" >&2
(cd "$work" && cargo build --release --features x86v4 >&2)
bin=$work/target/release/rust-peers
: > "$out"
for r in $(seq 1 "$rounds"); do
    for t in $threads; do
        RAYON_NUM_THREADS=$t MATMUL_NUM_THREADS=$t "$bin" --shapes "$anchors/shapes.json" --threads "$t" \
            --variant plain-x86v4 --only gemm --min-time "$min_time" 2>/dev/null |
            sed "s/^{/{\"round\":$r,/" >> "$out"
    done
done
echo "wrote $out" >&2
