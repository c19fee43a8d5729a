"""What every analysis shares: `@requires`, the sources of submits and distributions, SQL for causes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ..run import Run
from ..run.schema import SQES_HISTOGRAMS

#: why a request waited, in the order plots and tables show them
#: why a request waited: outside any section, in its own device's section, in another device's section it
#: was pulled into (a nested aio_poll), held by another thread's plug of its device (device-plug, several
#: queues: that thread's last unplug got it submitted)
CAUSES = ("none", "own_section", "other_device_section", "other_thread")

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


#: a run's submits by source: (table, time column, SQEs column, SQL for the rows that submitted something)
_SUBMIT_SOURCES = {
    "app": ("submits", "start_ns", "nr_sqes", "true"),
    "kernel": ("enters", "ts_ns", "to_submit", "to_submit > 0"),
}


def _submit_source(run: Run, source: str = "auto") -> tuple[str, str, str, str]:
    """Where `run`'s submits are (see `_SUBMIT_SOURCES`): the app log when present ("auto"), else the kernel's."""
    return _SUBMIT_SOURCES[_pick_source(run, source, {"app": "submits", "kernel": "enters"})]


#: SQL: why a request waited (an index into CAUSES), from the `requests` table's columns
_CAUSE_SQL = (
    "CASE WHEN deferred_by_thread >= 0 THEN 3 WHEN section_owner < 0 THEN 0 WHEN section_owner <> device THEN 2 "
    "ELSE 1 END"
)
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


def scipy_stats() -> Any:
    """scipy.stats, imported when a test is run: it takes ~50 MB and a second that opening a run does not need."""
    import scipy.stats

    return scipy.stats
