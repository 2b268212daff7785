#!/usr/bin/env bash
# Install what berth needs to build and test, with apt, only where something is missing: the
# build's C libraries, busybox for the test fixtures, and the peers the tests compare berth
# with (runc, crun, skopeo, umoci, podman, a dockerd for scripts/peer-dockerd.sh, docker-py), and
# a registry for pull and push (docker-registry, with htpasswd and openssl for its auth and TLS),
# nftables for published ports, docker-compose (1.29) for the compose test.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in libseccomp-dev pkg-config busybox-static iproute2 procps util-linux runc crun skopeo umoci podman docker.io containerd docker-registry apache2-utils openssl nftables docker-compose; do
  have_pkg "$pkg" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages with services (docker.io, containerd) must not start them: the tests run their own
  # isolated peer (scripts/peer-dockerd.sh), and a machine's dockerd is not ours to start.
  guard=/usr/sbin/policy-rc.d
  made_guard=0
  if [ ! -e "$guard" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$guard"
    chmod 755 "$guard"
    made_guard=1
  fi
  trap '[ "$made_guard" = 1 ] && rm -f "$guard"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# docker-py, for the SDK compatibility test (under CI its absence fails that test).
if command -v python3 >/dev/null && ! python3 -c "import docker" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check docker >/dev/null 2>&1 || echo "could not install docker-py: its test will skip"
fi
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found: tests will run with cargo test --test-threads=1"
fi
