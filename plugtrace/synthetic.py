"""Synthetic run directories: consistent data without a device, root or bpftrace.

`write_run()` writes a run directory in the documented format (docs/run-format.md)
whose tables agree with each other the way a real recording's do: every request
is carried by exactly one submit, `submits.nr_sqes` counts the requests that name
it, kernel `enters` mirror the app's submits, the `enter_nr_sqes` histogram is
the distribution of those enters, and so on. Unit tests and the analysis
benchmark use it; real recordings go in data/.

The model, per engine thread: an event loop runs the handlers of its devices in
turn; a handler queues a few requests. What happens next depends on the strategy:

* ``immediate``: every request is submitted as soon as it is queued;
* ``defer`` / ``device-plug``: each handler runs inside a plug section, and the
  requests it queued leave in one submit when the section ends;
* ``loop-iteration``: no sections; one submit per round over the thread's devices.

With ``interleave`` > 0 a handler sometimes does a synchronous read and polls
the event loop while inside its section (QEMU's nested ``aio_poll()``). The next
device's handler then runs inside that section, its requests join the section
and wait until the sync read has completed and the outer section ends: the
deferral the analysis is meant to find.

Rows are generated and written in chunks so that ten million requests need a
few hundred megabytes, not tens of gigabytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .run import RunWriter, Status

__all__ = ["SyntheticSpec", "write_run", "STRATEGIES", "KERNEL_MODES"]

STRATEGIES = ("immediate", "device-plug", "defer", "loop-iteration")
#: which kernel-side tables to write: none (an untraced run), the in-kernel
#: aggregates, the per-event tables, or both
KERNEL_MODES = ("none", "aggregate", "events", "both")

# Time model constants, in nanoseconds. Orders of magnitude of a fast NVMe/loop
# device driven from Python: a few µs per queued request, tens of µs per I/O.
_QUEUE_STEP_NS = 1_500
_HANDLER_OVERHEAD_NS = 3_000
_SUBMIT_BASE_NS = 4_000
_SUBMIT_PER_SQE_NS = 600
_SERVICE_MEDIAN_NS = 80_000
_SYNC_SERVICE_MEDIAN_NS = 120_000
_IDLE_MEAN_NS = 5_000
_SYSCALL_ENTRY_NS = 150  # from the app's clock read to the tracepoint
_REAP_DELAY_NS = 2_000  # from block completion to the CQE being reaped
_T0_NS = 1_000_000_000_000
_BLOCK_DEV = (7 << 20) | 0  # loop0, as the block tracepoints encode dev_t
_OP_READ, _OP_WRITE = 22, 23  # IORING_OP_READ / IORING_OP_WRITE


@dataclass
class SyntheticSpec:
    """What to generate. `requests` counts guest requests (sync reads come on top)."""

    strategy: str = "defer"
    requests: int = 20_000
    devices: int = 2
    threads: int = 1
    iodepth: int = 32
    mean_batch: float = 6.0
    bs: int = 4096
    read_fraction: float = 1.0
    interleave: float = 0.0
    app: bool = True
    kernel: str = "both"
    seed: int = 1
    status: str = Status.COMPLETE
    could_not_measure: dict[str, str] = field(default_factory=dict)
    events_lost: int = 0
    chunk_requests: int = 1_000_000

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.kernel not in KERNEL_MODES:
            raise ValueError(f"kernel must be one of {KERNEL_MODES}, not {self.kernel!r}")
        if self.threads < 1 or self.devices < self.threads:
            raise ValueError("need at least one device per thread")
        if not self.app and self.kernel == "none":
            raise ValueError("a run with neither app-side nor kernel-side tables has nothing in it")
        if not 0.0 <= self.interleave <= 1.0:
            raise ValueError("interleave is a probability")


@dataclass
class _ThreadState:
    """What carries over from one chunk to the next for one engine thread."""

    thread: int
    devices: np.ndarray
    now_ns: int = _T0_NS
    next_handler: int = 0
    next_seq: int = 0


def _log2_buckets(values: np.ndarray) -> np.ndarray:
    """Counts per power-of-two bucket (index i holds [2**i, 2**(i+1)), index 0 also holds 0)."""
    exp = np.zeros(values.shape, dtype=np.int64)
    positive = values > 0
    exp[positive] = np.floor(np.log2(values[positive])).astype(np.int64)
    return np.bincount(exp, minlength=64)


class _Aggregates:
    """In-kernel style histograms and counters, accumulated over chunks."""

    def __init__(self) -> None:
        self.linear: dict[str, np.ndarray] = {}
        self.log2: dict[str, np.ndarray] = {}

    def add_linear(self, name: str, values: np.ndarray) -> None:
        counts = np.bincount(values)
        old = self.linear.get(name, np.zeros(0, dtype=np.int64))
        size = max(len(old), len(counts))
        self.linear[name] = np.pad(old, (0, size - len(old))) + np.pad(counts, (0, size - len(counts)))

    def add_log2(self, name: str, values: np.ndarray) -> None:
        self.log2[name] = self.log2.get(name, 0) + _log2_buckets(values)

    def histograms(self) -> dict[str, np.ndarray]:
        names, lows, highs, counts = [], [], [], []
        for name, c in self.linear.items():
            nz = np.flatnonzero(c)
            names += [name] * len(nz)
            lows.append(nz)
            highs.append(nz + 1)
            counts.append(c[nz])
        for name, c in self.log2.items():
            nz = np.flatnonzero(c)
            names += [name] * len(nz)
            lows.append(np.where(nz == 0, 0, 2**nz))
            highs.append(2 ** (nz + 1))
            counts.append(c[nz])
        return {
            "name": np.asarray(names, dtype=object),
            "low": np.concatenate(lows).astype(np.int64),
            "high": np.concatenate(highs).astype(np.int64),
            "count": np.concatenate(counts).astype(np.int64),
        }


def _group_offsets(lengths: np.ndarray) -> np.ndarray:
    """For items laid out group after group, each item's index within its group."""
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(int(lengths.sum())) - starts


def _chunk(rng: np.random.Generator, spec: SyntheticSpec, st: _ThreadState, n_req: int) -> dict[str, Any]:
    """Generate the next `n_req` requests of one thread with their submits and sections."""
    sectioned = spec.strategy in ("defer", "device-plug")
    # Handler runs: how many requests each queues, trimmed to exactly n_req.
    guess = int(n_req / spec.mean_batch * 1.3) + 16
    k = np.minimum(rng.poisson(spec.mean_batch - 1, guess) + 1, spec.iodepth)
    while k.sum() < n_req:
        k = np.concatenate([k, np.minimum(rng.poisson(spec.mean_batch - 1, guess) + 1, spec.iodepth)])
    csum = np.cumsum(k)
    nh = int(np.searchsorted(csum, n_req)) + 1
    k = k[:nh].copy()
    k[-1] -= int(csum[nh - 1] - n_req)
    handler_dev = st.devices[(st.next_handler + np.arange(nh)) % len(st.devices)]
    st.next_handler += nh

    # Interleaving: handler h polls and runs handler h+1 nested; never chained.
    inter = rng.random(nh) < spec.interleave
    inter[-1] = False
    inter[1:] &= ~inter[:-1]
    nested = np.zeros(nh, dtype=bool)
    nested[1:] = inter[:-1]
    group_of_handler = np.cumsum(~nested) - 1
    ng = int(group_of_handler[-1]) + 1
    outer = np.flatnonzero(~nested)  # the handler that opened each group

    # Per-request step inside its handler (immediate: the submit happens inline).
    n = int(k.sum())
    req_handler = np.repeat(np.arange(nh), k)
    one_sqe_lat = (_SUBMIT_BASE_NS + _SUBMIT_PER_SQE_NS + rng.exponential(800, n)).astype(np.int64)
    step = np.full(n, _QUEUE_STEP_NS, dtype=np.int64)
    if spec.strategy == "immediate":
        step += _SYSCALL_ENTRY_NS + one_sqe_lat
    cstep = np.cumsum(step) - step
    handler_first = np.cumsum(k) - k
    req_off = cstep - cstep[handler_first][req_handler]
    span = np.add.reduceat(step, handler_first) if n else np.zeros(0, np.int64)

    # Sync reads and the nested handler's start, relative to the group start.
    sync_lat = (_SUBMIT_BASE_NS + _SUBMIT_PER_SQE_NS + rng.exponential(800, nh)).astype(np.int64)
    sync_service = rng.lognormal(np.log(_SYNC_SERVICE_MEDIAN_NS), 0.3, nh).astype(np.int64)
    poll_gap = _SYSCALL_ENTRY_NS + sync_lat + 500
    group_close = span[outer] + _HANDLER_OVERHEAD_NS
    g_inter = inter[outer]
    inner = outer[g_inter] + 1
    group_close[g_inter] = (
        np.maximum(
            span[outer[g_inter]] + _SYSCALL_ENTRY_NS + sync_lat[outer[g_inter]] + sync_service[outer[g_inter]],
            span[outer[g_inter]] + poll_gap[outer[g_inter]] + span[inner],
        )
        + _HANDLER_OVERHEAD_NS
    )
    handler_base = np.zeros(nh, dtype=np.int64)  # handler start relative to its group start
    handler_base[inner] = span[inner - 1] + poll_gap[inner - 1]

    # Submission units: what leaves together in one io_uring_enter().
    req_group = group_of_handler[req_handler]
    if sectioned:
        unit_of_group = np.arange(ng)
    elif spec.strategy == "loop-iteration":
        unit_of_group = np.arange(ng) // len(st.devices)
    else:  # immediate: the submit latency is already inside each request's step
        unit_of_group = np.full(ng, -1)
    batched = unit_of_group[-1] >= 0
    nu = int(unit_of_group[-1]) + 1 if batched else 0
    unit_sqes = np.bincount(unit_of_group[req_group], minlength=nu) if batched else np.zeros(0, np.int64)
    unit_lat = (_SUBMIT_BASE_NS + _SUBMIT_PER_SQE_NS * unit_sqes + rng.exponential(1500, nu)).astype(np.int64)
    last_of_unit = np.ones(ng, dtype=bool)
    last_of_unit[:-1] = unit_of_group[1:] != unit_of_group[:-1]

    idle = rng.exponential(_IDLE_MEAN_NS, ng).astype(np.int64)
    group_dur = group_close + idle
    if batched:
        group_dur[last_of_unit] += unit_lat
    group_start = st.now_ns + np.cumsum(group_dur) - group_dur
    st.now_ns = int(group_start[-1] + group_dur[-1])

    queue_ns = group_start[req_group] + handler_base[req_handler] + req_off
    service = rng.lognormal(np.log(_SERVICE_MEDIAN_NS), 0.5, n).astype(np.int64) + _REAP_DELAY_NS
    if batched:
        unit_start = group_start[last_of_unit] + group_close[last_of_unit]
        req_unit = unit_of_group[req_group]
        submit_ns = unit_start[req_unit]
        submit_end = submit_ns + unit_lat[req_unit]
    else:
        submit_ns = queue_ns + _SYSCALL_ENTRY_NS
        submit_end = submit_ns + one_sqe_lat

    # Sync reads: one request and one submit each, issued by the polling handler.
    sh = outer[g_inter]
    sync_queue = group_start[group_of_handler[sh]] + span[sh]
    sync_start = sync_queue + _SYSCALL_ENTRY_NS
    sync_end = sync_start + sync_lat[sh]

    # Submits of this chunk in time order, numbered per thread.
    if batched:
        sub_start = np.concatenate([unit_start, sync_start])
        sub_lat = np.concatenate([unit_lat, sync_lat[sh]])
        sub_nr = np.concatenate([unit_sqes, np.ones(len(sh), np.int64)])
        reason = "deferred" if spec.strategy == "defer" else "unplug" if sectioned else "iteration"
        sub_reason = np.array([reason] * nu + ["sync"] * len(sh), dtype=object)
    else:
        sub_start = np.concatenate([submit_ns, sync_start])
        sub_lat = np.concatenate([one_sqe_lat, sync_lat[sh]])
        sub_nr = np.ones(n + len(sh), np.int64)
        sub_reason = np.array(["immediate"] * n + ["sync"] * len(sh), dtype=object)
    order = np.argsort(sub_start, kind="stable")
    seq_of = np.empty(len(order), dtype=np.int64)
    seq_of[order] = st.next_seq + np.arange(len(order))
    st.next_seq += len(order)
    req_seq = seq_of[req_unit] if batched else seq_of[:n]
    sync_seq = seq_of[(nu if batched else n) :]

    # Sections: one per group (the outer handler's), only for sectioned strategies.
    group_dev = handler_dev[outer]
    if sectioned:
        sec_end = group_start + group_close + unit_lat
        req_owner = group_dev[req_group]
        sync_owner = handler_dev[sh]
    else:
        req_owner = np.full(n, -1)
        sync_owner = np.full(len(sh), -1)

    return {
        "req": {
            "device": handler_dev[req_handler],
            "queue_ns": queue_ns,
            "submit_ns": submit_ns,
            "complete_ns": submit_end + service,
            "submit_end": submit_end,
            "submit_seq": req_seq,
            "group": req_group,
            "section_owner": req_owner,
            "sync": np.zeros(n, bool),
        },
        "sync": {
            "device": handler_dev[sh],
            "queue_ns": sync_queue,
            "submit_ns": sync_start,
            "complete_ns": sync_end + sync_service[sh],
            "submit_end": sync_end,
            "submit_seq": sync_seq,
            "group": group_of_handler[sh],
            "section_owner": sync_owner,
            "sync": np.ones(len(sh), bool),
        },
        "submits": {
            "submit_seq": seq_of[order],
            "start_ns": sub_start[order],
            "latency_ns": sub_lat[order],
            "nr_sqes": sub_nr[order],
            "reason": sub_reason[order],
        },
        "sections": None
        if not sectioned
        else {
            "group": np.arange(ng),
            "owner": group_dev,
            "begin_ns": group_start,
            "end_ns": sec_end,
            "nr_deferred_calls": np.full(ng, 1 if spec.strategy == "defer" else 0),
            "nr_nested_polls": g_inter.astype(np.int64),
        },
    }


class _Generator:
    def __init__(self, spec: SyntheticSpec, writer: RunWriter):
        self.spec = spec
        self.w = writer
        self.rng = np.random.default_rng(spec.seed)
        self.threads = [_ThreadState(t, np.arange(t, spec.devices, spec.threads)) for t in range(spec.threads)]
        self.next_req_id = 0
        self.next_section_id = 0
        self.agg = _Aggregates()
        self.submit_latencies: list[np.ndarray] = []
        self.nr_requests = 0
        self.nr_submits = 0
        self.nr_sqes = 0
        self.first_ns = _T0_NS
        self.last_ns = _T0_NS

    def put(self, name: str, data: dict[str, np.ndarray]) -> None:
        """Append to a table, unless its probe is one the spec says could not measure."""
        if name not in self.spec.could_not_measure:
            self.w.append(name, data)

    @property
    def events(self) -> bool:
        return self.spec.kernel in ("events", "both")

    @property
    def aggregate(self) -> bool:
        return self.spec.kernel in ("aggregate", "both")

    def run(self) -> None:
        remaining = self.spec.requests
        while remaining > 0:
            chunk = min(remaining, self.spec.chunk_requests)
            per_thread = np.full(len(self.threads), chunk // len(self.threads))
            per_thread[: chunk % len(self.threads)] += 1
            for st, n_req in zip(self.threads, per_thread):
                if n_req:
                    self._write_chunk(st, _chunk(self.rng, self.spec, st, int(n_req)))
            remaining -= chunk

    def _write_chunk(self, st: _ThreadState, c: dict[str, Any]) -> None:
        spec, tid = self.spec, 1000 + st.thread
        reqs = {key: np.concatenate([c["req"][key], c["sync"][key]]) for key in c["req"]}
        n = len(reqs["queue_ns"])
        req_id = self.next_req_id + np.arange(n)
        self.next_req_id += n
        section_id = np.where(reqs["section_owner"] >= 0, self.next_section_id + reqs["group"], -1)
        op = np.where(reqs["sync"] | (self.rng.random(n) < spec.read_fraction), 0, 1).astype(np.int32)
        offset = self.rng.integers(0, 1 << 18, n) * spec.bs
        subs = c["submits"]
        ns = len(subs["start_ns"])

        if spec.app:
            self.put(
                "requests",
                {
                    "req_id": req_id,
                    "thread": np.full(n, st.thread, np.int32),
                    "tid": np.full(n, tid, np.int32),
                    "device": reqs["device"].astype(np.int32),
                    "queue": np.zeros(n, np.int32),
                    "op": op,
                    "offset_bytes": offset,
                    "len_bytes": np.full(n, spec.bs, np.int64),
                    "nr_guest_requests": np.ones(n, np.int32),
                    "queue_ns": reqs["queue_ns"],
                    "submit_ns": reqs["submit_ns"],
                    "complete_ns": reqs["complete_ns"],
                    "submit_seq": reqs["submit_seq"],
                    "section_id": section_id,
                    "section_owner": reqs["section_owner"].astype(np.int32),
                    "deferred_by_thread": np.full(n, -1, np.int32),
                    "sync": reqs["sync"],
                    "resubmits": np.zeros(n, np.int32),
                    "result": np.full(n, spec.bs, np.int32),
                },
            )
            self.put(
                "submits",
                {
                    "submit_seq": subs["submit_seq"],
                    "thread": np.full(ns, st.thread, np.int32),
                    "tid": np.full(ns, tid, np.int32),
                    "start_ns": subs["start_ns"],
                    "end_ns": subs["start_ns"] + subs["latency_ns"],
                    "latency_ns": subs["latency_ns"],
                    "nr_sqes": subs["nr_sqes"].astype(np.int32),
                    "ret": subs["nr_sqes"].astype(np.int32),
                    "reason": subs["reason"],
                },
            )
            sec = c["sections"]
            if sec is not None:
                m = len(sec["group"])
                self.put(
                    "sections",
                    {
                        "section_id": self.next_section_id + sec["group"],
                        "thread": np.full(m, st.thread, np.int32),
                        "tid": np.full(m, tid, np.int32),
                        "owner": sec["owner"].astype(np.int32),
                        "begin_ns": sec["begin_ns"],
                        "end_ns": sec["end_ns"],
                        "nr_deferred_calls": sec["nr_deferred_calls"].astype(np.int32),
                        "nr_nested_polls": sec["nr_nested_polls"].astype(np.int32),
                    },
                )
        enter_lat = np.maximum(subs["latency_ns"] - 2 * _SYSCALL_ENTRY_NS, 100)
        if self.events:
            self._write_kernel_events(st, tid, c, reqs, req_id, op, offset, section_id, enter_lat)
        if self.aggregate:
            self.agg.add_linear("enter_nr_sqes", subs["nr_sqes"])
            self.agg.add_log2("enter_latency_ns", enter_lat)
            self.agg.add_log2("block_latency_ns", reqs["complete_ns"] - reqs["submit_end"] - _REAP_DELAY_NS)
            self.agg.add_linear("unplug_nr_rq", subs["nr_sqes"][subs["nr_sqes"] > 1])
        if c["sections"] is not None:
            self.next_section_id += len(c["sections"]["group"])
        self.submit_latencies.append(subs["latency_ns"].astype(np.int64))
        self.nr_requests += n
        self.nr_submits += ns
        self.nr_sqes += int(subs["nr_sqes"].sum())
        self.last_ns = max(self.last_ns, int(reqs["complete_ns"].max()))

    def _write_kernel_events(self, st, tid, c, reqs, req_id, op, offset, section_id, enter_lat) -> None:
        subs = c["submits"]
        ns, n = len(subs["start_ns"]), len(req_id)
        self.put(
            "enters",
            {
                "ts_ns": subs["start_ns"] + _SYSCALL_ENTRY_NS,
                "tid": np.full(ns, tid, np.int32),
                "fd": np.full(ns, 10 + st.thread, np.int32),
                "to_submit": subs["nr_sqes"].astype(np.int32),
                "min_complete": np.zeros(ns, np.int32),
                "flags": np.zeros(ns, np.int32),
                "ret": subs["nr_sqes"].astype(np.int32),
                "latency_ns": enter_lat,
            },
        )
        issue = reqs["submit_ns"] + 2 * _SYSCALL_ENTRY_NS
        block_done = reqs["complete_ns"] - _REAP_DELAY_NS
        self.put(
            "block_rq",
            {
                "issue_ns": issue,
                "complete_ns": block_done,
                "latency_ns": block_done - issue,
                "dev": np.full(n, _BLOCK_DEV, np.int64),
                "sector": offset // 512,
                "nr_bytes": np.full(n, self.spec.bs, np.int64),
                "rwbs": np.where(op == 0, "R", "W").astype(object),
            },
        )
        batched = subs["nr_sqes"] > 1
        self.put(
            "block_unplug",
            {
                "ts_ns": subs["start_ns"][batched] + 2 * _SYSCALL_ENTRY_NS,
                "tid": np.full(int(batched.sum()), tid, np.int32),
                "nr_rq": subs["nr_sqes"][batched].astype(np.int32),
            },
        )
        # The engine tags SQEs with a slot number, reused once a request completes.
        slot = (req_id % 1024).astype(np.int64)
        self.put(
            "uring_requests",
            {
                "ts_ns": np.concatenate([issue - _SYSCALL_ENTRY_NS, block_done + _REAP_DELAY_NS // 2]),
                "tid": np.full(2 * n, tid, np.int32),
                "event": np.array(["submit"] * n + ["complete"] * n, dtype=object),
                "user_data": np.concatenate([slot, slot]),
                "opcode": np.tile(np.where(op == 0, _OP_READ, _OP_WRITE), 2),
                "res": np.full(2 * n, self.spec.bs, np.int32),
            },
        )
        markers: list[tuple[np.ndarray, str, np.ndarray, np.ndarray]] = [
            (reqs["queue_ns"], "request_queued", req_id, reqs["device"]),
            (subs["start_ns"], "submit", subs["submit_seq"], subs["nr_sqes"]),
        ]
        sec = c["sections"]
        if sec is not None:
            sid = self.next_section_id + sec["group"]
            markers += [
                (sec["begin_ns"], "section_begin", sid, sec["owner"]),
                (sec["end_ns"], "section_end", sid, sec["nr_deferred_calls"]),
            ]
        self.put(
            "markers",
            {
                "ts_ns": np.concatenate([m[0] for m in markers]),
                "tid": np.full(sum(len(m[0]) for m in markers), tid, np.int32),
                "marker": np.concatenate([np.full(len(m[0]), m[1], dtype=object) for m in markers]),
                "arg0": np.concatenate([m[2] for m in markers]).astype(np.int64),
                "arg1": np.concatenate([m[3] for m in markers]).astype(np.int64),
            },
        )

    def summary(self) -> dict[str, Any]:
        lat = np.concatenate(self.submit_latencies)
        elapsed_s = (self.last_ns - self.first_ns) / 1e9
        return {
            "iops": self.nr_requests / elapsed_s,
            "nr_requests": self.nr_requests,
            "nr_submits": self.nr_submits,
            "mean_sqes_per_submit": self.nr_sqes / self.nr_submits,
            "submit_latency_p50_ns": int(np.percentile(lat, 50)),
            "submit_latency_p99_ns": int(np.percentile(lat, 99)),
            "elapsed_s": elapsed_s,
        }


def _probes(spec: SyntheticSpec) -> dict[str, Any]:
    ran = []
    if spec.kernel in ("events", "both"):
        ran += ["enters", "uring_requests", "block_rq", "block_unplug", "markers"]
    if spec.kernel in ("aggregate", "both"):
        ran += ["histograms", "counters"]
    ran = [p for p in ran if p not in spec.could_not_measure]
    return {"ran": ran, "could_not_measure": dict(spec.could_not_measure)}


def write_run(path: str | os.PathLike, spec: SyntheticSpec | None = None, **fields: Any) -> Path:
    """Write a synthetic run directory at `path` and return its path.

    Pass a `SyntheticSpec`, or its fields as keyword arguments
    (``write_run(tmp, strategy="defer", interleave=0.3, requests=10_000)``).
    Tables named in `could_not_measure` are not written, as a recording lacking
    that probe would not have them. `summary.nr_requests` counts every row of
    `requests`, sync reads included.
    """
    spec = spec or SyntheticSpec(**fields)
    spec.validate()
    devices = [
        {"index": i, "name": f"vd{chr(ord('a') + i % 26)}", "kind": "virtio-blk", "thread": i % spec.threads}
        for i in range(spec.devices)
    ]
    meta = {
        "plugtrace_version": __version__,
        "command": ["plugtrace-synthetic", spec.strategy, str(spec.requests)],
        "config": {
            "strategy": spec.strategy,
            "devices": spec.devices,
            "threads": spec.threads,
            "iodepth": spec.iodepth,
            "bs": spec.bs,
            "rw": "randread" if spec.read_fraction == 1.0 else "randrw",
            "requests": spec.requests,
            "interleave": spec.interleave,
            "mode": spec.kernel,
            "synthetic": True,
            "seed": spec.seed,
        },
        "environment": {"kernel": "synthetic", "machine": "synthetic", "cpus": 0, "python": "", "packages": {}},
        "device": {"kind": "file", "path": "(synthetic)", "size_bytes": spec.bs << 18, "created_by_plugtrace": True},
        "emulated_devices": devices if spec.app else [],
        "probes": _probes(spec),
        "events_lost": spec.events_lost if spec.kernel != "none" else None,
        "tracing_overhead": None,
    }
    writer = RunWriter(path, meta)
    gen = _Generator(spec, writer)
    gen.run()
    if gen.aggregate:
        gen.put("histograms", gen.agg.histograms())
        gen.put(
            "counters",
            {
                "name": np.array(["nr_enters", "nr_sqes", "nr_block_rq"], dtype=object),
                "value": np.array([gen.nr_submits, gen.nr_sqes, gen.nr_requests], dtype=np.int64),
            },
        )
    writer.close(spec.status, summary=gen.summary())
    return Path(path)
