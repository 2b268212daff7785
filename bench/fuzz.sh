#!/usr/bin/env bash
# Fuzz what berth takes from strangers for a fixed time per target (not part of CI): layer tars
# applied into a root, image archives loaded, image references, API requests through the
# create-time checks. A crash stops its target and is written to fuzz/artifacts/<target>/;
# each one is fixed and kept as a regression test in the crate it hit.
# Usage: bench/fuzz.sh [SECONDS per target (60)] [TARGET ...]   (as root: layers are applied for real)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(layer_apply image_load reference api_request)
scripts/deps.sh >/dev/null
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz needs unstable flags: a nightly toolchain where there is one, else stable told to
# accept them.
if rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
work=target/fuzz
python3 fuzz/seeds.py "$work/seeds"
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t"
  echo "== $t: $seconds s"
  cargo "${toolchain[@]}" fuzz run "$t" "$work/corpus/$t" "$work/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=1048576 -print_final_stats=1 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|.*panicked|Done)' || true
  if compgen -G "fuzz/artifacts/$t/crash-*" >/dev/null; then
    echo "$t: crashes in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
