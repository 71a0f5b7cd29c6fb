#!/bin/sh
# Where one row of the webmail benchmark spends its time: builds
# `benches/webmail_load.rs` as `cargo bench` does, runs one row at 32 users and, once
# the seeding is done and wrk has started, records 8 s of the portal with `perf`
# (cpu-clock, call stacks from .eh_frame); prints the hottest functions by self time
# and how the samples split between the async threads and SQLite's connection threads.
# Needs `wrk` and Debian's linux-perf.
#
#   scripts/profile-webmail.sh                    # the inbox, SQLite
#   scripts/profile-webmail.sh 'open a message'
#   DIRECTMAIL_BENCH_POSTGRES_URL=postgres://… scripts/profile-webmail.sh inbox
#
# Output: target/profile/webmail.perf (the recording) and the report on stdout.
set -eu
cd "$(dirname "$0")/.."
row=${1:-inbox}
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
bin=$(cargo bench --locked --bench webmail_load --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*webmail_load[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not build the webmail_load benchmark" >&2; exit 1; }
out=target/profile
mkdir -p "$out"
BENCH_ONLY="$row" BENCH_USERS=32 BENCH_SECONDS=12 "$bin" --bench >"$out/webmail.txt" 2>&1 &
pid=$!
until grep -q '^what' "$out/webmail.txt" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$out/webmail.txt" >&2; exit 1; }
  sleep 1
done
sleep 2
perf record -e cpu-clock -F 499 -g --call-graph dwarf,8192 -p "$pid" -o "$out/webmail.perf" -- sleep 8 >/dev/null 2>&1
wait "$pid"
cat "$out/webmail.txt"
perf report -i "$out/webmail.perf" --stdio --no-children --sort comm -g none 2>/dev/null | grep '%'
perf report -i "$out/webmail.perf" --stdio --no-children --percent-limit 1 \
  --sort dso,symbol -g caller,0.5,callee,function,percent --max-stack 12 2>/dev/null | head -250
