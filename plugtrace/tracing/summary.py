"""Headline numbers of the kernel-side tables, for the end of a recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..analysis import SQES_HISTOGRAMS


def _hist_percentile(low: np.ndarray, high: np.ndarray, count: np.ndarray, q: float) -> int:
    """Upper bound (exclusive) of the bucket holding the q-th percentile."""
    order = np.argsort(low)
    cum = np.cumsum(count[order])
    i = int(np.searchsorted(cum, cum[-1] * q / 100.0))
    return int(high[order][min(i, len(cum) - 1)])


#: latency bins of the first pass: 1.024 us wide, the last one open (2^20 of them: 8 MB of counts)
_BIN_SHIFT, _BINS = 10, 1 << 20
_COLUMNS = ["to_submit", "ret", "latency_ns"]


def _submitting(f: pq.ParquetFile):
    """(SQEs, latencies) of the submitting calls, one row-group batch at a time."""
    for batch in f.iter_batches(batch_size=1 << 20, columns=_COLUMNS):
        batch = batch.filter(pc.greater(batch.column(0), 0))
        yield int(pc.sum(batch.column(1)).as_py() or 0), batch.column(2).to_numpy(zero_copy_only=False)


def _submitting_enters(path: Path, percentiles: tuple[float, ...]) -> tuple[int, int, list[int]]:
    """Count, SQEs and exact latency percentiles (numpy's linear interpolation, truncated
    to ns) of the submitting io_uring_enter() calls in an events-mode table, in two passes
    over its row groups: a long run has millions of enters, and the recorder's memory must
    stay flat to the end. The first pass counts latencies in bins, the second keeps only
    the values of the bins that hold the ranks wanted."""
    f = pq.ParquetFile(path)
    bins = np.zeros(_BINS, dtype=np.int64)
    n = sqes = 0
    for s, lat in _submitting(f):
        sqes += s
        n += len(lat)
        bins += np.bincount(np.minimum(lat >> _BIN_SHIFT, _BINS - 1).clip(0), minlength=_BINS)
    if not n:
        return 0, sqes, [0 for _ in percentiles]
    below = np.cumsum(bins) - bins  # rank of each bin's smallest value
    wanted = []
    for q in percentiles:
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        wanted.append((lo, min(lo + 1, n - 1), pos - lo))
    ranks = sorted({r for lo, hi, _ in wanted for r in (lo, hi)})
    keep = sorted({int(np.searchsorted(below, r, side="right") - 1) for r in ranks})
    kept = [np.empty(0, dtype=np.int64)]
    for _, lat in _submitting(f):
        b = np.minimum(lat >> _BIN_SHIFT, _BINS - 1).clip(0)
        kept.append(lat[np.isin(b, keep)])
    values = np.sort(np.concatenate(kept))
    start = {k: int(below[k]) for k in keep}  # rank of the first kept value of each bin

    def at(rank: int) -> float:
        k = int(np.searchsorted(below, rank, side="right") - 1)
        offset = int(sum(bins[j] for j in keep if j < k))
        return float(values[offset + rank - start[k]])

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
        n, sqes, (p50, p99) = _submitting_enters(enters, (50, 99))
        if n:
            out = {"nr_enters": n, "mean_sqes_per_enter": round(sqes / n, 3),
                   "enter_latency_p50_ns": p50, "enter_latency_p99_ns": p99, "source": "enters (events)"}
    elif hists.exists():
        h = pq.read_table(hists).to_pandas()
        name = next((n for n in SQES_HISTOGRAMS if (h["name"] == n).any()), SQES_HISTOGRAMS[-1])
        sqes = h[h["name"] == name]
        lat = h[h["name"] == "enter_latency_ns"]
        if len(sqes):
            n = int(sqes["count"].sum())
            out = {"nr_enters": n, "mean_sqes_per_enter": round(float((sqes["low"] * sqes["count"]).sum() / n), 3),
                   "source": f"histograms (aggregate, {name})"}
        if len(lat):
            args = (lat["low"].to_numpy(), lat["high"].to_numpy(), lat["count"].to_numpy())
            out["enter_latency_p50_ns_below"] = _hist_percentile(*args, 50)
            out["enter_latency_p99_ns_below"] = _hist_percentile(*args, 99)
    return out
