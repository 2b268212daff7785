#!/usr/bin/env bash
# The quick start: build berth, make a busybox bundle from the host's static busybox, and run
# containers with berth-runc (create, start, exec, delete). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --quiet -p berth-runc
RUNC="$PWD/target/release/berth-runc"
ROOT=/run/berth-quickstart
WORK="$PWD/.quickstart"

# A busybox rootfs: the static binary, its applet links, a minimal /etc/passwd and /etc/group.
rm -rf "$WORK"
mkdir -p "$WORK/bundle/rootfs"/{bin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$WORK/bundle/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$WORK/bundle/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$WORK/bundle/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$WORK/bundle/rootfs/etc/group"

# Docker's defaults, then our command instead of an interactive shell.
"$RUNC" spec --bundle "$WORK/bundle"
python3 - "$WORK/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["sh", "-c", "echo hello from $(hostname), pid $$; grep -E '^(CapEff|Seccomp):' /proc/self/status"]
json.dump(spec, open(path, "w"), indent=2)
PY

echo "== berth-runc run"
"$RUNC" --root "$ROOT" run --bundle "$WORK/bundle" quickstart-hello

echo "== create, start, exec, delete"
python3 - "$WORK/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["sleep", "60"]
json.dump(spec, open(path, "w"), indent=2)
PY
# A created container outlives `create`; something must reap it when it ends. Where pid 1 does
# not reap orphans (some VMs), run the lifecycle under a shell that does.
unshare --fork --pid --mount-proc bash -c '
  set -e
  "$0" --root "$1" create --bundle "$2" quickstart-sleep >/dev/null 2>&1 </dev/null
  "$0" --root "$1" start quickstart-sleep
  "$0" --root "$1" list
  "$0" --root "$1" exec quickstart-sleep ps
  "$0" --root "$1" delete --force quickstart-sleep
' "$RUNC" "$ROOT" "$WORK/bundle"
rm -rf "$WORK"
echo "== done: nothing left running"
