"""Headline numbers of the kernel-side tables, for the end of a recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from ..run import read_batches, read_table
from ..run.schema import SQES_HISTOGRAMS
from .worker import FLUSH_ROWS


def _hist_percentile(low: np.ndarray, high: np.ndarray, count: np.ndarray, q: float) -> int:
    """Upper bound (exclusive) of the bucket holding the q-th percentile."""
    order = np.argsort(low)
    cum = np.cumsum(count[order])
    i = int(np.searchsorted(cum, cum[-1] * q / 100.0))
    return int(high[order][min(i, len(cum) - 1)])


#: latency bins of the first pass: 4.096 us wide (2^12 ns), the last one (from 1.07 s) open
_BIN_SHIFT, _BINS = 12, 1 << 18
_COLUMNS = ["to_submit", "ret", "latency_ns"]


def _submitting(run_dir: Path):
    """(SQEs, latencies) of the submitting calls, one row-group batch at a time."""
    # batches of the size the recorder writes its row groups in (worker.FLUSH_ROWS), decoded
    # in this thread: a batch of a million rows more than doubled the recorder's memory, and
    # Arrow's decoding threads each hold buffers of their own (bench_tracing_overhead measures the RSS)
    for batch in read_batches(run_dir, "enters", _COLUMNS, FLUSH_ROWS):
        batch = batch.filter(pc.greater(batch.column(0), 0))
        yield int(pc.sum(batch.column(1)).as_py() or 0), batch.column(2).to_numpy(zero_copy_only=False)


def _bin(lat: np.ndarray) -> np.ndarray:
    return np.minimum(lat >> _BIN_SHIFT, _BINS - 1).clip(0)


def _submitting_enters(run_dir: Path, percentiles: tuple[float, ...]) -> tuple[int, int, list[int]]:
    """Count, SQEs and exact latency percentiles (numpy's linear interpolation, truncated
    to ns) of the submitting io_uring_enter() calls in an events-mode table, in two passes
    over its row groups: a long run has millions of enters, and the recorder's memory must
    stay flat to the end. The first pass counts latencies in bins; the second counts each
    nanosecond value inside the bins that hold the ranks wanted (the open last bin keeps
    its values), so an order statistic is read off counts."""
    bins = np.zeros(_BINS, dtype=np.int64)
    n = sqes = 0
    for s, lat in _submitting(run_dir):
        sqes += s
        n += len(lat)
        bins += np.bincount(_bin(lat), minlength=_BINS)
    if not n:
        return 0, sqes, [0 for _ in percentiles]
    below = np.cumsum(bins) - bins  # rank of each bin's smallest value

    def bin_of(rank: int) -> int:
        return int(np.searchsorted(below, rank, side="right") - 1)

    wanted = []
    for q in percentiles:
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        wanted.append((lo, min(lo + 1, n - 1), pos - lo))
    keep = {bin_of(r) for lo, hi, _ in wanted for r in (lo, hi)}
    fine = {k: np.zeros(1 << _BIN_SHIFT, dtype=np.int64) for k in keep if k < _BINS - 1}
    last: list[np.ndarray] = []
    negative: list[np.ndarray] = []  # bin 0 also holds values below 0 (a clock step): kept as values
    for _, lat in _submitting(run_dir):
        b = _bin(lat)
        for k, counts in fine.items():
            counts += np.bincount(lat[(b == k) & (lat >= 0)] - (k << _BIN_SHIFT), minlength=1 << _BIN_SHIFT)
        if _BINS - 1 in keep:
            last.append(lat[b == _BINS - 1])
        if 0 in keep:
            negative.append(lat[lat < 0])
    open_bin = np.sort(np.concatenate(last)) if last else np.empty(0, dtype=np.int64)
    below_zero = np.sort(np.concatenate(negative)) if negative else np.empty(0, dtype=np.int64)

    def at(rank: int) -> float:
        k = bin_of(rank)
        r = rank - int(below[k])
        if k == 0 and r < len(below_zero):
            return float(below_zero[r])
        if k in fine:
            r -= len(below_zero) if k == 0 else 0
            return float((k << _BIN_SHIFT) + int(np.searchsorted(np.cumsum(fine[k]), r, side="right")))
        return float(open_bin[r])

    def lerp(a: float, b: float, t: float) -> float:  # as numpy's, so the result is numpy's to the ns
        return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t

    return n, sqes, [int(lerp(at(lo), at(hi), frac)) for lo, hi, frac in wanted]


def kernel_summary(run_dir: str | Path) -> dict:
    """io_uring_enter counts and latencies seen by eBPF, from `enters` (exact) or
    the in-kernel `histograms` (latency percentiles as log2 bucket bounds).
    Empty when neither table was written. Only calls that submitted count."""
    tables = Path(run_dir) / "tables"
    enters, hists = tables / "enters.parquet", tables / "histograms.parquet"
    out: dict = {}
    if enters.exists():
        n, sqes, (p50, p99) = _submitting_enters(Path(run_dir), (50, 99))
        if n:
            out = {
                "nr_enters": n,
                "mean_sqes_per_enter": round(sqes / n, 3),
                "enter_latency_p50_ns": p50,
                "enter_latency_p99_ns": p99,
                "source": "enters (events)",
            }
    elif hists.exists():
        h = read_table(run_dir, "histograms")
        name = next((n for n in SQES_HISTOGRAMS if (h["name"] == n).any()), SQES_HISTOGRAMS[-1])
        sqes = h[h["name"] == name]
        lat = h[h["name"] == "enter_latency_ns"]
        if len(sqes):
            n = int(sqes["count"].sum())
            out = {
                "nr_enters": n,
                "mean_sqes_per_enter": round(float((sqes["low"] * sqes["count"]).sum() / n), 3),
                "source": f"histograms (aggregate, {name})",
            }
        if len(lat):
            args = (lat["low"].to_numpy(), lat["high"].to_numpy(), lat["count"].to_numpy())
            out["enter_latency_p50_ns_below"] = _hist_percentile(*args, 50)
            out["enter_latency_p99_ns_below"] = _hist_percentile(*args, 99)
    return out
