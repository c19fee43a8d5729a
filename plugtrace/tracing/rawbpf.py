"""Loading eBPF programs of our own, without bpftrace.

bpftrace 0.17 attaches its programs to *classic* tracepoints: perf formats
each event's record before the program runs, which on this kind of VM costs
the traced program about 0.5 us per hit. A BTF-typed raw tracepoint program
(``tp_btf``) gets the tracepoint's arguments as they are, reads kernel
structures directly (no helper call per field), and can keep per-thread state
in the task itself (task storage) instead of a locked hash map. The programs
(`rawprobes.py`) are written with the small assembler here; the kernel's own
BTF (/sys/kernel/btf/vmlinux) gives the type ids to attach to and the struct
offsets they read, so nothing is compiled and no kernel headers are needed.

Everything lives in file descriptors of this process: when it exits, however
it exits, the kernel detaches the programs. x86-64 only (syscall numbers and
the pt_regs layout).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import struct
from pathlib import Path
from typing import Iterator

from .capabilities import cpu_ids

__all__ = ["Programs", "RawBpfError", "Ring", "available", "bpf_stats"]

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF, _SYS_PERF_EVENT_OPEN = 321, 298

# bpf() commands, map and program types, helpers
_MAP_CREATE, _MAP_LOOKUP, _MAP_UPDATE, _PROG_LOAD, _RAW_TP_OPEN = 0, 1, 2, 5, 17
_ARRAY, _PERCPU_ARRAY = 2, 6
_PROG_TRACEPOINT, _PROG_RAW_TP, _PROG_TRACING, _TRACE_RAW_TP = 5, 17, 26, 23
_BTF_LOAD, _TASK_STORAGE, _NO_PREALLOC = 18, 29, 1
_LOOKUP, _UPDATE, _DELETE, _KTIME, _PID_TGID, _PROBE_READ_KERNEL = 1, 2, 3, 5, 14, 113
_TASK_STORAGE_GET, _CURRENT_TASK_BTF, _RINGBUF_OUTPUT = 156, 158, 130
_RINGBUF, _RB_NO_WAKEUP = 27, 1


def descendants(pid: int) -> list[int]:
    """The processes `pid` started (and theirs), from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat_file.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 1 << 22  # the kernel's limit (PID_MAX_LIMIT on 64-bit)


class RawBpfError(OSError):
    """Loading or attaching a program failed (the message says which and why)."""


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 144)
    fd = _libc.syscall(_SYS_BPF, cmd, buf, 144)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


# --- a tiny assembler: just what these programs use ---------------------------------
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, FP = range(11)


def _i(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def mov(dst, imm): return _i(0xB7, dst, imm=imm)                       # dst = imm
def movr(dst, src): return _i(0xBF, dst, src)                          # dst = src
def add(dst, imm): return _i(0x07, dst, imm=imm)                       # dst += imm
def addr(dst, src): return _i(0x0F, dst, src)                          # dst += src
def subr(dst, src): return _i(0x1F, dst, src)                          # dst -= src
def rsh(dst, imm): return _i(0x77, dst, imm=imm)                       # dst >>= imm
def rshr(dst, src): return _i(0x7F, dst, src)                          # dst >>= src
def and64(dst, imm): return _i(0x57, dst, imm=imm)                     # dst &= imm
def lsh(dst, imm): return _i(0x67, dst, imm=imm)                       # dst <<= imm
def lshr(dst, src): return _i(0x6F, dst, src)                          # dst <<= src
def orr(dst, src): return _i(0x4F, dst, src)                           # dst |= src
def and32(dst, imm): return _i(0x54, dst, imm=imm)                     # w(dst) &= imm (zero-extends)
def ldx(dst, src, off): return _i(0x79, dst, src, off)                 # dst = *(u64 *)(src + off)
def ldxw(dst, src, off): return _i(0x61, dst, src, off)                # dst = *(u32 *)(src + off)
def ldxb(dst, src, off): return _i(0x71, dst, src, off)                # dst = *(u8 *)(src + off)
def stx(dst, off, src): return _i(0x7B, dst, src, off)                 # *(u64 *)(dst + off) = src
def stxw(dst, off, src): return _i(0x63, dst, src, off)                # *(u32 *)(dst + off) = src
def stw(dst, off, imm): return _i(0x62, dst, off=off, imm=imm)         # *(u32 *)(dst + off) = imm
def std(dst, off, imm): return _i(0x7A, dst, off=off, imm=imm)         # *(u64 *)(dst + off) = imm
def atomic_or(dst, off, src): return _i(0xDB, dst, src, off, imm=0x40)  # lock *(u64 *)(dst + off) |= src
def call(helper): return _i(0x85, imm=helper)
def exit_(): return _i(0x95)
def ld_map(dst, fd): return _i(0x18, dst, 1, imm=fd) + _i(0)           # dst = map (pseudo map fd)


class _Prog:
    """Instructions with forward jumps to labels."""

    def __init__(self) -> None:
        self.code: list[bytes] = []
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str]] = []

    def emit(self, *insns: bytes) -> "_Prog":
        for ins in insns:
            self.code.extend(ins[k:k + 8] for k in range(0, len(ins), 8))
        return self

    def jump(self, op: int, reg: int, imm: int, label: str, src: int = 0) -> "_Prog":
        """`if reg <op> imm goto label`; op: 0x05 ja, 0x15 jeq, 0x55 jne, 0x35 jge, 0xC5 jslt;
        0x5D: `if reg != src goto label`."""
        self.fixups.append((len(self.code), label))
        self.code.append(_i(op, reg, src, 0, imm))
        return self

    def label(self, name: str) -> "_Prog":
        self.labels[name] = len(self.code)
        return self

    def bytes(self) -> bytes:
        for at, name in self.fixups:
            c = bytearray(self.code[at])
            struct.pack_into("<h", c, 2, self.labels[name] - at - 1)
            self.code[at] = bytes(c)
        return b"".join(self.code)


def _bitmap_word(p: "_Prog", bitmap: int, tgid_at: int, miss: str) -> None:
    """r0 = the word of `bitmap` that holds bit tgid, or go to `miss` (beyond
    pid_max); the tgid is the u32 at FP + `tgid_at`, the key goes below it.
    Clobbers r0-r5."""
    p.emit(ldxw(R1, FP, tgid_at), rsh(R1, 6), stxw(FP, tgid_at - 4, R1))
    p.emit(ld_map(R1, bitmap), movr(R2, FP), add(R2, tgid_at - 4), call(_LOOKUP))
    p.jump(0x15, R0, 0, miss)


def _test_bit(p: "_Prog", bitmap: int, tgid_at: int, miss: str) -> None:
    """Go to `miss` unless bit tgid of `bitmap` is set (`_bitmap_word`'s arguments)."""
    _bitmap_word(p, bitmap, tgid_at, miss)
    p.emit(ldx(R1, R0, 0), ldxw(R2, FP, tgid_at), and64(R2, 63), rshr(R1, R2), and64(R1, 1))
    p.jump(0x15, R1, 0, miss)


def _fork_prog(traced: int, parent_off: int, child_off: int) -> bytes:
    """tracepoint sched_process_fork: a traced parent's child is traced too."""
    p = _Prog()
    p.emit(movr(R6, R1), ldxw(R1, R6, parent_off), stxw(FP, -8, R1))
    _test_bit(p, traced, -8, "out")
    p.emit(ldxw(R1, R6, child_off), stxw(FP, -16, R1))
    _bitmap_word(p, traced, -16, "out")
    p.emit(ldxw(R2, FP, -16), and64(R2, 63), mov(R1, 1), lshr(R1, R2), atomic_or(R0, 0, R1))
    p.label("out").emit(mov(R0, 0), exit_())
    return p.bytes()


def _map_create(mtype: int, key: int, value: int, entries: int) -> int:
    return _bpf(_MAP_CREATE, struct.pack("<IIIII", mtype, key, value, entries, 0))


def _task_storage_create(words: int = 1) -> tuple[int, int]:
    """`words` u64 per thread, kept in the task itself (no hash map, no lock):
    the kernel wants a BTF description of key and value, so we load a tiny
    one. Returns (map fd, BTF fd)."""
    strings = b"\0int\0u64\0"
    types = (struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)  # [1] int: 4 bytes, signed
             + struct.pack("<IIII", 5, 1 << 24, 8, 64)  # [2] u64
             + struct.pack("<IIIIII", 0, 3 << 24, 0, 2, 1, words))  # [3] u64[words]
    blob = ctypes.create_string_buffer(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                                                   len(strings)) + types + strings)
    btf = _bpf(_BTF_LOAD, struct.pack("<QQIII", ctypes.addressof(blob), 0, len(blob.raw) - 1, 0, 0))
    try:
        fd = _bpf(_MAP_CREATE, struct.pack("<IIIIIII16sIIII", _TASK_STORAGE, 4, 8 * words, 0, _NO_PREALLOC, 0, 0,
                                           b"pt_start", 0, btf, 1, 3))
    except BaseException:
        os.close(btf)
        raise
    return fd, btf


def _prog_load(ptype: int, code: bytes, name: str, attach_btf_id: int = 0) -> int:
    """Load a program; on failure, load it again with the verifier's log for the message.

    `attach_btf_id`: for a BTF-typed tracepoint program, the kernel type
    (``btf_trace_<tracepoint>``) it is for."""
    insns = ctypes.create_string_buffer(code)
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 18)
    attach_type = _TRACE_RAW_TP if ptype == _PROG_TRACING else 0

    def load(level: int) -> int:
        attr = struct.pack("<IIQQIIQII16sIIIIQIIQIII", ptype, len(code) // 8, ctypes.addressof(insns),
                           ctypes.addressof(lic), level, len(log) if level else 0,
                           ctypes.addressof(log) if level else 0, 0, 0, name.encode()[:15],
                           0, attach_type, 0, 0, 0, 0, 0, 0, 0, attach_btf_id, 0)
        return _bpf(_PROG_LOAD, attr)

    for attempt in range(5):
        try:
            return load(0)
        except OSError as exc:
            if exc.errno != errno.EAGAIN or attempt == 4:  # EAGAIN: the kernel asks to try again
                first = exc
                break
    try:
        return load(1)
    except OSError:
        pass
    detail = log.value.decode(errors="replace").strip().splitlines()[-3:]
    raise RawBpfError(first.errno, f"loading {name}: {first.strerror}: {' / '.join(detail)}") from None


def _tracepoint_fields(category: str, event: str) -> tuple[int, dict[str, int]]:
    """A tracepoint's id and its fields' offsets in the record, from tracefs."""
    from .capabilities import tracefs_root

    root = tracefs_root()
    d = root / "events" / category / event if root is not None else None
    if d is None or not d.is_dir():
        raise RawBpfError(errno.ENOENT, f"tracepoint {category}:{event} not found (tracefs not mounted?)")
    tp_id = int((d / "id").read_text())
    fields = {}
    for line in (d / "format").read_text().splitlines():
        if "field:" in line and "offset:" in line:
            decl = line.split("field:")[1].split(";")[0].strip()
            fields[decl.split()[-1].split("[")[0]] = int(line.split("offset:")[1].split(";")[0])
    return tp_id, fields


_BTF_EXTRA = {1: 4, 3: 12, 4: 12, 5: 12, 6: 8, 13: 8, 14: 4, 15: 12, 17: 4, 19: 12}  # kind -> bytes after a type
_BTF_PER_MEMBER = {4, 5, 6, 13, 15, 19}  # kinds whose extra is per member (vlen)
_BTF_STRUCT, _BTF_UNION, _BTF_ENUM, _BTF_TYPEDEF = 4, 5, 6, 8


class _KernelTypes:
    """The running kernel's types, from its BTF (/sys/kernel/btf/vmlinux).

    Only what the programs need: the type id a BTF-typed tracepoint program
    attaches to (``btf_trace_<tracepoint>``) and the byte offsets of struct
    members, so a program can follow ``rq->q->disk->major`` on any kernel
    that has the fields, wherever this build put them.
    """

    def __init__(self, names: set[str], path: str = "/sys/kernel/btf/vmlinux"):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise RawBpfError(exc.errno or errno.ENOENT, f"the kernel's BTF ({path}): {exc.strerror}") from None
        magic, _, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != 0xEB9F:
            raise RawBpfError(errno.EINVAL, f"{path} is not BTF")
        self._strs = data[hdr_len + str_off:hdr_len + str_off + str_len]
        want = {}
        for name in names:
            at = self._strs.find(b"\0" + name.encode() + b"\0")
            if at >= 0:
                want[at + 1] = name
        #: name -> [(type id, kind, offset of the type's members in data, vlen, kind_flag)]
        self.types: dict[str, list[tuple[int, int, int, int, bool]]] = {}
        pos, end, tid = hdr_len + type_off, hdr_len + type_off + type_len, 1
        unpack = struct.Struct("<III").unpack_from
        self._positions = positions = [0]  # type id -> where its members (or extra) start
        while pos < end:
            name_off, info, _ = unpack(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            pos += 12
            positions.append(pos)
            if name_off in want:
                self.types.setdefault(want[name_off], []).append((tid, kind, pos, vlen, bool(info >> 31)))
            extra = _BTF_EXTRA.get(kind, 0)
            pos += extra * vlen if kind in _BTF_PER_MEMBER else extra
            tid += 1
        self._data = data

    def _string(self, off: int) -> str:
        return self._strs[off:self._strs.index(b"\0", off)].decode()

    def tracepoint_id(self, tracepoint: str) -> int:
        """The type id a BTF-typed program for raw tracepoint `tracepoint` attaches to."""
        for tid, kind, *_ in self.types.get(f"btf_trace_{tracepoint}", []):
            if kind == _BTF_TYPEDEF:
                return tid
        raise RawBpfError(errno.ENOENT, f"the kernel's BTF has no tracepoint {tracepoint}")

    def params(self, tracepoint: str) -> int:
        """How many arguments raw tracepoint `tracepoint` passes (its function prototype, less the context)."""
        tid = self.tracepoint_id(tracepoint)
        ptr = struct.unpack_from("<I", self._data, self._positions[tid] - 4)[0]
        proto = struct.unpack_from("<I", self._data, self._positions[ptr] - 4)[0]
        return (struct.unpack_from("<I", self._data, self._positions[proto] - 8)[0] & 0xFFFF) - 1

    def offset(self, struct_name: str, member: str) -> int:
        """offsetof(struct `struct_name`, `member`) in bytes, also when the
        member sits in an anonymous struct or union (as most of io_ring_ctx's do)."""
        for _, kind, pos, vlen, kflag in self.types.get(struct_name, []):
            if kind == _BTF_STRUCT and vlen:
                found = self._member(pos, vlen, kflag, member)
                if found is not None:
                    return found
        raise RawBpfError(errno.ENOENT, f"the kernel's BTF has no member {member} in struct {struct_name}")

    def enum(self, enum_name: str) -> dict[str, int]:
        """The members of enum `enum_name` and their values (bits of request flags move between kernels)."""
        for _, kind, pos, vlen, _ in self.types.get(enum_name, []):
            if kind == _BTF_ENUM and vlen:
                return {self._string(name): value for name, value in
                        (struct.unpack_from("<Ii", self._data, pos + 8 * k) for k in range(vlen))}
        raise RawBpfError(errno.ENOENT, f"the kernel's BTF has no enum {enum_name}")

    def _member(self, pos: int, vlen: int, kflag: bool, member: str) -> int | None:
        for k in range(vlen):
            name_off, type_id, off = struct.unpack_from("<III", self._data, pos + 12 * k)
            bits = off & 0xFFFFFF if kflag else off
            if name_off == 0:  # anonymous struct or union: its members are the outer struct's
                at = self._positions[type_id]
                info = struct.unpack_from("<I", self._data, at - 8)[0]
                if (info >> 24) & 0x1F in (_BTF_STRUCT, _BTF_UNION) and bits % 8 == 0:
                    inner = self._member(at, info & 0xFFFF, bool(info >> 31), member)
                    if inner is not None:
                        return bits // 8 + inner
            elif self._string(name_off) == member:
                return None if bits % 8 else bits // 8  # a bitfield is not something a program loads
        return None


class _PerfAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("wakeup_events", ctypes.c_uint32), ("bp_type", ctypes.c_uint32),
                ("config1", ctypes.c_uint64), ("pad", ctypes.c_uint8 * 64)]


_PERF_EVENT_IOC_ENABLE, _PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408


def available() -> tuple[bool, str]:
    """Whether our BTF-typed tracepoint programs can be loaded here (and if not, why)."""
    if platform.machine() != "x86_64":
        return False, f"our tracepoint programs are written for x86-64, not {platform.machine()}"
    if os.geteuid() != 0:
        return False, "not root"
    try:
        kernel = _KernelTypes({"btf_trace_sys_enter"})
        fd = _prog_load(_PROG_TRACING, mov(R0, 0) + exit_(), "pt_probe", kernel.tracepoint_id("sys_enter"))
    except OSError as exc:
        return False, f"cannot load a BTF-typed raw tracepoint program: {exc.strerror or exc}"
    os.close(fd)
    return True, ""


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """Have the kernel count runs and run time of every BPF program meanwhile
    (`kernel.bpf_stats_enabled`; each run then also reads the clock twice)."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(before)


class Programs:
    """The programs, maps and links of one probe; `close()` detaches them all."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._ncpu = max(cpu_ids("possible")) + 1
        #: the tracepoints attached to
        self.attached: list[str] = []
        #: (tracepoint, program fd) of each program attached
        self._programs: list[tuple[str, int]] = []
        #: the raw tracepoint links that attach them (empty while paused)
        self._links: list[int] = []

    def keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def map(self, mtype: int, key: int, value: int, entries: int) -> int:
        return self.keep(_map_create(mtype, key, value, entries))

    def ring(self, size: int, dtype) -> Ring:
        """A BPF ring buffer of `size` bytes (a power of two, whole pages) and its reader."""
        fd = self.map(_RINGBUF, 0, 0, size)
        return Ring(fd, size, dtype)

    def task_storage(self, words: int = 1) -> int:
        fd, btf = _task_storage_create(words)
        self.keep(btf)
        return self.keep(fd)

    def follow(self, pid: int, existing_children: bool = False) -> int:
        """A bitmap (array map of u64 words, one bit per tgid up to pid_max) of
        traced tgids holding `pid`, to which a program on `sched_process_fork`
        adds the children a traced process forks. An array lookup is inlined
        by the verifier: testing a bit costs the programs a few instructions
        where a hash set cost a hashed lookup on every hit."""
        words = -(-_pid_max() // 64)
        traced = self.map(_ARRAY, 4, 8, words)
        self.update(traced, struct.pack("<I", pid >> 6), struct.pack("<Q", 1 << (pid & 63)))
        tp_id, fields = _tracepoint_fields("sched", "sched_process_fork")
        fork = self.keep(_prog_load(_PROG_TRACEPOINT, _fork_prog(traced, fields["parent_pid"],
                                                                  fields["child_pid"]), "pt_fork"))
        # one perf event is enough: the program belongs to the tracepoint and runs on every CPU
        self._perf_tracepoint(tp_id, 0, fork)
        # with `existing_children`, the children it forked before now too (fio's jobs, say): found after
        # the fork program is on, so that none falls between the two
        words_set: dict[int, int] = {pid >> 6: 1 << (pid & 63)}
        for child in descendants(pid) if existing_children else []:
            words_set[child >> 6] = words_set.get(child >> 6, 0) | 1 << (child & 63)
        for word, bits in words_set.items():
            self.update(traced, struct.pack("<I", word), struct.pack("<Q", bits))
        return traced

    def attach(self, kernel: "_KernelTypes", tracepoint: str, code: bytes, name: str) -> None:
        """Load `code` as a BTF-typed program for raw tracepoint `tracepoint` and attach it."""
        prog = self.keep(_prog_load(_PROG_TRACING, code, name, kernel.tracepoint_id(tracepoint)))
        self._link(tracepoint, prog)
        self.attached.append(tracepoint)
        self._programs.append((tracepoint, prog))

    def _link(self, tracepoint: str, prog: int) -> None:
        try:
            self._links.append(_bpf(_RAW_TP_OPEN, struct.pack("<QI", 0, prog)))
        except OSError as exc:
            raise RawBpfError(exc.errno, f"attaching to raw tracepoint {tracepoint}: {exc.strerror}") from None

    def pause(self) -> None:
        """Detach the raw tracepoint programs, keeping them and their maps (`resume()` attaches them again)."""
        links, self._links = self._links, []
        for fd in links:
            os.close(fd)

    def resume(self) -> None:
        """Attach again what `pause()` detached."""
        if not self._links:
            for tracepoint, prog in self._programs:
                self._link(tracepoint, prog)

    def run_stats(self) -> dict[str, tuple[int, int]]:
        """tracepoint -> (runs, total ns in the program) of each program attached.
        The kernel counts only while `kernel.bpf_stats_enabled` is 1 (`bpf_stats()`)."""
        out = {}
        for tracepoint, fd in self._programs:
            info = dict(line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
                        if ":" in line)
            out[tracepoint] = (int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0)))
        return out

    def _perf_tracepoint(self, tp_id: int, cpu: int, prog: int) -> None:
        attr = _PerfAttr(type=2, size=ctypes.sizeof(_PerfAttr), config=tp_id, sample_period=1, wakeup_events=1)
        fd = _libc.syscall(_SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, cpu, -1, 8)  # PERF_FLAG_FD_CLOEXEC
        if fd < 0:
            e = ctypes.get_errno()
            raise RawBpfError(e, f"perf_event_open(sched_process_fork): {os.strerror(e)}")
        self.keep(fd)
        for req, arg in ((_PERF_EVENT_IOC_SET_BPF, prog), (_PERF_EVENT_IOC_ENABLE, 0)):
            if _libc.ioctl(fd, req, ctypes.c_ulong(arg)) < 0:
                e = ctypes.get_errno()
                raise RawBpfError(e, f"attaching the fork program: {os.strerror(e)}")

    @staticmethod
    def update(fd: int, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
        _bpf(_MAP_UPDATE, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))

    def percpu_sums(self, fd: int, n: int) -> list[int]:
        """Entries 0..n-1 of a per-CPU array of u64, each summed over the CPUs."""
        out = []
        key = ctypes.create_string_buffer(4)
        val = ctypes.create_string_buffer(8 * self._ncpu)
        fmt = f"<{self._ncpu}Q"
        for i in range(n):
            struct.pack_into("<I", key, 0, i)
            _bpf(_MAP_LOOKUP, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(val), 0))
            out.append(sum(struct.unpack(fmt, val.raw)))
        return out

    def close(self) -> None:
        self.pause()
        fds, self._fds = self._fds, []
        for fd in reversed(fds):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Ring:
    """The reading end of a BPF ring buffer whose records all have one size.

    Programs write records with ``bpf_ringbuf_output(..., BPF_RB_NO_WAKEUP)``:
    no wakeup per event (what limits bpftrace's perf output); the reader
    polls on its own clock. The kernel maps the data area twice in a row, so
    every pending record is one contiguous slice, read as a numpy array of
    `dtype` (an 8-byte header, then the record).
    """

    def __init__(self, fd: int, size: int, dtype):
        import numpy as np

        self.fd = fd
        self._np = np
        self.dtype = np.dtype(dtype)
        if self.dtype.itemsize % 8 or self.dtype.names[:2] != ("rb_len", "rb_pg"):
            raise ValueError("records start with the 8-byte header and are a multiple of 8 bytes")
        self.size, self._page = size, mmap.PAGESIZE
        self._cons = mmap.mmap(fd, self._page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._data = mmap.mmap(fd, self._page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self._page)

    def pending(self) -> int:
        """Bytes written and not yet read."""
        return struct.unpack_from("<Q", self._data, 0)[0] - struct.unpack_from("<Q", self._cons, 0)[0]

    def read(self):
        """The records committed since the last call, oldest first (a copy)."""
        np = self._np
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        n = (struct.unpack_from("<Q", self._data, 0)[0] - cons) // self.dtype.itemsize
        if n <= 0:
            return np.empty(0, self.dtype)
        recs = np.frombuffer(self._data, self.dtype, count=n, offset=self._page + (cons & (self.size - 1)))
        busy = (recs["rb_len"] & 0x80000000) != 0  # reserved on another CPU, not yet committed
        if busy.any():
            recs = recs[:int(busy.argmax())]
        out = recs.copy()
        del recs
        struct.pack_into("<Q", self._cons, 0, cons + len(out) * self.dtype.itemsize)
        return out

    def close(self) -> None:
        self._cons.close()
        self._data.close()
