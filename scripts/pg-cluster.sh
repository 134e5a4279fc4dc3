#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks, from Debian's packages.
#   scripts/pg-cluster.sh start [DIR] [PORT]   prints the URL to use (postgres://…)
#   scripts/pg-cluster.sh stop  [DIR]
# synchronous_commit stays on (the default): the figures and the durability tests mean it.
set -euo pipefail
cmd="${1:-start}"
dir="${2:-/tmp/sheratan-pg}"
port="${3:-55432}"
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$BIN" ]; then
  SUDO=""; if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y postgresql >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y postgresql >/dev/null; }
  BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else bash -c "$1"; fi; }
case "$cmd" in
  start)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      mkdir -p "$dir"
      if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
      as_pg "$BIN/initdb -D $dir/data -A trust -U postgres" >/dev/null
    fi
    if ! as_pg "$BIN/pg_ctl -D $dir/data status" >/dev/null 2>&1; then
      as_pg "$BIN/pg_ctl -D $dir/data -w -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300' -l $dir/log start" >/dev/null
    fi
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_pg "$BIN/pg_ctl -D $dir/data -m fast stop" >/dev/null 2>&1 || true
    ;;
  restart)
    as_pg "$BIN/pg_ctl -D $dir/data -m fast -w restart" >/dev/null
    ;;
  *) echo "usage: $0 start|stop|restart [DIR] [PORT]" >&2; exit 2 ;;
esac
