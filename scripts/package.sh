#!/usr/bin/env bash
# Builds the Debian package of virtgate and prints its path (the last line of stdout):
#   scripts/package.sh            -> target/debian/virtgate_VERSION-1_ARCH.deb
# Steps: cargo-deb (installed from crates.io when missing), the binaries in the `deb`
# profile (release, no debug info), man pages and completions from the clap definitions
# (virtgate-dist docs), the licence check, then `cargo deb --no-build`.
# Needs dpkg-dev (dpkg-shlibdeps for the package's library dependencies): scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=deb
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
log "building the binaries (cargo build --profile $profile)"
cargo build --locked --profile "$profile" \
    -p virtgate-gateway -p virtgate-client -p virtgate-pki -p virtgate-dist \
    --bin virtgated --bin virtgate --bin virtgate-pki --bin virtgate-dist >&2
log "built in $((SECONDS - start)) s"

log "checking the licences of the linked crates and the copyright file"
"$out/virtgate-dist" licenses --check >/dev/null
"$out/virtgate-dist" copyright --check deploy/debian/copyright

log "writing man pages and completions to $out/docs"
rm -rf "$out/docs"
"$out/virtgate-dist" docs "$out/docs" >/dev/null
gzip -9n "$out/docs/man/"*

start=$SECONDS
# --fast: lighter xz compression (the package is 2 MB larger, built 20 s sooner)
deb=$(cargo deb -p virtgate-dist --profile "$profile" --no-build --fast | tail -n 1)
log "packaged in $((SECONDS - start)) s"
[ -f "$deb" ] || { echo "error: cargo deb did not print the package's path (got: $deb)" >&2; exit 1; }
echo "$deb"
