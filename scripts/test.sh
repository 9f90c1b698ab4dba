#!/usr/bin/env bash
# Runs every test of virtgate: installs the system packages the tests drive (real QEMU,
# curl, openssl, vncsnapshot), builds the binaries under test, then runs unit and
# integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
cargo test --workspace "$@"
