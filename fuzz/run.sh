#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
for target in $(cargo +nightly fuzz list); do
  echo "== $target ($seconds s)"
  ASAN_OPTIONS=allocator_may_return_null=1 cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" 2>&1 | grep -E "^Done|ERROR|panicked" || true
done
