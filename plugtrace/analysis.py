"""Analysis of run directories: `Run` and the `df_*` functions.

Every `df_*` function takes a `Run` (or, for `df_compare`, several) and returns
a pandas DataFrame whose columns are documented in its docstring, with units in
the column names (``*_ns`` nanoseconds of CLOCK_MONOTONIC, ``nr_*`` counts,
``*_bytes``). Functions state the tables they need with `@requires`, so a run
that lacks one (a probe this kernel could not attach, an untraced run, a traced
program with no app-side log) gets a message naming the table and why it is
missing instead of a KeyError.

Functions that summarise (distributions, percentiles, per-cause and
per-device statistics, comparisons) run out of core through `plugtrace.query`:
one streaming DuckDB query per question, exact, in bounded memory whatever the
run's size, and `Runs` asks the same questions of many runs in one query.
Functions that return one row per event (`df_submits`, `df_requests`,
`df_deferrals`, `df_sections`) say so, and take a time window (`window_ms`)
or a `sample` fraction for runs too big to hold.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_dataset
import pyarrow.parquet as pq

from . import store
from .errors import PlugtraceError, RunDirError, UsageError
from .query import Aggregate, LocalEngine, TableFile, _bin, _file_source, default_engine, percentiles

__all__ = [
    "Run",
    "Runs",
    "MissingTableError",
    "requires",
    "required_tables",
    "CAUSES",
    "df_submits",
    "df_batch_sizes",
    "df_sections",
    "df_requests",
    "df_deferrals",
    "df_deferral_stats",
    "df_interleaving_delays",
    "df_unplugs",
    "df_latency_percentiles",
    "df_latency_cdf",
    "df_sqes_over_time",
    "df_device_stats",
    "df_compare",
    "df_model_vs_qemu",
    "df_qemu_sections",
    "df_qemu_handlers",
    "df_qemu_arrivals",
    "df_qemu_requests_per_handler",
    "df_diff",
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
    "handlers": "the engine's handler log (written by plugtrace record since handler runs are logged)",
    "histograms": "the in-kernel histograms (aggregate mode)",
    "counters": "the in-kernel counters (aggregate mode)",
    "qemu_counters": "the QEMU-side uprobes (plugtrace qemu)",
    "qemu_sections": "the QEMU-side uprobes (plugtrace qemu --mode events, since sections have a kind)",
    "qemu_handlers": "the QEMU-side uprobes (plugtrace qemu --mode events, since handler runs have a cause)",
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


class WindowError(UsageError, ValueError):
    """A time window that is not two finite times, START < END, within `MAX_WINDOW_MS` of the run's start."""


#: how far from a run's start a time window may reach, ms (a month: timestamps stay well inside int64 ns)
MAX_WINDOW_MS = 31 * 24 * 3600e3


def check_window(window_ms: Sequence[float], name: str = "window_ms") -> tuple[float, float]:
    """`window_ms` (start, end: ms since the run's start) as two floats, or a WindowError naming `name`."""
    try:
        start, end = (float(v) for v in window_ms)
    except (TypeError, ValueError):
        raise WindowError(f"{name}: expected two times in ms (START END), not {window_ms!r}") from None
    shown = f"{name} {start:g} {end:g}"
    if not (math.isfinite(start) and math.isfinite(end)):
        raise WindowError(f"{shown}: START and END must be finite numbers of ms")
    if not start < end:
        raise WindowError(f"{shown}: needs START < END")
    if max(abs(start), abs(end)) > MAX_WINDOW_MS:
        raise WindowError(f"{shown}: reaches past any run (at most {MAX_WINDOW_MS:g} ms from its start)")
    return start, end


class Run:
    """One run directory, opened and checked.

    Use `Run.open(path)`. Opening reads meta.json (refusing newer schema
    versions) and every table's Parquet footer, so a truncated file is reported
    at once, naming it, rather than halfway through an analysis. Tables that a
    run marked as damaged (status ``incomplete``) or that a still-running
    recording has not finished are set aside in `unreadable` instead, and so
    are tables whose columns are not the run format's (another table's, a
    column of another type, negative counts: `corrupt`); `require_whole()`
    refuses a run with any.
    """

    def __init__(
        self, path: Path, meta: dict[str, Any], unreadable: dict[str, str], corrupt: dict[str, str] | None = None
    ):
        self.path = path
        self.meta = meta
        #: table name -> why it cannot be read
        self.unreadable = unreadable
        #: of those, the tables whose columns or values are not what the run format says: name -> why
        self.corrupt = corrupt or {}
        self._start_ns: int | None = None
        #: percentile queries already answered (see Runs.percentiles)
        self._percentiles: dict[tuple, pd.DataFrame] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """Open the run directory at `path`; raises RunDirError naming the faulty file."""
        run_path = Path(path)
        meta = store.read_meta(run_path)
        damaged = set(meta.get("damaged_tables") or [])
        unfinished_ok = meta.get("status") == store.STATUS_RECORDING
        unreadable: dict[str, str] = {}
        corrupt: dict[str, str] = {}
        for name in sorted(set(store.table_names(run_path)) | set(meta.get("tables") or {})):
            file = run_path / "tables" / f"{name}.parquet"
            if not file.exists():
                raise RunDirError(f"{file}: missing, although meta.json lists table '{name}'")
            try:
                metadata = pq.read_metadata(file)
            except (pa.ArrowException, OSError) as exc:
                if name in damaged or unfinished_ok:
                    unreadable[name] = f"not finished when the recording stopped ({exc})"
                    continue
                raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None
            why = store.check_table(name, metadata)
            if why is not None:
                corrupt[name] = unreadable[name] = f"{file} is corrupt: {why}"
        return cls(run_path, meta, unreadable, corrupt)

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

    def require_whole(self) -> None:
        """Raise RunDirError naming the first corrupt table, if the run has one."""
        if self.corrupt:
            raise RunDirError(f"{next(iter(self.corrupt.values()))}; the run directory is corrupt")

    def require(self, *tables: str | tuple[str, ...], user: str = "this analysis") -> None:
        """Raise MissingTableError unless every requirement is met.

        A requirement is a table name, or a tuple of names any one of which will do.
        """
        for req in tables:
            options = (req,) if isinstance(req, str) else req
            if not any(self.has(t) for t in options):
                reasons = "; or ".join(self.missing_reason(t) for t in options)
                raise MissingTableError(f"{user} cannot run on {self.path}: {reasons}")

    def arrow(
        self, name: str, columns: Sequence[str] | None = None, filters: Any = None, sample: float | None = None
    ) -> pa.Table:
        """Read `columns` of table `name` as a pyarrow Table (row groups outside `filters` are skipped).

        `sample`: keep each row with this probability (0-1], drawn batch by batch
        with a fixed seed, so only the sample is ever held in memory.
        """
        self.require(name, user=f"reading table '{name}'")
        file = self.path / "tables" / f"{name}.parquet"
        try:
            if sample is None:
                return pq.read_table(file, columns=list(columns) if columns else None, filters=filters)
            if not 0 < sample <= 1:
                raise ValueError(f"sample must be a fraction in (0, 1], not {sample!r}")
            rng = np.random.default_rng(0)
            dataset = pa_dataset.dataset(file, format="parquet")
            expression = pq.filters_to_expression(filters) if filters else None
            batches = [
                b.filter(pa.array(rng.random(len(b)) < sample))
                for b in dataset.to_batches(columns=list(columns) if columns else None, filter=expression)
            ]
            schema = dataset.schema if not columns else pa.schema([dataset.schema.field(c) for c in columns])
            return pa.Table.from_batches(batches, schema=schema)
        except (pa.ArrowException, OSError) as exc:
            raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None

    def window_filters(self, column: str, window_ms: tuple[float, float] | None) -> list[tuple[str, str, int]] | None:
        """Parquet filters keeping rows whose `column` (ns) lies in `window_ms` (start, end: ms from run start)."""
        if window_ms is None:
            return None
        start, end = check_window(window_ms)
        return [(column, ">=", self.start_ns + int(start * 1e6)), (column, "<", self.start_ns + int(end * 1e6))]

    def table(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Read `columns` of table `name` as a DataFrame."""
        return self.arrow(name, columns).to_pandas()

    @property
    def start_ns(self) -> int:
        """The earliest timestamp of any table (ns, CLOCK_MONOTONIC): time zero of plots.

        Taken from the Parquet column statistics, so no table is read in full.
        """
        if self._start_ns is None:
            found = [self._column_min(t, c) for t, c in _TIME_COLUMNS.items() if self.has(t)]
            candidates = [c for c in found if c is not None]
            self._start_ns = min(candidates) if candidates else 0
        return int(self._start_ns)

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

    def to_perfetto(self, path: str | os.PathLike, window_ms: tuple[float, float] | None = None) -> dict[str, int]:
        """Write this run as a Perfetto trace at `path` (see `plugtrace.export.to_perfetto`)."""
        from .export import to_perfetto

        return to_perfetto(self, path, window_ms)


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


def required_tables(fn: Callable[..., Any]) -> tuple[str | tuple[str, ...], ...]:
    """The tables a `@requires` function needs: `@requires(*required_tables(f))` for one that needs the same."""
    return fn.required_tables  # type: ignore[attr-defined]


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


DEFAULT_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


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


def _buckets(name: str, low: np.ndarray, high: np.ndarray, count: np.ndarray) -> pd.DataFrame:
    count = np.asarray(count, dtype=np.int64)
    total = count.sum()
    return pd.DataFrame(
        {
            name: np.asarray(low, dtype=np.int64),
            f"{name}_high": np.asarray(high, dtype=np.int64),
            "count": count,
            "fraction": count / total if total else np.zeros(len(count)),
        }
    )


#: the in-kernel histograms of SQEs per submitting io_uring_enter(), preferred first:
#: the enters probe's (the syscall's result), then uring_requests' (request positions)
SQES_HISTOGRAMS = ("enter_nr_sqes", "submit_nr_sqes")

#: a run's submits by source: (table, time column, SQEs column, SQL for the rows that submitted something)
_SUBMIT_SOURCES = {
    "app": ("submits", "start_ns", "nr_sqes", "true"),
    "kernel": ("enters", "ts_ns", "to_submit", "to_submit > 0"),
}


def _submit_source(run: Run, source: str = "auto") -> tuple[str, str, str, str]:
    """Where `run`'s submits are (see `_SUBMIT_SOURCES`): the app log when present ("auto"), else the kernel's."""
    return _SUBMIT_SOURCES[_pick_source(run, source, {"app": "submits", "kernel": "enters"})]


#: SQL: why a request waited (an index into CAUSES), from the `requests` table's columns
_CAUSE_SQL = "CASE WHEN section_owner < 0 THEN 0 WHEN section_owner <> device THEN 2 ELSE 1 END"
#: SQL: the requests `df_deferrals` covers (submitted, sync reads left out)
_DEFERRED_SQL = "NOT sync AND submit_ns >= 0"


class _Distribution:
    """How to count one distribution from events (app or kernel table) or an in-kernel histogram."""

    def __init__(self, name: str, events: dict[str, tuple[str, str]], histograms: tuple[str, ...]):
        self.name, self.events, self.histograms = name, events, histograms

    def choices(self) -> dict[str, str]:
        return {source: table for source, (table, _) in self.events.items()} | {"histogram": "histograms"}


_BATCH_SIZES = _Distribution(
    "nr_sqes", {"app": ("submits", "nr_sqes"), "kernel": ("enters", "to_submit")}, SQES_HISTOGRAMS
)
_UNPLUGS = _Distribution("nr_rq", {"kernel": ("block_unplug", "nr_rq")}, ("unplug_nr_rq",))


def _as_runs(runs: Runs | Run | Iterable[Run]) -> Runs:
    if isinstance(runs, Runs):
        return runs
    return Runs([runs] if isinstance(runs, Run) else list(runs))


def _one_run(frame: pd.DataFrame) -> pd.DataFrame:
    """A `Runs` result for a single run, without its `run` column."""
    return frame.drop(columns="run").reset_index(drop=True)


class Runs:
    """Many run directories analysed as one set of tables.

    `Runs("runs/*")`, `Runs("runs/")` (every run directory inside), or a list
    of paths and `Run`s. Each summary is one query over the same table of all
    the runs (`plugtrace.query`), so a question across hundreds of runs costs
    about what it costs on their largest table, in bounded memory. Results
    carry a ``run`` column (the directory name, or its path where names repeat)
    and `meta()` gives each run's configuration as columns to join on.

    `engine`: where queries run; the embedded DuckDB by default, or a
    `plugtrace.query.DaskEngine` for a cluster. Runs lacking a table a summary
    needs are left out of that summary's rows.
    """

    def __init__(self, runs: str | os.PathLike | Iterable[str | os.PathLike | Run], engine: Any = None):
        items = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
        self.runs: list[Run] = []
        for item in items:
            self.runs += [item] if isinstance(item, Run) else [Run.open(p) for p in _run_dirs(item)]
        if not self.runs:
            raise RunDirError(f"no run directories (with a meta.json) found in {', '.join(map(str, items)) or '[]'}")
        self.engine = engine or default_engine()
        names = [r.name for r in self.runs]
        labels = [n if names.count(n) == 1 else str(r.path) for n, r in zip(names, self.runs)]
        #: a unique name per run: its directory's name, its path where names repeat, numbered where paths do
        self.labels = [lab if labels.count(lab) == 1 else f"{lab} [{i}]" for i, lab in enumerate(labels)]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __repr__(self) -> str:
        return f"Runs({len(self.runs)} runs: {', '.join(self.labels[:4])}{', ...' if len(self) > 4 else ''})"

    # -- plumbing ----------------------------------------------------------------------------------------------

    def files(self, table: str, ids: Iterable[int] | None = None) -> list[TableFile]:
        """The Parquet files of `table`, one per run that has it (of the runs numbered `ids`)."""
        ids = range(len(self.runs)) if ids is None else ids
        return [
            TableFile(i, str(self.runs[i].path / "tables" / f"{table}.parquet")) for i in ids if self.runs[i].has(table)
        ]

    def aggregate(self, agg: Aggregate, ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Run `agg` over the runs (numbered `ids`) that have its table; ``run_id`` numbers them."""
        return self.engine.aggregate(agg, self.files(agg.table, ids))

    def percentiles(
        self,
        table: str,
        value: str,
        qs: Sequence[float],
        by: dict[str, str] | None = None,
        where: str = "true",
        ids: Iterable[int] | None = None,
    ) -> pd.DataFrame:
        """Exact percentiles of SQL expression `value` per run (and `by` group); see `query.percentiles`.

        Kept on a single finished run, whose tables no longer change: a report
        asks the same question for a table and a plot, which then scans once.
        """
        files = self.files(table, ids)
        key = (table, value, tuple(qs), tuple(sorted((by or {}).items())), where)
        cache = self.runs[0]._percentiles if len(files) == 1 and len(self.runs) == 1 else None
        if cache is not None and self.runs[0].status != store.STATUS_RECORDING and key in cache:
            return cache[key].copy()
        found = percentiles(self.engine, files, table, value, qs, by=by, where=where)
        if cache is not None:
            cache[key] = found.copy()
        return found

    def _labelled(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` with ``run_id`` replaced by the run's label as its first column, ``run``."""
        labels = np.asarray(self.labels, dtype=object)
        out = frame.drop(columns="run_id")
        out.insert(0, "run", labels[frame["run_id"].to_numpy(dtype=np.int64)] if len(frame) else [])
        return out.reset_index(drop=True)

    def _pick(self, source: str, choices: dict[str, str]) -> dict[str, list[int]]:
        """Run numbers by the source each one uses (see `_pick_source`), runs with no source left out."""
        picked: dict[str, list[int]] = {}
        for i, run in enumerate(self.runs):
            name = _pick_source(run, source, choices)
            if run.has(choices[name]):
                picked.setdefault(name, []).append(i)
        return picked

    def meta(self) -> pd.DataFrame:
        """One row per run: ``run``, ``path``, ``status`` and every scalar of meta.json's config
        (``strategy``, ``iodepth``, ...), summary (``summary.iops``, ...) and device (``device.kind``, ...)."""
        rows = []
        for label, run in zip(self.labels, self.runs):
            row: dict[str, Any] = {"run": label, "path": str(run.path), "status": run.status}
            row |= {k: v for k, v in run.config.items() if _scalar(v)}
            for section in ("summary", "device"):
                row |= {f"{section}.{k}": v for k, v in (run.meta.get(section) or {}).items() if _scalar(v)}
            rows.append(row)
        return pd.DataFrame(rows)

    def sql(self, query: str) -> pd.DataFrame:
        """Run your own SQL over all the runs' tables with the embedded DuckDB.

        Each table the runs have is a view of that name with a ``run`` column
        first (``SELECT run, avg(nr_sqes) FROM submits GROUP BY run``), and
        ``runs`` is `meta()`.
        """
        con = default_engine().connection if not isinstance(self.engine, LocalEngine) else self.engine.connection
        con.register("runs", self.meta())
        labels = pd.DataFrame({"run_id": np.arange(len(self.runs), dtype=np.int32), "run": self.labels})
        con.register("run_labels", labels)
        tables = sorted({t for run in self.runs for t in run.tables()})
        try:
            for table in tables:
                source = _file_source(self.files(table))
                con.execute(
                    f'CREATE OR REPLACE TEMP VIEW "{table}" AS SELECT l.run, t.* EXCLUDE (run_id) '
                    f"FROM {source} JOIN run_labels AS l USING (run_id)"
                )
            return con.execute(query).df()
        finally:
            for table in tables:
                con.execute(f'DROP VIEW IF EXISTS "{table}"')
            con.unregister("runs")
            con.unregister("run_labels")

    # -- summaries ---------------------------------------------------------------------------------------------

    def _histograms(self, names: Sequence[str], ids: Iterable[int]) -> pd.DataFrame:
        """Buckets of the named in-kernel histograms: run_id, name, low, high, count; each run's first name only."""
        in_list = ", ".join(f"'{n}'" for n in names)
        h = self.aggregate(
            Aggregate(
                "histograms",
                {"name": "name", "low": "low", "high": "high"},
                {"count": ("sum", "count")},
                f"name IN ({in_list})",
            ),
            ids,
        )
        rank = h["name"].map({n: i for i, n in enumerate(names)})
        first = rank.groupby(h["run_id"]).transform("min")
        return h[rank == first].sort_values(["run_id", "low"], ignore_index=True)

    def _distribution(self, dist: _Distribution, source: str) -> pd.DataFrame:
        parts = []
        for name, ids in self._pick(source, dist.choices()).items():
            if name == "histogram":
                h = self._histograms(dist.histograms, ids)
                h = h[h["high"] > 1]  # the [0, 1) bucket counts calls that submitted nothing
                parts.append(h.rename(columns={"low": dist.name, "high": f"{dist.name}_high"}).drop(columns="name"))
            else:
                table, column = dist.events[name]
                d = self.aggregate(
                    Aggregate(table, {dist.name: column}, {"count": ("count", "*")}, f"{column} > 0"), ids
                )
                d[f"{dist.name}_high"] = d[dist.name] + 1
                parts.append(d)
        columns = ["run_id", dist.name, f"{dist.name}_high", "count"]
        parts = [p for p in parts if len(p)]
        if not parts:  # no run has any: an empty table of the documented columns
            return self._labelled(pd.DataFrame({c: pd.Series(dtype=np.int64) for c in columns})).assign(
                fraction=pd.Series(dtype=np.float64)
            )
        frames = []
        for run_id, d in pd.concat(parts, ignore_index=True)[columns].groupby("run_id", sort=True):
            if d.empty:
                continue
            b = _buckets(dist.name, d[dist.name].to_numpy(), d[f"{dist.name}_high"].to_numpy(), d["count"].to_numpy())
            frames.append(b.assign(run_id=run_id))
        return self._labelled(pd.concat(frames, ignore_index=True)[["run_id", *_buckets_columns(dist.name)]])

    def df_batch_sizes(self, source: str = "auto") -> pd.DataFrame:
        """`df_batch_sizes` of every run, stacked: ``run`` then its columns."""
        return self._distribution(_BATCH_SIZES, source)

    def df_unplugs(self, source: str = "auto") -> pd.DataFrame:
        """`df_unplugs` of every run that traced block unplugs, stacked: ``run`` then its columns."""
        return self._distribution(_UNPLUGS, source)

    def df_latency_percentiles(
        self, percentiles: Sequence[float] = DEFAULT_PERCENTILES, metrics: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """`df_latency_percentiles` of every run, stacked: ``run`` then its columns (exact, out of core).
        `metrics`: only these (default: all)."""
        all_metrics = [  # metric, table, value, where
            ("submit", "submits", "latency_ns", "true"),
            ("enter", "enters", "latency_ns", "to_submit > 0"),
            ("request_wait", "requests", "submit_ns - queue_ns", "submit_ns >= 0"),
            ("request_service", "requests", "complete_ns - submit_ns", "submit_ns >= 0 AND complete_ns >= 0"),
            ("request_total", "requests", "complete_ns - queue_ns", "submit_ns >= 0 AND complete_ns >= 0"),
            ("block", "block_rq", "latency_ns", "true"),
        ]
        wanted = set(metrics or [m[0] for m in all_metrics])
        rows: list[dict[str, Any]] = []
        for order, (metric, table, value, where) in enumerate(all_metrics):
            ids = [i for i, run in enumerate(self.runs) if run.has(table) and metric in wanted]
            if not ids:
                continue
            found = self.percentiles(table, value, percentiles, where=where, ids=ids).set_index("run_id")
            for i in ids:
                row: dict[str, Any] = {"run_id": i, "_order": order, "metric": metric, "source": table}
                stats = found.loc[i] if i in found.index else None
                row.update(
                    count=int(stats["count"]) if stats is not None else 0,
                    approximate=False,
                    mean_ns=float(stats["mean"]) if stats is not None else np.nan,
                )
                row.update(
                    {f"p{q:g}_ns": float(stats[f"p{q:g}"]) if stats is not None else np.nan for q in percentiles}
                )
                row["max_ns"] = float(stats["max"]) if stats is not None else np.nan
                rows.append(row)
        for order, (metric, hist) in enumerate(
            (("enter", "enter_latency_ns"), ("block", "block_latency_ns")), start=len(all_metrics)
        ):
            done = {r["run_id"] for r in rows if r["metric"] == metric}
            ids = [i for i, run in enumerate(self.runs) if run.has("histograms") and i not in done and metric in wanted]
            if ids:
                for run_id, h in self._histograms((hist,), ids).groupby("run_id"):
                    rows.append(
                        {"run_id": run_id, "_order": order, **_histogram_percentile_row(metric, h, percentiles)}
                    )
        columns = [
            "metric",
            "source",
            "count",
            "approximate",
            "mean_ns",
            *(f"p{q:g}_ns" for q in percentiles),
            "max_ns",
        ]
        df = pd.DataFrame(rows, columns=["run_id", "_order", *columns])
        return self._labelled(df.sort_values(["run_id", "_order"], kind="stable").drop(columns="_order"))

    def _wait_stats(self, by: dict[str, str], qs: Sequence[float] = (50.0, 99.0)) -> pd.DataFrame:
        """Exact wait percentiles of the requests `df_deferrals` covers, per run and `by` group."""
        return self.percentiles("requests", "submit_ns - queue_ns", qs, by=by, where=_DEFERRED_SQL)

    def _baseline_wait(self) -> pd.Series:
        """Per run_id: the median wait of requests not deferred into another device's section (ns)."""
        base = self.percentiles(
            "requests", "submit_ns - queue_ns", (50.0,), where=f"{_DEFERRED_SQL} AND ({_CAUSE_SQL}) <> 2"
        )
        return base.set_index("run_id")["p50"].astype(np.float64)

    def df_deferral_stats(self) -> pd.DataFrame:
        """`df_deferral_stats` of every run with a request log, stacked: ``run`` then its columns."""
        stats = self._wait_stats({"cause": _CAUSE_SQL}).set_index(["run_id", "cause"])
        baseline = self._baseline_wait()
        frames = []
        for i, run in enumerate(self.runs):
            if not run.has("requests"):
                continue
            rows = []
            for code, cause in enumerate(CAUSES):
                s = stats.loc[(i, code)] if (i, code) in stats.index else None
                mean = float(s["mean"]) if s is not None else np.nan
                rows.append(
                    {
                        "run_id": i,
                        "cause": cause,
                        "count": int(s["count"]) if s is not None else 0,
                        "mean_wait_ns": mean,
                        "p50_wait_ns": float(s["p50"]) if s is not None else np.nan,
                        "p99_wait_ns": float(s["p99"]) if s is not None else np.nan,
                        "mean_extra_wait_ns": mean - float(baseline.get(i, 0.0)),
                    }
                )
            df = pd.DataFrame(rows)
            df.insert(3, "fraction", df["count"] / max(int(df["count"].sum()), 1))
            frames.append(df)
        if not frames:
            return self._labelled(pd.DataFrame(columns=["run_id", *_DEFERRAL_STATS_COLUMNS]))
        return self._labelled(pd.concat(frames, ignore_index=True))

    def df_device_stats(self) -> pd.DataFrame:
        """Per run and emulated device: its submitted requests and how long they waited.

        Columns: ``run``, ``device``, ``count`` (submitted requests, sync reads
        left out), ``fraction`` (of the run's), ``mean_wait_ns``,
        ``p50_wait_ns``, ``p99_wait_ns`` (queued to submitted, ns),
        ``other_device_deferrals`` (of its requests, those queued inside another
        device's section) and ``other_device_fraction``.
        """
        stats = self._wait_stats({"device": "device"})
        other = self.aggregate(
            Aggregate(
                "requests", {"device": "device"}, {"n": ("count", "*")}, f"{_DEFERRED_SQL} AND ({_CAUSE_SQL}) = 2"
            )
        ).set_index(["run_id", "device"])
        df = pd.DataFrame(
            {
                "run_id": stats["run_id"],
                "device": stats["device"].astype(np.int64),
                "count": stats["count"].astype(np.int64),
            }
        )
        df["fraction"] = df["count"] / df.groupby("run_id")["count"].transform("sum")
        df["mean_wait_ns"], df["p50_wait_ns"], df["p99_wait_ns"] = stats["mean"], stats["p50"], stats["p99"]
        keys = pd.MultiIndex.from_arrays([df["run_id"], df["device"]])
        df["other_device_deferrals"] = other["n"].reindex(keys, fill_value=0).to_numpy(dtype=np.int64)
        df["other_device_fraction"] = df["other_device_deferrals"] / df["count"]
        return self._labelled(df)

    def _iops(self) -> dict[int, float]:
        """Per run_id: the IOPS the run recorded in its summary (what `record` printed and the report's
        summary shows), else completed requests per second from the request log (a killed run's)."""
        iops: dict[int, float] = {}
        for i, run in enumerate(self.runs):
            recorded = run.summary.get("iops")
            if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
                iops[i] = float(recorded)
        logged = [i for i, run in enumerate(self.runs) if i not in iops and run.has("requests")]
        done = self.aggregate(
            Aggregate(
                "requests",
                {},
                {
                    "done": ("count", "CASE WHEN complete_ns >= 0 THEN 1 END"),
                    "last": ("max", "CASE WHEN complete_ns >= 0 THEN complete_ns END"),
                    "first": ("min", "queue_ns"),
                },
            ),
            logged,
        ).set_index("run_id")
        for i in range(len(self.runs)):
            if i in iops:
                continue
            if i not in done.index:
                iops[i] = np.nan
            elif not done.at[i, "done"]:
                iops[i] = 0.0
            else:
                span_s = (int(done.at[i, "last"]) - int(done.at[i, "first"])) / 1e9
                iops[i] = int(done.at[i, "done"]) / span_s if span_s > 0 else np.nan
        return iops

    def df_compare(self) -> pd.DataFrame:
        """`df_compare` of these runs: one row per run, each number one query over all runs."""
        sizes = self.df_batch_sizes()
        mean_sqes = (sizes["nr_sqes"] * sizes["fraction"]).groupby(sizes["run"]).sum()
        lat = self.df_latency_percentiles((50.0, 99.0), metrics=("submit", "enter"))
        lat = lat.drop_duplicates("run").set_index("run")  # a run's submit row comes before its enter row
        deferrals = self.df_deferral_stats()
        other = deferrals[deferrals["cause"] == "other_device_section"].set_index("run")
        iops = self._iops()
        rows = []
        for i, (name, run) in enumerate(zip(self.labels, self.runs)):
            row: dict[str, Any] = {
                "run": run.name,
                "strategy": run.strategy,
                "interleave": run.config.get("interleave", np.nan),
                "status": run.status,
                "iops": iops[i],
            }
            row["mean_sqes_per_submit"] = (
                float(mean_sqes[name]) if name in mean_sqes.index else run.summary.get("mean_sqes_per_submit", np.nan)
            )
            if name in lat.index:
                row["submit_p50_ns"], row["submit_p99_ns"] = (
                    float(lat.at[name, "p50_ns"]),
                    float(lat.at[name, "p99_ns"]),
                )
            elif any(run.has(t) for t in ("requests", "block_rq", "histograms")):
                row["submit_p50_ns"] = row["submit_p99_ns"] = np.nan
            else:
                row["submit_p50_ns"] = run.summary.get("submit_latency_p50_ns", np.nan)
                row["submit_p99_ns"] = run.summary.get("submit_latency_p99_ns", np.nan)
            if name in other.index:
                row.update(
                    other_device_deferrals=int(other.at[name, "count"]),
                    other_device_fraction=other.at[name, "fraction"],
                    deferral_extra_wait_mean_ns=other.at[name, "mean_extra_wait_ns"],
                )
            else:
                row.update(
                    other_device_deferrals=np.nan, other_device_fraction=np.nan, deferral_extra_wait_mean_ns=np.nan
                )
            rows.append(row)
        return pd.DataFrame(rows)


_DEFERRAL_STATS_COLUMNS = [
    "cause",
    "count",
    "fraction",
    "mean_wait_ns",
    "p50_wait_ns",
    "p99_wait_ns",
    "mean_extra_wait_ns",
]


def _buckets_columns(name: str) -> list[str]:
    return [name, f"{name}_high", "count", "fraction"]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _run_dirs(path: str | os.PathLike) -> list[Path]:
    """Run directories named by `path`: a run directory, a directory of them, or a glob pattern."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        found = [Path(p) for p in sorted(glob.glob(text))]
    else:
        p = Path(text)
        found = [p] if (p / "meta.json").exists() or not p.is_dir() else sorted(p.iterdir())
    return [p for p in found if (p / "meta.json").exists() or (p == Path(text) and not p.is_dir())]


@requires(("submits", "enters", "histograms"))
def df_batch_sizes(run: Run, source: str = "auto") -> pd.DataFrame:
    """How many SQEs each `io_uring_enter()` submitted: the batch size distribution.

    `source`: ``"app"`` (`submits`), ``"kernel"`` (`enters`), ``"histogram"`` (the
    in-kernel `enter_nr_sqes` histogram, or `submit_nr_sqes` that aggregate-mode
    runs count by default from io_uring's per-request tracepoint) or ``"auto"``
    (the first of these the run has). Enters that submitted nothing are left out.
    Counted out of core: a run of any size takes a few MB.

    Columns: ``nr_sqes`` (bucket low bound, SQEs), ``nr_sqes_high`` (exclusive
    high bound; ``nr_sqes + 1`` for exact counts), ``count`` (submits),
    ``fraction`` (of all submits).
    """
    return _single_distribution(run, _BATCH_SIZES, source, "the nr_sqes distribution")


@requires(("block_unplug", "histograms"))
def df_unplugs(run: Run, source: str = "auto") -> pd.DataFrame:
    """How many block requests each block-layer unplug flushed (`block:block_unplug`).

    `source`: ``"kernel"`` (`block_unplug` events), ``"histogram"`` (in-kernel
    `unplug_nr_rq`) or ``"auto"``. Columns: ``nr_rq`` (bucket low bound,
    requests), ``nr_rq_high`` (exclusive), ``count`` (unplugs), ``fraction``.
    """
    return _single_distribution(run, _UNPLUGS, source, "the nr_rq distribution")


def _single_distribution(run: Run, dist: _Distribution, source: str, what: str) -> pd.DataFrame:
    picked = _pick_source(run, source, dist.choices())
    table = dist.choices()[picked]
    run.require(table, user=f"{what} from '{table}'")
    df = _one_run(Runs([run])._distribution(dist, picked))
    if picked == "histogram" and df.empty:
        raise MissingTableError(
            f"{run.path}: the 'histograms' table has no {' or '.join(map(repr, dist.histograms))} histogram"
        )
    return df


@requires(("submits", "enters", "requests", "block_rq", "histograms"))
def df_latency_percentiles(run: Run, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> pd.DataFrame:
    """Latency percentiles of everything the run measured, one row per metric.

    Metrics: ``submit`` (app-side io_uring_submit duration), ``enter`` (kernel
    io_uring_enter duration), ``request_wait`` / ``request_service`` /
    ``request_total`` (see `df_requests`), ``block`` (block request issue to
    completion). Percentiles are exact (numpy's linear method), computed out of
    core. Aggregate-only runs take ``enter`` and ``block`` from the in-kernel
    histograms; those rows have ``approximate`` True and give each percentile as
    its power-of-two bucket's upper bound.

    Columns: ``metric``, ``source`` (table), ``count``, ``approximate``,
    ``mean_ns``, ``p50_ns``, ... one ``p<q>_ns`` per percentile, ``max_ns``.
    """
    return _one_run(Runs([run]).df_latency_percentiles(percentiles))


def df_deferral_stats(run_or_deferrals: Run | pd.DataFrame) -> pd.DataFrame:
    """Deferrals summed up per cause (rows in `CAUSES` order, all present).

    Given a Run, computed out of core from its `requests` table; given a
    `df_deferrals` frame, from that frame.

    Columns: ``cause``, ``count`` (requests), ``fraction`` (of submitted
    requests), ``mean_wait_ns``, ``p50_wait_ns``, ``p99_wait_ns``,
    ``mean_extra_wait_ns`` (ns; NaN where count is 0).
    """
    if isinstance(run_or_deferrals, Run):
        run_or_deferrals.require("requests", user="df_deferral_stats()")
        return _one_run(Runs([run_or_deferrals]).df_deferral_stats())
    d = run_or_deferrals
    grouped = d.groupby("cause", observed=False)
    out = pd.DataFrame(
        {
            "count": grouped.size(),
            "mean_wait_ns": grouped["wait_ns"].mean(),
            "p50_wait_ns": grouped["wait_ns"].median(),
            "p99_wait_ns": grouped["wait_ns"].quantile(0.99),
            "mean_extra_wait_ns": grouped["extra_wait_ns"].mean(),
        }
    ).reindex(list(CAUSES))
    out["count"] = out["count"].fillna(0).astype(np.int64)
    out.insert(1, "fraction", out["count"] / max(int(out["count"].sum()), 1))
    return out.rename_axis("cause").reset_index()


@requires("requests")
def df_device_stats(run: Run) -> pd.DataFrame:
    """Per emulated device: submitted requests, their wait and how many were deferred into another
    device's section (columns as `Runs.df_device_stats`, without ``run``). Out of core."""
    return _one_run(Runs([run]).df_device_stats())


def df_compare(runs: Iterable[Run] | Runs) -> pd.DataFrame:
    """One row per run, for comparing strategies on the same workload.

    Columns: ``run`` (directory name), ``strategy``, ``interleave``, ``status``,
    ``iops`` (completed requests per second: the run's recorded summary, else
    from its request log), ``mean_sqes_per_submit``,
    ``submit_p50_ns``, ``submit_p99_ns``, ``other_device_deferrals`` (requests
    deferred into another device's section), ``other_device_fraction`` (of
    submitted requests), ``deferral_extra_wait_mean_ns`` (mean extra wait of
    those, ns). Numbers a run cannot provide are NaN. Each column is one
    out-of-core query over all the runs.
    """
    return _as_runs(runs).df_compare()


def _qemu_calls(run: Run) -> dict[str, int]:
    """A real QEMU run's call counts from its uprobes (all devices), {} for other runs."""
    if not run.has("qemu_counters"):
        return {}
    t = run.table("qemu_counters")
    t = t[t["device"] == -1]
    return dict(zip(t["name"], t["value"].astype(int)))


def df_model_vs_qemu(runs: Iterable[Run] | Runs) -> pd.DataFrame:
    """Model runs (`plugtrace record`) and real QEMU runs (`plugtrace qemu`) of one guest load,
    one row per run: `df_compare`'s columns plus ``kind`` (``model`` / ``real QEMU``),
    ``sections_per_request`` (outermost plug / defer sections per guest request: the model's
    sections log, QEMU's uprobes), ``polls_in_sections`` (``aio_poll()`` calls made inside a
    section: the interleaving case), ``requests`` (guest requests), and ``wait_p50_ns`` /
    ``wait_p99_ns``: how long a request waited from being queued to the io_uring driver until
    the submit that carried it began (the model's request log; a QEMU run's ``qemu_requests``,
    events mode). NaN where a run cannot say."""
    runs = list(_as_runs(runs))
    df = df_compare(runs)
    kinds, per_request, polls, requests, waits = [], [], [], [], []
    for run in runs:
        log = "qemu_requests" if run.config.get("qemu") else "requests"
        if run.has(log):
            t = run.table(log, ["queue_ns", "submit_ns"])
            wait = (t["submit_ns"] - t["queue_ns"])[t["submit_ns"] >= 0].to_numpy()
            waits.append(np.percentile(wait, [50, 99]) if len(wait) else (np.nan, np.nan))
        else:
            waits.append((np.nan, np.nan))
        calls = _qemu_calls(run)
        n = run.summary.get("workload_requests", run.summary.get("nr_requests"))
        if run.config.get("qemu"):
            kinds.append("real QEMU")
            # a count bpftrace never incremented is not printed: zero, when the probes ran at all
            zero = 0 if calls else np.nan
            sections, nested = calls.get("sections", zero), calls.get("aio_poll_in_section", zero)
        else:
            kinds.append("model")
            if run.has("sections"):
                t = run.table("sections", ["nr_nested_polls"])
                sections, nested = len(t), int(t["nr_nested_polls"].sum())
            else:
                sections = nested = np.nan
        requests.append(n if n is not None else np.nan)
        per_request.append(sections / n if n else np.nan)
        polls.append(nested)
    df.insert(1, "kind", kinds)
    df["requests"], df["sections_per_request"], df["polls_in_sections"] = requests, per_request, polls
    df["wait_p50_ns"], df["wait_p99_ns"] = [w[0] for w in waits], [w[1] for w in waits]
    return df


@requires("sections", "qemu_sections")
def df_qemu_sections(run: Run) -> pd.DataFrame:
    """A real QEMU run's outermost sections: `sections` with ``kind`` (``handler`` /
    ``completion`` / ``other``), ``nr_nested_sections`` and ``nr_completions`` (guest requests
    completed in it) from `qemu_sections`, and ``duration_ns``."""
    df = run.table("sections").merge(run.table("qemu_sections"), on="section_id", how="left", validate="1:1")
    df["duration_ns"] = df["end_ns"] - df["begin_ns"]
    return df


@requires("handlers", "qemu_handlers")
def df_qemu_handlers(run: Run) -> pd.DataFrame:
    """A real QEMU run's `virtio_blk_handle_vq()` runs: `handlers` with ``vq``, ``cause``
    (``kick`` / ``poll``), ``nr_requests`` (popped), ``nr_submitted`` and ``opened_section_id``
    from `qemu_handlers` (written row for row)."""
    h, q = run.table("handlers"), run.table("qemu_handlers")
    assert len(h) == len(q), "qemu_handlers is written row for row with handlers"
    return pd.concat([h, q.drop(columns=["tid", "begin_ns"])], axis=1)


def _qemu_hist(run: Run, name: str) -> pd.DataFrame:
    if not run.has("qemu_histograms"):
        return pd.DataFrame(columns=["low", "high", "count"])
    t = run.table("qemu_histograms")
    return t[t["name"] == name]


@requires("qemu_histograms")
def df_qemu_requests_per_handler(run: Run) -> pd.DataFrame:
    """Requests one ``virtio_blk_handle_vq()`` run popped: ``nr_requests``, ``cause`` (``kick`` /
    ``poll`` from `qemu_handlers` in events mode, else ``all``, from the in-kernel histogram),
    ``count`` (handler runs)."""
    if run.has("qemu_handlers"):
        h = run.table("qemu_handlers", ["cause", "nr_requests"])
        h["cause"] = h["cause"].astype(str)
        return h.groupby(["nr_requests", "cause"]).size().rename("count").reset_index()
    t = _qemu_hist(run, "requests_per_handler")
    return pd.DataFrame({"nr_requests": t["low"].to_numpy(), "cause": "all", "count": t["count"].to_numpy()})


def df_qemu_arrivals(runs: Iterable[Run] | Runs) -> pd.DataFrame:
    """What set a real QEMU run's batches, one row per run (aggregate or events mode): ``handler_runs``,
    ``kicks`` / ``poll_hits`` (handler runs the guest's notification / the iothread's polling
    started), ``poll_share``, ``requests_per_handler`` (mean requests popped per run),
    ``notifications_per_completion`` (guest notifications / requests completed), ``wait_p50_ns``
    (a request from ``luring_co_submit()`` to the kernel taking it: exact from `qemu_requests` in
    events mode, else the upper bound of the median's power-of-two bucket) and ``wait_from``.
    NaN where the run's probes could not say."""
    rows = []
    for run in _as_runs(runs):
        if not run.config.get("qemu"):
            continue
        c = _qemu_calls(run)
        runs_ = c.get("virtio_blk_handle_vq", np.nan)
        kicks, polls = c.get("handler_runs_kick", 0), c.get("handler_runs_poll", 0)
        per = _qemu_hist(run, "requests_per_handler")
        n = per["count"].sum()
        wait, source = np.nan, ""
        if run.has("qemu_requests"):
            t = run.table("qemu_requests", ["queue_ns", "submit_ns"])
            w = (t["submit_ns"] - t["queue_ns"])[t["submit_ns"] >= 0]
            wait, source = (float(w.median()), "events") if len(w) else (np.nan, "")
        if source == "":
            h = _qemu_hist(run, "wait_before_submit_ns").sort_values("low")
            if h["count"].sum():
                at = int(np.searchsorted(h["count"].cumsum().to_numpy(), h["count"].sum() / 2))
                wait, source = float(h["high"].iloc[at]), "histogram"
        rows.append(
            {
                "run": run.name,
                "strategy": run.strategy,
                "handler_runs": runs_,
                "kicks": kicks,
                "poll_hits": polls,
                "poll_share": polls / (kicks + polls) if kicks + polls else np.nan,
                "requests_per_handler": (per["low"] * per["count"]).sum() / n if n else np.nan,
                "notifications_per_completion": (
                    c.get("guest_notifications", 0) / c["virtqueue_push"] if c.get("virtqueue_push") else np.nan
                ),
                "wait_p50_ns": wait,
                "wait_from": source,
            }
        )
    return pd.DataFrame(rows)


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


def _aggregate(source: Runs | pd.DataFrame, agg: Aggregate) -> pd.DataFrame:
    """`agg` over the runs' tables, or over a DataFrame holding such a table's rows."""
    return source.aggregate(agg) if isinstance(source, Runs) else default_engine().aggregate(agg, source)


def _source_percentiles(
    source: Runs | pd.DataFrame,
    table: str,
    value: str,
    qs: Sequence[float],
    by: dict[str, str] | None = None,
    where: str = "true",
) -> pd.DataFrame:
    """`query.percentiles` over the runs' `table`, or over a DataFrame holding its rows."""
    if isinstance(source, Runs):
        return source.percentiles(table, value, qs, by=by, where=where)
    return percentiles(default_engine(), source, table, value, qs, by=by, where=where)


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
    submits = run.summary.get("nr_submits") or ((run.meta.get("tables") or {}).get("enters") or {}).get("rows", 0)
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
    ``own_section`` when inside its own device's section, ``none`` outside any.

    Columns: ``req_id``, ``thread``, ``device``, ``section_id``,
    ``section_owner``, ``cause`` (categorical, see `CAUSES`), ``wait_ns``
    (submit_ns - queue_ns), ``extra_wait_ns`` (wait_ns minus the median wait of
    the run's requests not deferred to another device; ns, may be negative),
    ``deferral_ns`` (the delay the interleaving caused, exactly: see
    `df_interleaving_delays`; 0 for requests not deferred into another
    device's section; NaN for runs without a `handlers` table).
    """
    t = run.arrow(
        "requests",
        ["req_id", "thread", "device", "section_id", "section_owner", "sync", "queue_ns", "submit_ns"],
        run.window_filters("queue_ns", window_ms),
        sample,
    )
    keep = pc.and_(pc.invert(t.column("sync")), pc.greater_equal(t.column("submit_ns"), 0))
    t = t.filter(keep)
    device = t.column("device").to_numpy()
    owner = t.column("section_owner").to_numpy()
    other = _other_device(owner, device)
    codes = np.where(owner < 0, 0, np.where(other, 2, 1)).astype(np.int8)
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
            "section_id": t.column("section_id").to_numpy(),
            "section_owner": owner,
            "cause": pd.Categorical.from_codes(codes, categories=list(CAUSES)),
            "wait_ns": wait,
            "extra_wait_ns": wait - baseline,
            "deferral_ns": deferral,
        }
    )


#: the numbers `df_diff` compares (besides the two distributions), in its row order
DIFF_NUMBERS = (
    "iops",
    "mean_sqes_per_submit",
    "submit_p50_ns",
    "submit_p99_ns",
    "other_device_fraction",
    "deferral_extra_wait_mean_ns",
)

#: the relative change of a number beyond which `df_diff` calls it beyond run-to-run noise, by default:
#: the README's benchmarks see separate runs of the same workload on one VM move by up to ~5-12%
DEFAULT_NOISE = 0.10


class NoiseError(UsageError, ValueError):
    """A noise threshold that is not a fraction in (0, 1]."""


#: a two-sample test must give a p-value below this, too
SIGNIFICANCE = 0.01
#: and two distributions must differ by at least this much (Kolmogorov-Smirnov D: largest gap of their CDFs)
MIN_KS_DISTANCE = 0.05


def _ks(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test on two distributions given as counts per ordered key.

    Returns (D, p-value) with the asymptotic Kolmogorov distribution. Keys are
    exact values or shared bins; on bins D can only be smaller than on values,
    so the test is conservative.
    """
    keys = a.index.union(b.index).sort_values()
    ca, cb = a.reindex(keys, fill_value=0).to_numpy(float), b.reindex(keys, fill_value=0).to_numpy(float)
    na, nb = ca.sum(), cb.sum()
    if not na or not nb:
        return np.nan, np.nan
    d = float(np.abs(np.cumsum(ca) / na - np.cumsum(cb) / nb).max())
    ne = na * nb / (na + nb)
    lam = (np.sqrt(ne) + 0.12 + 0.11 / np.sqrt(ne)) * d
    k = np.arange(1, 101)
    p = float(np.clip(2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * k**2 * lam**2)), 0, 1)) if lam > 0 else 1.0
    return d, p


def _welch(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int) -> float:
    """Two-sided p-value of Welch's test that two means are equal (normal approximation: runs have many submits)."""
    se = np.sqrt(var_a / n_a + var_b / n_b) if n_a and n_b else np.nan
    if not se or np.isnan(se):
        return 0.0 if se == 0 and mean_a != mean_b else 1.0 if se == 0 else np.nan
    return float(math.erfc(abs(mean_b - mean_a) / se / np.sqrt(2)))


def df_diff(a: Run, b: Run, noise: float = DEFAULT_NOISE) -> pd.DataFrame:
    """What changed from run `a` to run `b`, and whether it is beyond run-to-run noise.

    One row per metric: ``iops``, ``mean_sqes_per_submit``, ``submit_p50_ns``,
    ``submit_p99_ns``, ``other_device_fraction``, ``deferral_extra_wait_mean_ns``
    and two distributions, ``batch_size_distribution`` and
    ``submit_latency_distribution``. Columns: ``metric``, ``a``, ``b``,
    ``change`` (b - a), ``change_pct`` (of a), ``test`` (``threshold``,
    ``welch`` or ``ks``), ``statistic`` (KS D for distributions), ``p_value``,
    ``beyond_noise``.

    A number is beyond noise when it moved by at least `noise` (a fraction of
    `a`; separate runs of one workload move by several percent on a VM) and,
    where a test applies, the test says so too (p < `SIGNIFICANCE`): Welch's
    test on the submits' batch sizes for their mean, a two-sample
    Kolmogorov-Smirnov test on whole distributions, which must also differ by
    D ≥ `MIN_KS_DISTANCE`. Everything is computed out of core.

    A run with a corrupt table is refused (RunDirError). When either run is
    `partial` (it stopped early or a table is unreadable), its numbers
    cover only part of its workload and say nothing about a change:
    ``beyond_noise`` is then NA (no verdict) on every row.

    `noise`: a fraction in (0, 1]; anything else is a ValueError.
    """
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and 0 < noise <= 1):
        raise NoiseError(f"noise must be a fraction in (0, 1], not {noise!r}")
    a.require_whole()
    b.require_whole()
    runs = Runs([a, b])
    compare = runs.df_compare().set_index(pd.Index([0, 1]))
    rows: list[dict[str, Any]] = []

    def add(
        metric: str, va: float, vb: float, test: str = "threshold", statistic: float = np.nan, p: float = np.nan
    ) -> None:
        change = vb - va
        pct = change / abs(va) if va else (np.nan if change == 0 or np.isnan(change) else np.inf * np.sign(change))
        moved = bool(abs(pct) >= noise) if not np.isnan(pct) else False
        beyond = moved and (test == "threshold" or (not np.isnan(p) and p < SIGNIFICANCE))
        rows.append(
            {
                "metric": metric,
                "a": va,
                "b": vb,
                "change": change,
                "change_pct": pct * 100,
                "test": test,
                "statistic": statistic,
                "p_value": p,
                "beyond_noise": beyond,
            }
        )

    sizes = runs.df_batch_sizes()
    dist = {i: sizes[sizes["run"] == label].set_index("nr_sqes")["count"] for i, label in enumerate(runs.labels)}
    stats = []
    for i in (0, 1):
        counts = dist[i]
        n = int(counts.sum())
        mean = float((counts.index.to_numpy() * counts.to_numpy()).sum() / n) if n else np.nan
        var = float(((counts.index.to_numpy() - mean) ** 2 * counts.to_numpy()).sum() / max(n - 1, 1)) if n else np.nan
        stats.append((mean, var, n))
    add("iops", float(compare.at[0, "iops"]), float(compare.at[1, "iops"]))
    p = _welch(*stats[0], *stats[1]) if stats[0][2] and stats[1][2] else np.nan
    add(
        "mean_sqes_per_submit",
        float(compare.at[0, "mean_sqes_per_submit"]),
        float(compare.at[1, "mean_sqes_per_submit"]),
        "welch" if not np.isnan(p) else "threshold",
        p=p,
    )
    for metric in DIFF_NUMBERS[2:]:
        add(metric, float(compare.at[0, metric]), float(compare.at[1, metric]))

    def add_distribution(metric: str, d: float, p: float) -> None:
        rows.append(
            {
                "metric": metric,
                "a": np.nan,
                "b": np.nan,
                "change": np.nan,
                "change_pct": np.nan,
                "test": "ks",
                "statistic": d,
                "p_value": p,
                "beyond_noise": bool(not np.isnan(p) and p < SIGNIFICANCE and d >= MIN_KS_DISTANCE),
            }
        )

    add_distribution("batch_size_distribution", *_ks(dist[0], dist[1]))
    latency = {}
    for i, run in enumerate((a, b)):
        table, _, _, where = _submit_source(run)
        if run.has(table):
            latency[i] = Runs([run]).aggregate(_cdf_bins(table, where)).set_index("bin")["n"]
    add_distribution(
        "submit_latency_distribution", *(_ks(latency[0], latency[1]) if len(latency) == 2 else (np.nan, np.nan))
    )
    diff = pd.DataFrame(rows)
    if a.partial or b.partial:
        diff["beyond_noise"] = pd.array([pd.NA] * len(diff), dtype="boolean")
    return diff
