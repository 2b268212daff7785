#!/usr/bin/env bash
# Every test: install what is missing, check formatting and lints, build, run unit and
# integration tests (as root; integration tests skip with a message otherwise) beside an
# isolated peer dockerd, then fail if anything was left behind on the machine. Skips are
# counted in the summary; under CI (CI=true) a peer that scripts/deps.sh installs must be
# there, so a test that would skip for want of it fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

# A clean checkout gains nothing from incremental state, and it is most of target/'s size.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
cargo fmt --manifest-path crates/init/Cargo.toml -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
CARGO_TARGET_DIR=target/init cargo clippy --manifest-path crates/init/Cargo.toml --release --quiet -- -D warnings
cargo build --workspace --quiet
scripts/build-init.sh target/debug
# The Debian package, from these binaries, for tests/tests/package.rs.
scripts/build-deb.sh target/debug >/dev/null

before=$(mktemp)
skips=$(mktemp)
peer=$(mktemp -d "${TMPDIR:-/tmp}/berth-peer-XXXXXX")
cleanup() {
  scripts/peer-dockerd.sh stop "$peer" || true
  rm -f "$before" "$skips"
}
trap cleanup EXIT
scripts/leak-check.sh snapshot "$before"

# Docker itself, for the tests that compare berth with it (isolated: its own sockets and data).
if host=$(scripts/peer-dockerd.sh start "$peer"); then
  export BERTH_PEER_DOCKER_HOST=${host#DOCKER_HOST=}
else
  echo "no peer dockerd: the tests that compare with Docker itself will skip (or fail, under CI)"
fi
export BERTH_SKIP_LOG="$skips"

# Each integration test owns the orphans of the containers it starts (it is their subreaper),
# so tests run one per process (nextest) or one at a time.
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast || status=$?
else
  cargo test --workspace -- --test-threads=1 || status=$?
fi

count=$(grep -c . "$skips" || true)
echo "skipped inside tests (passed without testing what they name): $count"
sed 's/^/  SKIP /' "$skips"

scripts/peer-dockerd.sh stop "$peer"
scripts/leak-check.sh compare "$before" || status=1
exit "$status"
