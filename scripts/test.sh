#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs the
# formatting and lint gates and every test. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# One build directory with `cargo run`: ./target, unless CARGO_TARGET_DIR names another
# (CI sets it to a cache outside the clone so its runs stay incremental).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

step() { printf '\n==> %s\n' "$*"; }

# What the checkout holds besides its commit (and any test home in it), for the last step.
tree_state() {
  git status --porcelain --untracked-files=all 2>/dev/null || true
  find . -name .sheratan -not -path "./target/*" -print 2>/dev/null || true
}
TREE_BEFORE=$(tree_state)

step "toolchain"
cargo --version
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "test services: Chromium (Debian's package)"
# The relay's tests drive a real headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y chromium >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y chromium >/dev/null; }
fi
chromium --version

step "test services: PostgreSQL (Debian's package, a throwaway cluster)"
# The PostgreSQL store's conformance suite and the multi-hub tests run against it.
PG_DIR="${SHERATAN_TEST_PG_DIR:-/tmp/sheratan-test-pg}"
export SHERATAN_TEST_PG_DIR="$PG_DIR"
export SHERATAN_TEST_POSTGRES_URL
SHERATAN_TEST_POSTGRES_URL=$(scripts/pg-cluster.sh start "$PG_DIR" 55439)
trap 'scripts/pg-cluster.sh stop "$PG_DIR"' EXIT
echo "$SHERATAN_TEST_POSTGRES_URL"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo nextest run"
cargo nextest run --workspace --locked --no-fail-fast

step "doc tests"
cargo test --workspace --locked --doc

step "Python client (pytest against the real binary)"
# A venv of its own beside the build, made once: pytest, httpx, and the client itself.
VENV="$CARGO_TARGET_DIR/python-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check pytest httpx websockets mypy openapi-spec-validator
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps ./clients/python
(cd clients/python && "$VENV/bin/python" -m mypy src/sheratan)
SHERATAN_BIN="$CARGO_TARGET_DIR/debug/sheratan" "$VENV/bin/python" -m pytest -q clients/python/tests

step "OpenAPI documents (openapi-spec-validator)"
"$VENV/bin/python" scripts/validate-openapi.py

step "Debian package (cargo deb, dpkg -i, run, purge)"
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install --locked cargo-deb --version 3.8.0
fi
scripts/deb-test.sh

step "fuzz targets, briefly (nightly; skipped without it)"
"$(dirname "$0")/fuzz.sh" "${SHERATAN_FUZZ_SECONDS:-10}"

step "the suite left the source tree as it found it"
# A test that writes into the checkout (a default ./.sheratan home, say) leaves files a later
# commit can pick up: once a test-made CA key was committed that way. Compared with the start,
# so a developer's own uncommitted work is no failure.
if [ "$(tree_state)" != "$TREE_BEFORE" ]; then
  echo "the tests changed or left files in the checkout:" >&2
  diff <(echo "$TREE_BEFORE") <(tree_state) >&2 || true
  exit 1
fi

echo
echo "all checks passed"
