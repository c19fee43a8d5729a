"""The guest: Debian 12's kernel and an initramfs of busybox-static plus `ptload`, our workload.

`scripts/install-qemu.sh` unpacks the kernel (vmlinuz and modules of `linux-image-amd64`) under
`/opt/plugtrace/kernel`; `guest_image()` builds the initramfs from it, `/bin/busybox` and
`guest/ptload.c`, and caches it under a name made from what went into it, so it is rebuilt when
missing or when any of those change. The guest's init loads the virtio-blk and IDE drivers,
prints each disk's I/O counters before and after the workload (what the kernel did at boot is
then known), runs `ptload` on every disk and powers off.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import CapabilityError

PREFIX = Path(os.environ.get("PLUGTRACE_QEMU_PREFIX", "/opt/plugtrace"))
BUSYBOX = Path("/bin/busybox")
WORKLOAD_SOURCE = Path(__file__).with_name("guest") / "ptload.c"
#: the drivers the guest's disks need (Debian builds them as modules), in no particular order:
#: their dependencies are found in each module's own .modinfo
MODULES = ("virtio_pci", "virtio_blk", "ata_piix", "sd_mod", "sr_mod")
SETUP_HINT = "run ./scripts/install.sh as root"

INIT = r"""#!/bin/sh
# plugtrace guest: load the disk drivers, wait for the disks, count, run ptload, count, power off
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m.ko 2>/dev/null; done
want=0; args=""
for w in $(cat /proc/cmdline); do
    case "$w" in
        pt.disks=*) want=${w#pt.disks=} ;;
        pt.args=*) args=$(echo "${w#pt.args=}" | tr ',' ' ') ;;
    esac
done
disks=""
for i in $(seq 1 500); do
    disks=$(ls /dev/vd? /dev/sd? /dev/sr? 2>/dev/null)
    [ "$(echo $disks | wc -w)" -ge "$want" ] && break
    usleep 20000
done
stat() { for d in $disks; do n=${d#/dev/}; echo "ptstat $1 disk=$n $(cat /sys/block/$n/stat)"; done; }
stat before
printf '\036'   # the host's probes take what QEMU submits from here on as the workload's
echo "ptload start"
/ptload $args $disks
echo "ptload end rc=$?"
stat after
echo "ptload done"
reboot -f
"""


@dataclass
class GuestImage:
    """A guest kernel and the initramfs that runs the workload."""

    kernel: Path
    initrd: Path


def kernel_dir() -> Path:
    return PREFIX / "kernel"


def find_kernel() -> tuple[Path, Path]:
    """(vmlinuz, modules directory) unpacked by the set-up; CapabilityError when missing."""
    images = sorted((kernel_dir() / "boot").glob("vmlinuz-*"))
    if not images:
        raise CapabilityError(f"no guest kernel in {kernel_dir()}/boot ({SETUP_HINT})")
    version = images[-1].name.removeprefix("vmlinuz-")
    return images[-1], kernel_dir() / "lib" / "modules" / version


def _module_paths(modules_dir: Path) -> dict[str, Path]:
    return {p.name.split(".ko")[0].replace("-", "_"): p for p in modules_dir.rglob("*.ko")}


def _dependencies(path: Path) -> list[str]:
    m = re.search(rb"\x00depends=([^\x00]*)\x00", b"\x00" + path.read_bytes())
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def module_order(modules_dir: Path, wanted=MODULES) -> list[Path]:
    """`wanted` and everything they depend on, dependencies first."""
    paths = _module_paths(modules_dir)
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in paths:
            raise CapabilityError(f"guest kernel module {name} missing from {modules_dir} ({SETUP_HINT})")
        for dep in _dependencies(paths[name]):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return [paths[n] for n in order]


def _cpio_newc(files: list[tuple[str, int, bytes]]) -> bytes:
    """A `newc` cpio archive (what the kernel unpacks as an initramfs) of (name, mode, data);
    a mode with S_IFLNK stores `data` as the link target."""
    out = io.BytesIO()

    def entry(name: str, mode: int, data: bytes, ino: int) -> None:
        name_b = name.encode() + b"\x00"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name_b)
        out.write(b"\x00" * (-out.tell() % 4) + data)
        out.write(b"\x00" * (-out.tell() % 4))

    for ino, (name, mode, data) in enumerate(files, start=1):
        entry(name, mode, data, ino)
    entry("TRAILER!!!", 0, b"", 0)
    return out.getvalue()


def _build_workload(dest: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise CapabilityError(f"gcc is needed to build the guest workload ({SETUP_HINT})")
    proc = subprocess.run(
        [cc, "-O2", "-static", "-pthread", "-o", str(dest), str(WORKLOAD_SOURCE)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise CapabilityError(f"building the guest workload failed: {proc.stderr.strip()[-300:]}")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "plugtrace" / "guest"


def _intact(initrd: Path) -> bool:
    """Whether a cached initramfs reads to its end (a truncated or damaged one is built again: a guest
    booted from it would hang or panic, and only say so on its console)."""
    try:
        with gzip.open(initrd, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error):
        return False
    return b"TRAILER!!!" in data[-512:]


def guest_image(rebuild: bool = False) -> GuestImage:
    """The cached guest image, built first when missing or out of date."""
    vmlinuz, modules_dir = find_kernel()
    if not BUSYBOX.exists():
        raise CapabilityError(f"{BUSYBOX} missing: the guest needs busybox-static ({SETUP_HINT})")
    modules = module_order(modules_dir)
    key = hashlib.sha256()
    for part in (
        WORKLOAD_SOURCE.read_bytes(),
        INIT.encode(),
        str(vmlinuz).encode(),
        str(BUSYBOX.stat().st_size).encode(),
        str(BUSYBOX.stat().st_mtime_ns).encode(),
    ):
        key.update(part)
    initrd = cache_dir() / f"initramfs-{key.hexdigest()[:16]}.cpio.gz"
    if initrd.exists() and not rebuild and _intact(initrd):
        return GuestImage(vmlinuz, initrd)
    initrd.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ptload = Path(tmp) / "ptload"
        _build_workload(ptload)
        files = [
            ("bin", 0o40755, b""),
            ("proc", 0o40755, b""),
            ("sys", 0o40755, b""),
            ("dev", 0o40755, b""),
            ("modules", 0o40755, b""),
            ("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
            ("bin/sh", 0o120777, b"busybox"),
            ("init", 0o100755, INIT.encode()),
            ("ptload", 0o100755, ptload.read_bytes()),
            ("modules.order", 0o100644, "\n".join(p.name.split(".ko")[0] for p in modules).encode() + b"\n"),
        ]
        files += [(f"modules/{p.name}", 0o100644, p.read_bytes()) for p in modules]
        partial = initrd.with_suffix(".partial")
        with gzip.open(partial, "wb", compresslevel=6) as fh:
            fh.write(_cpio_newc(files))
        partial.replace(initrd)
    return GuestImage(vmlinuz, initrd)


def main() -> int:
    """`python -m plugtrace.qemu.image [--rebuild]`: build (or find) the guest image and say where."""
    import sys

    from ..errors import PlugtraceError

    try:
        image = guest_image(rebuild="--rebuild" in sys.argv[1:])
    except PlugtraceError as exc:
        print(f"plugtrace: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(f"guest kernel: {image.kernel}\nguest initramfs: {image.initrd}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
