"""Replaying a recorded QEMU run on the model: QEMU's arrivals, the model's batching, compared run by run.

A real QEMU run in events mode (`plugtrace qemu --mode events`) records every handler run
(`handlers` / `qemu_handlers`) and every request QEMU handed its io_uring driver (`qemu_requests`,
with its offset, length, op and the `io_uring_enter()` that submitted it). `replay()` turns each
handler run that queued I/O into one *arrival*: at the time the handler began (counted from the
workload's first), that run's requests become available on the model's device, and the model's
handler, strategy and driver batch them on a real device. Each arrival's predicted SQEs per submit
(the mean over the model's `io_uring_enter()`s that carried its requests) is set beside QEMU's
measured one, in the table `replay_runs`, and `meta.replay` gives `per_run_exact`: the fraction of
arrivals whose prediction equals the measurement.

What the recording fixes: which requests come together (the arrivals); by default when each reached
QEMU's driver (`timing="per-request"`: the model's handler takes a request off the virtqueue no sooner,
so a handler run lasts as long as QEMU's, which under TCG pops a request in tens of microseconds); and by
default how long the device took for each (`device_latency="recorded"`: from the kernel's io_uring
tracepoints, the time from the submitting `io_uring_enter()` to the completion; a request the model's
device finishes sooner stays in flight until then, and leaves `in_flight` at the model's next reap, as a
CQE leaves QEMU's at luring_process_completions()). What the model decides: where its sections and
submits fall (the strategy), when it reaps, and so how many requests are in flight when a request is
queued, which is where MAX_ENTRIES splits a run's submit. QEMU's device shares the CPUs with QEMU's
vCPUs (under TCG both are busy), so replayed at its own speed (`device_latency="live"`) the model's
device is faster and splits fewer runs. The requests are QEMU's own, merged as QEMU merged them
(`virtio_blk_submit_multireq`): the model's merging is not exercised by a replay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import UsageError
from .run import Run

__all__ = ["ReplaySource", "read_source", "replay", "DESIGN_STRATEGY", "DEVICE_LATENCIES", "TIMINGS"]

#: the model's strategy that is each QEMU design's own
DESIGN_STRATEGY = {"plug": "device-plug", "defer": "defer"}
#: how long a replayed request takes: at least the recorded device's latency, or the model's device's own
DEVICE_LATENCIES = ("recorded", "live")
#: when a replayed request reaches the model's driver: at the time the recorded QEMU handed it over (the
#: handler run lasts as long as QEMU's), or all of a handler run's at the time the run began
TIMINGS = ("per-request", "per-run")
#: QEMU's `iothreads` layouts as the model's threads: (threads for `devices` disks, IDE's thread)
_NEEDED = ("qemu_requests", "handlers", "qemu_handlers", "enters")


@dataclass
class ReplaySource:
    """What a replay takes from a recorded QEMU run."""

    path: Path
    meta: dict[str, Any]
    #: one row per arrival: device, vq, cause, begin_ns (QEMU's clock), at_ns (from the first),
    #: nr_requests, measured_enters, measured_sqes_per_submit
    runs: pd.DataFrame
    #: one row per replayed request: arrival, device, op, offset_bytes, length_bytes, queue_at_ns (when
    #: QEMU's driver got it, on at_ns's clock), and where the latency was recorded hold_ns and done_at_ns
    #: (when the kernel completed it, on at_ns's clock) (in order)
    requests: pd.DataFrame
    #: QEMU's mean SQEs per io_uring_enter() over the enters that carried the replayed requests
    measured_mean: float
    #: workload requests that were not replayed (not queued inside a virtio-blk handler run), and why
    not_replayed: dict[str, int]
    #: why `requests` has no `hold_ns` (the recorded device latency), or None when it has
    no_latency: str | None = None

    @property
    def design(self) -> str | None:
        return (self.meta.get("config", {}).get("qemu") or {}).get("design")


def read_source(path: str | os.PathLike) -> ReplaySource:
    """Read the arrivals of the QEMU run at `path` (an events-mode `plugtrace qemu` run)."""
    run = Run.open(path)
    cfg = run.config
    if not str(cfg.get("strategy", "")).startswith("real QEMU"):
        raise UsageError(f"{run.path}: not a real QEMU run (plugtrace qemu): it has no recorded arrivals to replay")
    missing = [t for t in _NEEDED if not run.has(t)]
    if missing:
        raise UsageError(
            f"{run.path}: cannot replay without {', '.join(missing)} "
            f"(record it with plugtrace qemu --mode events and the QEMU-side probes on)"
        )
    qr = run.table("qemu_requests").sort_values("req_id", kind="stable")
    nwork = int(run.summary.get("qemu_workload_requests", len(qr)))
    qr = qr.iloc[len(qr) - nwork :] if 0 <= nwork <= len(qr) else qr  # the workload's: after the start mark
    handlers = run.table("handlers").reset_index(drop=True)
    qh = run.table("qemu_handlers").reset_index(drop=True)
    if len(handlers) != len(qh):
        raise UsageError(f"{run.path}: handlers and qemu_handlers disagree in length; the run is damaged")
    handlers = pd.concat([handlers, qh[["vq", "cause", "nr_requests", "nr_submitted"]]], axis=1)
    handlers["handler"] = np.arange(len(handlers))

    # each request to the handler run that queued it: the last run on its thread begun at or before it, still open
    reqs = qr.sort_values("queue_ns", kind="stable")
    h = handlers.sort_values("begin_ns", kind="stable")
    joined = pd.merge_asof(
        reqs,
        h[["tid", "begin_ns", "end_ns", "device", "handler"]].rename(columns={"device": "h_device"}),
        left_on="queue_ns",
        right_on="begin_ns",
        by="tid",
        direction="backward",
    )
    inside = (
        (joined["queue_ns"] <= joined["end_ns"]) & (joined["device"] == joined["h_device"]) & (joined["device"] >= 0)
    )
    not_replayed = {}
    if (~inside).any():
        not_replayed["outside a virtio-blk handler run"] = int((~inside).sum())
    joined = joined[inside].sort_values("req_id", kind="stable")
    unsubmitted = joined["submit_ns"] < 0
    if unsubmitted.any():
        not_replayed["never submitted"] = int(unsubmitted.sum())
        joined = joined[~unsubmitted]
    if joined.empty:
        raise UsageError(f"{run.path}: no workload request was queued inside a handler run: nothing to replay")

    latency, no_latency = _device_latency(run, run.table("qemu_requests"))
    if latency is not None:
        joined["hold_ns"] = latency.reindex(joined["req_id"]).fillna(0).astype("int64").to_numpy()
    enters = run.table("enters", columns=["ts_ns", "tid", "ret"])
    enters = enters.drop_duplicates(["tid", "ts_ns"]).set_index(["tid", "ts_ns"])["ret"]
    joined["enter_sqes"] = enters.reindex(pd.MultiIndex.from_arrays([joined["tid"], joined["submit_ns"]])).to_numpy()
    per_run = joined.groupby("handler", sort=True)
    first = per_run.first()
    runs = pd.DataFrame(
        {
            "handler": first.index.to_numpy(),
            "device": first["device"].to_numpy(),
            "nr_requests": per_run.size().to_numpy(),
        }
    )
    hrow = handlers.set_index("handler").loc[runs["handler"]]
    runs["vq"] = hrow["vq"].to_numpy()
    runs["cause"] = hrow["cause"].astype(str).to_numpy()
    runs["begin_ns"] = hrow["begin_ns"].to_numpy()
    runs = runs.sort_values("begin_ns", kind="stable").reset_index(drop=True)
    runs["at_ns"] = runs["begin_ns"] - runs["begin_ns"].iloc[0]
    distinct = joined.drop_duplicates(["handler", "tid", "submit_ns"])
    m = distinct.groupby("handler").agg(measured_enters=("enter_sqes", "size"), sqes=("enter_sqes", "mean"))
    runs["measured_enters"] = m["measured_enters"].reindex(runs["handler"]).to_numpy()
    runs["measured_sqes_per_submit"] = m["sqes"].reindex(runs["handler"]).to_numpy()
    order = {h: i for i, h in enumerate(runs["handler"])}
    joined["arrival"] = joined["handler"].map(order)
    joined["queue_at_ns"] = joined["queue_ns"] - runs["begin_ns"].iloc[0]
    columns = ["arrival", "device", "op", "offset_bytes", "length_bytes", "queue_at_ns"]
    if latency is not None:
        # when the kernel completed it, on the same clock: the recorded device's latency after its submit
        joined["done_at_ns"] = joined["submit_ns"] + joined["hold_ns"] - runs["begin_ns"].iloc[0]
        columns += ["hold_ns", "done_at_ns"]
    requests = joined.sort_values(["arrival", "req_id"], kind="stable")[columns].reset_index(drop=True)
    carried = joined.drop_duplicates(["tid", "submit_ns"])["enter_sqes"]
    return ReplaySource(Path(run.path), dict(run.meta), runs, requests, float(carried.mean()), not_replayed, no_latency)


def _device_latency(run: Run, qr: pd.DataFrame) -> tuple[pd.Series | None, str | None]:
    """Each QEMU request's device latency (req_id -> ns from its submitting io_uring_enter() to the kernel's
    completion of it), from the kernel's io_uring tracepoints (`uring_requests`): QEMU's requests of one
    thread are submitted in the order it queued them, so the k-th submitted is the k-th SQE the kernel took
    on that thread, and its completion is the next one of the same user_data. (None, why) when the run
    cannot say."""
    if not run.has("uring_requests"):
        return None, "the run has no uring_requests table"
    u = run.table("uring_requests", columns=["ts_ns", "tid", "event", "user_data"])
    event = u["event"].astype(str)
    sub = u[event == "submit"].sort_values("ts_ns", kind="stable")
    done = u[event == "complete"].sort_values("ts_ns", kind="stable")[["ts_ns", "user_data"]]
    sub = pd.merge_asof(
        sub,
        done.rename(columns={"ts_ns": "done_ns"}),
        left_on="ts_ns",
        right_on="done_ns",
        by="user_data",
        direction="forward",
    )
    q = qr[qr["submit_ns"] >= 0].sort_values(["tid", "submit_ns", "req_id"], kind="stable")
    sub = sub.sort_values(["tid", "ts_ns"], kind="stable")
    if q.groupby("tid").size().to_dict() != sub.groupby("tid").size().to_dict():
        return None, "QEMU's requests and the kernel's submitted SQEs disagree in number per thread"
    latency = sub["done_ns"].to_numpy() - q["submit_ns"].to_numpy()
    latency = np.where(np.isfinite(latency) & (latency > 0), latency, 0)
    return pd.Series(latency.astype(np.int64), index=q["req_id"].to_numpy()), None


def _arrivals(source: ReplaySource, latency: bool, per_request: bool = True) -> dict[int, Any]:
    from .engine.emulation import Arrivals

    out = {}
    for dev, runs in source.runs.groupby("device", sort=True):
        reqs = source.requests[source.requests["device"] == dev]
        out[int(dev)] = Arrivals(
            at_ns=runs["at_ns"].to_numpy(),
            counts=runs["nr_requests"].to_numpy(),
            offsets=reqs["offset_bytes"].to_numpy(),
            ops=np.where(reqs["op"].to_numpy() == 1, 1, 0),
            lens=reqs["length_bytes"].to_numpy(),
            hold_ns=reqs["hold_ns"].to_numpy() if latency and "hold_ns" in reqs else None,
            queue_at_ns=reqs["queue_at_ns"].to_numpy() if per_request else None,
        )
    return out


class _Comparison:
    """Keeps what the model logged that the comparison needs, as the run is written."""

    def __init__(self, source: ReplaySource, device_latency: str, timing: str = "per-request") -> None:
        self.source = source
        self.device_latency = device_latency
        self.timing = timing
        self._requests: list[pd.DataFrame] = []
        self._submits: list[pd.DataFrame] = []

    def observe(self, name: str, columns: Any) -> None:
        """A chunk of the engine's log (column name -> array), as it is written."""
        if name == "requests":
            cols = ("req_id", "thread", "device", "submit_seq", "sync")
            self._requests.append(pd.DataFrame({k: np.array(columns[k]) for k in cols}))
        elif name == "submits":
            self._submits.append(pd.DataFrame({k: np.array(columns[k]) for k in ("thread", "submit_seq", "nr_sqes")}))

    def table(self) -> pd.DataFrame:
        """One row per arrival: the source's measurement beside the model's prediction."""
        src = self.source
        runs = src.runs.copy()
        req = pd.concat(self._requests, ignore_index=True) if self._requests else pd.DataFrame()
        sub = pd.concat(self._submits, ignore_index=True) if self._submits else pd.DataFrame()
        runs["predicted_enters"] = 0
        runs["predicted_sqes_per_submit"] = np.nan
        if len(req) and len(sub):
            req = req[~req["sync"].astype(bool)].sort_values("req_id", kind="stable")
            sqes = sub.drop_duplicates(["thread", "submit_seq"]).set_index(["thread", "submit_seq"])["nr_sqes"]
            for dev, dev_reqs in req.groupby("device", sort=True):
                mine = src.requests.index[src.requests["device"] == dev]
                n = min(len(mine), len(dev_reqs))
                arrival = src.requests.loc[mine[:n], "arrival"].to_numpy()
                d = dev_reqs.iloc[:n].assign(arrival=arrival)
                d = d[d["submit_seq"] >= 0].drop_duplicates(["arrival", "thread", "submit_seq"])
                d["sqes"] = sqes.reindex(pd.MultiIndex.from_arrays([d["thread"], d["submit_seq"]])).to_numpy()
                g = d.groupby("arrival").agg(n=("sqes", "size"), mean=("sqes", "mean"))
                runs.loc[g.index, "predicted_enters"] = g["n"].to_numpy()
                runs.loc[g.index, "predicted_sqes_per_submit"] = g["mean"].to_numpy()
        runs["exact"] = (runs["predicted_enters"] == runs["measured_enters"]) & np.isclose(
            runs["predicted_sqes_per_submit"], runs["measured_sqes_per_submit"], rtol=0, atol=1e-9
        )
        runs.insert(0, "arrival", np.arange(len(runs), dtype=np.int32))
        return runs.drop(columns=["handler", "at_ns"])

    def meta(self, table: pd.DataFrame, strategy: str, predicted_mean: float | None) -> dict[str, Any]:
        src = self.source
        measured = src.measured_mean
        out: dict[str, Any] = {
            "source": str(src.path),
            "source_strategy": src.meta.get("config", {}).get("strategy"),
            "strategy": strategy,
            "timing": self.timing,
            "device_latency": self.device_latency,
            "handler_runs": int(len(table)),
            "requests": int(table["nr_requests"].sum()),
            "per_run_exact": round(float(table["exact"].mean()), 4) if len(table) else None,
            "measured_mean_sqes_per_submit": round(measured, 4),
            "predicted_mean_sqes_per_submit": predicted_mean,
            "not_replayed": src.not_replayed,
        }
        if predicted_mean is not None and measured:
            out["mean_error_pct"] = round(100 * (predicted_mean - measured) / measured, 2)
        return out


def replay(
    source_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    strategy: str | None = None,
    device: str | None = None,
    size: str | int | None = None,
    allow_write: bool = False,
    mode: str = "aggregate",
    device_latency: str = "recorded",
    timing: str = "per-request",
    quiet: bool = False,
    command_line: list[str] | None = None,
) -> Any:
    """Replay the QEMU run at `source_path` on the model (what `plugtrace replay` does).

    `strategy`: the model's (default: the QEMU design's own, device-plug for 7.2's `plug`, defer for
    10.0's `defer`); `device`: as `plugtrace record --device` (default: with recorded latency, a loop
    device over memory, `loop:/dev/shm`, so the model's device is never the slower one and the recorded
    latencies set the pace; else `loop`, its file in /var/tmp as `plugtrace qemu`'s); `device_latency`: "recorded" (each
    request takes at least as long as it took QEMU's device, from the kernel's tracepoints) or "live"
    (the model's device's own speed); `timing`: "per-request" (each request reaches the model's driver
    no sooner than it reached QEMU's: a handler run lasts as long as QEMU's did) or "per-run" (a handler
    run's requests all at the time it began). Returns `recording.record()`'s result,
    whose meta.json has the `replay` section."""
    from .recording import record

    if device_latency not in DEVICE_LATENCIES:
        raise UsageError(f"--device-latency: choose from {', '.join(DEVICE_LATENCIES)}, not {device_latency!r}")
    if timing not in TIMINGS:
        raise UsageError(f"--timing: choose from {', '.join(TIMINGS)}, not {timing!r}")
    source = read_source(source_path)
    cfg = source.meta.get("config", {})
    if strategy is None:
        strategy = DESIGN_STRATEGY.get(source.design or "")
        if strategy is None:
            raise UsageError(f"{source.path}: QEMU's design is unknown: give --strategy")
    devices = int(cfg.get("devices", 1))
    if devices < 1:
        raise UsageError(f"{source.path}: no virtio-blk disk: a replay drives virtio-blk handler runs")
    iothreads = cfg.get("iothreads", "shared")
    threads = devices if iothreads == "per-disk" else 1
    max_len = int(source.requests["length_bytes"].max())
    bs = max(4096, -(-max_len // 4096) * 4096)
    per_disk = int(cfg.get("iodepth", 32)) * int(cfg.get("jobs", 1))
    span = int((source.requests["offset_bytes"] + source.requests["length_bytes"]).max())
    if size is None:
        size = max(devices * (-(-span // (1 << 20)) << 20), 64 << 20)
    writes = bool((source.requests["op"] == 1).any())
    if device_latency == "recorded" and source.no_latency:
        device_latency = f"live (no recorded latency: {source.no_latency})"
    if device is None:
        device = "loop:/dev/shm" if device_latency == "recorded" and os.path.isdir("/dev/shm") else "loop"
    comparison = _Comparison(source, device_latency, timing)
    result = record(
        output,
        device=device,
        size=size,
        allow_write=allow_write,
        mode=mode,
        quiet=quiet,
        command_line=command_line,
        strategy=strategy,
        devices=devices,
        threads=threads,
        # what QEMU popped, the guest had made available: the model's own completions (its device may be
        # slower for a moment) must not hold an arrival back, so the virtqueue has room for twice the guest's depth
        iodepth=min(max(2 * per_disk, 1), 1024),
        bs=bs,
        rw="randwrite" if writes else "randread",
        requests=len(source.requests),
        ring_setup="plain",
        verify=False,
        arrivals=_arrivals(source, device_latency == "recorded", timing == "per-request"),
        observe=comparison.observe,
        finish_extra=lambda summary: comparison_fields(comparison, strategy, summary),
    )
    return result


def comparison_fields(comparison: _Comparison, strategy: str, summary: dict[str, Any]) -> dict[str, Any]:
    """The `replay_runs` table (as a DataFrame, under "_tables") and meta's `replay` section."""
    table = comparison.table()
    predicted = summary.get("mean_sqes_per_submit")
    return {"_tables": {"replay_runs": table}, "replay": comparison.meta(table, strategy, predicted)}
