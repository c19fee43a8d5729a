#!/usr/bin/env bash
# Real QEMU for `plugtrace qemu`, side by side, idempotently (as root):
#   7.2   Debian 12's qemu-system-x86, installed as a package (install.sh lists it);
#   10.0  the bookworm-backports build, unpacked into $PREFIX/qemu-10.0 with the firmware of its own
#         qemu-system-data and seabios packages (QEMU is run with -L there), on Debian 12's libraries;
#   guest kernel: the vmlinuz and the block-driver modules of Debian 12's linux-image-amd64, unpacked
#         into $PREFIX/kernel (the host's /boot is not touched).
# The backports suite is read through an apt state of our own under $PREFIX/apt, so the machine's
# apt sources are left as they are. The guest's initramfs is built afterwards by
# `python -m plugtrace.qemu.image` (cached; rebuilt when missing or when its sources change).
set -euo pipefail
PREFIX=${PLUGTRACE_QEMU_PREFIX:-/opt/plugtrace}
QEMU10=$PREFIX/qemu-10.0
KERNEL=$PREFIX/kernel
apt_opts=(-o DPkg::Lock::Timeout=600)

# the Debian mirror the machine already uses, for the backports suite of the same archive
mirror=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
         /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}

unpack() {  # unpack DEB... into DIR
    local dir=$1; shift
    for deb in "$@"; do dpkg-deb -x "$deb" "$dir"; done
}

if [ ! -x "$QEMU10/usr/bin/qemu-system-x86_64" ]; then
    echo "installing QEMU 10.0 (bookworm-backports) into $QEMU10"
    state=$PREFIX/apt
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" \
        > "$state/sources.list"
    bp=("${apt_opts[@]}" -o Dir::Etc::sourcelist="$state/sources.list" -o Dir::Etc::sourceparts=-
        -o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" -o APT::Get::List-Cleanup=0)
    apt-get "${bp[@]}" update -qq
    work=$(mktemp -d) && chmod 755 "$work"  # apt downloads as its own user
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get "${bp[@]}" download -qq qemu-system-x86/bookworm-backports \
        qemu-system-data/bookworm-backports seabios/bookworm-backports)
    # its shared libraries come from Debian 12 itself: install those it names that are missing
    libs=$(dpkg-deb -f "$work"/qemu-system-x86_*.deb Depends | tr ',' '\n' | sed -E 's/\(.*\)//; s/\|.*//; s/ //g' \
           | grep -vE '^(qemu-|seabios|ipxe-qemu)' || true)
    missing=()
    for p in $libs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    rm -rf "$QEMU10.new" && mkdir -p "$QEMU10.new"
    unpack "$QEMU10.new" "$work"/*.deb
    "$QEMU10.new/usr/bin/qemu-system-x86_64" --version >/dev/null  # its libraries are all there
    rm -rf "$QEMU10" && mv "$QEMU10.new" "$QEMU10"
    rm -rf "$work"; trap - EXIT
fi

if ! ls "$KERNEL"/boot/vmlinuz-* >/dev/null 2>&1; then
    echo "unpacking the guest kernel (linux-image-amd64) into $KERNEL"
    image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    work=$(mktemp -d) && chmod 755 "$work"  # apt downloads as its own user
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get "${apt_opts[@]}" download -qq "$image")
    rm -rf "$KERNEL.new" && mkdir -p "$KERNEL.new"
    unpack "$KERNEL.new" "$work"/*.deb
    rm -rf "$KERNEL" && mv "$KERNEL.new" "$KERNEL"
    rm -rf "$work"; trap - EXIT
fi
echo "QEMU 7.2: $(command -v qemu-system-x86_64 || echo missing); QEMU 10.0: $QEMU10; guest kernel: $KERNEL"
