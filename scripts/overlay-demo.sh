#!/usr/bin/env bash
# The overlay scenario end to end, on scratch directories (run as root):
#   1. import a few trees into a scratch snix data dir;
#   2. `snix store daemon` serves it on a unix socket (gRPC);
#   3. `snix store mount` mounts that remote store (grpc+unix://) read-only;
#   4. `snix nix-daemon` serves the same store to Nix on another socket;
#   5. overlayfs: our mount as lowerdir, tmpfs upper/work dirs;
#   6. Nix (Debian's 2.8) queries the lower store through the nix-daemon socket,
#      files are read and written through the overlay.
# Nix 2.8 has no local-overlay store; the nix.conf line a newer Nix would use
# is printed (and tried, if the `nix` on PATH knows local-overlay).
# Everything is unmounted and stopped on exit, also on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "overlay-demo: needs root (mount, overlayfs)" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "overlay-demo: /dev/fuse is missing" >&2; exit 1; }

# Run deno itself (not through npx) so that SIGTERM reaches the servers.
DENO="$(npx -y deno@2.9.6 eval 'console.log(Deno.execPath())' 2>/dev/null)"
W="$(mktemp -d /tmp/snix-overlay-demo.XXXXXX)"
DATA="$W/data"
STORE_SOCK="$W/store.sock"
NIX_SOCK="$W/nix-daemon.sock"
LOWER="$W/lower/nix/store"    # our FUSE mount
MERGED="$W/merged/nix/store"  # the overlay
T="$W/t"                      # tmpfs for upper + work
mkdir -p "$DATA" "$LOWER" "$MERGED" "$T"
SNIX=("$DENO" run -A "$ROOT/cli/main.ts")
snix() { "${SNIX[@]}" "$@"; }
pids=()

cleanup() {
  set +e
  mountpoint -q "$MERGED" && umount "$MERGED"
  mountpoint -q "$T" && umount "$T"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  mountpoint -q "$LOWER" && umount -l "$LOWER"
  rm -rf "$W"
}
trap cleanup EXIT
trap "exit 130" INT TERM

wait_for() { # wait_for DESCRIPTION COMMAND...
  local what="$1"; shift
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "overlay-demo: $what did not come up" >&2; return 1
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "import into $DATA"
mapfile -t PATHS < <(snix --data-dir "$DATA" --log-level warning store import /usr/share/doc/bash /usr/share/doc/coreutils)
printf '%s\n' "${PATHS[@]}"
P="${PATHS[0]}"; B="$(basename "$P")"

step "snix store daemon on unix:$STORE_SOCK"
"${SNIX[@]}" --data-dir "$DATA" store daemon -l "unix:$STORE_SOCK" --unix-listen-unlink & pids+=($!)
wait_for "store daemon" test -S "$STORE_SOCK"

step "snix store mount $LOWER (--remote grpc+unix://$STORE_SOCK)"
"${SNIX[@]}" --remote "grpc+unix://$STORE_SOCK" store mount "$LOWER" --list-root & pids+=($!)
wait_for "FUSE mount" mountpoint -q "$LOWER"
wait_for "FUSE INIT" stat -f "$LOWER"
ls -l "$LOWER"

step "snix nix-daemon -l $NIX_SOCK"
have_nix_daemon=0
if snix nix-daemon --help >/dev/null 2>&1; then
  "${SNIX[@]}" --remote "grpc+unix://$STORE_SOCK" nix-daemon -l "$NIX_SOCK" --unix-listen-unlink & pids+=($!)
  wait_for "nix-daemon" test -S "$NIX_SOCK" && have_nix_daemon=1
else
  echo "(snix nix-daemon is not available in this tree; skipping the Nix queries)"
fi

step "overlayfs on $MERGED (lowerdir = our mount, upper/work on tmpfs)"
mount -t tmpfs tmpfs "$T"
mkdir "$T/upper" "$T/work"
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$T/upper,workdir=$T/work" "$MERGED"
grep " $MERGED " /proc/mounts

step "read through the overlay"
diff -r "/usr/share/doc/bash" "$MERGED/$B" && echo "diff -r /usr/share/doc/bash $MERGED/$B: identical"
stat -c '%A %s %n' "$MERGED/$B/copyright"

step "write through the overlay: lands in the upper dir, the lower mount is unchanged"
echo "local note" > "$MERGED/$B/NOTE"
echo "appended" >> "$MERGED/$B/copyright"
find "$T/upper" -type f -printf '%P (upper)\n'
echo "lower copyright still $(stat -c %s "$LOWER/$B/copyright") bytes, overlay copy $(stat -c %s "$MERGED/$B/copyright") bytes"
test ! -e "$LOWER/$B/NOTE" && echo "NOTE is not in the lower mount"

if [ "$have_nix_daemon" = 1 ]; then
  step "Nix queries the lower store through snix nix-daemon"
  X=(--extra-experimental-features nix-command)
  nix "${X[@]}" path-info --store "unix://$NIX_SOCK" --json "$P" | head -c 600 || echo "(path-info failed)"
  echo
  nix-store --store "unix://$NIX_SOCK" --query --size "$P" || echo "(nix-store -q failed)"
  # A daemon store is a local-FS store to Nix: with root= it reads file
  # contents from <root>/nix/store, which is our FUSE mount.
  nix "${X[@]}" store ls --store "unix://$NIX_SOCK?root=$W/lower" -l "$P" | head -4 || echo "(store ls failed)"
  echo "nix hash path of the FUSE mount: sha256:$(nix "${X[@]}" hash path --base32 "$LOWER/$B")"
  echo "narHash from snix nix-daemon:   $(nix-store --store "unix://$NIX_SOCK" --query --hash "$P")"
fi

step "nix.conf for a Nix with the local-overlay store (Nix >= 2.19; Nix 2.8 has none)"
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
LOWER_URI="unix://$NIX_SOCK?real=$LOWER"
STORE_URI="local-overlay://?root=$W/merged&lower-store=$(enc "$LOWER_URI")&upper-layer=$T/upper&check-mount=true"
echo "extra-experimental-features = local-overlay-store"
echo "store = $STORE_URI"
if [ "$have_nix_daemon" = 1 ] && nix --extra-experimental-features 'nix-command local-overlay-store' \
  store info --store "$STORE_URI" >/dev/null 2>&1; then
  nix --extra-experimental-features 'nix-command local-overlay-store' path-info --store "$STORE_URI" "$P"
else
  echo "(the nix on PATH, $(nix --version), cannot open local-overlay stores; not tried)"
fi
step "done; cleaning up"
