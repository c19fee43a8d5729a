"""A run as a Perfetto trace: a timeline to zoom in Perfetto's UI or query with trace_processor.

`to_perfetto(run, path)` writes a protobuf trace of TrackEvents with the
`perfetto` package's streaming builder (Perfetto's own published protos):

* per engine thread: its plug sections as slices named by the device whose
  handler opened them, and child tracks with the engine's submits and the
  kernel's io_uring_enter() calls;
* per emulated device: its requests as slices from queued to completed, on
  one track per in-flight slot (in-flight requests overlap; a track's slices
  must not);
* block requests as the kernel issued and completed them, on slot tracks too;
* flows from each request to the submit that carried it and on to the block
  request that served it;
* counter tracks: requests in flight, SQEs per submit.

Timestamps are the run's CLOCK_MONOTONIC nanoseconds. Every event is written
in time order. A big run can be cut to a time window (`window_ms`).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .analysis import Run, df_requests
from .errors import PlugtraceError
from .run.output import output_file

__all__ = ["to_perfetto", "ExportSummary"]

_SEQUENCE = 1  # one writer sequence; no interning, so packets need no incremental state


class ExportSummary(dict):
    """What `to_perfetto` wrote: slices per kind, flows, counter values, packets, bytes."""


def _slots(begin: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The lowest free slot for each interval, in `begin` order (interval partitioning)."""
    order = np.argsort(begin, kind="stable")
    slot = np.zeros(len(begin), dtype=np.int64)
    busy: list[tuple[int, int]] = []  # (end, slot)
    free: list[int] = []
    next_slot = 0
    for i in order:
        while busy and busy[0][0] <= begin[i]:
            heapq.heappush(free, heapq.heappop(busy)[1])
        s = heapq.heappop(free) if free else next_slot
        next_slot += s == next_slot
        slot[i] = s
        heapq.heappush(busy, (int(end[i]), s))
    return slot


class _Writer:
    """Tracks and time-ordered events, written with Perfetto's streaming trace builder."""

    def __init__(self, file: IO[bytes]):
        from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TrackEvent
        from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

        self.TrackEvent = TrackEvent
        self.file = _Counting(file)
        self.builder = StreamingTraceProtoBuilder(self.file)
        self.next_uuid = 1
        self.tracks: dict[Any, int] = {}
        self.packets = 0
        # events: parallel lists of arrays, merged by time at the end
        self.ts: list[np.ndarray] = []
        self.rank: list[np.ndarray] = []  # at equal times: ends (0) before counters (1) before begins (2)
        self.kind: list[np.ndarray] = []
        self.row: list[np.ndarray] = []
        self.emitters: list[Any] = []

    def track(
        self,
        key: Any,
        name: str,
        parent: int | None = None,
        thread: tuple[int, int] | None = None,
        process: tuple[int, str] | None = None,
        counter: str | None = None,
    ) -> int:
        """The uuid of the track for `key`, described on first use."""
        if key in self.tracks:
            return self.tracks[key]
        uuid = self.tracks[key] = self.next_uuid
        self.next_uuid += 1
        packet = self.builder.create_packet()
        desc = packet.track_descriptor
        desc.uuid = uuid
        if process:
            desc.process.pid, desc.process.process_name = process
        elif thread:
            desc.thread.pid, desc.thread.tid = thread
            desc.thread.thread_name = name
        else:
            desc.name = name
        if parent:
            desc.parent_uuid = parent
        if counter:
            desc.counter.unit_name = counter
        self._write(packet)
        return uuid

    def _write(self, packet: Any) -> None:
        self.builder.write_packet(packet)
        self.packets += 1

    def add(self, ts: np.ndarray, rank: int, emit: Any) -> None:
        """Events at times `ts` (ns); `emit(packet, row)` fills the TrackEvent of the row-th one."""
        ts = np.asarray(ts, dtype=np.int64)
        self.ts.append(ts)
        self.rank.append(np.full(len(ts), rank, dtype=np.int8))
        self.kind.append(np.full(len(ts), len(self.emitters), dtype=np.int16))
        self.row.append(np.arange(len(ts), dtype=np.int32))  # a table of more than 2**31 rows is not exported whole
        self.emitters.append(emit)

    def finish(self) -> int:
        """Write every event in time order; returns the number of packets written."""
        if self.ts:
            ts, rank = np.concatenate(self.ts), np.concatenate(self.rank)
            kind, row = np.concatenate(self.kind), np.concatenate(self.row)
            order = np.lexsort((rank, ts))
            for i in order:
                packet = self.builder.create_packet()
                packet.timestamp = int(ts[i])
                packet.trusted_packet_sequence_id = _SEQUENCE
                self.emitters[kind[i]](packet.track_event, int(row[i]))
                self._write(packet)
        return self.packets


class _Counting:
    """A binary file that counts what is written to it (the output may be a FIFO, which has no size)."""

    def __init__(self, file: IO[bytes]):
        self.file, self.bytes = file, 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return self.file.write(data)


class _Links:
    """For each row of one table, the flow ids of the rows of another that share its key (CSR, no Python lists)."""

    def __init__(self, keys: np.ndarray, flows: np.ndarray):
        order = np.argsort(keys, kind="stable")
        self.keys, self.flows = keys[order], flows[order]

    def ranges(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.searchsorted(self.keys, keys, "left"), np.searchsorted(self.keys, keys, "right")


def _key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two int columns as one sortable key."""
    return a.astype(np.int64) * (1 << 40) + b.astype(np.int64)


def _track_ids(w: _Writer, groups: np.ndarray, describe: Any) -> np.ndarray:
    """A track uuid per row, one track per distinct group value (`describe(value)` makes it)."""
    values, inverse = np.unique(groups, return_inverse=True)
    return np.array([describe(v) for v in values.tolist()], dtype=np.int64)[inverse.ravel()]


def to_perfetto(run: Run, path: str | os.PathLike, window_ms: tuple[float, float] | None = None) -> ExportSummary:
    """Write `run` as a Perfetto protobuf trace at `path`; returns what was written.

    `window_ms`: (start, end) in ms since the run's start, to export part of a
    big run (rows are chosen by their start time).
    """
    try:
        import perfetto.trace_builder.proto_builder  # noqa: F401
    except ImportError:
        raise PlugtraceError("exporting to Perfetto needs the perfetto package (pip install perfetto)") from None
    run.require_whole()  # a table of the wrong columns would export as garbage, or halfway
    # written whole or not at all, never over the run itself (see plugtrace.run.output)
    with output_file(path, protect=[run.path]) as fh:
        w = _Writer(fh)
        summary = _write_trace(run, w, window_ms)
    summary["bytes"] = w.file.bytes
    return summary


def _write_trace(run: Run, w: _Writer, window_ms: tuple[float, float] | None) -> ExportSummary:
    T = w.TrackEvent
    summary = ExportSummary(sections=0, submits=0, enters=0, requests=0, block_requests=0, flows=0, counter_values=0)
    process = w.track("process", "", process=(1, f"plugtrace run {run.name} ({run.strategy})"))

    def thread_track(tid: int) -> int:
        return w.track(("thread", tid), f"engine thread (tid {tid})", parent=process, thread=(1, tid))

    def slices(
        track_ids: np.ndarray,
        begin: np.ndarray,
        end: np.ndarray,
        name: Any,
        flows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        terminating: bool = False,
        annotations: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Slices [begin, end) on their tracks; `name(i)` names the i-th; `flows` = (start, end, ids): the
        i-th slice carries ids[start[i]:end[i]] (as terminating flows when `terminating`)."""

        def emit_begin(ev: Any, i: int) -> None:
            ev.type = T.TYPE_SLICE_BEGIN
            ev.track_uuid = int(track_ids[i])
            ev.name = name(i)
            if flows is not None and flows[1][i] > flows[0][i]:
                ids = flows[2][flows[0][i] : flows[1][i]].tolist()
                (ev.terminating_flow_ids if terminating else ev.flow_ids).extend(ids)
            for key, values in (annotations or {}).items():
                a = ev.debug_annotations.add()
                a.name = key
                a.int_value = int(values[i])

        def emit_end(ev: Any, i: int) -> None:
            ev.type = T.TYPE_SLICE_END
            ev.track_uuid = int(track_ids[i])

        w.add(begin, 2, emit_begin)
        w.add(end, 0, emit_end)

    def counter(track: int, ts: np.ndarray, values: np.ndarray) -> None:
        def emit(ev: Any, i: int) -> None:
            ev.type = T.TYPE_COUNTER
            ev.track_uuid = track
            ev.counter_value = int(values[i])

        w.add(ts, 1, emit)
        summary["counter_values"] += len(ts)

    def columns(table: str, names: list[str], time_column: str) -> dict[str, np.ndarray]:
        """Columns of `table` as arrays, rows starting in the window."""
        t = run.arrow(table, names, run.window_filters(time_column, window_ms))
        return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}

    # requests first: the flows of submits and block requests are theirs
    to_submit = to_block = None
    if run.has("requests"):
        wanted = [
            "req_id",
            "thread",
            "device",
            "op",
            "offset_bytes",
            "len_bytes",
            "queue_ns",
            "complete_ns",
            "submit_seq",
            "sync",
        ]
        if run.has("block_rq") and window_ms is None:  # df_requests finds each request's block request
            req = df_requests(run)
            r = {c: req[c].to_numpy() for c in [*wanted, "block_issue_ns"]}
            del req
        else:
            r = columns("requests", wanted, "queue_ns")
        done = r["complete_ns"] >= 0
        r = {c: v[done] for c, v in r.items()}
        flow = r["req_id"].astype(np.int64) + 1
        submitted = r["submit_seq"] >= 0
        to_submit = _Links(_key(r["thread"][submitted], r["submit_seq"][submitted]), flow[submitted])
        if "block_issue_ns" in r:
            issued = ~np.isnan(r["block_issue_ns"])
            to_block = _Links(
                _key(r["offset_bytes"][issued] // 512, r["block_issue_ns"][issued].astype(np.int64)), flow[issued]
            )
        device = r["device"].astype(np.int64)
        slot = np.zeros(len(flow), dtype=np.int64)
        for d in np.unique(device):
            mine = np.flatnonzero(device == d)
            slot[mine] = _slots(r["queue_ns"][mine], r["complete_ns"][mine])
        parents = {
            int(d): w.track(("device", int(d)), f"device {int(d)} requests", parent=process) for d in np.unique(device)
        }
        tracks = _track_ids(
            w,
            _key(device, slot),
            lambda k: w.track(
                ("slot", k), f"device {k >> 40} in flight #{k & ((1 << 40) - 1)}", parent=parents[k >> 40]
            ),
        )
        ops, sizes, offsets, sync = r["op"], r["len_bytes"], r["offset_bytes"], r["sync"]  # op: 0 read, 1 write
        slices(
            tracks,
            r["queue_ns"],
            r["complete_ns"],
            lambda i: f"{'write' if ops[i] == 1 else 'read'} {sizes[i]} B @ {offsets[i]}{' (sync)' if sync[i] else ''}",
            flows=(np.arange(len(flow)), np.arange(1, len(flow) + 1), flow),
            annotations={"req_id": r["req_id"]},
        )
        summary["requests"] = summary["flows"] = len(flow)
        ts = np.concatenate([r["queue_ns"], r["complete_ns"]])
        step = np.concatenate([np.ones(len(flow), np.int64), -np.ones(len(flow), np.int64)])
        order = np.lexsort((step, ts))
        counter(
            w.track("inflight", "requests in flight", parent=process, counter="requests"),
            ts[order],
            np.cumsum(step[order]),
        )
        del r, ts, step, order

    if run.has("sections"):
        sec = columns(
            "sections",
            ["section_id", "tid", "owner", "begin_ns", "end_ns", "nr_deferred_calls", "nr_nested_polls"],
            "begin_ns",
        )
        owner = sec["owner"]
        slices(
            _track_ids(w, sec["tid"], thread_track),
            sec["begin_ns"],
            sec["end_ns"],
            lambda i: f"plug section (device {owner[i]})" if owner[i] >= 0 else "plug section (no device)",
            annotations={k: sec[k] for k in ("section_id", "nr_deferred_calls", "nr_nested_polls")},
        )
        summary["sections"] = len(owner)

    sqes_track = None
    if run.has("submits"):
        sub = columns("submits", ["thread", "tid", "submit_seq", "start_ns", "end_ns", "nr_sqes"], "start_ns")
        tracks = _track_ids(
            w, sub["tid"], lambda tid: w.track(("submits", tid), "submits (engine)", parent=thread_track(tid))
        )
        nr = sub["nr_sqes"]
        links = None
        if to_submit is not None:
            first, last = to_submit.ranges(_key(sub["thread"], sub["submit_seq"]))
            links = (first, last, to_submit.flows)
        slices(tracks, sub["start_ns"], sub["end_ns"], lambda i: f"submit {nr[i]} SQEs", flows=links)
        sqes_track = w.track("sqes", "SQEs per submit", parent=process, counter="SQEs")
        counter(sqes_track, sub["start_ns"], nr)
        summary["submits"] = len(nr)

    if run.has("enters"):
        ent = columns("enters", ["ts_ns", "tid", "to_submit", "latency_ns"], "ts_ns")
        tracks = _track_ids(
            w, ent["tid"], lambda tid: w.track(("enters", tid), "io_uring_enter (kernel)", parent=thread_track(tid))
        )
        n = ent["to_submit"]
        slices(tracks, ent["ts_ns"], ent["ts_ns"] + ent["latency_ns"], lambda i: f"io_uring_enter to_submit={n[i]}")
        if sqes_track is None:
            submitting = n > 0
            counter(
                w.track("sqes", "SQEs per submit", parent=process, counter="SQEs"),
                ent["ts_ns"][submitting],
                n[submitting],
            )
        summary["enters"] = len(n)

    if run.has("block_rq"):
        blk = columns("block_rq", ["issue_ns", "complete_ns", "sector", "nr_bytes", "rwbs"], "issue_ns")
        parent = w.track("block", "block requests (kernel)", parent=process)
        tracks = _track_ids(
            w,
            _slots(blk["issue_ns"], blk["complete_ns"]),
            lambda s: w.track(("block", s), f"block in flight #{s}", parent=parent),
        )
        rwbs, nbytes, sector = blk["rwbs"], blk["nr_bytes"], blk["sector"]
        links = None
        if to_block is not None:
            first, last = to_block.ranges(_key(sector, blk["issue_ns"]))
            links = (first, last, to_block.flows)
        slices(
            tracks,
            blk["issue_ns"],
            blk["complete_ns"],
            lambda i: f"{rwbs[i]} {nbytes[i]} B @ sector {sector[i]}",
            flows=links,
            terminating=True,
        )
        summary["block_requests"] = len(sector)

    summary["packets"] = w.finish()
    return summary


def read_back(path: str | os.PathLike) -> Iterator[Any]:
    """The packets of a trace written by `to_perfetto` (for tests and checks; no trace_processor needed)."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

    trace = Trace()
    trace.ParseFromString(Path(path).read_bytes())
    return iter(trace.packet)
