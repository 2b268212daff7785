#!/usr/bin/env bash
# The quick start: build berth, start berthd on a private root, import a busybox image made from
# the host's static busybox, and run containers with the berth CLI (then the raw runtime,
# berth-runc). Needs root. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
scripts/build-release.sh
BIN="$PWD/target/dist"
WORK="$(mktemp -d /tmp/berth-quickstart.XXXXXX)"
export DOCKER_HOST="unix://$WORK/berth.sock"
berth() { "$BIN/berth" "$@"; }

cleanup() {
  set +e
  for c in $(berth ps -aq 2>/dev/null); do berth rm -f "$c" >/dev/null; done
  [ -n "${DAEMON:-}" ] && kill "$DAEMON" && wait "$DAEMON" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== berthd"
"$BIN/berthd" --data-root "$WORK/data" --exec-root "$WORK/exec" -H "$DOCKER_HOST" \
  --config-file "$WORK/daemon.json" 2>"$WORK/berthd.log" &
DAEMON=$!
for _ in $(seq 100); do [ -S "$WORK/berth.sock" ] && break; sleep 0.05; done
berth version --format 'berthd {{.Server.Version}}, API {{.Server.ApiVersion}}'

echo "== import a busybox image from /bin/busybox"
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS"/{bin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$ROOTFS/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ROOTFS/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOTFS/etc/group"
tar -C "$ROOTFS" -c . | berth import - busybox:latest
berth images

echo "== berth run"
berth run --rm busybox sh -c 'echo hello from $(hostname), pid $$; grep -E "^(CapEff|Seccomp):" /proc/self/status'
set +e; berth run --rm busybox sh -c 'exit 42'; echo "exit code: $?"; set -e

echo "== a long-running container: logs, exec, ps, stop"
berth run -d --name web busybox sh -c 'while true; do echo tick; sleep 1; done' >/dev/null
sleep 1.2
berth ps
berth logs --tail 1 web
berth exec web ps
berth stop -t 1 web >/dev/null
berth ps -a --format '{{.Names}}: {{.Status}}'
berth rm web >/dev/null

echo "== berth-runc: the runtime alone"
BUNDLE="$WORK/bundle"
mkdir -p "$BUNDLE"
cp -a "$ROOTFS" "$BUNDLE/rootfs"
"$BIN/berth-runc" spec --bundle "$BUNDLE"
python3 - "$BUNDLE/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["echo", "hello from berth-runc"]
json.dump(spec, open(path, "w"), indent=2)
PY
"$BIN/berth-runc" --root "$WORK/runc" run --bundle "$BUNDLE" quickstart-hello
echo "== done: nothing left running"
