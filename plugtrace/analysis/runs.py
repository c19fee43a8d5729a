"""`Runs`: many runs asked one question at once, out of core; the single-run `df_*` summaries are `Runs` of one."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RunDirError
from ..query import Aggregate, LocalEngine, TableFile, _file_source, default_engine, percentiles
from ..run import MissingTableError, Run, Status
from .common import (
    _BATCH_SIZES,
    _CAUSE_SQL,
    _DEFERRED_SQL,
    _UNPLUGS,
    CAUSES,
    DEFAULT_PERCENTILES,
    _buckets,
    _Distribution,
    _histogram_percentile_row,
    _pick_source,
    requires,
)


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
        if cache is not None and self.runs[0].status != Status.RECORDING and key in cache:
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
        """Per run_id: the median wait of requests deferred neither into another device's section nor by
        another thread's plug (ns)."""
        base = self.percentiles(
            "requests", "submit_ns - queue_ns", (50.0,), where=f"{_DEFERRED_SQL} AND ({_CAUSE_SQL}) NOT IN (2, 3)"
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
