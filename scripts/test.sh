#!/usr/bin/env bash
# Every test: install what is missing, check formatting and lints, build, run unit and
# integration tests (as root; integration tests skip with a message otherwise), then fail if
# anything was left behind on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --quiet

before=$(mktemp)
trap 'rm -f "$before"' EXIT
scripts/leak-check.sh snapshot "$before"

# Each integration test owns the orphans of the containers it starts (it is their subreaper),
# so tests run one per process (nextest) or one at a time.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace -- --test-threads=1
fi

scripts/leak-check.sh compare "$before"
