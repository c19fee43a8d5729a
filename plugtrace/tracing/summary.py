"""Headline numbers of the kernel-side tables, for the end of a recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq


def _hist_percentile(low: np.ndarray, high: np.ndarray, count: np.ndarray, q: float) -> int:
    """Upper bound (exclusive) of the bucket holding the q-th percentile."""
    order = np.argsort(low)
    cum = np.cumsum(count[order])
    i = int(np.searchsorted(cum, cum[-1] * q / 100.0))
    return int(high[order][min(i, len(cum) - 1)])


def sqes_histogram(names) -> str:
    """Which in-kernel histogram holds SQEs per submitting io_uring_enter(): the
    enters probe's (from the syscall's result) when it ran, else uring_requests'."""
    return "enter_nr_sqes" if "enter_nr_sqes" in set(names) else "submit_nr_sqes"


def kernel_summary(run_dir: str | Path) -> dict:
    """io_uring_enter counts and latencies seen by eBPF, from `enters` (exact) or
    the in-kernel `histograms` (latency percentiles as log2 bucket bounds).
    Empty when neither table was written. Only calls that submitted count."""
    tables = Path(run_dir) / "tables"
    enters, hists = tables / "enters.parquet", tables / "histograms.parquet"
    out: dict = {}
    if enters.exists():
        t = pq.read_table(enters, columns=["to_submit", "ret", "latency_ns"])
        t = t.filter(pc.greater(t.column("to_submit"), 0))
        ret = t.column("ret").to_numpy()
        lat = t.column("latency_ns").to_numpy()
        if len(ret):
            out = {"nr_enters": int(len(ret)), "mean_sqes_per_enter": round(float(ret.mean()), 3),
                   "enter_latency_p50_ns": int(np.percentile(lat, 50)),
                   "enter_latency_p99_ns": int(np.percentile(lat, 99)), "source": "enters (events)"}
    elif hists.exists():
        h = pq.read_table(hists).to_pandas()
        name = sqes_histogram(h["name"])
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
