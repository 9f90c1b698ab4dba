#!/usr/bin/env bash
# The virtgate demo: installs what is missing, builds, starts a gateway with a demo VM
# (diskless QEMU showing its BIOS screen), lists it with the client through an encrypted
# key, takes a picture of its screen through the VNC tunnel, and keeps serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "building (first time: a few minutes) ..." >&2
cargo build --workspace --bins -q
bin="$PWD/target/debug"

dir="${VIRTGATE_DEMO_DIR:-${TMPDIR:-/tmp}/virtgate-demo-$(id -un)}"
rm -rf "$dir"
# virtgated refuses to run as root unless told: the demo is throwaway and local, so allow it.
allow_root=()
if [ "$(id -u)" = 0 ]; then allow_root=(--allow-root); fi
"$bin/virtgated" "${allow_root[@]}" demo --dir "$dir" > "$dir.log" 2>&1 &
gw=$!
fwd=
cleanup() {
    if [ -n "$fwd" ]; then kill "$fwd" 2>/dev/null || true; fwd=; fi
    if [ -n "$gw" ]; then
        kill -INT "$gw" 2>/dev/null && wait "$gw" 2>/dev/null || true
        gw=
    fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM

for _ in $(seq 600); do
    [ -f "$dir/ready" ] && break
    kill -0 "$gw" 2>/dev/null || { cat "$dir.log" >&2; exit 1; }
    sleep 0.1
done
[ -f "$dir/ready" ] || { echo "error: the demo gateway did not start; log: $dir.log" >&2; exit 1; }

echo
echo "\$ virtgate -p demo whoami"
"$bin/virtgate" -p demo whoami
echo
echo "\$ virtgate -p demo list"
"$bin/virtgate" -p demo list
echo

# A VNC client through the tunnel: `virtgate vnc` prints the local endpoint first.
coproc FWD { exec "$bin/virtgate" -p demo vnc demo --no-viewer; }
fwd=$FWD_PID
read -r url <&"${FWD[0]}"
target="${url#vnc://}"
shot="$dir/screen.jpg"
for _ in $(seq 100); do
    vncsnapshot -quiet -allowblank "${target%:*}::${target##*:}" "$shot" >/dev/null 2>&1 || true
    # the BIOS switches to its 720x400 text screen a moment after start
    if [ -s "$shot" ] && python3 - "$shot" <<'PY' 2>/dev/null
import struct, sys
d = open(sys.argv[1], 'rb').read(); i = 2
while i < len(d):
    m, l = d[i + 1], struct.unpack('>H', d[i + 2:i + 4])[0]
    if m in (0xC0, 0xC2):
        h, w = struct.unpack('>HH', d[i + 5:i + 9]); sys.exit(0 if (w, h) == (720, 400) else 1)
    i += 2 + l
sys.exit(1)
PY
    then break; fi
    sleep 0.2
done
echo "\$ vncsnapshot $url (through the tunnel)"
echo "screen of VM 'demo' saved to $shot"
if [ -n "${DISPLAY:-}" ] && command -v xdg-open >/dev/null; then xdg-open "$shot" >/dev/null 2>&1 & fi
kill "$fwd" 2>/dev/null || true; fwd=

url=$(cat "$dir/ready")
user=$(basename "$(ls "$dir"/client/*.key)" .key)
cat <<EOT

The demo gateway is running at $url (log: $dir.log). Try, in another terminal:
  export PATH="$bin:\$PATH"
  virtgate -p demo info demo
  virtgate -p demo vnc demo                 # opens a VNC viewer if one is installed
  virtgate -p demo list --json
  curl --http2 --cacert $dir/ca/ca.pem --cert $dir/client/$user.pem \\
       --key $dir/client/$user.key --pass "\$(cat $dir/client/passphrase)" \\
       https://${url#virtgate://}/v1/domains
The profile 'demo' is in your virtgate config (\${VIRTGATE_CONFIG:-~/.config/virtgate/config.toml});
its key $dir/client/$user.key is encrypted; the passphrase comes from its passphrase_command.
Press Ctrl-C here to stop the gateway and the VM.
EOT
wait "$gw"
