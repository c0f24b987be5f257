#!/usr/bin/env bash
# Installs what the tests need and a fresh Debian machine lacks: npm packages
# (through Deno), and as root the Debian packages nix-bin, fuse3, zstd,
# python3-grpcio, python3-grpc-tools. Safe to run again: it only installs what
# is missing. Prints nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
DENO="npx -y deno@2.9.6"

if [ ! -d node_modules/@bufbuild/protobuf ] || [ deno.lock -nt node_modules ]; then
  $DENO install --frozen >/dev/null 2>&1 || $DENO install
  touch node_modules
fi

missing=()
command -v nix-store >/dev/null 2>&1 || missing+=(nix-bin)
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v b3sum >/dev/null 2>&1 || missing+=(b3sum)  # castore: independent BLAKE3 cross-check
command -v getfattr >/dev/null 2>&1 || missing+=(attr)  # fuse: --show-xattr test
/usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || missing+=(python3-grpcio)
/usr/bin/python3 -c 'import grpc_tools.protoc' >/dev/null 2>&1 || missing+=(python3-grpc-tools)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Nix 2.8 wants a build users group or single-user settings for scratch stores.
mkdir -p /etc/nix 2>/dev/null || true
if [ -w /etc/nix ] && ! grep -q '^experimental-features' /etc/nix/nix.conf 2>/dev/null; then
  printf 'experimental-features = nix-command\nbuild-users-group =\nsandbox = false\n' >>/etc/nix/nix.conf
fi
