"""Requests and why they waited: `df_requests`, `df_deferrals`, wait histograms, aio_poll interleaving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from ..query import Aggregate, _file_source, default_engine
from ..run import Run
from .common import _CAUSE_SQL, _DEFERRED_SQL, CAUSES, requires
from .runs import Runs, _aggregate, _source_percentiles


@requires("requests")
def df_wait_histogram(run_or_deferrals: Run | pd.DataFrame, bins: int = 60) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How long requests waited before submission, by cause, as a log-spaced histogram (out of core).

    `run_or_deferrals`: a Run (its `requests`) or a `df_deferrals` frame.
    Returns (histogram, stats): histogram columns ``cause``, ``low_us``,
    ``high_us`` (bin bounds, µs, log-spaced between the smallest and largest
    wait, waits below 1 ns counted as 1 ns), ``count``; stats columns
    ``cause``, ``count``, ``p50_wait_ns`` (exact median). Causes without
    requests are left out of both; the others have every bin, empty ones too.
    """
    if isinstance(run_or_deferrals, Run):
        source: Runs | pd.DataFrame = Runs([run_or_deferrals])
        table, wait, cause, where = "requests", "submit_ns - queue_ns", _CAUSE_SQL, _DEFERRED_SQL
    else:
        d = run_or_deferrals
        source = pd.DataFrame({"wait_ns": d["wait_ns"].to_numpy(), "cause": d["cause"].cat.codes.to_numpy()})
        table, wait, cause, where = "frame", "wait_ns", "cause", "true"
    stats = _source_percentiles(source, table, wait, (50.0, 99.0), by={"cause": cause}, where=where)
    hist_columns = ["cause", "low_us", "high_us", "count"]
    if stats.empty:
        return pd.DataFrame(columns=hist_columns), pd.DataFrame(columns=["cause", "count", "p50_wait_ns"])
    lo = float(np.log10(max(float(stats["min"].min()), 1.0) / 1e3))
    hi = float(np.log10(max(float(stats["max"].max()), 1.0) / 1e3)) + 1e-9
    step = (hi - lo) / bins
    log_us = f"log10(greatest({wait}, 1) / 1000.0)"
    h = _aggregate(
        source,
        Aggregate(
            table,
            {"cause": cause, "bin": f"least(CAST(floor(({log_us} - {lo!r}) / {step!r}) AS BIGINT), {bins - 1})"},
            {"count": ("count", "*")},
            where,
        ),
    )
    names = np.asarray(CAUSES, dtype=object)
    edges = 10 ** (lo + np.arange(bins + 1) * step)
    present = stats["cause"].to_numpy(dtype=np.int64)
    counts = np.zeros((len(CAUSES), bins), dtype=np.int64)
    counts[h["cause"].to_numpy(dtype=np.int64), h["bin"].to_numpy(dtype=np.int64)] = h["count"].to_numpy()
    hist = pd.DataFrame(
        {
            "cause": np.repeat(names[present], bins),
            "low_us": np.tile(edges[:-1], len(present)),
            "high_us": np.tile(edges[1:], len(present)),
            "count": counts[present].ravel(),
        }
    )
    stats = pd.DataFrame(
        {
            "cause": names[stats["cause"].to_numpy(dtype=np.int64)],
            "count": stats["count"].to_numpy(dtype=np.int64),
            "p50_wait_ns": stats["p50"],
        }
    )
    return hist, stats


@requires("requests")
def df_interleaving_delays(run: Run) -> pd.DataFrame:
    """The exact delay `aio_poll()` interleaving caused each request it deferred (out of core).

    One row per submitted request queued inside a section another device's
    handler opened (cause ``other_device_section``). Its own handler's section
    ended inside that outer section (the `handlers` table logs when); without
    the outer section its requests would have left right then. A device with
    no handler section (IDE) would have submitted at once, when it queued.

    Columns: ``req_id``, ``thread``, ``device``, ``section_owner`` (whose
    section held it), ``queue_ns``, ``submit_ns``, ``handler_end_ns`` (its own
    handler's section end, ns; NaN when it had none), ``deferral_ns``
    (submit_ns minus that end, or minus queue_ns without one; 0 when it left
    no later than that anyway). Runs recorded before handlers were logged have
    no `handlers` table: their ``deferral_ns`` is NaN.
    """
    requests = _file_source(Runs([run]).files("requests"))
    deferred = f"SELECT * FROM {requests} WHERE {_DEFERRED_SQL} AND ({_CAUSE_SQL}) = 2"
    columns = "r.req_id, r.thread, r.device, r.section_owner, r.queue_ns, r.submit_ns"
    if run.has("handlers"):
        handlers = _file_source(Runs([run]).files("handlers"))
        query = (
            f"SELECT {columns}, CASE WHEN h.end_ns >= r.queue_ns THEN h.end_ns END AS handler_end_ns "
            f"FROM ({deferred}) AS r ASOF LEFT JOIN (SELECT thread, device, begin_ns, end_ns FROM {handlers}) AS h "
            f"ON r.thread = h.thread AND r.device = h.device AND r.queue_ns >= h.begin_ns ORDER BY r.queue_ns"
        )
    else:
        query = f"SELECT {columns}, NULL::BIGINT AS handler_end_ns FROM ({deferred}) AS r ORDER BY r.queue_ns"
    df = default_engine().connection.execute(query).df()
    end = df["handler_end_ns"].to_numpy(dtype=np.float64)
    base = np.where(np.isnan(end), df["queue_ns"].to_numpy(dtype=np.float64), end)
    df["handler_end_ns"] = end
    df["deferral_ns"] = (
        np.maximum(df["submit_ns"].to_numpy(dtype=np.float64) - base, 0.0)
        if run.has("handlers")
        else np.full(len(df), np.nan)
    )
    return df


def first_other_device_deferral_ns(run: Run) -> int | None:
    """When the first request deferred into another device's section was queued (ns), or None."""
    if not run.has("requests"):
        return None
    found = Runs([run]).aggregate(Aggregate("requests", {}, {"first": ("min", "queue_ns")}, f"({_CAUSE_SQL}) = 2"))
    return None if found.empty or pd.isna(found.at[0, "first"]) else int(found.at[0, "first"])


def _other_device(section_owner: np.ndarray, device: np.ndarray) -> np.ndarray:
    """True where a request was queued inside a section another device's handler opened."""
    return (section_owner >= 0) & (section_owner != device)


def _nan_where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.where(mask, values.astype(np.float64), np.nan)


@requires("requests")
def df_requests(
    run: Run, kernel: bool = True, window_ms: tuple[float, float] | None = None, sample: float | None = None
) -> pd.DataFrame:
    """One row per request with its lifecycle: queued -> submitted -> completed (one row per event:
    see `df_submits` for `window_ms` and `sample`, both of which leave the kernel columns out).

    Columns of the `requests` table (docs/run-format.md) plus ``wait_ns``
    (submit_ns - queue_ns: time spent queued before the io_uring_enter carrying
    it), ``service_ns`` (complete_ns - submit_ns) and ``total_ns`` (complete_ns -
    queue_ns), float ns, NaN for requests never submitted or completed.

    With `kernel` and the tables present, also:
    ``kernel_submit_ns`` (io_uring's submit event; matched per thread in
    submission order, and left NaN for a thread whose counts differ, e.g. after
    short-read resubmits or lost events), ``block_issue_ns``,
    ``block_complete_ns``, ``block_latency_ns`` (the block request for the same
    sector issued first after the submit).
    """
    df = run.arrow("requests", filters=run.window_filters("queue_ns", window_ms), sample=sample).to_pandas()
    kernel = kernel and window_ms is None and sample is None  # kernel events match requests by order over the run
    submitted = df["submit_ns"].to_numpy() >= 0
    completed = submitted & (df["complete_ns"].to_numpy() >= 0)
    df["wait_ns"] = _nan_where(submitted, (df["submit_ns"] - df["queue_ns"]).to_numpy())
    df["service_ns"] = _nan_where(completed, (df["complete_ns"] - df["submit_ns"]).to_numpy())
    df["total_ns"] = _nan_where(completed, (df["complete_ns"] - df["queue_ns"]).to_numpy())
    if kernel and run.has("uring_requests"):
        df = _join_uring_submits(run, df)
    if kernel and run.has("block_rq"):
        df = _join_block_rq(run, df)
    return df


def _join_uring_submits(run: Run, df: pd.DataFrame) -> pd.DataFrame:
    # SQEs are consumed in the order they were queued and user_data holds a
    # reused slot number, so the n-th submit event of a thread is its n-th request.
    ev = run.arrow("uring_requests", ["ts_ns", "tid", "event"], filters=[("event", "=", "submit")]).to_pandas()
    ev = ev.sort_values(["tid", "ts_ns"], kind="stable")
    ev["rank"] = ev.groupby("tid").cumcount()
    mine = df.loc[df["submit_ns"] >= 0, ["tid", "submit_ns", "submit_seq", "queue_ns"]]
    mine = mine.sort_values(["tid", "submit_ns", "submit_seq", "queue_ns"], kind="stable")
    mine["rank"] = mine.groupby("tid").cumcount()
    same_count = ev.groupby("tid").size().eq(mine.groupby("tid").size())
    matchable = mine[mine["tid"].isin(same_count[same_count].index)]
    matched = matchable.merge(ev[["tid", "rank", "ts_ns"]], on=["tid", "rank"], how="left")
    df["kernel_submit_ns"] = np.nan
    df.loc[matchable.index, "kernel_submit_ns"] = matched["ts_ns"].to_numpy(dtype=np.float64)
    return df


def _join_block_rq(run: Run, df: pd.DataFrame) -> pd.DataFrame:
    blk = run.table("block_rq", ["issue_ns", "complete_ns", "latency_ns", "sector"])
    blk = blk.rename(
        columns={"issue_ns": "block_issue_ns", "complete_ns": "block_complete_ns", "latency_ns": "block_latency_ns"}
    ).sort_values("block_issue_ns", kind="stable")
    left = pd.DataFrame(
        {
            "row": np.arange(len(df)),
            "submit_ns": df["submit_ns"].to_numpy(),
            "sector": df["offset_bytes"].to_numpy() // 512,
        }
    )
    left = left[left["submit_ns"] >= 0].sort_values("submit_ns", kind="stable")
    joined = pd.merge_asof(left, blk, left_on="submit_ns", right_on="block_issue_ns", by="sector", direction="forward")
    for column in ("block_issue_ns", "block_complete_ns", "block_latency_ns"):
        values = np.full(len(df), np.nan)
        values[joined["row"].to_numpy()] = joined[column].to_numpy(dtype=np.float64)
        df[column] = values
    return df


@requires("requests")
def df_deferrals(run: Run, window_ms: tuple[float, float] | None = None, sample: float | None = None) -> pd.DataFrame:
    """Why each request waited before submission, and how much longer than usual (one row per event:
    see `df_submits` for `window_ms` and `sample`; the usual wait is always the whole run's).

    One row per submitted request, sync reads left out (they are submitted at
    once by design). ``cause`` is ``other_device_section`` when the request was
    queued inside a plug section opened by ANOTHER device's handler (it ran in a
    nested ``aio_poll()`` and its I/O waits for that section to end),
    ``own_section`` when inside its own device's section, ``none`` outside any,
    ``other_thread`` when another thread's plug of its device held it (device-plug
    with a device's queues on several threads: that thread's last unplug
    released it).

    Columns: ``req_id``, ``thread``, ``device``, ``section_id``,
    ``section_owner``, ``cause`` (categorical, see `CAUSES`), ``wait_ns``
    (submit_ns - queue_ns), ``extra_wait_ns`` (wait_ns minus the median wait of
    the run's requests deferred neither to another device nor by another thread;
    ns, may be negative),
    ``deferral_ns`` (the delay the interleaving caused, exactly: see
    `df_interleaving_delays`; 0 for requests not deferred into another
    device's section; NaN for runs without a `handlers` table), ``queue`` (the
    device's virtqueue), ``deferred_by_thread`` (-1, or for cause
    ``other_thread`` the thread whose unplug of the device released it).
    """
    t = run.arrow(
        "requests",
        [
            "req_id",
            "thread",
            "device",
            "queue",
            "section_id",
            "section_owner",
            "deferred_by_thread",
            "sync",
            "queue_ns",
            "submit_ns",
        ],
        run.window_filters("queue_ns", window_ms),
        sample,
    )
    keep = pc.and_(pc.invert(t.column("sync")), pc.greater_equal(t.column("submit_ns"), 0))
    t = t.filter(keep)
    device = t.column("device").to_numpy()
    owner = t.column("section_owner").to_numpy()
    other = _other_device(owner, device)
    by_thread = t.column("deferred_by_thread").to_numpy()
    codes = np.where(by_thread >= 0, 3, np.where(owner < 0, 0, np.where(other, 2, 1))).astype(np.int8)
    wait = t.column("submit_ns").to_numpy() - t.column("queue_ns").to_numpy()
    baseline = float(Runs([run])._baseline_wait().get(0, 0.0))
    req_id = t.column("req_id").to_numpy()
    if run.has("handlers"):
        delays = df_interleaving_delays(run).set_index("req_id")["deferral_ns"]
        deferral = np.where(other, delays.reindex(req_id).to_numpy(dtype=np.float64), 0.0)
    else:  # no handler log: the delay is unknown, even for requests that were not deferred
        deferral = np.full(len(req_id), np.nan)
    return pd.DataFrame(
        {
            "req_id": req_id,
            "thread": t.column("thread").to_numpy(),
            "device": device,
            "queue": t.column("queue").to_numpy(),
            "section_id": t.column("section_id").to_numpy(),
            "section_owner": owner,
            "deferred_by_thread": by_thread,
            "cause": pd.Categorical.from_codes(codes, categories=list(CAUSES)),
            "wait_ns": wait,
            "extra_wait_ns": wait - baseline,
            "deferral_ns": deferral,
        }
    )
