#!/bin/sh
# Where the SMTP load benchmark's time goes: builds `benches/smtp_load.rs` as
# `cargo bench` does (the same binary, so no second build), runs it under
# `perf record` (cpu-clock: works in VMs without hardware counters; call stacks from
# .eh_frame) and prints the hottest functions by self time with their callers.
# Needs Debian's linux-perf (`apt-get install linux-perf`).
#
#   scripts/profile-smtp-load.sh            # SQLite, 300 messages, 8 connections
#   BENCH_MESSAGES=600 scripts/profile-smtp-load.sh
#   DIRECTMAIL_BENCH_POSTGRES_URL=postgres://… scripts/profile-smtp-load.sh
#
# Output: target/profile/smtp_load.perf (the recording) and the report on stdout.
set -eu
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
bin=$(cargo bench --locked --bench smtp_load --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*smtp_load[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not build the smtp_load benchmark" >&2; exit 1; }
out=target/profile
mkdir -p "$out"
perf record -e cpu-clock -F 999 -g --call-graph dwarf,16384 -o "$out/smtp_load.perf" -- "$bin" --bench
perf report -i "$out/smtp_load.perf" --stdio --no-children --percent-limit 1.5 \
  --sort dso,symbol -g caller,0.5,callee,function,percent --max-stack 12 2>/dev/null | head -250
