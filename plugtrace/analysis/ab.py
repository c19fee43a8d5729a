"""`plugtrace qemu --compare A B --repeats N`: an A/B of two QEMUs a developer can trust.

The same guest load runs on QEMU A and QEMU B alternately (A B, then B A, ...: a drift of the
host over the rounds falls on both), N times each, each a run directory of its own under OUT/A
and OUT/B. Per metric, the two means with 95% confidence intervals (Student's t over the N runs)
and whether they differ: the 95% interval of the difference of the means (Welch's, with the
Welch-Satterthwaite degrees of freedom) excludes zero. The result is OUT/compare.json;
`plugtrace diff OUT/A OUT/B --fail-if ...` reads it, so a CI job can gate on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..logs import logger
from ..run import Run
from .common import scipy_stats
from .qemu import df_qemu_arrivals
from .runs import df_compare, df_latency_percentiles

#: the metrics of one run, and what each is (all higher-is-more; units in the name)
COMPARE_METRICS = {
    "iops": "the guest workload's IOPS, by its own clock",
    "mean_sqes_per_submit": "mean SQEs per submitting io_uring_enter() (the kernel's count)",
    "requests_per_handler": "mean requests popped per virtio_blk_handle_vq() run",
    "poll_share": "handler runs started by the iothread's polling, of all (the rest: guest kicks)",
    "notifications_per_completion": "guest notifications per completed guest request",
    "wait_p50_ns": "median wait of a request from luring_co_submit() to its io_uring_enter()",
    "block_p50_ns": "median block-layer latency of QEMU's requests on the device",
    "block_p99_ns": "99th percentile of the same",
}
RESULT = "compare.json"


def t975(df: float) -> float:
    """Student's t quantile for a two-sided 95% interval at `df` degrees of freedom (Welch's `df` is
    rounded down: the interval is never too narrow)."""
    if not df >= 1:
        return math.inf
    return float(scipy_stats().t.ppf(0.975, math.floor(df)))


def run_metrics(path: Path) -> dict[str, float]:
    """COMPARE_METRICS of one QEMU run directory (NaN where the run cannot say)."""
    run = Run.open(path)
    out = dict.fromkeys(COMPARE_METRICS, math.nan)
    out["iops"] = float(run.summary.get("iops", math.nan))
    out["mean_sqes_per_submit"] = float(df_compare([run])["mean_sqes_per_submit"].iloc[0])
    arrivals = df_qemu_arrivals([run])
    if len(arrivals):
        for key in ("requests_per_handler", "poll_share", "notifications_per_completion", "wait_p50_ns"):
            out[key] = float(arrivals[key].iloc[0])
    try:
        lat = df_latency_percentiles(run)
    except Exception:  # noqa: BLE001 - a run without block latencies says NaN, as the others
        lat = None
    if lat is not None:
        block = lat[lat["metric"] == "block"]
        if len(block):
            out["block_p50_ns"], out["block_p99_ns"] = float(block["p50_ns"].iloc[0]), float(block["p99_ns"].iloc[0])
    return out


def summarise(a: list[float], b: list[float]) -> dict[str, float | bool | int]:
    """Means of `a` and `b` with 95% intervals, the difference's 95% interval and whether it excludes 0."""
    xa, xb = (np.asarray([v for v in x if not math.isnan(v)], dtype=float) for x in (a, b))
    row: dict[str, float | bool | int] = {"n_a": len(xa), "n_b": len(xb)}
    for name, x in (("a", xa), ("b", xb)):
        mean = float(x.mean()) if len(x) else math.nan
        half = t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else math.nan
        row.update({name: mean, f"{name}_ci_low": mean - half, f"{name}_ci_high": mean + half})
    if len(xa) < 2 or len(xb) < 2:
        row.update(change=math.nan, change_pct=math.nan, change_ci_low=math.nan, change_ci_high=math.nan, differ=False)
        return row
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1)) if se else math.inf
    change = float(row["b"]) - float(row["a"])
    half = t975(df) * se if se else 0.0
    row.update(
        change=change,
        change_pct=change / abs(float(row["a"])) * 100 if row["a"] else math.nan,
        change_ci_low=change - half,
        change_ci_high=change + half,
        differ=bool(change - half > 0 or change + half < 0),
    )
    return row


def run_compare(
    qemus: list[str], repeats: int, out: Path, record: Callable[[str, Path], dict | None]
) -> dict[str, Any] | None:
    """Record `repeats` runs of each of the two `qemus` alternately under `out` and write the result
    (`out/RESULT`); returns it, or None when a recording was interrupted (the runs made are kept)."""
    labels = ("A", "B")
    runs: dict[str, list[str]] = {label: [] for label in labels}
    for i in range(repeats):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for k in order:
            path = out / labels[k] / f"r{i + 1}"
            logger.info(f"plugtrace: --compare run {i + 1}/{repeats} of {labels[k]} ({qemus[k]}) -> {path}")
            if record(qemus[k], path) is None:
                return None
            runs[labels[k]].append(str(path))
    values = {label: [run_metrics(Path(p)) for p in paths] for label, paths in runs.items()}
    metrics = [
        {"metric": m, **summarise([v[m] for v in values["A"]], [v[m] for v in values["B"]])} for m in COMPARE_METRICS
    ]
    result = {"a": qemus[0], "b": qemus[1], "repeats": repeats, "runs": runs, "metrics": metrics}
    (out / RESULT).write_text(json.dumps(result, indent=2, allow_nan=True))
    return result


def format_result(result: dict) -> str:
    def num(v: float) -> str:
        return "–" if v is None or math.isnan(v) else f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"

    lines = [
        f"A = {result['a']}, B = {result['b']}, {result['repeats']} runs each, alternating; means with 95% intervals",
        f"{'metric':30} {'A':>32} {'B':>32} {'change %':>9}  verdict",
    ]
    for r in result["metrics"]:
        a = f"{num(r['a'])} [{num(r['a_ci_low'])}, {num(r['a_ci_high'])}]"
        b = f"{num(r['b'])} [{num(r['b_ci_low'])}, {num(r['b_ci_high'])}]"
        pct = "–" if math.isnan(r["change_pct"]) else f"{r['change_pct']:+.1f}%"
        lines.append(f"{r['metric']:30} {a:>32} {b:>32} {pct:>9}  {'DIFFER' if r['differ'] else 'no difference'}")
    return "\n".join(lines)


def result_of(a: str, b: str) -> dict | None:
    """The compare result whose A and B run directories `a` and `b` are, or None."""
    pa, pb = Path(a).resolve(), Path(b).resolve()
    if pa.parent != pb.parent or (pa.name, pb.name) != ("A", "B") or not (pa.parent / RESULT).is_file():
        return None
    return json.loads((pa.parent / RESULT).read_text())
