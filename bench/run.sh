#!/usr/bin/env bash
# Build release binaries and run every benchmark; paste the output into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build-release.sh
cargo build --release --quiet -p berth-store --examples
python3 bench/cgroup_join.py
echo
python3 bench/runc_run.py
echo
python3 bench/layer_apply.py
echo
python3 bench/layer_diff.py
echo
python3 bench/engine.py
echo
python3 bench/network.py
echo
python3 bench/commit.py

echo
python3 bench/cp.py

echo
python3 bench/build.py

echo
python3 bench/events.py

echo
python3 bench/health.py
