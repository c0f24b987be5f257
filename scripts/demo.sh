#!/usr/bin/env bash
# The main job in under a minute, on the embedded default store
# (/var/lib/snix as root, else $XDG_DATA_HOME/snix):
#   1. setup (npm packages; Debian test tools as root)
#   2. import /usr/share/doc, print its store path (same as nix-store --add)
#   3. show its metadata (snix store path-info --json)
#   4. export it as a NAR and compare with nix-store --dump
#   5. serve the store to Nix: snix nix-daemon on a unix socket, queried by
#      the real nix client (nix path-info --store unix://...)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DENO="$(npx -y deno@2.9.6 eval 'console.log(Deno.execPath())' 2>/dev/null)"
snix() { "$DENO" run -A --quiet cli/main.ts "$@"; }
SRC="${1:-/usr/share/doc}"

echo "== snix store import $SRC"
path="$(snix store import "$SRC")"
echo "$path"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
nixpath="$(nix-store --store "$scratch" --add "$SRC")"
echo "nix-store --add gives $nixpath"
if [ "$path" != "$nixpath" ]; then
  echo "demo: FAILED: store path differs from nix-store --add" >&2
  exit 1
fi

echo "== snix store path-info --json $path"
snix store path-info --json "$path"

echo "== snix store ls $path (first lines)"
snix store ls "$path" | head -n 5

echo "== snix store export $path | sha256sum  vs  nix-store --dump $SRC | sha256sum"
ours="$(snix store export "$path" | sha256sum | cut -d' ' -f1)"
theirs="$(nix-store --dump "$SRC" | sha256sum | cut -d' ' -f1)"
echo "snix: $ours"
echo "nix:  $theirs"
if [ "$ours" != "$theirs" ]; then
  echo "demo: FAILED: the exported NAR differs from nix-store --dump" >&2
  exit 1
fi
echo "demo: OK: export is byte-identical to nix-store --dump"

echo "== snix nix-daemon -l $scratch/daemon.sock, then nix path-info --store unix://$scratch/daemon.sock"
sock="$scratch/daemon.sock"
"$DENO" run -A --quiet cli/main.ts nix-daemon -l "$sock" --unix-listen-unlink &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$scratch"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
nix --extra-experimental-features nix-command path-info --store "unix://$sock" --json "$path"
echo
echo "demo: OK: Nix sees the path through snix nix-daemon"

