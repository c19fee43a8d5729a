"""The guest: Debian 12's kernel and an initramfs of busybox-static plus `ptload`, our workload.

`scripts/install-qemu.sh` unpacks the kernel (vmlinuz and modules of `linux-image-amd64`) under
`/opt/plugtrace/kernel`; `guest_image()` builds the initramfs from it, `/bin/busybox` and
`guest/ptload.c`, and caches it under a name made from what went into it, so it is rebuilt when
missing or when any of those change. The guest's init loads the virtio-blk and IDE drivers,
prints each disk's I/O counters before and after the workload (what the kernel did at boot is
then known), runs `ptload` on every disk and powers off.

The guest boots from the kernel's uncompressed ELF image through its PVH entry point where the kernel has
one (Debian's does): QEMU then jumps straight into the kernel, without SeaBIOS's real-mode set-up and the
kernel decompressing itself, which under TCG took 6 of a guest's 10 s to boot. The ELF image is unpacked
from vmlinuz once and cached beside the initramfs; a kernel without a PVH entry boots as vmlinuz.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import struct
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
# each virtio-blk disk's queues and the guest CPUs blk-mq maps to each (several with --queues)
for q in /sys/block/vd?/mq/*; do
    [ -e "$q/cpu_list" ] || continue
    disk=$(basename $(dirname $(dirname $q)))
    echo "ptmq disk=$disk queue=$(basename $q) cpus=$(tr -d ' ' < $q/cpu_list)"
done
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


#: XEN_ELFNOTE_PHYS32_ENTRY: the note in a "Xen" ELF note section that gives a kernel's PVH entry point
_PVH_NOTE = 18


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF64 kernel image has a PVH entry point (a Xen PHYS32_ENTRY note in a PT_NOTE segment)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, at)
            name = elf[at + 12 : at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == _PVH_NOTE:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _unpacked_kernel(vmlinuz: bytes) -> bytes | None:
    """The ELF image inside a bzImage (its payload compressed with xz or gzip), or None."""
    for magic, unpack in (
        (b"\xfd7zXZ\x00", lambda data: lzma.LZMADecompressor().decompress(data)),
        (b"\x1f\x8b\x08", lambda data: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)),
    ):
        at = vmlinuz.find(magic)
        while at >= 0:
            try:
                elf = unpack(vmlinuz[at:])
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf[:4] == b"\x7fELF":
                return elf
            at = vmlinuz.find(magic, at + 1)
    return None


def pvh_kernel(vmlinuz: Path) -> Path | None:
    """The kernel's uncompressed ELF image, cached, when it has a PVH entry point (None: boot vmlinuz)."""
    st = vmlinuz.stat()
    key = hashlib.sha256(f"{vmlinuz}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir() / f"vmlinux-pvh-{key}"
    none = cache_dir() / f"vmlinux-pvh-{key}.none"  # this kernel has none: not looked for again
    if cached.exists():
        return cached
    if none.exists():
        return None
    cache_dir().mkdir(parents=True, exist_ok=True)
    elf = _unpacked_kernel(vmlinuz.read_bytes())
    if elf is None or not _has_pvh_entry(elf):
        none.touch()
        return None
    partial = cached.with_suffix(".partial")
    partial.write_bytes(elf)
    partial.replace(cached)
    return cached


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
    kernel = pvh_kernel(vmlinuz) or vmlinuz
    if initrd.exists() and not rebuild and _intact(initrd):
        return GuestImage(kernel, initrd)
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
    return GuestImage(kernel, initrd)


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
