"""`Run`: one run directory, opened, checked, and read: the one reader of run directories.

A run directory is::

    RUN/meta.json            what was run, where, how, and what could not be measured
    RUN/tables/NAME.parquet  one table per kind of record (see docs/run-format.md)

Opening reads meta.json and every table's Parquet footer and says which file is
wrong when something is; tables are then read whole, by columns, by a Parquet
filter or as a sample, never more than asked for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_dataset
import pyarrow.parquet as pq

from ..errors import PlugtraceError, RunDirError, UsageError
from .meta import RunMeta, Status
from .schema import ADDED_COLUMNS, check_table, with_added_columns

__all__ = [
    "Run",
    "MissingTableError",
    "WindowError",
    "check_window",
    "table_names",
    "read_table",
    "read_batches",
    "TABLE_SOURCES",
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
    "replay_runs": "plugtrace replay's comparison with the QEMU run it replayed",
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

    def __init__(self, path: Path, meta: RunMeta, unreadable: dict[str, str], corrupt: dict[str, str] | None = None):
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
        meta = RunMeta.read(run_path)
        damaged = set(meta.damaged_tables)
        unfinished_ok = meta.status == Status.RECORDING
        unreadable: dict[str, str] = {}
        corrupt: dict[str, str] = {}
        for name in sorted(set(table_names(run_path)) | set(meta.tables)):
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
            why = check_table(name, metadata)
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
        """How the run was made (meta.json's `config`)."""
        return self.meta.config

    @property
    def summary(self) -> dict[str, Any]:
        """Headline numbers computed at record time (meta.json's `summary`)."""
        return self.meta.summary

    @property
    def status(self) -> str:
        """meta.json's `status` (a `Status` value when it is one)."""
        return self.meta.status

    @property
    def partial(self) -> bool:
        """True when the run stopped early or lost data; its numbers cover only part of it."""
        return self.meta.partial or bool(self.unreadable)

    @property
    def strategy(self) -> str:
        return self.meta.strategy

    @property
    def could_not_measure(self) -> dict[str, str]:
        """Probe name -> why it could not run (meta.json's `probes.could_not_measure`)."""
        return self.meta.could_not_measure

    @property
    def not_asked(self) -> dict[str, str]:
        """Probe name -> why it was off in this run though it could have run (meta.json's `probes.not_asked`)."""
        return self.meta.not_asked

    def tables(self) -> list[str]:
        """Names of the tables this run has and that can be read."""
        return [t for t in table_names(self.path) if t not in self.unreadable]

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
            if not ADDED_COLUMNS.get(name):
                return self._arrow(file, list(columns) if columns else None, filters, sample)
            # a run recorded before a column was added: read what it has, the added column holds its value
            present = pq.read_schema(file).names
            table = self._arrow(file, [c for c in (columns or present) if c in present], filters, sample)
            return with_added_columns(name, table, columns)
        except (pa.ArrowException, OSError) as exc:
            raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None

    @staticmethod
    def _arrow(file: Path, columns: list[str] | None, filters: Any, sample: float | None) -> pa.Table:
        if sample is None:
            return pq.read_table(file, columns=columns, filters=filters)
        if not 0 < sample <= 1:
            raise ValueError(f"sample must be a fraction in (0, 1], not {sample!r}")
        rng = np.random.default_rng(0)
        dataset = pa_dataset.dataset(file, format="parquet")
        expression = pq.filters_to_expression(filters) if filters else None
        batches = [
            b.filter(pa.array(rng.random(len(b)) < sample))
            for b in dataset.to_batches(columns=columns, filter=expression)
        ]
        schema = dataset.schema if not columns else pa.schema([dataset.schema.field(c) for c in columns])
        return pa.Table.from_batches(batches, schema=schema)

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


def table_names(path: str | os.PathLike) -> list[str]:
    """The tables present in a run directory, sorted."""
    return sorted(p.stem for p in (Path(path) / "tables").glob("*.parquet"))


def read_table(path: str | os.PathLike, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read table `name` of a run directory as a DataFrame without opening the run as a whole (a
    recording reading back a table it has just finished); raises RunDirError naming the file on failure."""
    file = Path(path) / "tables" / f"{name}.parquet"
    if not file.exists():
        raise RunDirError(f"{file}: missing (the run has no '{name}' table)")
    try:
        return with_added_columns(name, pq.read_table(file, columns=_present(file, name, columns)), columns).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None


def _present(file: Path, name: str, columns: list[str] | None) -> list[str] | None:
    """`columns` without the `ADDED_COLUMNS` the file lacks (its readers add them)."""
    if not columns or not ADDED_COLUMNS.get(name):
        return columns
    present = pq.read_schema(file).names
    return [c for c in columns if c in present]


def read_batches(path: str | os.PathLike, name: str, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Table `name` of a run directory, `columns` only, `batch_size` rows at a time, decoded in the calling
    thread (a recorder summarising its own tables keeps its memory flat); RunDirError naming the file on
    failure."""
    file = Path(path) / "tables" / f"{name}.parquet"
    try:
        yield from pq.ParquetFile(file).iter_batches(batch_size=batch_size, columns=columns, use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None
