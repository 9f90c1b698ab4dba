#!/usr/bin/env bash
# Benchmarks: virtgate's tunnels side by side with raw TCP, ssh -L (through a real sshd) and
# stunnel4 on loopback, plus login time, gateway memory per connection and 10,000 tunnels on
# one connection (`--before DIR`: an older build's binaries in the same run). Installs what is missing, builds the RELEASE binaries, runs
# `virtgate-bench` with the given arguments and writes docs/benchmarks.md + .png
# (`--quick`: under 2 minutes, written to target/bench/). Needs root (sshd, test account).
#
#   scripts/bench.sh                 # full run (several minutes), updates docs/
#   scripts/bench.sh --quick         # CI: checks that every path works and every byte arrives
#   scripts/bench.sh --quick --only "virtgate TLS" --p1 up    # one path, one direction
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "building the release binaries ..." >&2
cargo build --release --bins -q
exec target/release/virtgate-bench "$@"
