#!/usr/bin/env bash
# The webmail benchmark on SQLite and on a throwaway PostgreSQL: installs wrk from
# Debian's packages when missing, then runs `cargo bench --bench webmail_load` twice.
# BENCH_MESSAGES (100000) and BENCH_SECONDS (10) size the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
# reuse the test script's throwaway PostgreSQL
source <(sed -n '/^pg_bin()/,/^ensure_packages$/p' scripts/test.sh | sed '$d')
cargo bench --bench webmail_load
start_postgres
DIRECTMAIL_BENCH_POSTGRES_URL="$DIRECTMAIL_TEST_POSTGRES_URL" cargo bench --bench webmail_load
