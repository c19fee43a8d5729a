"""Analysis of run directories: `Run` and the `df_*` functions.

Every `df_*` function takes a `Run` (or, for `df_compare`, several) and returns
a pandas DataFrame whose columns are documented in its docstring, with units in
the column names (``*_ns`` nanoseconds of CLOCK_MONOTONIC, ``nr_*`` counts,
``*_bytes``). Functions state the tables they need with `@requires`, so a run
that lacks one (a probe this kernel could not attach, an untraced run, a traced
program with no app-side log) gets a message naming the table and why it is
missing instead of a KeyError.

Tables are read column by column with pyarrow and only the columns a function
needs, which keeps ten-million-event runs within seconds and a few hundred MB.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import store
from .errors import PlugtraceError, RunDirError

__all__ = [
    "Run",
    "MissingTableError",
    "requires",
    "CAUSES",
    "df_submits",
    "df_batch_sizes",
    "df_sections",
    "df_requests",
    "df_deferrals",
    "df_deferral_stats",
    "df_unplugs",
    "df_latency_percentiles",
    "df_compare",
]

#: where each table comes from, for messages about a missing one
TABLE_SOURCES = {
    "requests": "the engine's request log (written by plugtrace record)",
    "submits": "the engine's submit log (written by plugtrace record)",
    "sections": "the engine's plug-section log (plugtrace record with a sectioned strategy)",
    "enters": "the io_uring_enter syscall probe (events mode)",
    "uring_requests": "the io_uring request probe (events mode)",
    "block_rq": "the block request probe (events mode)",
    "block_unplug": "the block unplug probe (events mode)",
    "markers": "the uprobe marker probe (events mode)",
    "histograms": "the in-kernel histograms (aggregate mode)",
    "counters": "the in-kernel counters (aggregate mode)",
}

#: other names a probe may be listed under in meta.probes.could_not_measure
PROBE_ALIASES = {
    "enters": ("io_uring_enter", "syscalls"),
    "uring_requests": ("io_uring",),
    "block_rq": ("block",),
    "block_unplug": ("block", "block_plug"),
    "markers": ("uprobes",),
    "histograms": ("aggregate",),
    "counters": ("aggregate",),
}

#: first timestamp column of each table, for the run's start time
_TIME_COLUMNS = {
    "requests": "queue_ns",
    "submits": "start_ns",
    "sections": "begin_ns",
    "enters": "ts_ns",
    "uring_requests": "ts_ns",
    "block_rq": "issue_ns",
    "block_unplug": "ts_ns",
    "markers": "ts_ns",
}

#: why a request waited, in the order plots and tables show them
CAUSES = ("none", "own_section", "other_device_section")

#: statuses whose data stops early
PARTIAL_STATUSES = (store.STATUS_RECORDING, store.STATUS_INTERRUPTED, store.STATUS_FAILED, store.STATUS_INCOMPLETE)


class MissingTableError(PlugtraceError):
    """An analysis needs a table the run does not have."""


class Run:
    """One run directory, opened and checked.

    Use `Run.open(path)`. Opening reads meta.json (refusing newer schema
    versions) and every table's Parquet footer, so a truncated file is reported
    at once, naming it, rather than halfway through an analysis. Tables that a
    run marked as damaged (status ``incomplete``) or that a still-running
    recording has not finished are set aside in `unreadable` instead.
    """

    def __init__(self, path: Path, meta: dict[str, Any], unreadable: dict[str, str]):
        self.path = path
        self.meta = meta
        #: table name -> why it cannot be read
        self.unreadable = unreadable
        self._start_ns: int | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        """Open the run directory at `path`; raises RunDirError naming the faulty file."""
        run_path = Path(path)
        meta = store.read_meta(run_path)
        damaged = set(meta.get("damaged_tables") or [])
        unfinished_ok = meta.get("status") == store.STATUS_RECORDING
        unreadable: dict[str, str] = {}
        for name in sorted(set(store.table_names(run_path)) | set(meta.get("tables") or {})):
            file = run_path / "tables" / f"{name}.parquet"
            if not file.exists():
                raise RunDirError(f"{file}: missing, although meta.json lists table '{name}'")
            try:
                pq.read_metadata(file)
            except (pa.ArrowException, OSError) as exc:
                if name in damaged or unfinished_ok:
                    unreadable[name] = f"not finished when the recording stopped ({exc})"
                    continue
                raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None
        return cls(run_path, meta, unreadable)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, strategy={self.strategy!r}, status={self.status!r})"

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config") or {}

    @property
    def summary(self) -> dict[str, Any]:
        """Headline numbers computed at record time (meta.json's `summary`)."""
        return self.meta.get("summary") or {}

    @property
    def status(self) -> str:
        return self.meta.get("status", "unknown")

    @property
    def partial(self) -> bool:
        """True when the run stopped early or lost data; its numbers cover only part of it."""
        return self.status in PARTIAL_STATUSES or bool(self.unreadable)

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy", "?"))

    @property
    def could_not_measure(self) -> dict[str, str]:
        """Probe name -> why it could not run (meta.json's `probes.could_not_measure`)."""
        return (self.meta.get("probes") or {}).get("could_not_measure") or {}

    @property
    def not_asked(self) -> dict[str, str]:
        """Probe name -> why it was off in this run though it could have run (meta.json's `probes.not_asked`)."""
        return (self.meta.get("probes") or {}).get("not_asked") or {}

    def tables(self) -> list[str]:
        """Names of the tables this run has and that can be read."""
        return [t for t in store.table_names(self.path) if t not in self.unreadable]

    def has(self, name: str) -> bool:
        return (self.path / "tables" / f"{name}.parquet").exists() and name not in self.unreadable

    def missing_reason(self, table: str) -> str:
        """Why `table` is not available, in words."""
        if table in self.unreadable:
            return f"table '{table}' is unreadable: {self.unreadable[table]}"
        why = f"the run has no '{table}' table, which comes from {TABLE_SOURCES.get(table, 'an unknown source')}"
        for probe in (table, *PROBE_ALIASES.get(table, ())):
            if probe in self.could_not_measure:
                return f"{why}; probe '{probe}' could not measure: {self.could_not_measure[probe]}"
            if probe in self.not_asked:
                return f"{why}; probe '{probe}' was not recorded: {self.not_asked[probe]}"
        return why

    def require(self, *tables: str | tuple[str, ...], user: str = "this analysis") -> None:
        """Raise MissingTableError unless every requirement is met.

        A requirement is a table name, or a tuple of names any one of which will do.
        """
        for req in tables:
            options = (req,) if isinstance(req, str) else req
            if not any(self.has(t) for t in options):
                reasons = "; or ".join(self.missing_reason(t) for t in options)
                raise MissingTableError(f"{user} cannot run on {self.path}: {reasons}")

    def arrow(self, name: str, columns: Sequence[str] | None = None, filters: Any = None) -> pa.Table:
        """Read `columns` of table `name` as a pyarrow Table (row groups outside `filters` are skipped)."""
        self.require(name, user=f"reading table '{name}'")
        file = self.path / "tables" / f"{name}.parquet"
        try:
            return pq.read_table(file, columns=list(columns) if columns else None, filters=filters)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None

    def table(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Read `columns` of table `name` as a DataFrame."""
        return self.arrow(name, columns).to_pandas()

    @property
    def start_ns(self) -> int:
        """The earliest timestamp of any table (ns, CLOCK_MONOTONIC): time zero of plots.

        Taken from the Parquet column statistics, so no table is read in full.
        """
        if self._start_ns is None:
            candidates = [self._column_min(t, c) for t, c in _TIME_COLUMNS.items() if self.has(t)]
            candidates = [c for c in candidates if c is not None]
            self._start_ns = min(candidates) if candidates else 0
        return self._start_ns

    def _column_min(self, table: str, column: str) -> int | None:
        md = pq.read_metadata(self.path / "tables" / f"{table}.parquet")
        try:
            index = md.schema.names.index(column)
        except ValueError:
            return None
        mins = []
        for i in range(md.num_row_groups):
            stats = md.row_group(i).column(index).statistics
            if stats is None or not stats.has_min_max:
                value = pc.min(self.arrow(table, [column]).column(0)).as_py()
                return None if value is None else int(value)
            mins.append(stats.min)
        return int(min(mins)) if mins else None

    def _repr_html_(self) -> str:
        from .report import render_summary

        return render_summary(self)


F = TypeVar("F", bound=Callable[..., Any])


def requires(*tables: str | tuple[str, ...]) -> Callable[[F], F]:
    """Declare the tables an analysis needs (a tuple means: any one of these).

    The wrapped function's first argument is a Run; if it lacks a table, the call
    raises MissingTableError naming the table, where it comes from and, when the
    run recorded one, why its probe could not measure. Functions also given a
    DataFrame instead of a Run skip the check. The requirement is kept in the
    function's `required_tables` attribute for reports to consult.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(run: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(run, Run):
                run.require(*tables, user=f"{fn.__name__}()")
            return fn(run, *args, **kwargs)

        wrapper.required_tables = tables  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _pick_source(run: Run, source: str, choices: dict[str, str]) -> str:
    """Resolve source="auto" to the first available of `choices` (source -> table)."""
    if source == "auto":
        for name, table in choices.items():
            if run.has(table):
                return name
        return next(iter(choices))
    if source not in choices:
        raise ValueError(f"source must be 'auto' or one of {', '.join(choices)}, not {source!r}")
    return source


def _time_sorted(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """`df` ordered by `column`; tables are written per thread, so usually nearly sorted already."""
    values = df[column].to_numpy()
    if len(values) < 2 or bool(np.all(values[1:] >= values[:-1])):
        return df
    order = np.argsort(values, kind="stable")  # timsort: fast on runs of sorted data
    return df.take(order).reset_index(drop=True)


@requires(("submits", "enters"))
def df_submits(run: Run, source: str = "auto") -> pd.DataFrame:
    """One row per `io_uring_enter()` that submitted SQEs, in time order.

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
        table = run.arrow("submits", ["start_ns", "tid", "nr_sqes", "latency_ns", "ret"])
    else:
        run.require("enters", user="df_submits(source='kernel')")
        table = run.arrow("enters", ["ts_ns", "tid", "to_submit", "latency_ns", "ret"])
        table = table.filter(pc.greater(table.column("to_submit"), 0))
    table = table.rename_columns(["ts_ns", "tid", "nr_sqes", "latency_ns", "ret"])
    # self_destruct frees each Arrow column once converted: one copy in memory, not two
    return _time_sorted(table.to_pandas(split_blocks=True, self_destruct=True), "ts_ns")


def _distribution(values: np.ndarray, name: str) -> pd.DataFrame:
    """Exact value counts of small non-negative integers as a bucket table."""
    counts = np.bincount(values) if len(values) else np.zeros(0, np.int64)
    present = np.flatnonzero(counts)
    return _buckets(name, present, present + 1, counts[present])


def _buckets(name: str, low: np.ndarray, high: np.ndarray, count: np.ndarray) -> pd.DataFrame:
    count = np.asarray(count, dtype=np.int64)
    total = count.sum()
    return pd.DataFrame({
        name: np.asarray(low, dtype=np.int64),
        f"{name}_high": np.asarray(high, dtype=np.int64),
        "count": count,
        "fraction": count / total if total else np.zeros(len(count)),
    })


#: the in-kernel histograms of SQEs per submitting io_uring_enter(), preferred first:
#: the enters probe's (the syscall's result), then uring_requests' (request positions)
SQES_HISTOGRAMS = ("enter_nr_sqes", "submit_nr_sqes")


def _histogram(run: Run, hist: str | tuple[str, ...]) -> pd.DataFrame:
    """Buckets of one in-kernel histogram: low, high (exclusive), count; sorted by low.
    Given several names, the first the run has."""
    names = (hist,) if isinstance(hist, str) else hist
    for name in names:
        table = run.arrow("histograms", ["name", "low", "high", "count"], filters=[("name", "=", name)])
        df = table.to_pandas().sort_values("low", ignore_index=True)
        if not df.empty:
            return df
    raise MissingTableError(f"{run.path}: the 'histograms' table has no {' or '.join(map(repr, names))} histogram")


def _events_or_histogram(run: Run, source: str, name: str, events: tuple[str, str], hist: str | tuple[str, ...],
                         app: tuple[str, str] | None = None) -> pd.DataFrame:
    """A distribution of `name` from event rows (app or kernel) or from an in-kernel histogram."""
    choices = {"app": app[0]} if app else {}
    choices |= {"kernel": events[0], "histogram": "histograms"}
    source = _pick_source(run, source, choices)
    if source == "histogram":
        run.require("histograms", user=f"the {name} distribution from histograms")
        h = _histogram(run, hist)
        h = h[h["high"] > 1]  # the [0, 1) bucket counts calls that submitted nothing
        return _buckets(name, h["low"].to_numpy(), h["high"].to_numpy(), h["count"].to_numpy())
    table, column = app if source == "app" else events
    run.require(table, user=f"the {name} distribution from '{table}'")
    values = run.arrow(table, [column]).column(0).to_numpy()
    return _distribution(values[values > 0], name)


@requires(("submits", "enters", "histograms"))
def df_batch_sizes(run: Run, source: str = "auto") -> pd.DataFrame:
    """How many SQEs each `io_uring_enter()` submitted: the batch size distribution.

    `source`: ``"app"`` (`submits`), ``"kernel"`` (`enters`), ``"histogram"`` (the
    in-kernel `enter_nr_sqes` histogram, or `submit_nr_sqes` that aggregate-mode
    runs count by default from io_uring's per-request tracepoint) or ``"auto"``
    (the first of these the run has). Enters that submitted nothing are left out.

    Columns: ``nr_sqes`` (bucket low bound, SQEs), ``nr_sqes_high`` (exclusive
    high bound; ``nr_sqes + 1`` for exact counts), ``count`` (submits),
    ``fraction`` (of all submits).
    """
    return _events_or_histogram(run, source, "nr_sqes", ("enters", "to_submit"), SQES_HISTOGRAMS,
                                app=("submits", "nr_sqes"))


@requires(("block_unplug", "histograms"))
def df_unplugs(run: Run, source: str = "auto") -> pd.DataFrame:
    """How many block requests each block-layer unplug flushed (`block:block_unplug`).

    `source`: ``"kernel"`` (`block_unplug` events), ``"histogram"`` (in-kernel
    `unplug_nr_rq`) or ``"auto"``. Columns: ``nr_rq`` (bucket low bound,
    requests), ``nr_rq_high`` (exclusive), ``count`` (unplugs), ``fraction``.
    """
    return _events_or_histogram(run, source, "nr_rq", ("block_unplug", "nr_rq"), "unplug_nr_rq")


@requires("sections")
def df_sections(run: Run) -> pd.DataFrame:
    """One row per outermost plug / defer section, in time order.

    Columns: ``section_id``, ``thread``, ``tid``, ``owner`` (device whose handler
    opened it, -1: none), ``begin_ns``, ``end_ns`` (ns), ``duration_ns``,
    ``nr_deferred_calls``, ``nr_nested_polls``; with a `requests` table also
    ``nr_requests`` (requests queued in it, sync reads included) and
    ``nr_other_device_requests`` (of those, queued by another device's handler).
    """
    df = run.table("sections")
    df["duration_ns"] = df["end_ns"] - df["begin_ns"]
    if run.has("requests"):
        req = run.arrow("requests", ["section_id", "device", "section_owner"])
        sid = req.column("section_id").to_numpy()
        other = _other_device(req.column("section_owner").to_numpy(), req.column("device").to_numpy())
        inside = sid >= 0
        df["nr_requests"] = _count_by(df["section_id"].to_numpy(), sid[inside])
        df["nr_other_device_requests"] = _count_by(df["section_id"].to_numpy(), sid[inside & other])
    return _time_sorted(df, "begin_ns")


def _count_by(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each key, how many times it occurs in `values`."""
    uniq, counts = np.unique(values, return_counts=True)
    if not len(uniq):
        return np.zeros(len(keys), dtype=np.int64)
    pos = np.minimum(np.searchsorted(uniq, keys), len(uniq) - 1)
    return np.where(uniq[pos] == keys, counts[pos], 0)


def _other_device(section_owner: np.ndarray, device: np.ndarray) -> np.ndarray:
    """True where a request was queued inside a section another device's handler opened."""
    return (section_owner >= 0) & (section_owner != device)


def _nan_where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.where(mask, values.astype(np.float64), np.nan)


@requires("requests")
def df_requests(run: Run, kernel: bool = True) -> pd.DataFrame:
    """One row per request with its lifecycle: queued -> submitted -> completed.

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
    df = run.table("requests")
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
    blk = blk.rename(columns={"issue_ns": "block_issue_ns", "complete_ns": "block_complete_ns",
                              "latency_ns": "block_latency_ns"}).sort_values("block_issue_ns", kind="stable")
    left = pd.DataFrame({"row": np.arange(len(df)), "submit_ns": df["submit_ns"].to_numpy(),
                         "sector": df["offset_bytes"].to_numpy() // 512})
    left = left[left["submit_ns"] >= 0].sort_values("submit_ns", kind="stable")
    joined = pd.merge_asof(left, blk, left_on="submit_ns", right_on="block_issue_ns", by="sector",
                           direction="forward")
    for column in ("block_issue_ns", "block_complete_ns", "block_latency_ns"):
        values = np.full(len(df), np.nan)
        values[joined["row"].to_numpy()] = joined[column].to_numpy(dtype=np.float64)
        df[column] = values
    return df


@requires("requests")
def df_deferrals(run: Run) -> pd.DataFrame:
    """Why each request waited before submission, and how much longer than usual.

    One row per submitted request, sync reads left out (they are submitted at
    once by design). ``cause`` is ``other_device_section`` when the request was
    queued inside a plug section opened by ANOTHER device's handler (it ran in a
    nested ``aio_poll()`` and its I/O waits for that section to end),
    ``own_section`` when inside its own device's section, ``none`` outside any.

    Columns: ``req_id``, ``thread``, ``device``, ``section_id``,
    ``section_owner``, ``cause`` (categorical, see `CAUSES`), ``wait_ns``
    (submit_ns - queue_ns), ``extra_wait_ns`` (wait_ns minus the median wait of
    the run's requests not deferred to another device; ns, may be negative).
    """
    t = run.arrow("requests", ["req_id", "thread", "device", "section_id", "section_owner", "sync",
                               "queue_ns", "submit_ns"])
    keep = pc.and_(pc.invert(t.column("sync")), pc.greater_equal(t.column("submit_ns"), 0))
    t = t.filter(keep)
    device = t.column("device").to_numpy()
    owner = t.column("section_owner").to_numpy()
    other = _other_device(owner, device)
    codes = np.where(owner < 0, 0, np.where(other, 2, 1)).astype(np.int8)
    wait = t.column("submit_ns").to_numpy() - t.column("queue_ns").to_numpy()
    baseline = float(np.median(wait[~other])) if (~other).any() else 0.0
    return pd.DataFrame({
        "req_id": t.column("req_id").to_numpy(),
        "thread": t.column("thread").to_numpy(),
        "device": device,
        "section_id": t.column("section_id").to_numpy(),
        "section_owner": owner,
        "cause": pd.Categorical.from_codes(codes, categories=list(CAUSES)),
        "wait_ns": wait,
        "extra_wait_ns": wait - baseline,
    })


def df_deferral_stats(run_or_deferrals: Run | pd.DataFrame) -> pd.DataFrame:
    """Deferrals summed up per cause (rows in `CAUSES` order, all present).

    Columns: ``cause``, ``count`` (requests), ``fraction`` (of submitted
    requests), ``mean_wait_ns``, ``p50_wait_ns``, ``p99_wait_ns``,
    ``mean_extra_wait_ns`` (ns; NaN where count is 0).
    """
    d = df_deferrals(run_or_deferrals) if isinstance(run_or_deferrals, Run) else run_or_deferrals
    grouped = d.groupby("cause", observed=False)
    out = pd.DataFrame({
        "count": grouped.size(),
        "mean_wait_ns": grouped["wait_ns"].mean(),
        "p50_wait_ns": grouped["wait_ns"].median(),
        "p99_wait_ns": grouped["wait_ns"].quantile(0.99),
        "mean_extra_wait_ns": grouped["extra_wait_ns"].mean(),
    }).reindex(list(CAUSES))
    out["count"] = out["count"].fillna(0).astype(np.int64)
    out.insert(1, "fraction", out["count"] / max(int(out["count"].sum()), 1))
    return out.rename_axis("cause").reset_index()


DEFAULT_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _percentile_row(metric: str, source: str, values: np.ndarray, percentiles: Sequence[float]) -> dict[str, Any]:
    values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    row: dict[str, Any] = {"metric": metric, "source": source, "count": len(values), "approximate": False}
    row["mean_ns"] = float(values.mean()) if len(values) else np.nan
    qs = np.percentile(values, percentiles) if len(values) else [np.nan] * len(percentiles)
    row.update({f"p{q:g}_ns": float(v) for q, v in zip(percentiles, qs)})
    row["max_ns"] = float(values.max()) if len(values) else np.nan
    return row


def _histogram_percentile_row(metric: str, h: pd.DataFrame, percentiles: Sequence[float]) -> dict[str, Any]:
    # A bucket only bounds its values: report each percentile as its bucket's
    # upper bound, and the mean from bucket midpoints.
    counts = h["count"].to_numpy()
    high = h["high"].to_numpy().astype(np.float64)
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    row: dict[str, Any] = {"metric": metric, "source": "histogram", "count": total, "approximate": True}
    row["mean_ns"] = float(((h["low"] + h["high"]) / 2 * counts).sum() / total) if total else np.nan
    for q in percentiles:
        idx = int(np.searchsorted(cum, q / 100 * total)) if total else 0
        row[f"p{q:g}_ns"] = float(high[min(idx, len(high) - 1)]) if total else np.nan
    row["max_ns"] = float(high[-1]) if total else np.nan
    return row


@requires(("submits", "enters", "requests", "block_rq", "histograms"))
def df_latency_percentiles(run: Run, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> pd.DataFrame:
    """Latency percentiles of everything the run measured, one row per metric.

    Metrics: ``submit`` (app-side io_uring_submit duration), ``enter`` (kernel
    io_uring_enter duration), ``request_wait`` / ``request_service`` /
    ``request_total`` (see `df_requests`), ``block`` (block request issue to
    completion). Aggregate-only runs take ``enter`` and ``block`` from the
    in-kernel histograms; those rows have ``approximate`` True and give each
    percentile as its power-of-two bucket's upper bound.

    Columns: ``metric``, ``source`` (table), ``count``, ``mean_ns``,
    ``p50_ns``, ... one ``p<q>_ns`` per percentile, ``max_ns``, ``approximate``.
    """
    rows = []
    if run.has("submits"):
        rows.append(_percentile_row("submit", "submits", run.arrow("submits", ["latency_ns"]).column(0).to_numpy(),
                                    percentiles))
    if run.has("enters"):
        rows.append(_percentile_row("enter", "enters", df_submits(run, "kernel")["latency_ns"].to_numpy(),
                                    percentiles))
    if run.has("requests"):
        t = run.arrow("requests", ["queue_ns", "submit_ns", "complete_ns"])
        queue, submit, complete = (t.column(i).to_numpy() for i in range(3))
        submitted = submit >= 0
        completed = submitted & (complete >= 0)
        for metric, values in (("request_wait", (submit - queue)[submitted]),
                               ("request_service", (complete - submit)[completed]),
                               ("request_total", (complete - queue)[completed])):
            rows.append(_percentile_row(metric, "requests", values, percentiles))
    if run.has("block_rq"):
        rows.append(_percentile_row("block", "block_rq", run.arrow("block_rq", ["latency_ns"]).column(0).to_numpy(),
                                    percentiles))
    if run.has("histograms"):
        done = {r["metric"] for r in rows}
        for metric, hist in (("enter", "enter_latency_ns"), ("block", "block_latency_ns")):
            if metric not in done:
                try:
                    rows.append(_histogram_percentile_row(metric, _histogram(run, hist), percentiles))
                except MissingTableError:
                    pass  # this histogram was not collected; the others still say something
    return pd.DataFrame(rows)


def _submit_latency(run: Run) -> tuple[float, float]:
    """p50 and p99 submit latency (ns) from the best source the run has."""
    lp = df_latency_percentiles(run, (50.0, 99.0))
    for metric in ("submit", "enter"):
        row = lp[lp["metric"] == metric]
        if len(row):
            return float(row["p50_ns"].iloc[0]), float(row["p99_ns"].iloc[0])
    return np.nan, np.nan


def _iops(run: Run) -> float:
    """Completed requests per second from the request log, else the recorded summary."""
    if not run.has("requests"):
        return float(run.summary.get("iops", np.nan))
    t = run.arrow("requests", ["queue_ns", "complete_ns"])
    complete = t.column("complete_ns").to_numpy()
    done = complete[complete >= 0]
    if not len(done):
        return 0.0
    span_s = (done.max() - pc.min(t.column("queue_ns")).as_py()) / 1e9
    return len(done) / span_s if span_s > 0 else np.nan


def df_compare(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run, for comparing strategies on the same workload.

    Columns: ``run`` (directory name), ``strategy``, ``interleave``, ``status``,
    ``iops`` (completed requests per second), ``mean_sqes_per_submit``,
    ``submit_p50_ns``, ``submit_p99_ns``, ``other_device_deferrals`` (requests
    deferred into another device's section), ``other_device_fraction`` (of
    submitted requests), ``deferral_extra_wait_mean_ns`` (mean extra wait of
    those, ns). Numbers a run cannot provide are NaN.
    """
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run": run.name, "strategy": run.strategy, "interleave": run.config.get("interleave", np.nan),
            "status": run.status, "iops": _iops(run),
        }
        try:
            sizes = df_batch_sizes(run)
            row["mean_sqes_per_submit"] = float((sizes["nr_sqes"] * sizes["fraction"]).sum())
        except MissingTableError:
            row["mean_sqes_per_submit"] = run.summary.get("mean_sqes_per_submit", np.nan)
        try:
            row["submit_p50_ns"], row["submit_p99_ns"] = _submit_latency(run)
        except MissingTableError:
            row["submit_p50_ns"] = run.summary.get("submit_latency_p50_ns", np.nan)
            row["submit_p99_ns"] = run.summary.get("submit_latency_p99_ns", np.nan)
        if run.has("requests"):
            other = df_deferral_stats(run).set_index("cause").loc["other_device_section"]
            row.update(other_device_deferrals=int(other["count"]), other_device_fraction=other["fraction"],
                       deferral_extra_wait_mean_ns=other["mean_extra_wait_ns"])
        else:
            row.update(other_device_deferrals=np.nan, other_device_fraction=np.nan,
                       deferral_extra_wait_mean_ns=np.nan)
        rows.append(row)
    return pd.DataFrame(rows)
