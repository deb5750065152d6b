#!/usr/bin/env bash
# Build the device packages: one tarball per target with the cross-built `edge` (release,
# features `device`), edge.toml, the systemd unit, install.sh, DEPLOY.md and the bundle if given.
#   scripts/package.sh                       both targets into out/package
#   TARGETS=aarch64-unknown-linux-gnu OUT=dir BUNDLE=path/to/bundle scripts/package.sh
#   PROFILE=dev ...                           a quick unoptimised package, for trying the flow
#   EDGE_BIN=path TARGETS=one-target ...      package an edge binary built already (make test
#                                             reuses the one its aarch64 stage built and tested)
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-"aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"}
OUT=${OUT:-out/package}
BUNDLE=${BUNDLE:-}
CARGO=${CARGO:-cargo}
PROFILE=${PROFILE:-release}
EDGE_BIN=${EDGE_BIN:-}
[ "$PROFILE" = dev ] && profile_dir=debug || profile_dir=$PROFILE
target_dir=${CARGO_TARGET_DIR:-target}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

[ -z "$BUNDLE" ] || [ -e "$BUNDLE" ] || { echo "package.sh: BUNDLE=$BUNDLE does not exist" >&2; exit 1; }
if [ -n "$EDGE_BIN" ]; then
  [ -x "$EDGE_BIN" ] || { echo "package.sh: EDGE_BIN=$EDGE_BIN is not an executable" >&2; exit 1; }
  [ "$(wc -w <<<"$TARGETS")" -eq 1 ] || { echo "package.sh: EDGE_BIN needs exactly one target in TARGETS" >&2; exit 1; }
fi
mkdir -p "$OUT"
for target in $TARGETS; do
  if [ -n "$EDGE_BIN" ]; then
    bin=$EDGE_BIN
    echo "[package] packaging $bin for $target"
  else
    echo "[package] building edge for $target"
    $CARGO build --profile "$PROFILE" --locked --target "$target" -p edge --features device
    bin=$target_dir/$target/$profile_dir/edge
  fi
  name=maskgate-edge-$version-$target
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/$name/bin"
  install -m 0755 "$bin" "$stage/$name/bin/edge"
  install -m 0644 packaging/edge.toml packaging/edge.service docs/DEPLOY.md "$stage/$name/"
  install -m 0755 packaging/install.sh "$stage/$name/"
  if [ -n "$BUNDLE" ]; then
    mkdir -p "$stage/$name/bundle"
    cp -R "$BUNDLE" "$stage/$name/bundle/"
  fi
  tar -C "$stage" --owner=0 --group=0 -czf "$OUT/$name.tar.gz" "$name"
  rm -rf "$stage"
  trap - EXIT
  echo "[package] $OUT/$name.tar.gz"
done
