#!/usr/bin/env bash
# Runs every test of virtgate: installs the system packages the tests drive (real QEMU,
# curl, openssl, vncsnapshot), builds the binaries under test, then runs unit and
# integration tests, then every fuzz target briefly (scripts/fuzz.sh --short).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
# the package test needs the .deb: build it (a release build) before the timing-sensitive
# tests run, not beside them
scripts/package.sh >/dev/null
cargo test --workspace "$@"
# every fuzz target briefly (about 6 s each) over its committed seeds; fails on a crash
scripts/fuzz.sh --short
