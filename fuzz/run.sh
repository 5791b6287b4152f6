#!/usr/bin/env bash
# Runs every fuzz target (or the ones named after SECONDS) for SECONDS (default 60) each,
# starting from the committed seeds in fuzz/seeds/<target> plus whatever fuzz/corpus/<target>
# already holds, and prints one line per target: executions, coverage, features, verdict.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Exits non-zero if
# any target found a crash, a mismatch (an assertion in the differential check) or a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=${*:-$(cargo +nightly fuzz list)}
# ASan's allocator aborts on huge requests unless told to fail them; the crate's checked
# allocations (try_reserve) must then see the failure and return Err.
export ASAN_OPTIONS=allocator_may_return_null=1
cargo +nightly fuzz build >/dev/null 2>&1 || cargo +nightly fuzz build
status=0
for target in $targets; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  log=$(mktemp)
  if cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 >"$log" 2>&1; then
    verdict=clean
  else
    verdict="FAILED (see fuzz/artifacts/$target)"
    status=1
    grep -E "panicked|ERROR|timeout" "$log" | head -5 || true
  fi
  stats=$( (grep -E "DONE|Done [0-9]+ runs" "$log" || true) | tr '\n' ' ' |
    sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+).*Done ([0-9]+) runs in ([0-9]+) second.*/execs \3 in \4 s, cov \1, ft \2/')
  echo "fuzz $target: ${stats:-no stats} — $verdict"
  rm -f "$log"
done
exit $status
