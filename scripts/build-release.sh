#!/usr/bin/env bash
# Release binaries, as berth ships them, in target/dist/: berthd, berth-shim (beside it, where
# berthd looks for it), berth-runc, and the berth CLI and berth-shim linked statically. The CLI
# runs once per command, and a dynamically linked one spends ~0.3 ms of every run in the loader
# (measured: `berth --version` 1.1 -> 0.8 ms, `berth run -d` 0.955x, interleaved A/B). One shim
# starts per container: static (libseccomp included), it starts in 0.46 instead of 0.84 ms and
# takes 0.136 instead of 0.191 MiB PSS with 100 running (`run -d` 0.95x; docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p berthd -p berth-shim -p berth-runc -p berth
host=$(rustc -vV | sed -n 's/^host: //p')
dist=target/dist
mkdir -p "$dist"
for b in berthd berth-shim berth-runc; do
  install -m 0755 "target/release/$b" "$dist/$b"
done
# `--init`'s pid 1: freestanding and static, built apart (scripts/build-init.sh).
scripts/build-init.sh "$dist"
# crt-static only for the CLI: with an explicit --target, build scripts and proc macros stay
# dynamic host artifacts (they cannot be linked statically).
if [[ "$host" == *-linux-gnu ]] && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --quiet -p berth --target "$host" 2>/dev/null; then
  install -m 0755 "target/$host/release/berth" "$dist/berth"
else
  echo "build-release: the static CLI did not build; using the dynamic one" >&2
  install -m 0755 target/release/berth "$dist/berth"
fi
# The shim static and position-dependent (its build.rs links it -no-pie, so its relocated
# read-only data stays shared between shims), in a target directory of its own so these flags
# do not rebuild the CLI's dependencies every time.
seccomp_libdir=$(pkg-config --variable=libdir libseccomp 2>/dev/null || true)
if [[ "$host" == *-linux-gnu && -f "$seccomp_libdir/libseccomp.a" ]] \
  && CARGO_TARGET_DIR=target/static-shim LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_libdir" \
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --quiet -p berth-shim --target "$host" 2>/dev/null \
  && [[ "$("target/static-shim/$host/release/berth-shim" 2>&1 || true)" == "usage: berth-shim"* ]]; then
  install -m 0755 "target/static-shim/$host/release/berth-shim" "$dist/berth-shim"
else
  echo "build-release: the static shim did not build or run; using the dynamic one" >&2
fi
