#!/usr/bin/env bash
# Builds the Debian package of virtgate and prints its path (the last line of stdout):
#   scripts/package.sh            -> target/debian/virtgate_VERSION-1_ARCH.deb
# Steps: cargo-deb (installed from crates.io when missing), the release binaries, man pages
# and completions from the clap definitions (virtgate-dist docs), the licence check, then
# `cargo deb --no-build --strip`.
#
# The build is exactly scripts/bench.sh's (`cargo build --release --bins`, the whole
# workspace): CI builds release once, and whichever of the two runs second finds it done.
# Building only the three programs (-p ...) would unify dependency features differently
# and compile most crates again.
# Needs dpkg-dev (dpkg-shlibdeps for the package's library dependencies): scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
log() { echo "package.sh: $*" >&2; }

if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked >&2
fi
command -v dpkg-shlibdeps >/dev/null || {
    echo "error: dpkg-shlibdeps is missing (package dpkg-dev)" >&2
    echo "hint: run scripts/setup.sh, or apt-get install dpkg-dev" >&2
    exit 1
}

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out="$target_dir/$profile"

start=$SECONDS
log "building the binaries (cargo build --release --bins)"
cargo build --release --bins >&2
log "built in $((SECONDS - start)) s"

log "checking the licences of the linked crates and the copyright file"
"$out/virtgate-dist" licenses --check >/dev/null
"$out/virtgate-dist" copyright --check deploy/debian/copyright

log "writing man pages and completions to $out/docs"
rm -rf "$out/docs"
"$out/virtgate-dist" docs "$out/docs" >/dev/null
gzip -9n "$out/docs/man/"*

start=$SECONDS
# --strip: the release profile keeps line tables for backtraces; the package does not need
# them. --fast: lighter xz compression (the package is 2 MB larger, built 20 s sooner).
deb=$(cargo deb -p virtgate-dist --profile "$profile" --no-build --strip --fast | tail -n 1)
log "packaged in $((SECONDS - start)) s"
[ -f "$deb" ] || { echo "error: cargo deb did not print the package's path (got: $deb)" >&2; exit 1; }
echo "$deb"
