"""`df_diff`: two runs compared number by number and distribution by distribution, with noise and tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UsageError
from ..run import Run
from .common import _submit_source, scipy_stats
from .runs import Runs
from .timeline import _cdf_bins

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

    Returns (D, p-value), the p-value as `scipy_stats().ks_2samp` gives it for large samples
    (the Kolmogorov distribution at the effective sample size), computed from the counts so
    a run of millions of submits is never expanded into one value per submit. Keys are exact
    values or shared bins; on bins D can only be smaller than on values, so the test is
    conservative.
    """
    keys = a.index.union(b.index).sort_values()
    ca, cb = a.reindex(keys, fill_value=0).to_numpy(float), b.reindex(keys, fill_value=0).to_numpy(float)
    na, nb = ca.sum(), cb.sum()
    if not na or not nb:
        return np.nan, np.nan
    d = float(np.abs(np.cumsum(ca) / na - np.cumsum(cb) / nb).max())
    effective_n = max(1, round(na * nb / (na + nb)))
    return d, float(np.clip(scipy_stats().kstwo.sf(d, effective_n), 0, 1))


def _welch(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int) -> float:
    """Two-sided p-value of Welch's t-test that two means are equal, from the two samples' statistics."""
    se = np.sqrt(var_a / n_a + var_b / n_b) if n_a and n_b else np.nan
    if not se or np.isnan(se):
        return 0.0 if se == 0 and mean_a != mean_b else 1.0 if se == 0 else np.nan
    result = scipy_stats().ttest_ind_from_stats(
        mean_a, math.sqrt(var_a), n_a, mean_b, math.sqrt(var_b), n_b, equal_var=False
    )
    return float(result.pvalue)


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
