#!/bin/sh
# Install the maskgate door terminal from an unpacked package directory.
#   ./install.sh                 install into / (as root): user, groups, udev rule, systemd unit
#   ./install.sh --root DIR      install the files under DIR only (image building, tests);
#                                no users, no systemctl
# An existing /etc/maskgate/edge.toml is kept; the new one is put beside it as edge.toml.new.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=/
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
            root=$2; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -d "$root" ] || { echo "install.sh: root $root is not a directory" >&2; exit 2; }
root=$(cd "$root" && pwd)
[ "$root" = / ] && prefix="" || prefix=$root
for f in bin/edge edge.toml edge.service; do
  [ -f "$here/$f" ] || { echo "install.sh: package is incomplete: $here/$f is missing" >&2; exit 1; }
done

say() { printf '[install] %s\n' "$*"; }

install -d -m 0755 "$prefix/usr/local/bin" "$prefix/etc/maskgate" "$prefix/etc/systemd/system" \
  "$prefix/etc/udev/rules.d" "$prefix/usr/local/share/doc/maskgate"
install -d -m 0750 "$prefix/var/lib/maskgate"
install -m 0755 "$here/bin/edge" "$prefix/usr/local/bin/edge"
if [ -f "$prefix/etc/maskgate/edge.toml" ]; then
  install -m 0640 "$here/edge.toml" "$prefix/etc/maskgate/edge.toml.new"
  say "kept the existing /etc/maskgate/edge.toml; the packaged one is edge.toml.new"
else
  install -m 0640 "$here/edge.toml" "$prefix/etc/maskgate/edge.toml"
fi
install -m 0644 "$here/edge.service" "$prefix/etc/systemd/system/maskgate-edge.service"
printf '%s\n' '# maskgate: GPIO chips usable by the gpio group (the door relay and inputs)' \
  'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' \
  > "$prefix/etc/udev/rules.d/60-maskgate-gpio.rules"
[ -f "$here/DEPLOY.md" ] && install -m 0644 "$here/DEPLOY.md" "$prefix/usr/local/share/doc/maskgate/DEPLOY.md"
if [ -d "$here/bundle" ]; then
  install -d -m 0750 "$prefix/var/lib/maskgate/bundle"
  cp -R "$here/bundle/." "$prefix/var/lib/maskgate/bundle/"
  say "bundle installed into /var/lib/maskgate/bundle"
fi
say "files installed under $root"

if [ "$root" != / ]; then
  say "--root given: skipping user, groups, ownership and systemctl"
  exit 0
fi
getent group gpio >/dev/null || groupadd --system gpio
getent group video >/dev/null || groupadd --system video
# Admins who may use the door's API socket: usermod -aG maskgate-admin <user>
getent group maskgate-admin >/dev/null || groupadd --system maskgate-admin
if ! getent passwd maskgate >/dev/null; then
  useradd --system --no-create-home --home-dir /var/lib/maskgate --shell /usr/sbin/nologin \
    --groups video,gpio maskgate
fi
chown -R maskgate:maskgate /var/lib/maskgate
chgrp maskgate /etc/maskgate/edge.toml
udevadm control --reload-rules 2>/dev/null && udevadm trigger --subsystem-match=gpio 2>/dev/null || true
systemctl daemon-reload
systemctl enable maskgate-edge.service
say "enabled maskgate-edge.service; edit /etc/maskgate/edge.toml, then: systemctl start maskgate-edge"
