#!/usr/bin/env bash
# Regenerates the protobuf-es code from proto/*.proto with buf and protoc-gen-es
# (both from npm). `scripts/gen.sh OUT` writes to OUT instead of proto/gen
# (the freshness test uses that).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-proto/gen}"
[ -x node_modules/.bin/protoc-gen-es ] || npx -y deno@2.9.6 install >/dev/null
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s#out: proto/gen#out: $tmp/gen#" buf.gen.yaml >"$tmp/buf.gen.yaml"
PATH="$PWD/node_modules/.bin:$PATH" npx -y @bufbuild/buf@1.75.0 generate --template "$tmp/buf.gen.yaml" 2> >(grep -v nodedir >&2)
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp/gen" "$out"
