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


def kernel_summary(run_dir: str | Path) -> dict:
    """io_uring_enter counts and latencies seen by eBPF, from `enters` (exact) or
    the in-kernel `histograms` (latency percentiles as log2 bucket bounds).
    Empty when neither table was written. Only calls that submitted count."""
    tables = Path(run_dir) / "tables"
    enters, hists = tables / "enters.parquet", tables / "histograms.parquet"
    out: dict = {}
    if enters.exists():
        # in row-group batches: a long events-mode run has millions of enters, and the
        # recorder's memory must stay flat to the end; only the latencies are kept
        f = pq.ParquetFile(enters)
        lat = np.empty(f.metadata.num_rows, dtype=np.int64)
        n, sqes = 0, 0
        for batch in f.iter_batches(batch_size=1 << 20, columns=["to_submit", "ret", "latency_ns"]):
            batch = batch.filter(pc.greater(batch.column(0), 0))
            sqes += int(pc.sum(batch.column(1)).as_py() or 0)
            chunk = batch.column(2).to_numpy(zero_copy_only=False)
            lat[n:n + len(chunk)] = chunk
            n += len(chunk)
        if n:
            p50, p99 = (int(q) for q in np.percentile(lat[:n], [50, 99], overwrite_input=True))
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
