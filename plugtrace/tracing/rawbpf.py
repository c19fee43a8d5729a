"""io_uring_enter() aggregates on raw tracepoints, loaded without bpftrace.

`probes/io_uring_enter.bt` in aggregate mode, as eBPF programs of our own
attached to the *raw* `sys_enter` / `sys_exit` tracepoints. A classic
tracepoint program (what bpftrace 0.17 attaches) goes through perf's
tracepoint path for every hit: it formats the event record before the
program runs. A raw tracepoint hands the program the arguments directly; on
this kind of VM that is the difference between a probe costing the traced
program about a sixth of its IOPS and a few percent (`bench/`).

The programs keep exactly what the bpftrace script keeps, in one per-CPU
array of counters summed at the end:

* `enter_nr_sqes`: SQEs consumed per submitting call (lhist 0..1000 step 1),
* `enter_latency_ns`: time in the submitting call (log2 buckets, as `hist()`),
* `nr_enters` (submitting calls) and `nr_wait_enters` (calls with nothing to
  submit).

The traced process and the children it forks later are followed as the
script does: a (rare) `sched_process_fork` tracepoint adds children to the
set of traced tgids. x86-64 only (syscall number and pt_regs layout).

Everything lives in file descriptors of this process: when it exits, however
it exits, the kernel detaches the programs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from pathlib import Path

__all__ = ["EntersAggregate", "RawBpfError", "available"]

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF, _SYS_PERF_EVENT_OPEN = 321, 298
_NR_IO_URING_ENTER = 426
_REGS_SI, _REGS_ORIG_AX = 104, 120  # offsetof(struct pt_regs, si / orig_ax) on x86-64

# bpf() commands, map and program types, helpers
_MAP_CREATE, _MAP_LOOKUP, _MAP_UPDATE, _PROG_LOAD, _RAW_TP_OPEN = 0, 1, 2, 5, 17
_HASH, _PERCPU_ARRAY = 1, 6
_PROG_TRACEPOINT, _PROG_RAW_TP = 5, 17
_LOOKUP, _UPDATE, _DELETE, _KTIME, _PID_TGID, _PROBE_READ_KERNEL = 1, 2, 3, 5, 14, 113

# layout of the counters array
_SQES_MAX = 1000  # lhist(ret, 0, 1000, 1): index k for k SQEs, 1000 for >= 1000
_SQES_NEG = 1001  # a failed call (-errno)
_LAT = 1002  # + 0 for 0 ns, + k + 1 for [2^k, 2^(k+1)) ns, k = 0..63
_NR_ENTERS = _LAT + 65
_NR_WAIT = _NR_ENTERS + 1
_NCOUNTERS = _NR_WAIT + 1


class RawBpfError(OSError):
    """Loading or attaching a program failed (the message says which and why)."""


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 128)
    fd = _libc.syscall(_SYS_BPF, cmd, buf, 128)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def _possible_cpus() -> int:
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


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
def and32(dst, imm): return _i(0x54, dst, imm=imm)                     # w(dst) &= imm (zero-extends)
def ldx(dst, src, off): return _i(0x79, dst, src, off)                 # dst = *(u64 *)(src + off)
def ldxw(dst, src, off): return _i(0x61, dst, src, off)                # dst = *(u32 *)(src + off)
def stx(dst, off, src): return _i(0x7B, dst, src, off)                 # *(u64 *)(dst + off) = src
def stxw(dst, off, src): return _i(0x63, dst, src, off)                # *(u32 *)(dst + off) = src
def stw(dst, off, imm): return _i(0x62, dst, off=off, imm=imm)         # *(u32 *)(dst + off) = imm
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

    def jump(self, op: int, reg: int, imm: int, label: str) -> "_Prog":
        """`if reg <op> imm goto label`; op: 0x05 ja, 0x15 jeq, 0x55 jne, 0x35 jge, 0xC5 jslt."""
        self.fixups.append((len(self.code), label))
        self.code.append(_i(op, reg, 0, 0, imm))
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


def _bump(p: _Prog, counters: int, idx_reg: int, tag: str) -> None:
    """counters[idx_reg] += 1 (per-CPU array: no atomics needed). Clobbers r0-r5."""
    p.emit(stxw(FP, -4, idx_reg), ld_map(R1, counters), movr(R2, FP), add(R2, -4), call(_LOOKUP))
    p.jump(0x15, R0, 0, f"skip_{tag}")
    p.emit(ldx(R1, R0, 0), add(R1, 1), stx(R0, 0, R1)).label(f"skip_{tag}")


def _bump_const(p: _Prog, counters: int, idx: int, tag: str) -> None:
    p.emit(mov(R1, idx))
    _bump(p, counters, R1, tag)


def _enter_prog(counters: int, start: int, traced: int | None) -> bytes:
    """raw sys_enter(struct pt_regs *regs, long id)."""
    p = _Prog()
    p.emit(movr(R6, R1), ldx(R7, R6, 8))
    p.jump(0x55, R7, _NR_IO_URING_ENTER, "out")
    p.emit(call(_PID_TGID), movr(R8, R0))
    if traced is not None:
        p.emit(rsh(R0, 32), stxw(FP, -4, R0), ld_map(R1, traced), movr(R2, FP), add(R2, -4), call(_LOOKUP))
        p.jump(0x15, R0, 0, "out")
    # to_submit = regs->si
    p.emit(movr(R1, FP), add(R1, -16), mov(R2, 8), ldx(R3, R6, 0), add(R3, _REGS_SI), call(_PROBE_READ_KERNEL))
    p.emit(ldx(R1, FP, -16), and32(R1, -1))
    p.jump(0x15, R1, 0, "wait")
    p.emit(call(_KTIME), stx(FP, -24, R0), stx(FP, -32, R8))
    p.emit(ld_map(R1, start), movr(R2, FP), add(R2, -32), movr(R3, FP), add(R3, -24), mov(R4, 0), call(_UPDATE))
    p.jump(0x05, 0, 0, "out")
    p.label("wait")
    _bump_const(p, counters, _NR_WAIT, "wait")
    p.label("out").emit(mov(R0, 0), exit_())
    return p.bytes()


def _exit_prog(counters: int, start: int) -> bytes:
    """raw sys_exit(struct pt_regs *regs, long ret)."""
    p = _Prog()
    p.emit(movr(R6, R1))
    p.emit(movr(R1, FP), add(R1, -8), mov(R2, 8), ldx(R3, R6, 0), add(R3, _REGS_ORIG_AX), call(_PROBE_READ_KERNEL))
    p.emit(ldx(R1, FP, -8))
    p.jump(0x55, R1, _NR_IO_URING_ENTER, "out")
    p.emit(call(_PID_TGID), stx(FP, -16, R0))
    p.emit(ld_map(R1, start), movr(R2, FP), add(R2, -16), call(_LOOKUP))
    p.jump(0x15, R0, 0, "out")
    p.emit(ldx(R7, R0, 0))  # start ns
    p.emit(ld_map(R1, start), movr(R2, FP), add(R2, -16), call(_DELETE))
    p.emit(call(_KTIME), subr(R0, R7), movr(R8, R0))  # r8 = latency
    # SQEs consumed: ret (r9), bucketed as lhist(ret, 0, 1000, 1)
    p.emit(ldx(R9, R6, 8))
    p.emit(mov(R1, _SQES_NEG))
    p.jump(0xC5, R9, 0, "sqes")  # ret < 0 (signed)
    p.emit(mov(R1, _SQES_MAX))
    p.jump(0x35, R9, _SQES_MAX, "sqes")  # ret >= 1000
    p.emit(movr(R1, R9))
    p.label("sqes")
    _bump(p, counters, R1, "sqes")
    # latency: log2 bucket of r8
    p.emit(mov(R1, _LAT))
    p.jump(0x15, R8, 0, "lat")
    p.emit(mov(R2, 0), movr(R3, R8))
    for shift in (32, 16, 8, 4, 2, 1):
        p.emit(movr(R4, R3), rsh(R4, shift))
        p.jump(0x15, R4, 0, f"s{shift}")
        p.emit(movr(R3, R4), add(R2, shift)).label(f"s{shift}")
    p.emit(mov(R1, _LAT + 1), addr(R1, R2))
    p.label("lat")
    _bump(p, counters, R1, "lat")
    _bump_const(p, counters, _NR_ENTERS, "n")
    p.label("out").emit(mov(R0, 0), exit_())
    return p.bytes()


def _fork_prog(traced: int, parent_off: int, child_off: int) -> bytes:
    """tracepoint sched_process_fork: a traced parent's child is traced too."""
    p = _Prog()
    p.emit(movr(R6, R1), ldxw(R1, R6, parent_off), stxw(FP, -4, R1))
    p.emit(ld_map(R1, traced), movr(R2, FP), add(R2, -4), call(_LOOKUP))
    p.jump(0x15, R0, 0, "out")
    p.emit(ldxw(R1, R6, child_off), stxw(FP, -8, R1), stw(FP, -12, 1))
    p.emit(ld_map(R1, traced), movr(R2, FP), add(R2, -8), movr(R3, FP), add(R3, -12), mov(R4, 0), call(_UPDATE))
    p.label("out").emit(mov(R0, 0), exit_())
    return p.bytes()


def _map_create(mtype: int, key: int, value: int, entries: int) -> int:
    return _bpf(_MAP_CREATE, struct.pack("<IIIII", mtype, key, value, entries, 0))


def _prog_load(ptype: int, code: bytes, name: str) -> int:
    """Load a program; on failure, load it again with the verifier's log for the message."""
    insns = ctypes.create_string_buffer(code)
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 18)

    def load(level: int) -> int:
        attr = struct.pack("<IIQQIIQII16s", ptype, len(code) // 8, ctypes.addressof(insns), ctypes.addressof(lic),
                           level, len(log) if level else 0, ctypes.addressof(log) if level else 0, 0, 0,
                           name.encode()[:15])
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


class _PerfAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("wakeup_events", ctypes.c_uint32), ("bp_type", ctypes.c_uint32),
                ("config1", ctypes.c_uint64), ("pad", ctypes.c_uint8 * 64)]


_PERF_EVENT_IOC_ENABLE, _PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408


def available() -> tuple[bool, str]:
    """Whether raw tracepoint programs can be loaded here (and if not, why)."""
    if platform.machine() != "x86_64":
        return False, f"raw tracepoint programs are written for x86-64, not {platform.machine()}"
    if os.geteuid() != 0:
        return False, "not root"
    try:
        fd = _prog_load(_PROG_RAW_TP, mov(R0, 0) + exit_(), "pt_probe")
    except OSError as exc:
        return False, f"cannot load a raw tracepoint program: {exc.strerror or exc}"
    os.close(fd)
    return True, ""


class EntersAggregate:
    """Attach on construction; `read()` the aggregates any time; `close()` detaches."""

    def __init__(self, pid: int | None):
        self._fds: list[int] = []
        try:
            self._attach(pid)
        except BaseException:
            self.close()
            raise

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _attach(self, pid: int | None) -> None:
        self._ncpu = _possible_cpus()
        self._counters = self._keep(_map_create(_PERCPU_ARRAY, 4, 8, _NCOUNTERS))
        start = self._keep(_map_create(_HASH, 8, 8, 65536))
        traced = None
        if pid:
            traced = self._keep(_map_create(_HASH, 4, 4, 65536))
            self._update(traced, struct.pack("<I", pid), struct.pack("<I", 1))
            tp_id, fields = _tracepoint_fields("sched", "sched_process_fork")
            fork = self._keep(_prog_load(_PROG_TRACEPOINT, _fork_prog(traced, fields["parent_pid"],
                                                                       fields["child_pid"]), "pt_fork"))
            # one perf event is enough: the program belongs to the tracepoint and runs on every CPU
            self._perf_tracepoint(tp_id, 0, fork)
        enter = self._keep(_prog_load(_PROG_RAW_TP, _enter_prog(self._counters, start, traced), "pt_enter"))
        leave = self._keep(_prog_load(_PROG_RAW_TP, _exit_prog(self._counters, start), "pt_exit"))
        # exit first: a call that entered before the enter program was attached is simply not seen
        for name, prog in (("sys_exit", leave), ("sys_enter", enter)):
            cname = ctypes.create_string_buffer(name.encode())
            try:
                self._keep(_bpf(_RAW_TP_OPEN, struct.pack("<QI", ctypes.addressof(cname), prog)))
            except OSError as exc:
                raise RawBpfError(exc.errno, f"attaching to raw tracepoint {name}: {exc.strerror}") from None

    def _perf_tracepoint(self, tp_id: int, cpu: int, prog: int) -> None:
        attr = _PerfAttr(type=2, size=ctypes.sizeof(_PerfAttr), config=tp_id, sample_period=1, wakeup_events=1)
        fd = _libc.syscall(_SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, cpu, -1, 8)  # PERF_FLAG_FD_CLOEXEC
        if fd < 0:
            e = ctypes.get_errno()
            raise RawBpfError(e, f"perf_event_open(sched_process_fork): {os.strerror(e)}")
        self._keep(fd)
        for req, arg in ((_PERF_EVENT_IOC_SET_BPF, prog), (_PERF_EVENT_IOC_ENABLE, 0)):
            if _libc.ioctl(fd, req, ctypes.c_ulong(arg)) < 0:
                e = ctypes.get_errno()
                raise RawBpfError(e, f"attaching the fork program: {os.strerror(e)}")

    @staticmethod
    def _update(fd: int, key: bytes, value: bytes) -> None:
        k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
        _bpf(_MAP_UPDATE, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))

    def _counts(self) -> list[int]:
        out = []
        key = ctypes.create_string_buffer(4)
        val = ctypes.create_string_buffer(8 * self._ncpu)
        for i in range(_NCOUNTERS):
            struct.pack_into("<I", key, 0, i)
            _bpf(_MAP_LOOKUP, struct.pack("<IIQQQ", self._counters, 0, ctypes.addressof(key),
                                          ctypes.addressof(val), 0))
            out.append(sum(struct.unpack(f"<{self._ncpu}Q", val.raw)))
        return out

    def read(self) -> dict:
        """The maps as bpftrace prints them in JSON (buckets with min/max/count)."""
        c = self._counts()
        sqes = [{"max": -1, "count": c[_SQES_NEG]}] if c[_SQES_NEG] else []
        sqes += [{"min": k, "max": k, "count": c[k]} for k in range(_SQES_MAX) if c[k]]
        if c[_SQES_MAX]:
            sqes.append({"min": _SQES_MAX, "count": c[_SQES_MAX]})
        lat = [{"min": 0, "max": 0, "count": c[_LAT]}] if c[_LAT] else []
        lat += [{"min": 1 << k, "max": (1 << (k + 1)) - 1, "count": c[_LAT + 1 + k]}
                for k in range(64) if c[_LAT + 1 + k]]
        maps: dict = {"nr_enters": c[_NR_ENTERS], "nr_wait_enters": c[_NR_WAIT]}
        if sqes:
            maps["enter_nr_sqes"] = sqes
        if lat:
            maps["enter_latency_ns"] = lat
        return maps

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in reversed(fds):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "EntersAggregate":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
