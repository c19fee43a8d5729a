"""Which QEMU: the two the set-up installs side by side, or one a user names.

QEMU 7.2 (Debian 12's package) has the per-BlockDriverState plug (`blk_io_plug` /
`blk_io_unplug`, `luring_io_plug` / `luring_io_unplug`); 10.0 (bookworm-backports, unpacked
under /opt/plugtrace/qemu-10.0) has the thread-local `defer_call_begin` / `defer_call_end` /
`defer_call`. Which design a binary has is read from the symbols it exports (`nm -D`), not from
its version number, so a QEMU built elsewhere is traced by what it really contains.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CapabilityError, UsageError
from ..procfs import program_problem
from .image import PREFIX, SETUP_HINT

#: --qemu NAME -> (binary, firmware directories passed with -L)
INSTALLED = {
    "7.2": (Path("/usr/bin/qemu-system-x86_64"), ()),
    "10.0": (
        PREFIX / "qemu-10.0/usr/bin/qemu-system-x86_64",
        (PREFIX / "qemu-10.0/usr/share/qemu", PREFIX / "qemu-10.0/usr/share/seabios"),
    ),
}

#: the QEMU-side probe script of each design, and the symbols it attaches to
DESIGNS = {
    "defer": ("qemu-defer.bt", ("defer_call_begin", "defer_call_end", "defer_call")),
    "plug": ("qemu-plug.bt", ("blk_io_plug", "blk_io_unplug", "luring_io_plug", "luring_io_unplug")),
}
#: traced in both designs (qemu_chr_fe_write: the guest's console, where it marks its workload's start)
COMMON_SYMBOLS = ("aio_poll", "virtio_blk_handle_vq", "luring_co_submit", "qemu_chr_fe_write")


@dataclass
class QemuBinary:
    """One QEMU: its binary, firmware directories, version, and the batching design it exports."""

    name: str
    binary: Path
    firmware: tuple[Path, ...]
    version: str
    design: str | None
    symbols: set[str] = field(default_factory=set)

    @property
    def missing_symbols(self) -> list[str]:
        """The symbols its probe script needs that this binary does not export."""
        if self.design is None:
            return []
        return [s for s in (*DESIGNS[self.design][1], *COMMON_SYMBOLS) if s not in self.symbols]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "binary": str(self.binary),
            "firmware": [str(f) for f in self.firmware],
            "design": self.design,
        }


def exported_symbols(binary: Path) -> set[str]:
    """The function names `binary` exports (`nm -D`); empty when nm cannot read it."""
    if shutil.which("nm") is None:
        raise CapabilityError("nm not found (install binutils): it tells which QEMU functions can be traced")
    proc = subprocess.run(["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True)
    return {line.split()[-1] for line in proc.stdout.splitlines() if len(line.split()) == 3}


def find_qemu(name: str) -> QemuBinary:
    """`7.2`, `10.0`, or a path to a qemu-system-x86_64; CapabilityError when it is not there."""
    if name in INSTALLED:
        binary, firmware = INSTALLED[name]
        if not binary.exists():
            raise CapabilityError(f"could not measure: QEMU {name} is not installed ({binary} missing; {SETUP_HINT})")
    else:
        binary = Path(name)
        if not binary.is_file():
            raise UsageError(f"--qemu: expected 7.2, 10.0 or the path of a qemu-system-x86_64, not {name!r}")
        problem = program_problem(name)
        if problem is not None:
            raise UsageError(f"--qemu {name}: {problem}")
        firmware = ()
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    m = re.search(r"version (\d+\.\d+(?:\.\d+)?)", proc.stdout)
    if proc.returncode != 0 or not m:
        raise CapabilityError(f"could not measure: {binary} does not run: {(proc.stderr or proc.stdout).strip()[:200]}")
    symbols = exported_symbols(binary)
    design = "defer" if "defer_call_begin" in symbols else "plug" if "blk_io_plug" in symbols else None
    return QemuBinary(name, binary, tuple(firmware), m.group(1), design, symbols)
