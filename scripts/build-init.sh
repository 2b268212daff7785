#!/usr/bin/env bash
# berth-init (crates/init), the static pid 1 of `--init`, built apart from the workspace (it is
# freestanding and needs panic=abort) and put beside the other binaries of the given profile
# directory, where berthd looks for it: `scripts/build-init.sh target/debug`.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-target/debug}
CARGO_TARGET_DIR=target/init cargo build --release --quiet --manifest-path crates/init/Cargo.toml
mkdir -p "$dest"
install -m 0755 target/init/release/berth-init "$dest/berth-init"
