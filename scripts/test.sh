#!/usr/bin/env bash
# The whole test suite: setup, every library unit test (lib/) under Bun,
# then everything under Deno. The last line is the combined count
# `N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

npx -y bun@1 scripts/bun_runner.ts lib 2>&1 | grep -v 'nodedir' | tee "$log"
bun_rc=${PIPESTATUS[0]}
bun_line="$(grep -E '^bun: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)"
bun_pass=$(echo "$bun_line" | sed -E 's/^bun: ([0-9]+) passed.*/\1/')
bun_fail=$(echo "$bun_line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
[ -n "$bun_line" ] || { bun_pass=0; bun_fail=1; }

npx -y deno@2.9.6 test -A --no-check=remote "$@" 2>&1 | grep -v 'nodedir' | tee "$log"
deno_rc=${PIPESTATUS[0]}
deno_line="$(grep -E '[0-9]+ passed.*[0-9]+ failed' "$log" | tail -1 | sed -E 's/\x1b\[[0-9;]*m//g')"
deno_pass=$(echo "$deno_line" | sed -E 's/.*[^0-9]([0-9]+) passed.*/\1/')
deno_fail=$(echo "$deno_line" | sed -E 's/.*[^0-9]([0-9]+) failed.*/\1/')
[ -n "$deno_line" ] || { deno_pass=0; deno_fail=1; }

echo "deno: ${deno_pass} passed, ${deno_fail} failed; bun: ${bun_pass} passed, ${bun_fail} failed"
echo "$((deno_pass + bun_pass)) passed, $((deno_fail + bun_fail)) failed"
[ "$bun_rc" = 0 ] && [ "$deno_rc" = 0 ]
