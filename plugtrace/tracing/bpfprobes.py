"""The kernel probes as our own eBPF programs (probes/*.bpf.c), loaded with libbpf.

In aggregate mode each class here keeps exactly the maps its bpftrace script
in `probes/` keeps, and `result()` returns them as bpftrace prints them in
JSON, so the rest of plugtrace cannot tell the two apart. In events mode each
writes one record per event (a struct of probes/records.h) into a BPF ring
buffer, with the columns of the script's lines. The scripts remain the
readable reference and the fallback (`Tracer` runs them when these cannot
load).

Why not the scripts: each hit of a classic tracepoint costs the traced
program a large part of the time a fast device takes per I/O (the README's
"Tracing" section gives the figures of its host). The programs here run on BTF-typed raw tracepoints, read
the arguments and kernel structs directly (no helper call per field), keep
per-thread start times in task storage (no lock, no hash update per call) and
request start times in an array slot per request tag; the traced processes
are a bitmap. Array lookups are inlined by the verifier, so the programs make
no hashed lookup at all. `bench/bench_tracing_overhead.py` measures what they
cost fio, `bench/bench_probe_cost.py` what each costs per hit.

Histograms and counters live in per-CPU arrays (no atomics), summed at
`result()`; what a map holds follows from its size (records.h): an lhist,
a log2 hist or a single counter. A counter that counts a histogram's samples
is that histogram's total.
"""

from __future__ import annotations

import platform
import re

import numpy as np

from .capabilities import tracefs_root
from .libbpf import BpfObject, KernelBtf, Ring, header_constant, record_dtype, traced_words
from .probes import kernel_dev_t

__all__ = [
    "AGGREGATES",
    "EVENTS",
    "BlockRqAggregate",
    "BlockRqEvents",
    "EntersAggregate",
    "EntersEvents",
    "SubmitAggregate",
    "UnplugAggregate",
    "UnplugEvents",
    "UringRequestEvents",
]

#: bytes of each events-mode ring buffer: ~10 s of 200k events/s of enters
RING_BYTES = 1 << 25


class _Probe:
    """One probe's programs (probes/`source`.bpf.c): `start()` loads and attaches them,
    `stop()` detaches and frees them (also as a context manager).

    `pid`: the process to trace, with the children it forks (None or 0: every
    process), and with `existing_children` those it forked already; `device`:
    "major:minor" of the block device to watch (block requests only; None: the
    traced process's requests on any device)."""

    source: str
    events_mode = False
    #: programs loaded only where the kernel has their tracepoint (a renamed one)
    if_present: frozenset[str] = frozenset()

    def __init__(self, pid: int | None = None, device: str | None = None, existing_children: bool = False):
        self.pid, self.existing_children = pid or None, existing_children
        max_entries = {"traced": traced_words()} if self.pid else {}
        max_entries.update(self._map_sizes())
        self.obj = BpfObject(
            self.source,
            settings={"follow": bool(self.pid), "watched_dev": kernel_dev_t(device), "events_mode": self.events_mode},
            max_entries=max_entries,
            skip=set() if self.pid else {"follow_fork"},
            if_present=self.if_present,
        )

    def _map_sizes(self) -> dict[str, int]:
        return {}

    @property
    def attached(self) -> list[str]:
        """The tracepoints attached to."""
        return self.obj.attached

    def start(self) -> None:
        """Load and attach; the traced process is in the set before any program runs, and the
        children it started before now join it once the fork follower is on."""
        self.obj.load()
        try:
            if self.pid:
                self.obj.update("traced", self.pid >> 6, 1 << (self.pid & 63))
            self.obj.resume()
            if self.pid and self.existing_children:
                self.obj.follow(self.pid, existing_children=True)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.obj.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Aggregate(_Probe):
    """Aggregate mode: `result()` reads the maps any time."""

    #: the per-CPU array maps it keeps, by the names bpftrace gives them
    maps: tuple[str, ...] = ()
    #: counter -> the histogram whose total it is
    totals: dict[str, str] = {}

    def result(self) -> dict:
        """The maps as bpftrace prints them in JSON (buckets with min/max/count)."""
        top, lslots, hslots = (header_constant(n) for n in ("LHIST_TOP", "LHIST_SLOTS", "HIST_SLOTS"))
        out: dict = {}
        for name in self.maps:
            c = self.obj.percpu_sums(name)
            if len(c) == 1:
                out[name] = c[0]
                continue
            if len(c) == lslots:
                buckets = [{"max": -1, "count": c[top + 1]}] if c[top + 1] else []
                buckets += [{"min": k, "max": k, "count": c[k]} for k in range(top) if c[k]]
                if c[top]:
                    buckets.append({"min": top, "count": c[top]})
            else:
                assert len(c) == hslots, f"{name}: {len(c)} slots is neither an lhist nor a hist"
                buckets = [{"min": 0, "max": 0, "count": c[0]}] if c[0] else []
                buckets += [
                    {"min": 1 << k, "max": (1 << (k + 1)) - 1, "count": c[1 + k]} for k in range(hslots - 1) if c[1 + k]
                ]
            if buckets:
                out[name] = buckets
        for name, hist in self.totals.items():
            out[name] = sum(b["count"] for b in out.get(hist, []))
        return out


class EntersAggregate(_Aggregate):
    """io_uring_enter.bpf.c: SQEs consumed per submitting io_uring_enter()
    (``enter_nr_sqes``), its latency (``enter_latency_ns``), and the counts of
    submitting calls (``nr_enters``) and calls with nothing to submit
    (``nr_wait_enters``)."""

    source = "io_uring_enter"
    maps = ("enter_nr_sqes", "enter_latency_ns", "nr_wait_enters")
    totals = {"nr_enters": "enter_nr_sqes"}


class SubmitAggregate(_Aggregate):
    """uring_submits.bpf.c: SQEs per submitting io_uring_enter() without a
    syscall tracepoint, from each request's position in its batch
    (``uring_submit_pos``; batch sizes: `decode.batch_sizes_from_positions`)."""

    source = "uring_submits"
    maps = ("uring_submit_pos",)
    # io_uring_submit_sqe before Linux 5.19
    if_present = frozenset({"submit_pos", "submit_pos_pre_5_19"})


class BlockRqAggregate(_Aggregate):
    """block_rq.bpf.c: block requests from issue to completion
    (``block_latency_ns``, ``nr_block_rq``), on `device` or, without one, the
    requests the traced process issues."""

    source = "block_rq"
    maps = ("block_latency_ns",)
    totals = {"nr_block_rq": "block_latency_ns"}


class UnplugAggregate(_Aggregate):
    """block_plug.bpf.c: requests per block-layer unplug in the traced
    process (``unplug_nr_rq``, ``nr_unplugs``)."""

    source = "block_plug"
    maps = ("unplug_nr_rq",)
    totals = {"nr_unplugs": "unplug_nr_rq"}


#: probe table -> its aggregate-mode programs
AGGREGATES = {
    "enters": EntersAggregate,
    "uring_requests": SubmitAggregate,
    "block_rq": BlockRqAggregate,
    "block_unplug": UnplugAggregate,
}


# --- events mode ---------------------------------------------------------------------
class _Events(_Probe):
    """Events mode: one record per event into a BPF ring buffer, with no
    wakeup; `read()` returns the records committed since the last call as a
    numpy array, `lost()` how many a full ring refused (exact: the programs
    count each failed write). Fields are named as the probe's table columns
    (`probes.py`)."""

    events_mode = True
    #: the record's struct in probes/records.h
    record: str

    def __init__(
        self,
        pid: int | None = None,
        device: str | None = None,
        ring_bytes: int = RING_BYTES,
        existing_children: bool = False,
    ):
        self.ring_bytes = ring_bytes
        self.ring: Ring | None = None
        super().__init__(pid, device, existing_children)

    def _map_sizes(self) -> dict[str, int]:
        return {"events": self.ring_bytes}

    def start(self) -> None:
        super().start()
        try:
            self.ring = Ring(self.obj.map_fd("events"), self.ring_bytes, record_dtype(self.record, ring_header=True))
        except BaseException:
            self.stop()
            raise

    def read(self) -> np.ndarray:
        assert self.ring is not None, "start() first"
        return self.ring.read()

    def columns(self, recs: np.ndarray) -> dict:
        """The table's columns from records `read()` returned (name -> values)."""
        return {name: recs[name] for name in recs.dtype.names or () if not name.startswith("rb_")}

    def lost(self) -> int:
        return self.obj.percpu_sums("lost")[0]

    def stop(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        super().stop()


class EntersEvents(_Events):
    """io_uring_enter.bpf.c in events mode: one record per io_uring_enter()
    of the traced process, with its arguments, result and latency."""

    source, record = "io_uring_enter", "enter_event"


class UringRequestEvents(_Events):
    """uring_requests.bpf.c: each request's submission (with its opcode) and
    completion (with its result) in the traced process."""

    source, record = "uring_requests", "uring_request_event"


class UnplugEvents(_Events):
    """block_plug.bpf.c in events mode: requests flushed per block unplug."""

    source, record = "block_plug", "unplug_event"


class BlockRqEvents(_Events):
    """block_rq.bpf.c in events mode: one record per completed request
    (issue and completion time, device, sector, bytes, and its flags, which
    `columns()` spells as the tracepoint's rwbs)."""

    source, record = "block_rq", "block_rq_event"

    def start(self) -> None:
        with KernelBtf() as kernel:
            self._rwbs = _Rwbs(kernel)
        super().start()

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
    kernel's BTF (`KernelBtf`)."""

    def __init__(self, kernel: KernelBtf, zoned: bool | None = None):
        ops, bits = kernel.enum("req_op"), kernel.enum("req_flag_bits")
        self.op_mask = (1 << min(bits.values())) - 1
        names = {"WRITE": "W", "DISCARD": "D", "SECURE_ERASE": "DE", "FLUSH": "F", "READ": "R"}
        if spells_zoned_ops() if zoned is None else zoned:
            names |= {
                "ZONE_APPEND": "ZA",
                "ZONE_RESET": "ZR",
                "ZONE_RESET_ALL": "ZRA",
                "ZONE_FINISH": "ZF",
                "ZONE_OPEN": "ZO",
                "ZONE_CLOSE": "ZC",
            }
        self.ops = {ops[f"REQ_OP_{name}"]: letters for name, letters in names.items() if f"REQ_OP_{name}" in ops}
        self.after = [
            (1 << bits[f"__REQ_{name}"], letter)
            for name, letter in (("FUA", "F"), ("RAHEAD", "A"), ("SYNC", "S"), ("META", "M"), ("ATOMIC", "U"))
            if f"__REQ_{name}" in bits
        ]
        self.preflush = 1 << bits["__REQ_PREFLUSH"]
        self.passthrough = [v for k, v in ops.items() if k in ("REQ_OP_DRV_IN", "REQ_OP_DRV_OUT")]

    def one(self, flags: int) -> str:
        return (
            ("F" if flags & self.preflush else "")
            + self.ops.get(flags & self.op_mask, "N")
            + "".join(letter for bit, letter in self.after if flags & bit)
        )

    def __call__(self, flags: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(flags, return_inverse=True)
        return np.array([self.one(int(f)) for f in uniq], dtype=object)[inverse]


def spells_zoned_ops() -> bool:
    """Whether this kernel's block tracepoints spell zoned operations (ZA, ZR, ...)
    rather than N. Their rwbs field grew from 9 to 10 characters with those
    spellings (Linux 6.17); without tracefs to read it, the version decides."""
    root = tracefs_root()
    try:
        found = root and re.search(r"char rwbs\[(\d+)\]", (root / "events/block/block_rq_complete/format").read_text())
    except OSError:
        found = None
    if found:
        return int(found.group(1)) >= 10
    return tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2]) >= (6, 17)


#: probe table -> its events-mode programs
EVENTS = {
    "enters": EntersEvents,
    "uring_requests": UringRequestEvents,
    "block_rq": BlockRqEvents,
    "block_unplug": UnplugEvents,
}
