#!/usr/bin/env bash
# Runs every scripts/bench_*.ts it finds (each prints its own figures).
# Usage: scripts/bench.sh [ARGS passed to each benchmark]
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for b in scripts/bench_*.ts; do
  [ -e "$b" ] || continue
  echo "== $b"
  npx -y deno@2.9.6 run -A "$b" "$@" 2>&1 | grep -v 'nodedir' || status=1
done
exit $status
