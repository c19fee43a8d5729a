"""The kernel probes as BTF-typed raw tracepoint programs of our own.

In aggregate mode each class here keeps exactly the maps its bpftrace script
in `probes/` keeps, and `read()` returns them as bpftrace prints them in JSON,
so the rest of plugtrace cannot tell the two apart. In events mode each
writes one fixed-size record per event into a BPF ring buffer, with the
columns of the script's lines. The scripts remain the reference and the
fallback (`Tracer` uses them when these cannot load).

Why not the scripts: each hit of a classic tracepoint costs the traced
program about 0.5 us on this kind of VM; fio on zram makes an io_uring_enter()
per I/O in ~1.2 us. The programs here run on raw tracepoints, read the
arguments directly, keep per-thread start times in task storage (no lock,
no hash update per call) and request start times in an array slot per
request tag; the traced processes are a bitmap. Array lookups are inlined by
the verifier, so the programs make no hashed lookup at all.
`bench/bench_tracing_overhead.py` measures what they cost fio.

Counters live in one per-CPU array (no atomics), summed at `read()`; a
counter that counts a histogram's samples is that histogram's total.
"""

from __future__ import annotations

import platform
import re

import numpy as np

from .capabilities import tracefs_root
from .decode import LHIST_TOP
from .probes import kernel_dev_t
from .rawbpf import (FP, R0, R1, R2, R3, R4, R6, R7, R8, R9, Programs, RawBpfError, _ARRAY, _CURRENT_TASK_BTF, _KTIME,
                     _LOOKUP, _PERCPU_ARRAY, _PID_TGID, _RB_NO_WAKEUP, _RINGBUF_OUTPUT, _TASK_STORAGE_GET,
                     _KernelTypes, _Prog, _test_bit, add, addr, and32, and64, call, exit_, ld_map, ldx, ldxb, ldxw,
                     lsh, mov, movr, rsh, std, stx, stxw, subr)

__all__ = ["AGGREGATES", "EVENTS", "BlockRqAggregate", "BlockRqEvents", "EntersAggregate", "EntersEvents",
           "SubmitAggregate", "UnplugAggregate", "UnplugEvents", "UringRequestEvents"]

_NR_IO_URING_ENTER = 426  # x86-64
_LHIST_MAX = LHIST_TOP  # lhist(x, 0, 1000, 1): slot k for k, slot 1000 for >= 1000, slot 1001 for < 0
_SLOTS = {"lhist": _LHIST_MAX + 2, "hist": 65, "count": 1}  # hist: slot 0 for 0, k + 1 for [2^k, 2^(k+1))


class _Layout:
    """Where each histogram and counter of a probe lives in the counters array.

    `totals` names counters that count exactly what a histogram counts
    (one bump per sample): they are the histogram's total at `maps()`, which
    spares the programs a second bump per hit."""

    def __init__(self, *items: tuple[str, str], totals: dict[str, str] | None = None):
        self.kinds: dict[str, str] = {}
        self.base: dict[str, int] = {}
        self.totals = totals or {}
        n = 0
        for kind, name in items:
            self.kinds[name], self.base[name] = kind, n
            n += _SLOTS[kind]
        self.size = n

    def maps(self, c: list[int]) -> dict:
        """The counters as bpftrace prints its maps in JSON (buckets with min/max/count)."""
        out: dict = {}
        for name, kind in self.kinds.items():
            b = self.base[name]
            if kind == "count":
                out[name] = c[b]
                continue
            if kind == "lhist":
                buckets = [{"max": -1, "count": c[b + _LHIST_MAX + 1]}] if c[b + _LHIST_MAX + 1] else []
                buckets += [{"min": k, "max": k, "count": c[b + k]} for k in range(_LHIST_MAX) if c[b + k]]
                if c[b + _LHIST_MAX]:
                    buckets.append({"min": _LHIST_MAX, "count": c[b + _LHIST_MAX]})
            else:
                buckets = [{"min": 0, "max": 0, "count": c[b]}] if c[b] else []
                buckets += [{"min": 1 << k, "max": (1 << (k + 1)) - 1, "count": c[b + 1 + k]}
                            for k in range(64) if c[b + 1 + k]]
            if buckets:
                out[name] = buckets
        for name, hist in self.totals.items():
            out[name] = sum(b["count"] for b in out.get(hist, []))
        return out


# --- code shared by the programs -------------------------------------------------
def _bump(p: _Prog, counters: int, idx_reg: int, tag: str) -> None:
    """counters[idx_reg] += 1 (per-CPU array: no atomics needed). Clobbers r0-r5."""
    p.emit(stxw(FP, -4, idx_reg), ld_map(R1, counters), movr(R2, FP), add(R2, -4), call(_LOOKUP))
    p.jump(0x15, R0, 0, f"skip_{tag}")
    p.emit(ldx(R1, R0, 0), add(R1, 1), stx(R0, 0, R1)).label(f"skip_{tag}")


def _count(p: _Prog, counters: int, idx: int, tag: str) -> None:
    p.emit(mov(R1, idx))
    _bump(p, counters, R1, tag)


def _lhist(p: _Prog, counters: int, base: int, val: int, tag: str) -> None:
    """lhist(val, 0, 1000, 1) += 1."""
    p.emit(mov(R1, base + _LHIST_MAX + 1))
    p.jump(0xC5, val, 0, f"{tag}_at")  # val < 0 (signed)
    p.emit(mov(R1, base + _LHIST_MAX))
    p.jump(0x35, val, _LHIST_MAX, f"{tag}_at")  # val >= 1000
    p.emit(movr(R1, val), add(R1, base))
    p.label(f"{tag}_at")
    _bump(p, counters, R1, tag)


def _hist(p: _Prog, counters: int, base: int, val: int, tag: str) -> None:
    """hist(val) += 1: log2 buckets, as bpftrace's hist()."""
    p.emit(mov(R1, base))
    p.jump(0x15, val, 0, f"{tag}_at")
    p.emit(mov(R2, 0), movr(R3, val))
    for shift in (32, 16, 8, 4, 2, 1):
        p.emit(movr(R4, R3), rsh(R4, shift))
        p.jump(0x15, R4, 0, f"{tag}_s{shift}")
        p.emit(movr(R3, R4), add(R2, shift)).label(f"{tag}_s{shift}")
    p.emit(mov(R1, base + 1), addr(R1, R2))
    p.label(f"{tag}_at")
    _bump(p, counters, R1, tag)


def _only_traced(p: _Prog, traced: int | None) -> None:
    """Go to "out" unless the current process is in the traced set (None: every process).
    Uses the stack at FP-12 .. FP-4."""
    if traced is None:
        return
    p.emit(call(_PID_TGID), rsh(R0, 32), stxw(FP, -8, R0))
    _test_bit(p, traced, -8, "out")


def _only_traced_request(p: _Prog, traced: int | None, kernel: _KernelTypes, req: int) -> None:
    """`_only_traced` for an io_uring request in register `req`, without a helper call: the
    submitting task is the request's (``req->tctx->task``; ``req->task`` before Linux 6.13), read
    through its pointers. A helper call costs a hit ~20 ns on kernels that guard every return
    (retpolines, Safe-RET), a third of what the hit costs before the program runs."""
    if traced is None:
        return
    try:
        path = [kernel.offset("io_kiocb", "tctx"), kernel.offset("io_uring_task", "task")]
    except RawBpfError:
        try:
            path = [kernel.offset("io_kiocb", "task")]
        except RawBpfError:
            _only_traced(p, traced)
            return
    p.emit(movr(R1, req))
    for off in path:
        p.emit(ldx(R1, R1, off))
        p.jump(0x15, R1, 0, "out")
    p.emit(ldxw(R1, R1, kernel.offset("task_struct", "tgid")), stxw(FP, -8, R1))
    _test_bit(p, traced, -8, "out")


def _out(p: _Prog) -> bytes:
    return p.label("out").emit(mov(R0, 0), exit_()).bytes()


class _Aggregate(Programs):
    """Attach on construction; `read()` the maps any time; `close()` detaches.

    `pid`: the process to trace, with the children it forks (None or 0: every
    process), and with `existing_children` those it forked already; `device`: "major:minor" of the block device to watch (block
    requests only; None: the traced process's requests on any device)."""

    layout: _Layout
    #: names in the kernel's BTF the programs need
    kernel_names: frozenset[str] = frozenset()

    def __init__(self, pid: int | None = None, device: str | None = None, existing_children: bool = False):
        super().__init__()
        try:
            kernel = _KernelTypes(set(self.kernel_names))
            self._counters = self.map(_PERCPU_ARRAY, 4, 8, self.layout.size)
            traced = self.follow(pid, existing_children) if pid else None
            self._attach(kernel, traced, device)
        except BaseException:
            self.close()
            raise

    def _attach(self, kernel: _KernelTypes, traced: int | None, device: str | None) -> None:
        raise NotImplementedError

    def read(self) -> dict:
        return self.layout.maps(self.percpu_sums(self._counters, self.layout.size))


class EntersAggregate(_Aggregate):
    """`probes/io_uring_enter.bt`: SQEs consumed per submitting io_uring_enter()
    (``enter_nr_sqes``), its latency (``enter_latency_ns``), and the counts of
    submitting calls (``nr_enters``) and calls with nothing to submit
    (``nr_wait_enters``)."""

    layout = _Layout(("lhist", "enter_nr_sqes"), ("hist", "enter_latency_ns"), ("count", "nr_wait_enters"),
                     totals={"nr_enters": "enter_nr_sqes"})
    kernel_names = frozenset({"btf_trace_sys_enter", "btf_trace_sys_exit", "pt_regs"})

    def _attach(self, kernel, traced, device) -> None:
        start = self.task_storage()
        si, orig_ax = kernel.offset("pt_regs", "si"), kernel.offset("pt_regs", "orig_ax")
        c, base = self._counters, self.layout.base
        # exit first: a call whose enter ran before the enter program was attached is simply not seen
        p = _Prog()  # sys_exit(struct pt_regs *regs, long ret)
        p.emit(ldx(R6, R1, 0), ldx(R9, R1, 8), ldx(R7, R6, orig_ax))
        p.jump(0x55, R7, _NR_IO_URING_ENTER, "out")
        p.emit(call(_CURRENT_TASK_BTF), movr(R2, R0), ld_map(R1, start), mov(R3, 0), mov(R4, 0),
               call(_TASK_STORAGE_GET))
        p.jump(0x15, R0, 0, "out")  # this thread never submitted while traced
        p.emit(ldx(R7, R0, 0))
        p.jump(0x15, R7, 0, "out")  # this call's enter was not seen (or it submitted nothing)
        p.emit(std(R0, 0, 0), call(_KTIME), subr(R0, R7), movr(R8, R0))
        _lhist(p, c, base["enter_nr_sqes"], R9, "sqes")
        _hist(p, c, base["enter_latency_ns"], R8, "lat")
        self.attach(kernel, "sys_exit", _out(p), "pt_enter_exit")

        p = _Prog()  # sys_enter(struct pt_regs *regs, long id)
        p.emit(ldx(R6, R1, 0), ldx(R7, R1, 8))
        p.jump(0x55, R7, _NR_IO_URING_ENTER, "out")
        _only_traced(p, traced)
        p.emit(ldx(R1, R6, si), and32(R1, -1))  # to_submit
        p.jump(0x15, R1, 0, "wait")
        p.emit(call(_CURRENT_TASK_BTF), movr(R2, R0), ld_map(R1, start), mov(R3, 0), mov(R4, 1),  # F_CREATE
               call(_TASK_STORAGE_GET))
        p.jump(0x15, R0, 0, "out")
        p.emit(movr(R9, R0), call(_KTIME), stx(R9, 0, R0))
        p.jump(0x05, 0, 0, "out")
        p.label("wait")
        _count(p, c, base["nr_wait_enters"], "wait")
        self.attach(kernel, "sys_enter", _out(p), "pt_enter")


class SubmitAggregate(_Aggregate):
    """`probes/uring_requests.bt` in aggregate mode: SQEs per submitting
    io_uring_enter() without a syscall tracepoint. io_uring's
    io_uring_submit_req fires once per request inside the enter that takes
    it; while that enter runs, the ring's shared SQ head still holds where the
    batch began and the kernel's private head (`cached_sq_head`) is one past
    this request, so their difference is the request's position in its batch
    (1, 2, ...). ``uring_submit_pos`` counts positions: batches of at least k
    requests = count of position k, so the batch sizes follow exactly
    (`decode.batch_sizes_from_positions`)."""

    layout = _Layout(("lhist", "uring_submit_pos"))
    kernel_names = frozenset({"btf_trace_io_uring_submit_req", "io_kiocb", "io_ring_ctx", "io_rings", "io_uring",
                              "io_uring_task", "task_struct"})

    def _attach(self, kernel, traced, device) -> None:
        c, base = self._counters, self.layout.base
        p = _Prog()  # io_uring_submit_req(struct io_kiocb *req)
        p.emit(ldx(R6, R1, 0))
        _only_traced_request(p, traced, kernel, R6)
        sq_head = kernel.offset("io_rings", "sq") + kernel.offset("io_uring", "head")
        p.emit(ldx(R6, R6, kernel.offset("io_kiocb", "ctx")),
               ldxw(R7, R6, kernel.offset("io_ring_ctx", "cached_sq_head")),
               ldx(R1, R6, kernel.offset("io_ring_ctx", "rings")), ldxw(R1, R1, sq_head),
               subr(R7, R1), and32(R7, -1))  # u32 arithmetic: the heads wrap
        _lhist(p, c, base["uring_submit_pos"], R7, "pos")
        self.attach(kernel, "io_uring_submit_req", _out(p), "pt_submit_pos")


class _BlockRqSlots:
    """What block_rq's programs share in both modes: a request's issue time,
    device and sector, kept in an array slot chosen by (hardware queue, tag).

    A request in flight holds a driver tag, unique in its hardware queue, so
    an array slot per tag needs no hashed lookup at either end (the verifier
    inlines array lookups). A completion whose slot does not hold its device
    and sector (another device's request on the same tag, when no device is
    watched) is not counted. Exact for up to 16 hardware queues of up to
    4096 tags."""

    kernel_names = frozenset({"btf_trace_block_rq_issue", "btf_trace_block_rq_complete", "request",
                              "request_queue", "gendisk", "blk_mq_hw_ctx"})
    SLOTS = 1 << 16

    def __init__(self, progs: Programs, kernel: _KernelTypes, device: str | None):
        self.start = progs.map(_ARRAY, 4, 24, self.SLOTS)  # [issue ns, dev, sector]
        self.off = {"q": kernel.offset("request", "q"), "disk": kernel.offset("request_queue", "disk"),
                    "major": kernel.offset("gendisk", "major"), "minor": kernel.offset("gendisk", "first_minor"),
                    "tag": kernel.offset("request", "tag"), "hctx": kernel.offset("request", "mq_hctx"),
                    "queue_num": kernel.offset("blk_mq_hw_ctx", "queue_num"),
                    "sector": kernel.offset("request", "__sector")}
        self.watched = kernel_dev_t(device) or None

    def _dev_and_slot(self, p: _Prog) -> None:
        """r7 = the request's dev_t (major << 20 | minor), r0 = its slot (or "out"); r6 is the request.
        Uses the stack at FP-4."""
        off = self.off
        p.emit(ldx(R1, R6, off["q"]), ldx(R1, R1, off["disk"]))
        p.jump(0x15, R1, 0, "out")
        p.emit(ldxw(R7, R1, off["major"]), lsh(R7, 20), ldxw(R2, R1, off["minor"]), addr(R7, R2))
        if self.watched is not None:
            p.jump(0x55, R7, self.watched, "out")
        p.emit(ldx(R1, R6, off["hctx"]))
        p.jump(0x15, R1, 0, "out")
        p.emit(ldxw(R1, R1, off["queue_num"]), lsh(R1, 12), ldxw(R2, R6, off["tag"]), and64(R2, 0xFFF),
               addr(R1, R2), and64(R1, self.SLOTS - 1), stxw(FP, -4, R1))
        p.emit(ld_map(R1, self.start), movr(R2, FP), add(R2, -4), call(_LOOKUP))
        p.jump(0x15, R0, 0, "out")

    def issue(self, traced: int | None) -> bytes:
        """block_rq_issue(struct request *rq): the request's slot takes its issue time, device and sector
        (on the watched device, or issued by a traced process when no device is watched)."""
        p = _Prog()
        p.emit(ldx(R6, R1, 0))
        if self.watched is None:
            _only_traced(p, traced)
        self._dev_and_slot(p)
        p.emit(movr(R9, R0), stx(R9, 8, R7), ldx(R1, R6, self.off["sector"]), stx(R9, 16, R1), call(_KTIME),
               stx(R9, 0, R0))
        return _out(p)

    def completion(self, p: _Prog) -> None:
        """The start of a block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes)
        program: "out" unless the request's issue was seen; then r6 = the request, r7 = its dev_t,
        r8 = its issue time, r9 = now (ns), and its slot is free again."""
        p.emit(ldx(R6, R1, 0))
        self._dev_and_slot(p)
        p.emit(ldx(R8, R0, 0))
        p.jump(0x15, R8, 0, "out")  # its issue was not seen
        p.emit(ldx(R1, R0, 8))
        p.jump(0x5D, R1, 0, "out", src=R7)  # not the same device
        p.emit(ldx(R1, R0, 16), ldx(R2, R6, self.off["sector"]))
        p.jump(0x5D, R1, 0, "out", src=R2)  # not the same request
        p.emit(std(R0, 0, 0), call(_KTIME), movr(R9, R0))


class BlockRqAggregate(_Aggregate):
    """`probes/block_rq.bt`: block requests from issue to completion
    (``block_latency_ns``, ``nr_block_rq``), on `device` or, without one, the
    requests the traced process issues (`_BlockRqSlots`)."""

    layout = _Layout(("hist", "block_latency_ns"), totals={"nr_block_rq": "block_latency_ns"})
    kernel_names = _BlockRqSlots.kernel_names

    def _attach(self, kernel, traced, device) -> None:
        slots = _BlockRqSlots(self, kernel, device)
        p = _Prog()
        slots.completion(p)
        p.emit(subr(R9, R8))
        _hist(p, self._counters, self.layout.base["block_latency_ns"], R9, "lat")
        self.attach(kernel, "block_rq_complete", _out(p), "pt_rq_done")
        self.attach(kernel, "block_rq_issue", slots.issue(traced), "pt_rq_issue")


class UnplugAggregate(_Aggregate):
    """`probes/block_plug.bt`: requests per block-layer unplug in the traced
    process (``unplug_nr_rq``, ``nr_unplugs``)."""

    layout = _Layout(("lhist", "unplug_nr_rq"), totals={"nr_unplugs": "unplug_nr_rq"})
    kernel_names = frozenset({"btf_trace_block_unplug"})

    def _attach(self, kernel, traced, device) -> None:
        c, base = self._counters, self.layout.base
        p = _Prog()  # block_unplug(struct request_queue *q, unsigned int depth, bool explicit)
        p.emit(ldx(R6, R1, 8), and32(R6, -1))
        _only_traced(p, traced)
        _lhist(p, c, base["unplug_nr_rq"], R6, "nr")
        self.attach(kernel, "block_unplug", _out(p), "pt_unplug")


#: probe table -> its aggregate-mode programs
AGGREGATES = {"enters": EntersAggregate, "uring_requests": SubmitAggregate, "block_rq": BlockRqAggregate,
              "block_unplug": UnplugAggregate}


# --- events mode ---------------------------------------------------------------------
#: bytes of each events-mode ring buffer: ~10 s of 200k events/s of enters
RING_BYTES = 1 << 25
_RB_HEADER = [("rb_len", "<u4"), ("rb_pg", "<u4")]


class _Events(Programs):
    """Events mode: one fixed-size record per event into a BPF ring buffer,
    with no wakeup; `read()` returns the records committed since the last
    call as a numpy array, `lost()` how many a full ring refused (exact: the
    program counts each failed write). Fields are named as the probe's
    table columns (`probes.py`)."""

    #: the record after the ring's 8-byte header, as numpy (dtype, offset) fields
    record: list[tuple[str, str]]
    kernel_names: frozenset[str] = frozenset()

    def __init__(self, pid: int | None = None, device: str | None = None, ring_bytes: int = RING_BYTES,
                 existing_children: bool = False):
        super().__init__()
        self.ring = None
        try:
            kernel = _KernelTypes(set(self.kernel_names))
            self._lost = self.map(_PERCPU_ARRAY, 4, 8, 1)
            self.ring = super().ring(ring_bytes, np.dtype(_RB_HEADER + self.record))
            traced = self.follow(pid, existing_children) if pid else None
            self._attach(kernel, traced, device)
        except BaseException:
            self.close()
            raise

    @property
    def record_bytes(self) -> int:
        return np.dtype(self.record).itemsize

    def _attach(self, kernel: _KernelTypes, traced: int | None, device: str | None) -> None:
        raise NotImplementedError

    def _output(self, p: _Prog, at: int) -> None:
        """Write the record built on the stack at FP + `at` to the ring; count a refusal."""
        p.emit(ld_map(R1, self.ring.fd), movr(R2, FP), add(R2, at), mov(R3, self.record_bytes),
               mov(R4, _RB_NO_WAKEUP), call(_RINGBUF_OUTPUT))
        p.jump(0x15, R0, 0, "out")
        p.emit(mov(R1, 0))
        _bump(p, self._lost, R1, "lost")

    def read(self) -> np.ndarray:
        return self.ring.read()

    def columns(self, recs: np.ndarray) -> dict:
        """The table's columns from records `read()` returned (name -> values)."""
        return {name: recs[name] for name in recs.dtype.names}

    def lost(self) -> int:
        return self.percpu_sums(self._lost, 1)[0]

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        super().close()


class EntersEvents(_Events):
    """`probes/io_uring_enter.bt` in events mode: one record per io_uring_enter()
    of the traced process, with its arguments, result and latency."""

    record = [("ts_ns", "<u8"), ("latency_ns", "<u8"), ("tid", "<i4"), ("fd", "<i4"), ("to_submit", "<u4"),
              ("min_complete", "<u4"), ("flags", "<u4"), ("ret", "<i4")]
    kernel_names = frozenset({"btf_trace_sys_enter", "btf_trace_sys_exit", "pt_regs"})

    def _attach(self, kernel, traced, device) -> None:
        # per thread: [start ns, fd | to_submit << 32, min_complete | flags << 32]
        call_ = self.task_storage(3)
        off = {r: kernel.offset("pt_regs", r) for r in ("di", "si", "dx", "r10", "orig_ax")}
        rec = -48  # the record on the stack: FP-48 .. FP-8
        p = _Prog()  # sys_exit(struct pt_regs *regs, long ret)
        p.emit(ldx(R6, R1, 0), ldx(R9, R1, 8), ldx(R7, R6, off["orig_ax"]))
        p.jump(0x55, R7, _NR_IO_URING_ENTER, "out")
        p.emit(call(_CURRENT_TASK_BTF), movr(R2, R0), ld_map(R1, call_), mov(R3, 0), mov(R4, 0),
               call(_TASK_STORAGE_GET))
        p.jump(0x15, R0, 0, "out")
        p.emit(movr(R8, R0), ldx(R7, R8, 0))
        p.jump(0x15, R7, 0, "out")  # this call's enter was not seen
        p.emit(std(R8, 0, 0), call(_KTIME), subr(R0, R7))
        p.emit(stx(FP, rec, R7), stx(FP, rec + 8, R0))
        p.emit(call(_PID_TGID), stxw(FP, rec + 16, R0))
        p.emit(ldxw(R1, R8, 8), stxw(FP, rec + 20, R1), ldxw(R1, R8, 12), stxw(FP, rec + 24, R1))
        p.emit(ldxw(R1, R8, 16), stxw(FP, rec + 28, R1), ldxw(R1, R8, 20), stxw(FP, rec + 32, R1))
        p.emit(stxw(FP, rec + 36, R9))
        self._output(p, rec)
        self.attach(kernel, "sys_exit", _out(p), "pt_enter_exit")

        p = _Prog()  # sys_enter(struct pt_regs *regs, long id)
        p.emit(ldx(R6, R1, 0), ldx(R7, R1, 8))
        p.jump(0x55, R7, _NR_IO_URING_ENTER, "out")
        _only_traced(p, traced)
        p.emit(call(_CURRENT_TASK_BTF), movr(R2, R0), ld_map(R1, call_), mov(R3, 0), mov(R4, 1),  # F_CREATE
               call(_TASK_STORAGE_GET))
        p.jump(0x15, R0, 0, "out")
        p.emit(movr(R9, R0))
        for word, (lo, hi) in ((1, ("di", "si")), (2, ("dx", "r10"))):
            p.emit(ldxw(R1, R6, off[lo]), stxw(R9, 8 * word, R1), ldxw(R1, R6, off[hi]), stxw(R9, 8 * word + 4, R1))
        p.emit(call(_KTIME), stx(R9, 0, R0))
        self.attach(kernel, "sys_enter", _out(p), "pt_enter")


class UringRequestEvents(_Events):
    """`probes/uring_requests.bt` in events mode: each request's submission
    (with its opcode) and completion (with its result) in the traced process."""

    record = [("ts_ns", "<u8"), ("user_data", "<u8"), ("tid", "<i4"), ("event", "<i4"), ("opcode", "<i4"),
              ("res", "<i4")]
    kernel_names = frozenset({"btf_trace_io_uring_submit_req", "btf_trace_io_uring_complete", "io_kiocb",
                              "io_cqe", "io_uring_cqe"})

    def _attach(self, kernel, traced, device) -> None:
        rec = -40
        user_data = kernel.offset("io_kiocb", "cqe") + kernel.offset("io_cqe", "user_data")
        opcode = kernel.offset("io_kiocb", "opcode")
        if kernel.params("io_uring_complete") != 3:
            raise OSError(95, "io_uring:io_uring_complete has another form on this kernel (needs Linux >= 6.3)")
        p = _Prog()  # io_uring_complete(struct io_ring_ctx *ctx, void *req, struct io_uring_cqe *cqe)
        p.emit(ldx(R6, R1, 16))
        _only_traced(p, traced)
        p.emit(ldx(R1, R6, kernel.offset("io_uring_cqe", "user_data")), stx(FP, rec + 8, R1))
        p.emit(ldxw(R1, R6, kernel.offset("io_uring_cqe", "res")), stxw(FP, rec + 28, R1))
        p.emit(mov(R1, 1), stxw(FP, rec + 20, R1), mov(R1, -1), stxw(FP, rec + 24, R1))
        self._stamp(p, rec)
        self.attach(kernel, "io_uring_complete", _out(p), "pt_uring_done")

        p = _Prog()  # io_uring_submit_req(struct io_kiocb *req)
        p.emit(ldx(R6, R1, 0))
        _only_traced(p, traced)
        p.emit(ldx(R1, R6, user_data), stx(FP, rec + 8, R1), ldxb(R1, R6, opcode), stxw(FP, rec + 24, R1))
        p.emit(mov(R1, 0), stxw(FP, rec + 20, R1), stxw(FP, rec + 28, R1))
        self._stamp(p, rec)
        self.attach(kernel, "io_uring_submit_req", _out(p), "pt_uring_submit")

    def _stamp(self, p: _Prog, rec: int) -> None:
        p.emit(call(_KTIME), stx(FP, rec, R0), call(_PID_TGID), stxw(FP, rec + 16, R0))
        self._output(p, rec)


class UnplugEvents(_Events):
    """`probes/block_plug.bt` in events mode: requests flushed per block unplug."""

    record = [("ts_ns", "<u8"), ("tid", "<i4"), ("nr_rq", "<i4")]
    kernel_names = frozenset({"btf_trace_block_unplug"})

    def _attach(self, kernel, traced, device) -> None:
        rec = -24
        p = _Prog()  # block_unplug(struct request_queue *q, unsigned int depth, bool explicit)
        p.emit(ldx(R6, R1, 8))
        _only_traced(p, traced)
        p.emit(stxw(FP, rec + 12, R6), call(_KTIME), stx(FP, rec, R0), call(_PID_TGID), stxw(FP, rec + 8, R0))
        self._output(p, rec)
        self.attach(kernel, "block_unplug", _out(p), "pt_unplug")


class BlockRqEvents(_Events):
    """`probes/block_rq.bt` in events mode: one record per completed request
    (issue and completion time, device, sector, bytes, and its flags, which
    `columns()` spells as the tracepoint's rwbs), matched as in aggregate mode
    (`_BlockRqSlots`)."""

    record = [("issue_ns", "<u8"), ("complete_ns", "<u8"), ("latency_ns", "<u8"), ("dev", "<u8"), ("sector", "<u8"),
              ("nr_bytes", "<u4"), ("cmd_flags", "<u4")]
    kernel_names = _BlockRqSlots.kernel_names | {"req_op", "req_flag_bits"}

    def _attach(self, kernel, traced, device) -> None:
        self._rwbs = _Rwbs(kernel)
        slots = _BlockRqSlots(self, kernel, device)
        rec = -48  # the record on the stack: FP-48 .. FP-1 (FP-4 is the slot key until the lookup is done)
        p = _Prog()
        p.emit(ldxw(R2, R1, 16), stxw(FP, rec + 40, R2))  # nr_bytes, before r1 is lost
        slots.completion(p)
        p.emit(stx(FP, rec, R8), stx(FP, rec + 8, R9), subr(R9, R8), stx(FP, rec + 16, R9), stx(FP, rec + 24, R7),
               ldx(R1, R6, slots.off["sector"]), stx(FP, rec + 32, R1),
               ldxw(R1, R6, kernel.offset("request", "cmd_flags")), stxw(FP, rec + 44, R1))
        self._output(p, rec)
        self.attach(kernel, "block_rq_complete", _out(p), "pt_rq_done")
        self.attach(kernel, "block_rq_issue", slots.issue(traced), "pt_rq_issue")

    def columns(self, recs: np.ndarray) -> dict:
        cols = super().columns(recs)
        cols["rwbs"] = self._rwbs(recs["cmd_flags"])
        # as the tracepoints (blk_rq_trace_sector): 0 for a request without a start sector (a flush
        # holds -1) or a passthrough one
        op = recs["cmd_flags"] & self._rwbs.op_mask
        no_sector = (recs["sector"] == np.iinfo(np.uint64).max) | np.isin(op, self._rwbs.passthrough)
        cols["sector"] = np.where(no_sector, 0, recs["sector"]).astype(np.int64)
        return cols


class _Rwbs:
    """Request flags -> the letters the block tracepoints print (the kernel's
    blk_fill_rwbs): F for a preflush, the operation (R, W, D, DE, F, the zoned
    ZA, ZR, ZRA, ZF, ZO, ZC where the kernel spells them, else N), then F for
    FUA, A read-ahead, S sync, M metadata, U atomic. The bits come from the
    kernel's BTF."""

    def __init__(self, kernel: _KernelTypes, zoned: bool | None = None):
        ops, bits = kernel.enum("req_op"), kernel.enum("req_flag_bits")
        self.op_mask = (1 << min(bits.values())) - 1
        names = {"WRITE": "W", "DISCARD": "D", "SECURE_ERASE": "DE", "FLUSH": "F", "READ": "R"}
        if spells_zoned_ops() if zoned is None else zoned:
            names |= {"ZONE_APPEND": "ZA", "ZONE_RESET": "ZR", "ZONE_RESET_ALL": "ZRA", "ZONE_FINISH": "ZF",
                      "ZONE_OPEN": "ZO", "ZONE_CLOSE": "ZC"}
        self.ops = {ops[f"REQ_OP_{name}"]: letters for name, letters in names.items() if f"REQ_OP_{name}" in ops}
        self.after = [(1 << bits[f"__REQ_{name}"], letter)
                      for name, letter in (("FUA", "F"), ("RAHEAD", "A"), ("SYNC", "S"), ("META", "M"), ("ATOMIC", "U"))
                      if f"__REQ_{name}" in bits]
        self.preflush = 1 << bits["__REQ_PREFLUSH"]
        self.passthrough = [v for k, v in ops.items() if k in ("REQ_OP_DRV_IN", "REQ_OP_DRV_OUT")]

    def one(self, flags: int) -> str:
        return ("F" if flags & self.preflush else "") + self.ops.get(flags & self.op_mask, "N") + "".join(
            letter for bit, letter in self.after if flags & bit)

    def __call__(self, flags: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(flags, return_inverse=True)
        return np.array([self.one(int(f)) for f in uniq], dtype=object)[inverse]


def spells_zoned_ops() -> bool:
    """Whether this kernel's block tracepoints spell zoned operations (ZA, ZR, ...)
    rather than N. Their rwbs field grew from 9 to 10 characters with those
    spellings (Linux 6.17); without tracefs to read it, the version decides."""
    root = tracefs_root()
    try:
        found = root and re.search(r"char rwbs\[(\d+)\]",
                                   (root / "events/block/block_rq_complete/format").read_text())
    except OSError:
        found = None
    if found:
        return int(found.group(1)) >= 10
    return tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2]) >= (6, 17)


#: probe table -> its events-mode programs
EVENTS = {"enters": EntersEvents, "uring_requests": UringRequestEvents, "block_rq": BlockRqEvents,
          "block_unplug": UnplugEvents}
