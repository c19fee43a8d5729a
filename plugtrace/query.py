"""Summaries of run tables that never hold a table in memory, on one machine or a cluster.

Every summary the analysis computes over whole tables (batch-size
distributions, exact percentiles, counts per cause, per device, per run) is
built from one primitive, `Aggregate`: a grouped count / sum / min / max over
one table of one or many runs, written once in SQL. Such an aggregate is
decomposable: computed on pieces of the tables and merged by grouping the
pieces' results again, it gives the same answer. That is what lets the same
summaries run on two engines unchanged:

* `LocalEngine` (the default): DuckDB, embedded, runs each aggregate as one
  streaming query over every Parquet file at once, reading only the columns
  it needs, in bounded memory (spilling to disk past `memory_limit`);
* `DaskEngine`: a Dask cluster (`distributed.Client`), one task per piece (a
  range of whole row groups of one file), each running the same SQL with the
  worker's own DuckDB; the client merges the pieces' small results.

Exact percentiles (`percentiles`) take two aggregates: value counts per
logarithmic bin, then the distinct values of only the bins that hold the
wanted ranks. They equal numpy's default (linear) percentiles.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .run.schema import ADDED_COLUMNS

__all__ = ["TableFile", "Aggregate", "LocalEngine", "DaskEngine", "percentiles", "default_engine"]

#: how a piece's partial result merges into the whole, per aggregate operation
_MERGE = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}

#: bins per doubling of |value| in the first pass of `percentiles`: each bin spans ~2% of its values
_BINS_PER_OCTAVE = 32


@dataclass(frozen=True)
class TableFile:
    """One Parquet file of one table of one run; `run_id` numbers the run within a query."""

    run_id: int
    path: str


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Aggregate:
    """``SELECT run_id, keys..., op(value)... FROM table WHERE where GROUP BY run_id, keys``.

    `keys` and `values` map output column names to SQL expressions over the
    table's columns; a value is ``(op, expression)`` with op one of count
    (rows where the expression is not NULL; ``"*"`` for all), sum, min, max.
    """

    table: str
    keys: Mapping[str, str]
    values: Mapping[str, tuple[str, str]]
    where: str = "true"

    def sql(self, source: str) -> str:
        """The query over `source`, a relation with a ``run_id`` column and the table's columns."""
        selected = [f"({expr}) AS {name}" for name, expr in self.keys.items()]
        selected += [f"({expr}) AS _v_{name}" for name, (op, expr) in self.values.items() if expr != "*"]
        rows = f"SELECT run_id{''.join(', ' + s for s in selected)} FROM {source} WHERE {self.where}"
        out = ["run_id", *self.keys]
        for name, (op, expr) in self.values.items():
            if op not in _MERGE:
                raise ValueError(f"unknown aggregate operation {op!r}")
            arg = "*" if expr == "*" else f"_v_{name}"
            out.append(f"{op}({arg}) AS {name}")
        return f"SELECT {', '.join(out)} FROM ({rows}) AS r GROUP BY ALL"

    def merge(self, parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """Combine the results of pieces into the result of the whole, sorted by its keys."""
        keys = ["run_id", *self.keys]
        parts = [p for p in parts if len(p)]
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=np.int64) for c in [*keys, *self.values]})
        df = pd.concat(parts, ignore_index=True)
        if len(parts) > 1:
            df = df.groupby(keys, as_index=False, dropna=False).agg(
                {name: _MERGE[op] for name, (op, _) in self.values.items()}
            )
        return df.sort_values(keys, ignore_index=True)


def _connect(threads: int | None, memory_limit: str | None, temp_dir: str | None) -> Any:
    import duckdb

    con = duckdb.connect(config={"enable_external_access": True})
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {_quote(memory_limit)}")
    con.execute(f"SET temp_directory = {_quote(temp_dir or tempfile.gettempdir())}")
    con.execute("SET preserve_insertion_order = false")  # order is set by merge(); lets scans stream
    return con


def _run_sql(con: Any, agg: Aggregate, source: str) -> pd.DataFrame:
    return con.execute(agg.sql(source)).df()


def _file_source(files: Sequence[TableFile]) -> str:
    parts = [f"SELECT {f.run_id}::INTEGER AS run_id, * FROM read_parquet({_quote(f.path)})" for f in files]
    return "(" + " UNION ALL BY NAME ".join(parts + _added_columns(files)) + ") AS t"


def _added_columns(files: Sequence[TableFile]) -> list[str]:
    """An empty SELECT of the table's `ADDED_COLUMNS`: unioned by name, a run recorded before a column
    was added reads it as NULL instead of failing (its readers' value is the column's default)."""
    if not files:
        return []
    added = ADDED_COLUMNS.get(Path(files[0].path).stem)
    if not added:
        return []
    columns = ", ".join(f"NULL::BIGINT AS {name}" for name in added)
    return [f"SELECT NULL::INTEGER AS run_id, {columns} WHERE false"]


class LocalEngine:
    """DuckDB in this process: each aggregate is one streaming query over all the files.

    `threads`: DuckDB's worker threads (default: all cores). `memory_limit`:
    what DuckDB may hold before spilling to `temp_dir` (e.g. ``"500MB"``).
    """

    name = "duckdb"

    def __init__(self, threads: int | None = None, memory_limit: str | None = "500MB", temp_dir: str | None = None):
        self.threads, self.memory_limit, self.temp_dir = threads, memory_limit, temp_dir
        self._con: Any = None

    @property
    def connection(self) -> Any:
        """The DuckDB connection, made on first use (for queries of your own: `Runs.sql`)."""
        if self._con is None:
            self._con = _connect(self.threads, self.memory_limit, self.temp_dir)
        return self._con

    def aggregate(self, agg: Aggregate, files: Sequence[TableFile] | pd.DataFrame) -> pd.DataFrame:
        """`agg` over the files (or over a DataFrame already in memory, see `frame_aggregate`)."""
        if isinstance(files, pd.DataFrame):
            return self.frame_aggregate(agg, files)
        if not files:
            return agg.merge([])
        return agg.merge([_run_sql(self.connection, agg, _file_source(files))])

    def frame_aggregate(self, agg: Aggregate, frame: pd.DataFrame) -> pd.DataFrame:
        """The same aggregate over a DataFrame already in memory (a ``run_id`` column is added if missing)."""
        con = self.connection
        con.register("frame_rows", frame if "run_id" in frame else frame.assign(run_id=0))
        try:
            return agg.merge([_run_sql(con, agg, "frame_rows")])
        finally:
            con.unregister("frame_rows")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


@dataclass(frozen=True)
class _Piece:
    """Whole row groups [first_row, end_row) of one file: a Dask task's share."""

    file: TableFile
    first_row: int
    end_row: int


def _pieces(files: Iterable[TableFile], rows_per_piece: int) -> list[_Piece]:
    import pyarrow.parquet as pq

    pieces = []
    for f in files:
        md = pq.read_metadata(f.path)
        start = row = 0
        for i in range(md.num_row_groups):
            row += md.row_group(i).num_rows
            if row - start >= rows_per_piece:
                pieces.append(_Piece(f, start, row))
                start = row
        if row > start or not pieces or pieces[-1].file != f:
            pieces.append(_Piece(f, start, row))
    return pieces


def _aggregate_piece(agg: Aggregate, piece: _Piece, threads: int) -> pd.DataFrame:
    """Runs on a Dask worker: the aggregate over one piece, with a DuckDB of its own."""
    con = _connect(threads, None, None)
    try:
        # a filter on file_row_number skips the row groups outside the piece
        rows = (
            f"SELECT {piece.file.run_id}::INTEGER AS run_id, * FROM read_parquet("
            f"{_quote(piece.file.path)}, file_row_number = true) WHERE file_row_number >= {piece.first_row} "
            f"AND file_row_number < {piece.end_row}"
        )
        source = "(" + " UNION ALL BY NAME ".join([rows, *_added_columns([piece.file])]) + ") AS t"
        return _run_sql(con, agg, source)
    finally:
        con.close()


class DaskEngine:
    """A Dask cluster: one task per piece of a file, each running the aggregate's SQL, merged here.

    `client`: a `distributed.Client` (``Client("tcp://scheduler:8786")`` for a
    real cluster, whose workers must see the run directories at the same
    paths). `rows_per_piece`: rows a task reads at most, in whole row groups.
    `threads_per_task`: DuckDB threads inside each task.
    """

    name = "dask"

    def __init__(self, client: Any, rows_per_piece: int = 4_000_000, threads_per_task: int = 1):
        self.client, self.rows_per_piece, self.threads_per_task = client, rows_per_piece, threads_per_task

    def aggregate(self, agg: Aggregate, files: Sequence[TableFile] | pd.DataFrame) -> pd.DataFrame:
        if isinstance(files, pd.DataFrame):
            return self.frame_aggregate(agg, files)
        pieces = _pieces(files, self.rows_per_piece)
        futures = self.client.map(
            _aggregate_piece, [agg] * len(pieces), pieces, [self.threads_per_task] * len(pieces), pure=False
        )
        return agg.merge(self.client.gather(futures))

    def frame_aggregate(self, agg: Aggregate, frame: pd.DataFrame) -> pd.DataFrame:
        return LocalEngine(threads=1).frame_aggregate(agg, frame)


_default: LocalEngine | None = None


def default_engine() -> LocalEngine:
    """The process's shared embedded engine (DuckDB threads: all cores; 500 MB before spilling)."""
    global _default
    if _default is None:
        _default = LocalEngine(memory_limit=os.environ.get("PLUGTRACE_DUCKDB_MEMORY", "500MB"))
    return _default


def _bin(value: str) -> str:
    """SQL: a bin number for an integer value, ordered as the values are, ~2% wide.

    Bins are the rounding of log2 |value| to 1/32; `percentiles` checks from the
    bins' min and max that they really are ordered, so an inexact log2 cannot
    make a result wrong.
    """
    return (
        f"CASE WHEN ({value}) >= 0 THEN CAST(floor(log2(({value}) + 1) * {_BINS_PER_OCTAVE}) AS BIGINT) "
        f"ELSE -1 - CAST(floor(log2(-({value})) * {_BINS_PER_OCTAVE}) AS BIGINT) END"
    )


def _literal(value: Any) -> str:
    """A group key as an SQL literal."""
    if isinstance(value, (str, bytes)):
        return _quote(value if isinstance(value, str) else value.decode())
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _numpy_positions(n: int, qs: Sequence[float]) -> list[tuple[int, int, float]]:
    """For each percentile, the two ranks numpy's linear method interpolates between, and the weight.

    The virtual index is computed as numpy computes it for its linear method
    (Hyndman & Fan's method 7), so results equal `np.percentile` to the last bit.
    """
    q = np.true_divide(np.asarray(qs, dtype=np.float64), 100)
    virtual = (n - 1) * q
    out = []
    for v in virtual:
        low = math.floor(v)
        if v >= n - 1:
            out.append((n - 1, n - 1, 0.0))
        elif v < 0:
            out.append((0, 0, 0.0))
        else:
            out.append((low, low + 1, float(v - low)))
    return out


def _lerp(a: Any, b: Any, t: float) -> float:
    """numpy's linear interpolation of two values of the column's own type (the difference is taken
    in that type, as numpy does), including its choice of formula for t >= 0.5."""
    diff = b - a
    t64 = np.float64(t)
    return float(b - diff * (1 - t64)) if t64 >= 0.5 else float(a + diff * t64)


def _ordered_clusters(bins: pd.DataFrame) -> np.ndarray:
    """A cluster number per bin (rows sorted by bin) such that clusters hold disjoint, ordered value ranges.

    Bins are ordered by value by construction; should floating-point log2 ever
    put a value out of order, the overlapping bins are merged into one cluster.
    """
    lo, hi = bins["lo"].to_numpy(), bins["hi"].to_numpy()
    running_max = np.maximum.accumulate(hi)
    starts = np.ones(len(bins), dtype=bool)
    starts[1:] = lo[1:] > running_max[:-1]
    return np.cumsum(starts) - 1


def percentiles(
    engine: Any,
    files: Sequence[TableFile] | pd.DataFrame,
    table: str,
    value: str,
    qs: Sequence[float],
    by: Mapping[str, str] | None = None,
    where: str = "true",
) -> pd.DataFrame:
    """Exact percentiles of the integer SQL expression `value` over `table`, per run and `by` group.

    `files`: the table's files, or a DataFrame holding the table's rows.

    Returns one row per (run_id, group) that has values: ``run_id``, the `by`
    columns, ``count``, ``mean``, ``min``, ``max`` and ``p<q>`` per percentile
    (numpy's linear method; NULL values are left out). Memory is bounded by
    the number of bins (~2,000 per sign) and the distinct values in the few
    bins holding the wanted ranks, not by the number of rows.
    """
    by = dict(by or {})
    where = f"({where}) AND ({value}) IS NOT NULL"
    first = engine.aggregate(
        Aggregate(
            table,
            {**by, "bin": _bin(value)},
            {
                "n": ("count", "*"),
                "total": ("sum", f"CAST({value} AS DOUBLE)"),
                "lo": ("min", value),
                "hi": ("max", value),
            },
            where,
        ),
        files,
    )
    groups = ["run_id", *by]
    columns = [*groups, "count", "mean", "min", "max", *(f"p{q:g}" for q in qs)]
    if first.empty:
        return pd.DataFrame(columns=columns)
    wanted: list[str] = []  # SQL: the value ranges (clusters of bins) whose values the second pass fetches
    plans = []
    for key, bins in first.groupby(groups, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        bins = bins.sort_values("bin", ignore_index=True)
        cluster = _ordered_clusters(bins)
        counts = np.bincount(cluster, weights=bins["n"].to_numpy()).astype(np.int64)
        ends = np.cumsum(counts)
        n = int(ends[-1])
        positions = _numpy_positions(n, qs)
        ranks = sorted({r for low, high, _ in positions for r in (low, high)})
        ranges = {}
        for c in set(np.searchsorted(ends, ranks, side="right").tolist()):
            mine = bins[cluster == c]
            ranges[c] = (int(mine["lo"].min()), int(mine["hi"].max()))
        match = " AND ".join(f"({expr}) = {_literal(v)}" for expr, v in zip(["run_id", *by.values()], key))
        wanted += [f"({match} AND ({value}) BETWEEN {lo} AND {hi})" for lo, hi in ranges.values()]
        plans.append((key, bins, n, ends, positions, ranges))
    # value ranges, not bins: the second pass compares, it computes no logarithm and joins nothing
    second = engine.aggregate(
        Aggregate(table, {**by, "value": value}, {"n": ("count", "*")}, f"({where}) AND ({' OR '.join(wanted)})"), files
    )
    by_group = {k if isinstance(k, tuple) else (k,): g for k, g in second.groupby(groups, sort=False, dropna=False)}
    rows = []
    for key, bins, n, ends, positions, ranges in plans:
        values = by_group[key].sort_values("value")
        row: dict[str, Any] = dict(zip(groups, key))
        row.update(count=n, mean=float(bins["total"].sum()) / n, min=bins["lo"].min(), max=bins["hi"].max())

        # called only in this iteration, so binding this group's ends, ranges and values late is right
        def at(rank: int) -> np.generic:
            c = int(np.searchsorted(ends, rank, side="right"))  # noqa: B023
            lo, hi = ranges[c]  # noqa: B023
            mine = values[(values["value"] >= lo) & (values["value"] <= hi)]  # noqa: B023
            before = int(ends[c - 1]) if c else 0  # noqa: B023
            cum = np.cumsum(mine["n"].to_numpy())
            return mine["value"].to_numpy()[np.searchsorted(cum, rank - before, side="right")]

        for q, (low, high, t) in zip(qs, positions):
            row[f"p{q:g}"] = _lerp(at(low), at(high), t)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
