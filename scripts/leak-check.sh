#!/usr/bin/env bash
# What the project can leave on a machine: mounts, cgroups, network links, nft tables, processes
# and temp dirs (see `inventory`). `snapshot FILE` records them; `compare FILE` fails
# when anything new is there (so leftovers from before the run, or from a user, are not blamed).
set -euo pipefail

inventory() {
  local tmp=${TMPDIR:-/tmp}
  # Mounts: any naming berth (mount point or options), any overlay (store tests mount them in
  # tempfile's unnamed dirs), any under the temp directory.
  awk -v tmp="$tmp/" '$0 ~ /berth/ || $0 ~ / - overlay / || index($5, tmp) == 1 {print "mount " $5}' /proc/self/mountinfo || true
  find /sys/fs/cgroup -maxdepth 4 -type d -name '*berth*' 2>/dev/null | sed 's/^/cgroup /' || true
  find /sys/fs/cgroup -maxdepth 5 -type d -path '*/berth/*' 2>/dev/null | sed 's/^/cgroup /' || true
  ip -o link 2>/dev/null | awk -F': ' '$2 ~ /berth/ {print "link " $2}' || true
  nft list tables 2>/dev/null | awk '/berth/ {print "nft " $0}' || true
  # Processes, zombies included: a zombie nobody reaps is a leak too (this machine's pid 1 never
  # reaps). The peer dockerd and podman's helpers count when they run from a test's directory.
  ps -eo pid=,comm=,args= | awk '$2 != "awk" && ($2 ~ /^(berthd|berth-shim|berth-runc)$/ || $0 ~ /berth-bundle-|berth-runc-root-|berth-peer-|berth-podman-|berth-registry-/) {print "process " $1 " " $2}' || true
  find "$tmp" -maxdepth 1 \( -name 'berth-*' -o -name '.tmp*' \) 2>/dev/null | sed 's/^/tempdir /' || true
}

case "${1:-}" in
  snapshot) inventory | sort -u > "$2" ;;
  compare)
    now=$(mktemp)
    inventory | sort -u > "$now"
    new=$(comm -13 "$2" "$now")
    rm -f "$now"
    if [ -n "$new" ]; then
      echo "LEAK: the test run left these behind:"
      echo "$new" | sed 's/^/  /'
      exit 1
    fi
    echo "leak check: nothing left behind"
    ;;
  *) echo "usage: $0 snapshot FILE | compare FILE" >&2; exit 2 ;;
esac
