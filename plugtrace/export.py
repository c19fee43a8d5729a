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
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .analysis import Run, df_requests
from .errors import PlugtraceError

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

    def __init__(self, path: Path):
        from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TrackEvent
        from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

        self.TrackEvent = TrackEvent
        self.file = open(path, "wb")
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

    def track(self, key: Any, name: str, parent: int | None = None, thread: tuple[int, int] | None = None,
              process: tuple[int, str] | None = None, counter: str | None = None) -> int:
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
        self.kind.append(np.full(len(ts), len(self.emitters), dtype=np.int32))
        self.row.append(np.arange(len(ts), dtype=np.int64))
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
        self.file.close()
        return self.packets


def _in_window(df: pd.DataFrame, column: str, lo: int | None, hi: int | None) -> pd.DataFrame:
    if lo is None:
        return df
    return df[(df[column] >= lo) & (df[column] < hi)].reset_index(drop=True)


def to_perfetto(run: Run, path: str | os.PathLike, window_ms: tuple[float, float] | None = None) -> ExportSummary:
    """Write `run` as a Perfetto protobuf trace at `path`; returns what was written.

    `window_ms`: (start, end) in ms since the run's start, to export part of a
    big run (rows are chosen by their start time).
    """
    try:
        import perfetto.trace_builder.proto_builder  # noqa: F401
    except ImportError:
        raise PlugtraceError("exporting to Perfetto needs the perfetto package (pip install perfetto)") from None
    lo = hi = None
    if window_ms is not None:
        lo, hi = (run.start_ns + int(v * 1e6) for v in window_ms)
    out = Path(path)
    w = _Writer(out)
    T = w.TrackEvent
    summary = ExportSummary(sections=0, submits=0, enters=0, requests=0, block_requests=0, flows=0,
                            counter_values=0)
    process = w.track("process", "", process=(1, f"plugtrace run {run.name} ({run.strategy})"))

    def thread_track(tid: int) -> int:
        return w.track(("thread", tid), f"engine thread (tid {tid})", parent=process, thread=(1, tid))

    def slices(track_ids: np.ndarray, begin: np.ndarray, end: np.ndarray, names: list[str] | np.ndarray,
               flows: dict[int, list[int]] | None = None, terminating: dict[int, list[int]] | None = None,
               annotations: dict[str, np.ndarray] | None = None) -> None:
        def emit_begin(ev: Any, i: int) -> None:
            ev.type = T.TYPE_SLICE_BEGIN
            ev.track_uuid = int(track_ids[i])
            ev.name = str(names[i])
            if flows and i in flows:
                ev.flow_ids.extend(flows[i])
            if terminating and i in terminating:
                ev.terminating_flow_ids.extend(terminating[i])
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

    # requests, their submits and their block requests first: the flows join them
    flow_of_submit: dict[tuple[int, int], list[int]] = {}
    flow_of_block: dict[tuple[int, int], list[int]] = {}
    if run.has("requests"):
        req = df_requests(run, kernel=run.has("block_rq") and window_ms is None)
        req = _in_window(req, "queue_ns", lo, hi)
        done = req["complete_ns"].to_numpy() >= 0
        req = req[done].reset_index(drop=True)
        flow = req["req_id"].to_numpy(dtype=np.int64) + 1
        for (thread, seq), ids in pd.Series(flow).groupby([req["thread"].to_numpy(),
                                                           req["submit_seq"].to_numpy()]):
            if seq >= 0:
                flow_of_submit[(int(thread), int(seq))] = ids.tolist()
        if "block_issue_ns" in req:
            issued = req["block_issue_ns"].notna().to_numpy()
            for key, ids in pd.Series(flow[issued]).groupby(
                    [(req["offset_bytes"].to_numpy()[issued] // 512), req["block_issue_ns"].to_numpy()[issued]]):
                flow_of_block[(int(key[0]), int(key[1]))] = ids.tolist()
        device = req["device"].to_numpy()
        tracks = np.zeros(len(req), dtype=np.int64)
        for d in np.unique(device):
            mine = np.flatnonzero(device == d)
            parent = w.track(("device", int(d)), f"device {int(d)} requests", parent=process)
            slot = _slots(req["queue_ns"].to_numpy()[mine], req["complete_ns"].to_numpy()[mine])
            tracks[mine] = [w.track(("slot", int(d), int(s)), f"device {int(d)} in flight #{int(s)}", parent=parent)
                            for s in slot]
        ops = np.where(req["op"].astype(str).str.contains("write|1", regex=True), "write", "read")
        names = [f"{op} {n} B @ {off}{' (sync)' if s else ''}" for op, n, off, s in
                 zip(ops, req["len_bytes"], req["offset_bytes"], req["sync"])]
        slices(tracks, req["queue_ns"].to_numpy(), req["complete_ns"].to_numpy(), names,
               flows={i: [int(f)] for i, f in enumerate(flow)}, annotations={"req_id": req["req_id"].to_numpy()})
        summary["requests"] = len(req)
        summary["flows"] = len(req)
        ts = np.concatenate([req["queue_ns"].to_numpy(), req["complete_ns"].to_numpy()])
        step = np.concatenate([np.ones(len(req), np.int64), -np.ones(len(req), np.int64)])
        order = np.lexsort((step, ts))
        counter(w.track("inflight", "requests in flight", parent=process, counter="requests"), ts[order],
                np.cumsum(step[order]))

    if run.has("sections"):
        sec = _in_window(run.table("sections"), "begin_ns", lo, hi)
        owner = sec["owner"].to_numpy()
        names = [f"plug section (device {o})" if o >= 0 else "plug section (no device)" for o in owner]
        slices(np.array([thread_track(int(t)) for t in sec["tid"]], dtype=np.int64), sec["begin_ns"].to_numpy(),
               sec["end_ns"].to_numpy(), names, annotations={"section_id": sec["section_id"].to_numpy(),
                                                            "nr_deferred_calls": sec["nr_deferred_calls"].to_numpy(),
                                                            "nr_nested_polls": sec["nr_nested_polls"].to_numpy()})
        summary["sections"] = len(sec)

    if run.has("submits"):
        sub = _in_window(run.table("submits"), "start_ns", lo, hi)
        tracks = np.array([w.track(("submits", int(t)), "submits (engine)", parent=thread_track(int(t)))
                           for t in sub["tid"]], dtype=np.int64)
        keys = list(zip(sub["thread"].to_numpy().tolist(), sub["submit_seq"].to_numpy().tolist()))
        flows = {i: flow_of_submit[k] for i, k in enumerate(keys) if k in flow_of_submit}
        slices(tracks, sub["start_ns"].to_numpy(), sub["end_ns"].to_numpy(),
               [f"submit {n} SQEs" for n in sub["nr_sqes"]], flows=flows)
        counter(w.track("sqes", "SQEs per submit", parent=process, counter="SQEs"), sub["start_ns"].to_numpy(),
                sub["nr_sqes"].to_numpy())
        summary["submits"] = len(sub)

    if run.has("enters"):
        ent = _in_window(run.table("enters", ["ts_ns", "tid", "to_submit", "latency_ns"]), "ts_ns", lo, hi)
        tracks = np.array([w.track(("enters", int(t)), "io_uring_enter (kernel)", parent=thread_track(int(t)))
                           for t in ent["tid"]], dtype=np.int64)
        slices(tracks, ent["ts_ns"].to_numpy(), (ent["ts_ns"] + ent["latency_ns"]).to_numpy(),
               [f"io_uring_enter to_submit={n}" for n in ent["to_submit"]])
        if not run.has("submits"):
            submitting = ent[ent["to_submit"] > 0]
            counter(w.track("sqes", "SQEs per submit", parent=process, counter="SQEs"),
                    submitting["ts_ns"].to_numpy(), submitting["to_submit"].to_numpy())
        summary["enters"] = len(ent)

    if run.has("block_rq"):
        blk = _in_window(run.table("block_rq", ["issue_ns", "complete_ns", "sector", "nr_bytes", "rwbs"]),
                         "issue_ns", lo, hi)
        parent = w.track("block", "block requests (kernel)", parent=process)
        slot = _slots(blk["issue_ns"].to_numpy(), blk["complete_ns"].to_numpy())
        tracks = np.array([w.track(("block", int(s)), f"block in flight #{int(s)}", parent=parent) for s in slot],
                          dtype=np.int64)
        keys = zip(blk["sector"].to_numpy().tolist(), blk["issue_ns"].to_numpy().tolist())
        terminating = {i: flow_of_block[k] for i, k in enumerate(keys) if k in flow_of_block}
        slices(tracks, blk["issue_ns"].to_numpy(), blk["complete_ns"].to_numpy(),
               [f"{r} {n} B @ sector {s}" for r, n, s in zip(blk["rwbs"], blk["nr_bytes"], blk["sector"])],
               terminating=terminating)
        summary["block_requests"] = len(blk)

    summary["packets"] = w.finish()
    summary["bytes"] = out.stat().st_size
    return summary


def read_back(path: str | os.PathLike) -> Iterator[Any]:
    """The packets of a trace written by `to_perfetto` (for tests and checks; no trace_processor needed)."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

    trace = Trace()
    trace.ParseFromString(Path(path).read_bytes())
    return iter(trace.packet)
