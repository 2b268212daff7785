#!/usr/bin/env bash
# Install berth as people install Docker: build the Debian package (or take the one given),
# install it with apt (which pulls in what it depends on), and start berth.socket where systemd
# runs. Then `docker -H unix:///run/berth/berth.sock ps` (or `berth ps`) talks to berthd, which
# socket activation starts on the first request. Members of the `berth` group may use it.
#   scripts/install.sh [PACKAGE.deb]
set -euo pipefail
cd "$(dirname "$0")/.."
deb=${1:-}
if [[ -z "$deb" ]]; then
  deb=$(scripts/build-deb.sh | tail -n 1)
fi
apt-get install -y --no-install-recommends "$(realpath "$deb")"
if [[ -d /run/systemd/system ]]; then
  systemctl enable --now berth.socket
  echo "berth.socket is listening on /run/berth/berth.sock"
else
  echo "systemd is not running here: start berthd yourself (berthd &)"
fi
