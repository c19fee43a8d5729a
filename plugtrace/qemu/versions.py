"""Which QEMU: the two the set-up installs side by side, or one a user names.

QEMU 7.2 (Debian 12's package) has the per-BlockDriverState plug (`blk_io_plug` /
`blk_io_unplug`, `luring_io_plug` / `luring_io_unplug`); 10.0 (bookworm-backports, unpacked
under /opt/plugtrace/qemu-10.0) has the thread-local `defer_call_begin` / `defer_call_end` /
`defer_call`. Which design a binary has is read from its ELF symbol tables, the static one
(`.symtab`: a developer's own build, not stripped) and the dynamic one (`.dynsym`: what Debian's
stripped binaries export), not from its version number, so a QEMU built elsewhere is traced by
what it really contains. bpftrace places uprobes by the same two tables.
"""

from __future__ import annotations

import re
import struct
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


@dataclass(frozen=True)
class Design:
    """A batching design's probe script, the symbols without which it has no sections, and
    luring_co_submit()'s arguments (type, offset, QEMUIOVector *) in its QEMU's signature."""

    script: str
    required: tuple[str, ...]
    submit_args: tuple[str, str, str]
    #: 1: each request handed to the io_uring driver is the section's deferred call (the plug)
    submit_is_deferred: int


DESIGNS = {
    # 10.0: luring_co_submit(bs, fd, offset, qiov, type, flags)
    "defer": Design("qemu-defer.bt", ("defer_call_begin", "defer_call_end", "defer_call"), ("arg4", "arg2", "arg3"), 0),
    # 7.2: luring_co_submit(bs, s, fd, offset, qiov, type)
    "plug": Design("qemu-plug.bt", ("blk_io_plug", "blk_io_unplug"), ("arg5", "arg3", "arg4"), 1),
}
#: the probes both designs share (probes/qemu-common.bt), put before the design's own
COMMON_SCRIPT = "qemu-common.bt"
#: needed in both designs: whose section it is, and the requests
COMMON_REQUIRED = ("virtio_blk_handle_vq", "luring_co_submit")
#: each optional probe's symbol and what is lost without it
OPTIONAL = {
    "aio_poll": "aio_poll() calls (nr_nested_polls, aio_poll_in_section)",
    "qemu_chr_fe_write": "the guest's start mark (luring_co_submit_workload: boot and workload I/O are not told apart)",
    "virtqueue_pop": "requests popped per handler run (handlers nr_requests, requests_per_handler)",
    "virtqueue_push": "guest requests completed (virtqueue_push, section kind completion)",
    "virtio_queue_host_notifier_read": "why a handler ran (cause: every run counts as poll)",
    "virtio_notify_irqfd": "guest notifications",
    "event_notifier_set": "guest notifications",
    "luring_io_plug": "luring_io_plug calls",
    "luring_io_unplug": "luring_io_unplug calls",
}
#: probes that fire once or more per request, beyond luring_co_submit(): in events mode and with
#: --qemu-probes full only, since each uprobe hit traps into the kernel and a TCG guest's QEMU has
#: no CPU to spare (the default aggregate probes must not change what they measure)
#: the QEMU-side probes of --qemu-probes mark: the guest's workload start mark, and nothing in the iothread
MARK = ("qemu_chr_fe_write",)
DETAIL = ("virtqueue_pop", "virtqueue_push", "virtio_notify_irqfd", "event_notifier_set", "defer_call")
#: read to find VirtQueue.queue_index: the function is one load of it
QUEUE_INDEX_FN = "virtio_get_queue_index"
#: read to find VirtQueue.guest_notifier: the function is one address computation of it
GUEST_NOTIFIER_FN = "virtio_queue_get_guest_notifier"
#: functions QEMU runs on a coroutine's stack (a request's completion) inside the iothread's
#: uretprobed frames: a uretprobe on one makes the kernel drop the pending return instances of
#: frames below it on another stack, and QEMU dies of SIGILL when they return; entry probes only
ON_COROUTINE_STACK = ("luring_co_submit", "virtqueue_push", "virtio_notify_irqfd")


@dataclass
class ElfSymbols:
    """A binary's function symbols from .symtab and .dynsym: name -> (table, file offset of its code)."""

    functions: dict[str, tuple[str, int]] = field(default_factory=dict)
    has_symtab: bool = False
    has_debug_info: bool = False

    def code(self, binary: Path, name: str, size: int = 16) -> bytes:
        """The first `size` bytes of function `name` (b"" when it is not there)."""
        if name not in self.functions:
            return b""
        with open(binary, "rb") as f:
            f.seek(self.functions[name][1])
            return f.read(size)


def read_elf_symbols(binary: Path) -> ElfSymbols:
    """The defined function symbols of an ELF64 little-endian binary (x86-64), from both symbol
    tables; an empty result for a file that is not one (a script)."""
    out = ElfSymbols()
    with open(binary, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return out
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    loads = []  # (vaddr, memsz, file offset) of each PT_LOAD, to turn a symbol's address into file offset
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_filesz, p_offset))
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = sections[shstrndx][4] if shnum else 0

    def name_at(table_off: int, at: int) -> str:
        return data[table_off + at : data.index(b"\0", table_off + at)].decode(errors="replace")

    for sh_name, sh_type, _, _, sh_offset, sh_size, sh_link, _, _, sh_entsize in sections:
        sname = name_at(names_off, sh_name)
        out.has_debug_info |= sname == ".debug_info"
        if sh_type not in (2, 11) or not sh_entsize:  # SHT_SYMTAB, SHT_DYNSYM
            continue
        table = "symtab" if sh_type == 2 else "dynsym"
        out.has_symtab |= sh_type == 2
        strtab = sections[sh_link][4]
        for j in range(sh_size // sh_entsize):
            st_name, st_info, _, st_shndx, st_value, _ = struct.unpack_from("<IBBHQQ", data, sh_offset + j * sh_entsize)
            if st_info & 0xF != 2 or st_shndx == 0 or not st_value:  # STT_FUNC, defined
                continue
            name = name_at(strtab, st_name).split("@")[0]
            where = next((st_value - v + o for v, n, o in loads if v <= st_value < v + n), None)
            if where is not None:
                out.functions.setdefault(name, (table, where))
    return out


def queue_index_offset(code: bytes) -> int | None:
    """VirtQueue.queue_index's offset, read from virtio_get_queue_index()'s first instruction:
    `movzwl disp(%rdi),%eax` (0f b7 47 disp8, or 0f b7 87 disp32); None for any other code."""
    if code[:3] == b"\x0f\xb7\x47" and len(code) >= 4:
        return code[3]
    if code[:3] == b"\x0f\xb7\x87" and len(code) >= 7:
        return struct.unpack_from("<i", code, 3)[0]
    return None


def guest_notifier_offset(code: bytes) -> int | None:
    """VirtQueue.guest_notifier's offset, read from virtio_queue_get_guest_notifier()'s first
    instruction: `lea disp(%rdi),%rax` (48 8d 47 disp8, or 48 8d 87 disp32); None for any other code."""
    if code[:3] == b"\x48\x8d\x47" and len(code) >= 4:
        return code[3]
    if code[:3] == b"\x48\x8d\x87" and len(code) >= 7:
        return struct.unpack_from("<i", code, 3)[0]
    return None


@dataclass
class QemuBinary:
    """One QEMU: its binary, firmware directories, version, and the batching design it has."""

    name: str
    binary: Path
    firmware: tuple[Path, ...]
    version: str
    design: str | None
    symbols: set[str] = field(default_factory=set)
    #: VirtQueue.queue_index's offset in bytes (None: unknown, the vq column is -1)
    vq_index_offset: int | None = None
    #: VirtQueue.guest_notifier's offset in bytes (None: unknown, guest notifications not counted)
    guest_notifier_offset: int | None = None
    #: where the symbols came from: "symtab", "dynsym" or both, and whether DWARF is there
    symbol_tables: tuple[str, ...] = ()

    @property
    def missing_symbols(self) -> list[str]:
        """The symbols without which its design's sections cannot be traced."""
        if self.design is None:
            return []
        return [s for s in (*DESIGNS[self.design].required, *COMMON_REQUIRED) if s not in self.symbols]

    def why_unplaced(self, symbol: str) -> str:
        """Why a probe on `symbol` cannot be placed in this binary, and what is not measured then."""
        where = " and ".join(f".{t}" for t in self.symbol_tables if t != "debug_info") or "no symbol table"
        what = OPTIONAL.get(symbol, symbol)
        return f"{what}: {symbol} is not a function in {self.binary}'s {where} (stripped, inlined or renamed)"

    def device_property(self, driver: str, prop: str) -> bool:
        """Whether `-device DRIVER,help` lists `prop` (e.g. virtio-blk-pci's iothread-vq-mapping: 9.0+)."""
        import subprocess

        try:
            out = subprocess.run(
                [str(self.binary), "-nodefaults", "-device", f"{driver},help"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return False
        return any(line.strip().startswith(f"{prop}=") for line in out.splitlines())

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "binary": str(self.binary),
            "firmware": [str(f) for f in self.firmware],
            "design": self.design,
            "symbol_tables": list(self.symbol_tables),
        }


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
    return describe_binary(name, binary, tuple(firmware), m.group(1))


def describe_binary(name: str, binary: Path, firmware: tuple[Path, ...], version: str) -> QemuBinary:
    """A QemuBinary for `binary`: its design, symbols and VirtQueue layout, read from the ELF."""
    elf = read_elf_symbols(binary)
    symbols = set(elf.functions)
    design = "defer" if "defer_call_begin" in symbols else "plug" if "blk_io_plug" in symbols else None
    tables = tuple(t for t in ("symtab", "dynsym") if any(w == t for w, _ in elf.functions.values()))
    if elf.has_debug_info:
        tables += ("debug_info",)
    return QemuBinary(
        name,
        binary,
        firmware,
        version,
        design,
        symbols,
        vq_index_offset=queue_index_offset(elf.code(binary, QUEUE_INDEX_FN)),
        guest_notifier_offset=guest_notifier_offset(elf.code(binary, GUEST_NOTIFIER_FN)),
        symbol_tables=tables,
    )
