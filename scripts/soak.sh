#!/usr/bin/env bash
# The soak (issue 13), not run in CI: for SECONDS (default 600) clients log in to one gateway
# on a real libvirtd by client certificate, Kerberos, SSH and the unix socket, call the API,
# open, use and close VNC, serial and libvirt tunnels and disconnect, continuously, while the
# gateway's RSS, descriptors, threads and tasks are sampled every 10 s. It is the test
# `soak::` of tests/tests/it/soak.rs (which CI runs for 60 s) with a longer duration; its
# samples go to docs/soak.csv and scripts/soak-plot.py draws docs/soak.png from them.
# Needs root (libvirtd, sshd and its test account). The binaries are the debug ones the
# test suite uses (`cargo build --workspace --bins`) unless VIRTGATE_BIN_DIR names others
# (e.g. target/release after `cargo build --release --bins`); VIRTGATE_SOAK_WORKERS sets
# the number of client loops (default 2).
#
#   scripts/soak.sh          # 10 minutes, updates docs/soak.csv and docs/soak.png
#   scripts/soak.sh 120      # 2 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
scripts/setup.sh
if [ -z "${VIRTGATE_BIN_DIR:-}" ]; then
    cargo build -q --workspace --bins
fi
export VIRTGATE_SOAK_SECS="$secs"
export VIRTGATE_SOAK_OUT="$PWD/docs/soak.csv"
cargo test -q -p virtgate-tests --test it soak:: -- --nocapture
/usr/bin/python3 scripts/soak-plot.py docs/soak.csv docs/soak.png
echo "wrote docs/soak.csv and docs/soak.png" >&2
