#!/usr/bin/env bash
# Install everything plugtrace needs on a Debian machine, idempotently:
# Debian packages (as root), then a virtualenv in .venv with plugtrace and its
# Python dependencies. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(bpftrace liburing-dev fio chromium util-linux kmod gcc python3-venv)
# our eBPF programs (probes/*.bpf.c): compiled with clang against the running kernel's BTF, loaded by libbpf
DEB_PACKAGES+=(clang libbpf-dev bpftool make)
# make lint: the engine's C (plugtrace/engine/native/, plugtrace/uring/*.c) is checked with clang-format
DEB_PACKAGES+=(clang-format)
# plugtrace qemu: QEMU 7.2 (10.0 comes from scripts/install-qemu.sh) and the guest's busybox
DEB_PACKAGES+=(qemu-system-x86 busybox-static binutils)
# Debian's own Python needs these to make a venv and build the extension;
# another Python (pyenv, a container's) brings its own.
python3 -c 'import ensurepip, os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
    2>/dev/null || DEB_PACKAGES+=(python3-dev python3-venv)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: these Debian packages are missing: ${missing[*]}" >&2
        echo "install.sh: run as root (or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # another apt (unattended upgrades, a second set-up) may hold the lock: wait for it
    apt_opts=(-o DPkg::Lock::Timeout=600)
    apt-get "${apt_opts[@]}" update -qq
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tracefs is where bpftrace finds tracepoints
if [ "$(id -u)" -eq 0 ] && [ ! -e /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

# our eBPF programs, against this kernel's BTF (before the package, which carries them); without
# them (a kernel without BTF, say) plugtrace runs the bpftrace scripts and says why
if ! make -s -C probes; then
    echo "install.sh: our eBPF programs were not built (see above); plugtrace will run the bpftrace scripts" >&2
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.plugtrace-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ -n "$(find plugtrace/uring plugtrace/engine/native -newer "$stamp" \
              \( -name _build.py -o -name '*.c' -o -name '*.h' -o -name '*.cdef' \))" ] \
   || [ plugtrace/tracing/_libbpf_build.py -nt "$stamp" ] || [ probes/records.h -nt "$stamp" ]; then
    log=$(mktemp)
    if ! { .venv/bin/python -m pip install --upgrade pip \
           && .venv/bin/python -m pip install -e '.[dev]' \
           && .venv/bin/python -m ipykernel install --sys-prefix --name python3; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "install.sh: installing the Python packages failed (full log: $log)" >&2
        exit 1
    fi
    rm -f "$log"
    touch "$stamp"
fi
# plugtrace qemu: QEMU 10.0 beside 7.2, the guest kernel, and the guest's initramfs (cached)
if [ "$(id -u)" -eq 0 ]; then
    ./scripts/install-qemu.sh
    .venv/bin/python -m plugtrace.qemu.image >/dev/null
fi
echo "plugtrace is installed in $(pwd)/.venv (run: .venv/bin/plugtrace --help)"
