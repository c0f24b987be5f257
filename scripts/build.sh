#!/usr/bin/env bash
# Builds the single `./snix` binary. Uses `deno compile` when Deno's runtime
# (denort) is at hand (DENORT_BIN set, or already in Deno's cache), else
# `bun build --compile`, which works offline. `SNIX_BUILD_WITH=bun|deno`
# forces one. Usage: scripts/build.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-./snix}"
bash scripts/setup.sh >/dev/null 2>&1 || npx -y deno@2.9.6 install >/dev/null
with="${SNIX_BUILD_WITH:-}"
if [ -z "$with" ]; then
  deno_dir="${DENO_DIR:-$HOME/.cache/deno}"
  if [ -n "${DENORT_BIN:-}" ] || ls "$deno_dir"/dl/release/v2.9.6/denort-* >/dev/null 2>&1; then
    with=deno
  else
    with=bun
  fi
fi
case "$with" in
  deno)
    npx -y deno@2.9.6 compile -A --output "$out" cli/main.ts ;;
  bun)
    # --bytecode: precompiled JS, start-up ~0.04 s instead of ~0.1 s.
    npx -y bun@1 build --compile --bytecode --format=esm --minify-syntax --outfile "$out" cli/main.ts 2>&1 | grep -v nodedir ;;
  *) echo "build: SNIX_BUILD_WITH must be bun or deno" >&2; exit 2 ;;
esac
echo "built $out with $with" >&2
