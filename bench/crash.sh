#!/usr/bin/env bash
# The kill harness of tests/tests/crash.rs for longer than CI runs it: berthd and shims
# SIGKILLed at random moments of parallel work, checked for a consistent state after each
# kill. Usage: bench/crash.sh [ROUNDS] (500 by default); BERTH_CRASH_SEED=N repeats choices.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --quiet
export BERTH_CRASH_ROUNDS=${1:-500}
exec cargo nextest run -p berth-tests --test crash killed_at_random_moments_berthd_comes_back_consistent --no-capture
