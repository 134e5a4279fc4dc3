#!/usr/bin/env bash
# Heartbeat ingest benchmark (docs/PERFORMANCE.md): every figure of the heartbeat table
# comes from this script. Builds the release binary, then runs each case against a fresh hub
# the bench starts itself, and prints one JSON line per case.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p sheratan >&2
B="$CARGO_TARGET_DIR/release/sheratan"
D="${DURATION:-20}"
run() { echo "== $*" >&2; "$B" bench heartbeat --duration-s "$D" --connections 32 --json "$@"; }
run --nodes 10000
run --nodes 100000
run --nodes 100000 --registry-flush-ms 3600000
# TTL 8 s makes liveness snapshots every 2 s, so many requests overlap a 100k-node write.
run --nodes 100000 --hub-args "--node-ttl-sec 8"
run --nodes 100000 --rate 20000 --hub-args "--node-ttl-sec 8"
run --nodes 100000 --rate 20000 --hub-args "--node-ttl-sec 8" --registry-flush-ms 3600000
