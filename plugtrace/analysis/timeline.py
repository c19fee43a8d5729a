"""One row per event, in time: submits, sections, SQEs over time, latency CDFs, timeline windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from ..query import Aggregate, _bin
from ..run import Run
from ..run.reader import _TIME_COLUMNS
from .common import _CAUSE_SQL, DEFAULT_PERCENTILES, _pick_source, _submit_source, _time_sorted, requires
from .requests import first_other_device_deferral_ns
from .runs import Runs, _aggregate, _source_percentiles


@requires(("submits", "enters"))
def df_submits(
    run: Run, source: str = "auto", window_ms: tuple[float, float] | None = None, sample: float | None = None
) -> pd.DataFrame:
    """One row per `io_uring_enter()` that submitted SQEs, in time order: one row per event, so for
    a big run pass a `window_ms` (start, end: ms since the run's start) or a `sample` fraction.

    `source`: ``"app"`` (the engine's `submits` log), ``"kernel"`` (the traced
    `enters` syscalls, e.g. of fio or QEMU, which have no app log), or ``"auto"``
    (app when present). Kernel enters with ``to_submit == 0`` only wait for
    completions and are left out.

    Columns: ``ts_ns`` (start, ns), ``tid``, ``nr_sqes`` (SQEs handed to the
    kernel), ``latency_ns`` (duration of the submit, ns), ``ret`` (SQEs consumed
    or -errno).
    """
    source = _pick_source(run, source, {"app": "submits", "kernel": "enters"})
    if source == "app":
        run.require("submits", user="df_submits(source='app')")
        table = run.arrow(
            "submits",
            ["start_ns", "tid", "nr_sqes", "latency_ns", "ret"],
            run.window_filters("start_ns", window_ms),
            sample,
        )
    else:
        run.require("enters", user="df_submits(source='kernel')")
        table = run.arrow(
            "enters", ["ts_ns", "tid", "to_submit", "latency_ns", "ret"], run.window_filters("ts_ns", window_ms), sample
        )
        table = table.filter(pc.greater(table.column("to_submit"), 0))
    table = table.rename_columns(["ts_ns", "tid", "nr_sqes", "latency_ns", "ret"])
    # self_destruct frees each Arrow column once converted: one copy in memory, not two
    return _time_sorted(table.to_pandas(split_blocks=True, self_destruct=True), "ts_ns")


@requires(("submits", "enters"))
def df_sqes_over_time(
    run: Run | pd.DataFrame, bins: int = 300, source: str = "auto", start_ns: int | None = None
) -> pd.DataFrame:
    """SQEs per submitting io_uring_enter() in `bins` equal time bins over the run (out of core).

    `run`: a Run, or a `df_submits` frame. Columns: ``t_ms`` (bin middle, ms
    since `start_ns`: by default the run's start, or the frame's first submit),
    ``nr_submits``, ``mean_nr_sqes``, ``max_nr_sqes`` (SQEs); bins without a
    submit are left out.
    """
    if isinstance(run, pd.DataFrame):
        start = int(run["ts_ns"].min()) if start_ns is None and len(run) else (start_ns or 0)
        return _time_bins(run, "frame", "ts_ns", "nr_sqes", "true", bins, start)
    table, ts, sqes, where = _submit_source(run, source)
    return _time_bins(Runs([run]), table, ts, sqes, where, bins, run.start_ns if start_ns is None else start_ns)


def _time_bins(
    runs: Runs | pd.DataFrame, table: str, ts: str, value: str, where: str, bins: int, start_ns: int
) -> pd.DataFrame:
    """Count, mean and max of `value` per time bin of `ts` (ns), for a run's table or a frame of it."""
    span = _aggregate(runs, Aggregate(table, {}, {"lo": ("min", ts), "hi": ("max", ts)}, where))
    columns = ["t_ms", "nr_submits", "mean_nr_sqes", "max_nr_sqes"]
    if span.empty or pd.isna(span.at[0, "lo"]):
        return pd.DataFrame(columns=columns)
    lo, hi = int(span.at[0, "lo"]), int(span.at[0, "hi"])
    width = max((hi - lo + 1) / bins, 1.0)
    b = _aggregate(
        runs,
        Aggregate(
            table,
            {"bin": f"least(CAST(floor(({ts} - {lo}) / {width!r}) AS BIGINT), {bins - 1})"},
            {"n": ("count", "*"), "total": ("sum", value), "peak": ("max", value)},
            where,
        ),
    )
    return pd.DataFrame(
        {
            "t_ms": (lo + (b["bin"].to_numpy() + 0.5) * width - start_ns) / 1e6,
            "nr_submits": b["n"].to_numpy(dtype=np.int64),
            "mean_nr_sqes": b["total"].to_numpy(dtype=np.float64) / b["n"].to_numpy(),
            "max_nr_sqes": b["peak"].to_numpy(dtype=np.int64),
        }
    )


def df_latency_cdf(run: Run | pd.DataFrame, source: str = "auto") -> pd.DataFrame:
    """The cumulative distribution of submit latency, exact at ~2% steps of latency (out of core).

    `run`: a Run (its submits, else its kernel enters) or a `df_submits` frame.
    Columns: ``latency_ns`` (largest latency in a bin), ``fraction`` (of
    submits with a latency ≤ it).
    """
    if isinstance(run, Run):
        table, _, _, where = _submit_source(run, source)
        run.require(table, user="df_latency_cdf()")
        bins = Runs([run]).aggregate(_cdf_bins(table, where))
    else:
        bins = _aggregate(run, _cdf_bins("frame", "true"))
    counts = bins["n"].to_numpy(dtype=np.int64)
    total = counts.sum()
    return pd.DataFrame(
        {
            "latency_ns": bins["hi"].to_numpy(dtype=np.int64),
            "fraction": np.cumsum(counts) / total if total else np.zeros(len(counts)),
        }
    )


def submit_latency_percentiles(
    run: Run | pd.DataFrame, qs: Sequence[float] = DEFAULT_PERCENTILES, source: str = "auto"
) -> list[float]:
    """Exact percentiles (ns) of submit latency: a Run's submits (else its kernel enters) or a `df_submits` frame."""
    if isinstance(run, Run):
        table, _, _, where = _submit_source(run, source)
        run.require(table, user="submit latency percentiles")
        found = Runs([run]).percentiles(table, "latency_ns", qs, where=where)
    else:
        found = _source_percentiles(run, "frame", "latency_ns", qs)
    return [float(found[f"p{q:g}"].iloc[0]) if len(found) else np.nan for q in qs]


@dataclass
class TimelineWindow:
    """The rows of a short window of a run, for timelines: `frames` maps a table name to the rows that
    start in [start_ms, start_ms + window_ms) (ms since the run's start); tables the run lacks are absent."""

    start_ms: float
    window_ms: float
    frames: dict[str, pd.DataFrame]


#: what a timeline shows of each table: its columns, the first being the time a row is placed by
TIMELINE_COLUMNS = {
    "sections": ["begin_ns", "tid", "owner", "end_ns"],
    "requests": ["queue_ns", "tid", "device", "submit_ns", "section_owner"],
    "submits": ["start_ns", "tid", "nr_sqes"],
    "enters": ["ts_ns", "tid", "to_submit"],
    "block_rq": ["issue_ns"],
}


def timeline_window(run: Run, start_ms: float | None = None, window_ms: float | None = None) -> TimelineWindow:
    """A short window of the run, read with Parquet filters (row groups outside it are skipped).

    By default the window holds about 40 submits and starts a little before the
    first request deferred into another device's section, when there is one, else
    at the first section, submit or enter (a QEMU run's guest boots first).
    """
    # submits per second: the summary's, else the kernel's enters (a traced program's, a QEMU run's)
    submits = run.summary.get("nr_submits") or (run.meta.tables.get("enters") or {}).get("rows", 0)
    rate = (submits or 0) / max(run.summary.get("elapsed_s", 0) or 0, 1e-9)
    if window_ms is None:
        window_ms = 40 / rate * 1e3 if rate > 0 else 1.0
    if start_ms is None:
        first = first_other_device_deferral_ns(run)
        if first is not None:
            start_ms = max((first - run.start_ns) / 1e6 - window_ms / 4, 0.0)
        else:  # so that the window holds the first event drawn at least, never nothing
            drawn = [run._column_min(t, _TIME_COLUMNS[t]) for t in ("sections", "submits", "enters") if run.has(t)]
            firsts = [v for v in drawn if v is not None]
            start_ms = (min(firsts) - run.start_ns) / 1e6 if firsts else 0.0
    frames = {
        table: run.arrow(table, columns, run.window_filters(columns[0], (start_ms, start_ms + window_ms))).to_pandas()
        for table, columns in TIMELINE_COLUMNS.items()
        if run.has(table)
    }
    return TimelineWindow(start_ms, window_ms, frames)


def _cdf_bins(table: str, where: str) -> Aggregate:
    return Aggregate(table, {"bin": _bin("latency_ns")}, {"n": ("count", "*"), "hi": ("max", "latency_ns")}, where)


@requires("sections")
def df_sections(run: Run, window_ms: tuple[float, float] | None = None, sample: float | None = None) -> pd.DataFrame:
    """One row per outermost plug / defer section, in time order (one row per event: see `df_submits`
    for `window_ms` and `sample`).

    Columns: ``section_id``, ``thread``, ``tid``, ``owner`` (device whose handler
    opened it, -1: none), ``begin_ns``, ``end_ns`` (ns), ``duration_ns``,
    ``nr_deferred_calls``, ``nr_nested_polls``; with a `requests` table also
    ``nr_requests`` (requests queued in it, sync reads included) and
    ``nr_other_device_requests`` (of those, queued by another device's handler).
    """
    df = run.arrow("sections", filters=run.window_filters("begin_ns", window_ms), sample=sample).to_pandas()
    df["duration_ns"] = df["end_ns"] - df["begin_ns"]
    if run.has("requests"):
        per_section = Runs([run]).aggregate(
            Aggregate(
                "requests",
                {"section_id": "section_id"},
                {"n": ("count", "*"), "other": ("count", f"CASE WHEN ({_CAUSE_SQL}) = 2 THEN 1 END")},
                "section_id >= 0",
            )
        )
        counts = per_section.set_index("section_id").reindex(df["section_id"], fill_value=0)
        df["nr_requests"] = counts["n"].to_numpy(dtype=np.int64)
        df["nr_other_device_requests"] = counts["other"].to_numpy(dtype=np.int64)
    return _time_sorted(df, "begin_ns")
