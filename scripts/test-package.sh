#!/usr/bin/env bash
# Package for aarch64, install the tarball into a scratch root with install.sh --root, and run
# the installed binary under qemu: --version, and `audit verify` on an empty and on a tampered log.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
TARGETS=$target OUT="$scratch/out" bash scripts/package.sh
tarball=$(ls "$scratch"/out/maskgate-edge-*-$target.tar.gz)
mkdir -p "$scratch/unpack" "$scratch/root"
tar -C "$scratch/unpack" -xzf "$tarball"
"$scratch"/unpack/maskgate-edge-*/install.sh --root "$scratch/root"

fail() { echo "test-package: FAIL: $*" >&2; exit 1; }
for f in usr/local/bin/edge etc/maskgate/edge.toml etc/systemd/system/maskgate-edge.service \
         etc/udev/rules.d/60-maskgate-gpio.rules var/lib/maskgate; do
  [ -e "$scratch/root/$f" ] || fail "$f was not installed"
done
file "$scratch/root/usr/local/bin/edge" | grep -q 'ARM aarch64' || fail "installed edge is not an aarch64 binary"

edge() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$scratch/root/usr/local/bin/edge" "$@"; }
edge --version | grep -q '^edge ' || fail "edge --version"
: > "$scratch/empty.jsonl"
edge audit verify "$scratch/empty.jsonl" | grep -q 'ok, 0 entries' || fail "audit verify on an empty log"
# A config typo is reported, naming the key, before any hardware is touched.
sed 's/^fps = 15/fsp = 15/' "$scratch/root/etc/maskgate/edge.toml" > "$scratch/bad.toml"
if edge run --config "$scratch/bad.toml" 2> "$scratch/err"; then fail "run accepted a bad config"; fi
grep -q 'fsp' "$scratch/err" || fail "bad-config error does not name the key: $(cat "$scratch/err")"
# Installing again keeps the operator's config.
"$scratch"/unpack/maskgate-edge-*/install.sh --root "$scratch/root" >/dev/null
[ -f "$scratch/root/etc/maskgate/edge.toml.new" ] || fail "reinstall overwrote edge.toml"
echo "test-package: 1 passed, 0 failed"
