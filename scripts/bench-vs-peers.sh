#!/usr/bin/env bash
# Runs Sheratan's job benchmark side by side with the peers' benchmark harness (BullMQ on
# Redis, PostgreSQL SKIP LOCKED, ...; a folder given with the project, not part of this
# repository: PEERS_SRC names it) in one session, interleaved, with the same
# workload and the peers' own idle checks and summary. Figures go to docs/PERFORMANCE.md.
#
#   PEERS_SRC=/path/to/peers ONLY="hub hub-stream hub-full hub-full-stream bullmq-rdb pg-sync" REPS=3 ./scripts/bench-vs-peers.sh
#   PEERS_SRC=/path/to/peers ONLY="hub-pg hub-pg-stream hub-pg2 pg-sync" REPS=2 ./scripts/bench-vs-peers.sh
#
# The -stream variants run the consumers over the worker stream and the producers' single
# submits over one stream (`sheratan bench jobs --stream`).
#
# hub-pg and hub-pg2 run one and two hubs on the cluster of scripts/pg-cluster.sh (started
# here if needed; PostgreSQL defaults, synchronous_commit=on), each run in a fresh schema.
#
# The peers' folder is copied to a scratch directory (it may be read-only); their setup.sh
# installs Redis, PostgreSQL, Node and Python packages from Debian, npm and PyPI.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PEERS_SRC:-}" ] || [ ! -d "$PEERS_SRC" ]; then
  echo "set PEERS_SRC to the peers' benchmark harness (the folder with setup.sh and the peers' runners)" >&2
  exit 2
fi
WORK=${WORK:-/tmp/sheratan-vs-peers}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

(cd "$ROOT" && cargo build --release --locked -p sheratan)
BIN="$CARGO_TARGET_DIR/release/sheratan"

mkdir -p "$WORK"
rsync -a --exclude node_modules --exclude .venv --exclude results "$PEERS_SRC/" "$WORK/peers/" 2>/dev/null \
  || cp -r "$PEERS_SRC/." "$WORK/peers/"
cd "$WORK/peers"
if [ ! -d node_modules ] || [ ! -x .venv/bin/python ]; then
  # The axum ceiling build is not needed here; setup.sh skips it without cargo on PATH.
  PATH=$(echo "$PATH" | tr ':' '\n' | grep -v cargo | paste -sd:) ./setup.sh
fi

# The hub as one more peer: same env knobs (N, C, P, RATE, PACED_N, WARMUP), one JSON line.
cat > hub.sh <<HUB
#!/usr/bin/env bash
exec "$BIN" bench jobs --json --sync "\${SYNC:-normal}" \${STORE:+--store "\$STORE" --hubs "\${HUBS:-1}"} \${STREAM:+--stream}
HUB
chmod +x hub.sh
case " ${ONLY:-} " in
  *" hub-pg"*) PG_URL=$("$ROOT/scripts/pg-cluster.sh" start) ;;
esac
sed -i '/\[hub-pg2\?\(-stream\)\?\]=/d' run_all.sh
sed -i "s|^declare -A CMD=(|declare -A CMD=(\n  [hub-pg]=\"env STORE=${PG_URL:-} ./hub.sh\"\n  [hub-pg2]=\"env STORE=${PG_URL:-} HUBS=2 ./hub.sh\"\n  [hub-pg-stream]=\"env STORE=${PG_URL:-} STREAM=1 ./hub.sh\"|" run_all.sh
grep -q '\[hub-stream\]' run_all.sh || sed -i 's|^declare -A CMD=(|declare -A CMD=(\n  [hub]="./hub.sh"\n  [hub-full]="env SYNC=full ./hub.sh"\n  [hub-stream]="env STREAM=1 ./hub.sh"\n  [hub-full-stream]="env SYNC=full STREAM=1 ./hub.sh"|' run_all.sh
ONLY=${ONLY:-"hub hub-full bullmq-rdb pg-sync"} REPS=${REPS:-3} ./run_all.sh
