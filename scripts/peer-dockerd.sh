#!/usr/bin/env bash
# An isolated containerd + dockerd for tests that compare berth with Docker itself (image
# archives in both directions): everything under DIR (sockets, state, data), no bridge, no
# iptables or forwarding changes, nothing of a dockerd the machine may run is touched.
#   scripts/peer-dockerd.sh start DIR   prints DOCKER_HOST=unix://DIR/docker.sock when it answers
#   scripts/peer-dockerd.sh stop DIR    stops both by their recorded pids, unmounts, removes DIR
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
start)
  command -v dockerd >/dev/null && command -v containerd >/dev/null || { echo "dockerd or containerd is not installed (scripts/deps.sh)" >&2; exit 1; }
  mkdir -p "$dir"
  cat > "$dir/containerd.toml" <<TOML
version = 2
root = "$dir/containerd-root"
state = "$dir/containerd-state"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
TOML
  containerd --config "$dir/containerd.toml" > "$dir/containerd.log" 2>&1 &
  echo $! > "$dir/containerd.pid"
  for _ in $(seq 100); do [ -S "$dir/containerd.sock" ] && break; sleep 0.05; done
  echo '{}' > "$dir/daemon.json"
  dockerd -H "unix://$dir/docker.sock" --containerd "$dir/containerd.sock" --config-file "$dir/daemon.json" \
    --data-root "$dir/docker" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    --bridge none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
    > "$dir/dockerd.log" 2>&1 &
  echo $! > "$dir/dockerd.pid.launched"
  for _ in $(seq 200); do
    if DOCKER_HOST="unix://$dir/docker.sock" docker version >/dev/null 2>&1; then
      echo "DOCKER_HOST=unix://$dir/docker.sock"
      exit 0
    fi
    sleep 0.05
  done
  echo "the peer dockerd did not start; its log:" >&2
  tail -20 "$dir/dockerd.log" >&2 || true
  "$0" stop "$dir"
  exit 1
  ;;
stop)
  [ -d "$dir" ] || exit 0
  for name in dockerd.pid.launched containerd.pid; do
    pid=$(cat "$dir/$name" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  # containerd's shims and dockerd's mounts (overlay layers, netns files) live under DIR.
  pkill -KILL -f "containerd-shim.*$dir" 2>/dev/null || true
  { grep -F " $dir/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
