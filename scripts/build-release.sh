#!/usr/bin/env bash
# Release binaries, as berth ships them, in target/dist/: berthd, berth-shim (beside it, where
# berthd looks for it), berth-runc, and the berth CLI linked statically. The CLI runs once per
# command, and a dynamically linked one spends ~0.3 ms of every run in the loader (measured:
# `berth --version` 1.1 -> 0.8 ms, `berth run -d` 0.955x, interleaved A/B; docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p berthd -p berth-shim -p berth-runc -p berth
host=$(rustc -vV | sed -n 's/^host: //p')
dist=target/dist
mkdir -p "$dist"
for b in berthd berth-shim berth-runc; do
  install -m 0755 "target/release/$b" "$dist/$b"
done
# crt-static only for the CLI: with an explicit --target, build scripts and proc macros stay
# dynamic host artifacts (they cannot be linked statically).
if [[ "$host" == *-linux-gnu ]] && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --quiet -p berth --target "$host" 2>/dev/null; then
  install -m 0755 "target/$host/release/berth" "$dist/berth"
else
  echo "build-release: the static CLI did not build; using the dynamic one" >&2
  install -m 0755 target/release/berth "$dist/berth"
fi
