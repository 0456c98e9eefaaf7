# Sourced by .ci/run and the PostgreSQL tests: starts a throwaway PostgreSQL cluster on a free
# loopback port, owned by an unprivileged user, in a directory outside the checkout (which may
# be private, mode 0700), and exports OTA_PG_URL. `pg_harness_stop` stops it and removes it.
# Installs Debian's postgresql if it is missing. Prints the server's own log if it fails.
pg_harness_start() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  PG_DIR=$(mktemp -d /tmp/ota-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local as=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: the Debian package's own user runs it.
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$PG_DIR" postgres
    chown postgres "$PG_DIR"
    as=(runuser -u postgres --)
  fi
  # The server's user cannot enter a private checkout: its tools run from /.
  local here=$PWD
  cd /
  if ! "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U ota -A trust --no-sync -E UTF8 >"$PG_DIR/initdb.log" 2>&1; then
    cat "$PG_DIR/initdb.log"; echo "pg-harness: initdb failed" >&2; cd "$here"; return 1
  fi
  # Throwaway cluster: durability off (fsync) so tests measure the server, not the disk.
  if ! "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200" start >/dev/null; then
    cat "$PG_DIR/server.log"; echo "pg-harness: PostgreSQL did not start" >&2; cd "$here"; return 1
  fi
  "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U ota ota
  cd "$here"
  PG_BIN=$bin
  PG_AS=("${as[@]}")
  export OTA_PG_URL="postgres://ota@127.0.0.1:$PG_PORT/ota"
  echo "pg-harness: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PG_DIR)"
}

# A new empty database on the running cluster; prints its URL.
pg_harness_db() {
  (cd / && "${PG_AS[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U ota "$1")
  echo "postgres://ota@127.0.0.1:$PG_PORT/$1"
}

pg_harness_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  (cd / && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1) || true
  rm -rf "$PG_DIR"
  PG_DIR=
}
