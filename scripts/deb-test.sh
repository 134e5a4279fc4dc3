#!/usr/bin/env bash
# The Debian package, built and installed for real: `cargo deb` packs the binary the suite
# built (dev profile, --fast: the package's contents are what is tested, not its compression),
# `dpkg -i` installs it, the installed binary runs and a hub from it answers, the units are in
# place and verify, and `dpkg --purge` takes it all away again. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR to the build directory}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
fail() { echo "deb-test: $*" >&2; exit 1; }

for tool in dpkg dpkg-deb curl; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (Debian: apt-get install $tool)"
done
if [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; then
  fail "installing the package needs root: run as root, or with sudo that does not ask for a password"
fi
# This machine's own installation is not the test's to replace or remove.
if dpkg -s sheratan >/dev/null 2>&1; then
  fail "a sheratan package is installed here; this test installs and purges its own: remove it first (dpkg --purge sheratan)"
fi
if [ -e /usr/bin/sheratan ]; then
  fail "/usr/bin/sheratan exists: this test installs the .deb there; move it away first"
fi
OUT=$(mktemp -d)
HOME_DIR=$(mktemp -d)
INSTALLED=""
cleanup() {
  [ -n "${HUB_PID:-}" ] && kill "$HUB_PID" 2>/dev/null || true
  # Only what this script installed is removed.
  [ -n "$INSTALLED" ] && $SUDO dpkg --purge sheratan >/dev/null 2>&1 || true
  rm -rf "$OUT" "$HOME_DIR"
}
trap cleanup EXIT

# cargo-deb warns that the dev profile is for tests only: that is what this is.
cargo deb -p sheratan --no-build --profile dev --no-strip --fast -o "$OUT/" 2>&1 \
  | grep -v -e "dev profile is not supported" -e "To enable debug symbols" || true
DEB=$(ls "$OUT"/sheratan_*.deb) || fail "cargo deb made no package"
dpkg-deb -f "$DEB" Package Version Depends Section

INSTALLED=1
$SUDO dpkg -i "$DEB"
dpkg -s sheratan | grep -q "Status: install ok installed" || fail "dpkg does not list sheratan as installed"

version=$(/usr/bin/sheratan --version)
echo "$version"
[[ "$version" == "sheratan $(dpkg-deb -f "$DEB" Version | cut -d- -f1)"* ]] \
  || fail "the installed binary says '$version', not the package's version"

for unit in sheratan-hub sheratan-worker sheratan-up; do
  path=/lib/systemd/system/$unit.service
  [ -f "$path" ] || fail "$path is not installed"
  grep -q "^ExecStart=/usr/bin/sheratan " "$path" || fail "$path does not run /usr/bin/sheratan"
  if command -v systemd-analyze >/dev/null 2>&1; then
    # The units as installed, with the installed binary: verify prints nothing for a good unit.
    msg=$(systemd-analyze verify "$path" 2>&1 | grep -v -e "Cannot add dependency job" -e "not supported on this system" -e "^$" || true)
    [ -z "$msg" ] || fail "systemd-analyze verify $path: $msg"
  fi
done
[ -f /usr/share/doc/sheratan/INSTALL.md ] || fail "the docs are not installed"

# The installed binary runs a hub that answers.
/usr/bin/sheratan hub --home "$HOME_DIR" --control-addr 127.0.0.1:0 --data-addr 127.0.0.1:0 \
  > "$OUT/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 100); do grep -q "^ready:" "$OUT/hub.log" && break; sleep 0.1; done
control=$(sed -n 's/^ *control plane: \([^ ]*\).*/\1/p' "$OUT/hub.log")
[ -n "$control" ] || { cat "$OUT/hub.log"; fail "the installed hub did not start"; }
curl -fsS "$control/health" | grep -q '"status":"ok"' || fail "the installed hub's /health did not answer ok"
kill "$HUB_PID"; wait "$HUB_PID" || true; HUB_PID=""

$SUDO dpkg --purge sheratan >/dev/null
INSTALLED=""
[ ! -e /usr/bin/sheratan ] || fail "dpkg --purge left /usr/bin/sheratan"
echo "deb-test: the package builds, installs, runs, and goes away again"
