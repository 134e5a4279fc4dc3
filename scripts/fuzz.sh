#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 20) with cargo-fuzz on a nightly toolchain,
# starting from the kept regression inputs. A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/ so the stable test suite
# replays it from then on.
#
#   scripts/fuzz.sh [SECONDS]        # CI: 20 s each; on demand: as long as you like
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-20}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); skipping the fuzz runs." >&2
  echo "fuzz: the kept inputs still run on stable (crates/sheratan-hub/tests/fuzz_regressions.rs)." >&2
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz ..." >&2
  cargo install cargo-fuzz --locked
fi
cd "$ROOT/fuzz"
for target in decode_requests canonical_json signature_check; do
  corpus=$(mktemp -d)
  cp "regressions/$target/"* "$corpus/"
  echo "fuzz: $target for ${SECONDS_EACH}s" >&2
  log="$corpus.log"
  if ! cargo +nightly fuzz run --target-dir "$CARGO_TARGET_DIR/fuzz" "$target" "$corpus" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed (a crash input is in fuzz/artifacts/$target/); log: $log" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$log" | sed "s/^/fuzz: $target: /" >&2 || true
  rm -rf "$corpus" "$log"
done
