#!/usr/bin/env bash
# Installs the Debian packages virtgate's demo and tests use (QEMU, a VNC client, curl,
# openssl, an MIT KDC, sshd, libvirt, python3-libvirt, virt-viewer, virt-manager, Xvfb)
# and the headers to build it (libkrb5, libclang), if any is missing. Needs root or sudo; safe to run again.
set -euo pipefail

packages=(
    qemu-system-x86 vncsnapshot curl openssl ca-certificates pkg-config util-linux
    # Kerberos: a real MIT KDC for the tests; headers and libclang to build libgssapi
    krb5-kdc krb5-admin-server krb5-user libkrb5-dev libclang-dev
    # SSH transport: a real sshd and a non-root user whose login shell is zsh
    openssh-server openssh-client zsh passwd
    # libvirt: a real libvirtd + virtlogd (started by the tests in a mount namespace of
    # their own) and virsh; binutils assembles the tests' tiny guest kernel
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients binutils mount
    # the gateway's libvirt backend links libvirt (virt crate)
    libvirt-dev
    # benchmarks (scripts/bench.sh): stunnel4 is a baseline; the chart's text needs a TTF font
    stunnel4 fonts-dejavu-core
    # /v1/metrics is checked with Prometheus' own promtool
    prometheus
    # tests that drive libvirt from python (libvirt.open(...).openGraphicsFD(...)); use
    # /usr/bin/python3, which sees python3-libvirt
    python3 python3-libvirt
    # real graphical clients: remote-viewer/virt-viewer, virt-manager, and the SPICE widget
    # virt-manager only recommends (without it no SPICE console opens in virt-manager)
    virt-viewer virt-manager gir1.2-spiceclientglib-2.0 gir1.2-spiceclientgtk-3.0
    # a private X server for them (tests/src/fixture/xvfb.rs) without any D-Bus session
    # bus: xvfb; screenshots of it: xwd (x11-apps) + ImageMagick's convert; window titles:
    # xdotool; xmessage (x11-apps) is the fixture's own test client; x11-utils (xwininfo,
    # xprop, xdpyinfo) to look at a test's screen by hand
    xvfb x11-apps x11-utils xdotool imagemagick
    # dead-peer tests cut the network on loopback with a DROP rule on the gateway's port
    # (tests/src/fixture/netcut.rs)
    iptables
    # the Debian package (scripts/package.sh, tests/tests/it/package.rs): dpkg-dev for
    # cargo-deb's dependency list (dpkg-shlibdeps), lintian to check the .deb, debootstrap
    # for the fresh Debian 12 root the package is installed into, systemd for
    # `systemd-analyze security` of the unit (installing it does not make it PID 1).
    # About 17 s to install; the fresh root takes about 35 s once (cached in /var/tmp).
    dpkg-dev lintian debootstrap systemd
    # hardware keys (tests/tests/it/pkcs11.rs): SoftHSM2 is a PKCS#11 token in software
    # (softhsm2-util makes one in the test's dir); OpenSC's pkcs11-tool makes and lists keys
    # on it as an admin would
    softhsm2 opensc
    # browsers' certificate store: a .p12 from `virtgate-pki export-p12` is imported into a
    # fresh NSS database (pk12util, certutil: tests/tests/it/enroll.rs), as Firefox and
    # Chromium do
    libnss3-tools
    # the web console driven by a real browser (tests/src/fixture/chromium.rs): headless
    # Chromium and its WebDriver server from Debian; nothing downloads a browser or a driver
    chromium chromium-driver
    # hostile clients (tests/tests/it/hostile.rs): HTTP/2 attackers written with python's
    # h2/hyperframe, run by /usr/bin/python3 in processes of their own; the soak's plot
    # (scripts/soak.sh → docs/soak.png) is drawn with matplotlib
    python3-h2 python3-matplotlib
    # the fuzz targets (scripts/fuzz.sh) link libFuzzer, which is C++
    g++
)

# The fuzz targets (fuzz/, scripts/fuzz.sh, run briefly by scripts/test.sh) need the
# nightly toolchain and cargo-fuzz; cargo-fuzz is installed when missing.
fuzz_tools() {
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        echo "error: the fuzz targets need the nightly toolchain" >&2
        echo "hint: rustup toolchain install nightly --profile minimal" >&2
        exit 1
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "installing: cargo-fuzz" >&2
        cargo install cargo-fuzz --locked
    fi
}

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { fuzz_tools; exit 0; }

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root to install: ${missing[*]}" >&2; echo "hint: run as root, or install them with apt-get" >&2; exit 1; }
    sudo=(sudo)
fi
extra=()
# A qemu-utils from backports (some images ship one) conflicts with Debian 12's QEMU:
# take qemu-utils from the release itself so qemu-system-x86 can be installed.
qu=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
if [[ "$qu" == *bpo* ]]; then
    . /etc/os-release
    extra=(--allow-downgrades "qemu-utils/${VERSION_CODENAME}")
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${extra[@]}" "${missing[@]}"
fuzz_tools
