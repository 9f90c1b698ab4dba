#!/usr/bin/env bash
# Refresh the browser console's third-party assets in gateway/web/vendor/ from the npm
# registry (`npm pack`, the registry's own tarballs; nothing else is fetched).
#
#   bash scripts/vendor-web.sh
#
# Versions are pinned below together with the registry's sha512 integrity: a tarball whose
# integrity differs is refused, so a re-run gives byte-identical files. To move to a new
# version, change the version and integrity below (`npm view PKG@VER dist.integrity`), run
# this, read the diff, update the versions in dist/src/copyright.rs (EMBEDDED) and
# deploy/debian/copyright, and commit gateway/web/vendor/ (it is the repository's copy:
# `cargo build` never needs npm). Only what the pages load is kept, plus every licence text
# that covers it.
set -euo pipefail
cd "$(dirname "$0")/.."

# name version licence integrity
NOVNC=(@novnc/novnc 1.7.0 MPL-2.0
  'sha512-ucEJOx4T2avIRCleodk7YobZj5O2Ga2AeLfQ69A/yjG9HHba2+PDgwSkN3FttrmG+70ZGx21sElNFouK13RzyA==')
XTERM=(@xterm/xterm 6.0.0 MIT
  'sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==')

command -v npm >/dev/null || { echo "error: npm is missing (apt-get install npm)" >&2; exit 1; }

dest=gateway/web/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch NAME VERSION INTEGRITY: the package tarball, checked, unpacked into $work/NAME/package
fetch() {
  local name=$1 version=$2 integrity=$3 dir=$work/${1//\//_}
  mkdir -p "$dir"
  local json
  json=$(cd "$dir" && npm pack --json --silent "$name@$version")
  local got file
  got=$(printf '%s' "$json" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const p=JSON.parse(s)[0];console.log(p.integrity+" "+p.filename)})')
  file=${got#* }
  got=${got%% *}
  # npm checks the tarball against the registry; we check the registry against the pin
  local ours
  ours="sha512-$(openssl dgst -sha512 -binary "$dir/$file" | base64 -w0)"
  if [ "$got" != "$integrity" ] || [ "$ours" != "$integrity" ]; then
    echo "error: $name@$version: integrity $ours (registry says $got), pinned $integrity" >&2
    exit 1
  fi
  tar -xzf "$dir/$file" -C "$dir"
  echo "$dir/package"
}

n=$(fetch "${NOVNC[0]}" "${NOVNC[1]}" "${NOVNC[3]}")
x=$(fetch "${XTERM[0]}" "${XTERM[1]}" "${XTERM[3]}")

rm -rf "$dest"
mkdir -p "$dest/novnc/vendor" "$dest/novnc/docs" "$dest/xterm/lib" "$dest/xterm/css"

# noVNC: the RFB library as ES modules (core/), the inflate/deflate it imports (vendor/pako),
# its licence and the licence texts LICENSE.txt names for those files (MPL-2.0 for core,
# BSD for core/crypto/des.js, MIT for pako). The app/ UI, fonts and images are not used.
cp -r "$n/core" "$dest/novnc/core"
cp -r "$n/vendor/pako" "$dest/novnc/vendor/pako"
cp "$n/LICENSE.txt" "$n/AUTHORS" "$dest/novnc/"
cp "$n/docs/LICENSE.MPL-2.0" "$n/docs/LICENSE.BSD-2-Clause" "$n/docs/LICENSE.BSD-3-Clause" "$dest/novnc/docs/"

# xterm.js: the ES module build (the pages import it), its stylesheet and licence.
cp "$x/lib/xterm.mjs" "$dest/xterm/lib/"
cp "$x/css/xterm.css" "$dest/xterm/css/"
cp "$x/LICENSE" "$dest/xterm/"

# The pages' modules must not ask for anything outside what was copied.
if grep -rhoE "^import .* from ['\"][^.][^'\"]*['\"]" "$dest/novnc/core" | grep -q .; then
  echo "error: noVNC's core imports a bare module specifier; the pages cannot load it" >&2
  exit 1
fi

{
  echo "# Third-party browser assets virtgated embeds and serves as /ui/assets/novnc/… and /ui/assets/xterm/…."
  echo "# Written by scripts/vendor-web.sh from the npm registry; do not edit by hand."
  echo "# name version licence integrity"
  echo "${NOVNC[0]} ${NOVNC[1]} ${NOVNC[2]} ${NOVNC[3]}"
  echo "  (includes pako, vendor/pako/: MIT AND Zlib; core/crypto/des.js: BSD-3-Clause)"
  echo "${XTERM[0]} ${XTERM[1]} ${XTERM[2]} ${XTERM[3]}"
} >"$dest/VERSIONS"

echo "vendored into $dest:"
find "$dest" -type f | sort | sed 's/^/  /' | head -n 5
echo "  ... $(find "$dest" -type f | wc -l) files, $(du -sh "$dest" | cut -f1)"
