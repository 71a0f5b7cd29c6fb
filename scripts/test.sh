#!/usr/bin/env bash
# The one test command (README: "Run all the tests"). It sets up what it needs:
#   - Chromium and chromedriver from Debian's packages when missing (browser tests);
#   - the test OpenID provider (tests/oidc, `npm ci`) when its node_modules is missing;
#   - a throwaway PostgreSQL from the machine's PostgreSQL 15 (initdb/pg_ctl, as the
#     `postgres` user when run as root, on a free port, removed afterwards).
# Lanes: formatting and lints; unit tests and the integration suite on SQLite; the
# same integration suite again on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root (or sudo) to install: $*" >&2; return 1; fi
}

ensure_packages() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  pg_bin >/dev/null 2>&1 || missing+=(postgresql-15)
  command -v openssl >/dev/null || missing+=(openssl)
  # OpenLDAP's server, for the certificate discovery tests (crates/discovery)
  [ -x /usr/sbin/slapd ] || missing+=(slapd)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} from Debian's packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PG_DIR=""
PG_CTL=""
stop_postgres() {
  if [ -n "$PG_DIR" ] && [ -d "$PG_DIR" ]; then
    run_pg "$PG_CTL" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
trap stop_postgres EXIT

run_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin port
  bin=$(pg_bin)
  PG_CTL="$bin/pg_ctl"
  port=$(free_port)
  PG_DIR=$(mktemp -d /tmp/directmail-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  run_pg "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  run_pg "$PG_CTL" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 start \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null
  export DIRECTMAIL_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ensure_packages
# the OpenID provider the single sign-on tests sign in through (oidc-provider, from
# the npm registry, pinned by tests/oidc/package-lock.json)
if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  command -v npm >/dev/null || { echo "npm is needed for the single sign-on tests (Node.js 20 or later)" >&2; exit 1; }
  say "installing the test OpenID provider (npm ci in tests/oidc)"
  (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi
# the discovery tests fail (rather than skip) when slapd is missing
export DIRECTMAIL_REQUIRE_SLAPD=1

say "formatting and lints"
cargo fmt --all -- --check
# the OpenSSL benchmark crate links the system libssl and is not part of the lanes
EXCLUDE=(--exclude directmail-smime-bench)
cargo clippy --workspace "${EXCLUDE[@]}" --all-targets --locked -- -D warnings

say "unit tests, and the integration suite on SQLite"
env -u DIRECTMAIL_TEST_POSTGRES_URL cargo test --workspace "${EXCLUDE[@]}" --locked

say "the integration suite on PostgreSQL"
start_postgres
# The same package selection as the SQLite lane, so cargo resolves the same features
# and reuses that build instead of compiling the tree a second time (which doubled
# target/ and once ran a CI disk out of space). This also reruns the crates' own `it`
# suites, which do not use a database; they take seconds.
cargo test --workspace "${EXCLUDE[@]}" --locked --test it
