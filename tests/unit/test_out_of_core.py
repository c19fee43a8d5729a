"""The out-of-core summaries give what the in-memory ones gave, on the sample runs in data/.

The reference here is the in-memory implementation the analysis had before
it went out of core (numpy and pandas over whole tables), kept as it was:
whatever data/ holds, the new code must agree with it. Counts and percentiles
must be equal; means, summed in another order, equal to 1e-12 relative.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from plugtrace.analysis import (
    CAUSES,
    SQES_HISTOGRAMS,
    Run,
    df_batch_sizes,
    df_compare,
    df_deferral_stats,
    df_latency_percentiles,
    df_unplugs,
)

DATA = Path(__file__).resolve().parents[2] / "data"
RUNS = sorted(p.name for p in DATA.iterdir() if (p / "meta.json").exists())


# --- the in-memory reference ------------------------------------------------------------------------------------


def _buckets(name, low, high, count):
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


def _histogram(run, names):
    for name in names:
        h = run.table("histograms")
        h = h[h["name"] == name].sort_values("low", ignore_index=True)
        if not h.empty:
            return h
    return None


def ref_distribution(run, name, table, column, histograms):
    if table is None:
        h = _histogram(run, histograms)
        h = h[h["high"] > 1]
        return _buckets(name, h["low"], h["high"], h["count"])
    values = run.table(table, [column])[column].to_numpy()
    counts = np.bincount(values[values > 0]) if (values > 0).any() else np.zeros(0, np.int64)
    present = np.flatnonzero(counts)
    return _buckets(name, present, present + 1, counts[present])


def _row(metric, source, values, qs):
    row = {"metric": metric, "source": source, "count": len(values), "approximate": False}
    row["mean_ns"] = float(values.mean()) if len(values) else np.nan
    row.update(
        {f"p{q:g}_ns": float(v) for q, v in zip(qs, np.percentile(values, qs) if len(values) else [np.nan] * len(qs))}
    )
    row["max_ns"] = float(values.max()) if len(values) else np.nan
    return row


def ref_latency(run, qs=(50.0, 90.0, 99.0, 99.9)):
    rows = []
    if run.has("submits"):
        rows.append(_row("submit", "submits", run.table("submits")["latency_ns"].to_numpy(), qs))
    if run.has("enters"):
        e = run.table("enters")
        rows.append(_row("enter", "enters", e.loc[e["to_submit"] > 0, "latency_ns"].to_numpy(), qs))
    if run.has("requests"):
        t = run.table("requests")
        queue, submit, complete = (t[c].to_numpy() for c in ("queue_ns", "submit_ns", "complete_ns"))
        submitted = submit >= 0
        completed = submitted & (complete >= 0)
        rows += [
            _row("request_wait", "requests", (submit - queue)[submitted], qs),
            _row("request_service", "requests", (complete - submit)[completed], qs),
            _row("request_total", "requests", (complete - queue)[completed], qs),
        ]
    if run.has("block_rq"):
        rows.append(_row("block", "block_rq", run.table("block_rq")["latency_ns"].to_numpy(), qs))
    done = {r["metric"] for r in rows}
    for metric, hist in (("enter", "enter_latency_ns"), ("block", "block_latency_ns")):
        h = _histogram(run, (hist,)) if run.has("histograms") and metric not in done else None
        if h is not None:
            counts, high = h["count"].to_numpy(), h["high"].to_numpy().astype(np.float64)
            cum, total = np.cumsum(counts), int(counts.sum())
            row = {
                "metric": metric,
                "source": "histogram",
                "count": total,
                "approximate": True,
                "mean_ns": float(((h["low"] + h["high"]) / 2 * counts).sum() / total),
            }
            row.update(
                {f"p{q:g}_ns": float(high[min(int(np.searchsorted(cum, q / 100 * total)), len(high) - 1)]) for q in qs}
            )
            row["max_ns"] = float(high[-1])
            rows.append(row)
    return pd.DataFrame(rows)


def ref_deferral_stats(run):
    t = run.table("requests")
    t = t[~t["sync"].astype(bool) & (t["submit_ns"] >= 0)]
    owner, device = t["section_owner"].to_numpy(), t["device"].to_numpy()
    other = (owner >= 0) & (owner != device)
    by_thread = t["deferred_by_thread"].to_numpy() >= 0
    codes = np.where(by_thread, 3, np.where(owner < 0, 0, np.where(other, 2, 1)))
    wait = (t["submit_ns"] - t["queue_ns"]).to_numpy()
    usual = ~other & ~by_thread
    baseline = float(np.median(wait[usual])) if usual.any() else 0.0
    d = pd.DataFrame(
        {
            "cause": pd.Categorical.from_codes(codes, categories=list(CAUSES)),
            "wait_ns": wait,
            "extra_wait_ns": wait - baseline,
        }
    )
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


def ref_iops(run):
    if "iops" in run.summary or not run.has("requests"):  # the run's own number, as record printed it
        return float(run.summary.get("iops", np.nan))
    t = run.arrow("requests", ["queue_ns", "complete_ns"])
    complete = t.column("complete_ns").to_numpy()
    done = complete[complete >= 0]
    span_s = (done.max() - pc.min(t.column("queue_ns")).as_py()) / 1e9 if len(done) else 0
    return 0.0 if not len(done) else (len(done) / span_s if span_s > 0 else np.nan)


# --- the comparisons ------------------------------------------------------------------------------------------


def _compare(got, expected):
    assert list(got.columns) == list(expected.columns)
    exact = [c for c in expected.columns if "mean" not in c and "fraction" not in c]
    pd.testing.assert_frame_equal(got[exact], expected[exact], check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-12)


def _sources(run):
    sources = {"app": ("submits", "nr_sqes"), "kernel": ("enters", "to_submit")}
    found = [s for s, (t, _) in sources.items() if run.has(t)]
    if run.has("histograms") and _histogram(run, SQES_HISTOGRAMS) is not None:
        found.append("histogram")
    return found


@pytest.mark.parametrize("name", RUNS)
def test_batch_sizes_equal_the_in_memory_ones(name):
    run = Run.open(DATA / name)
    sources = {"app": ("submits", "nr_sqes"), "kernel": ("enters", "to_submit"), "histogram": (None, None)}
    for source in _sources(run):
        table, column = sources[source]
        _compare(df_batch_sizes(run, source=source), ref_distribution(run, "nr_sqes", table, column, SQES_HISTOGRAMS))
    if run.has("block_unplug"):
        _compare(
            df_unplugs(run, source="kernel"), ref_distribution(run, "nr_rq", "block_unplug", "nr_rq", ("unplug_nr_rq",))
        )


@pytest.mark.parametrize("name", RUNS)
def test_latency_percentiles_and_deferral_stats_equal_the_in_memory_ones(name):
    run = Run.open(DATA / name)
    _compare(df_latency_percentiles(run), ref_latency(run))
    if run.has("requests"):
        _compare(df_deferral_stats(run), ref_deferral_stats(run))


def test_compare_equals_the_in_memory_numbers():
    runs = [Run.open(DATA / name) for name in RUNS]
    got = df_compare(runs).set_index("run")
    for run in runs:
        assert got.loc[run.name, "iops"] == pytest.approx(ref_iops(run), rel=1e-12)
        if run.has("submits"):
            sizes = ref_distribution(run, "nr_sqes", "submits", "nr_sqes", ())
            assert got.loc[run.name, "mean_sqes_per_submit"] == pytest.approx(
                float((sizes["nr_sqes"] * sizes["fraction"]).sum()), rel=1e-12
            )
            lat = ref_latency(run, (50.0, 99.0)).set_index("metric")
            assert got.loc[run.name, "submit_p50_ns"] == lat.loc["submit", "p50_ns"]
            assert got.loc[run.name, "submit_p99_ns"] == lat.loc["submit", "p99_ns"]
        if run.has("requests"):
            other = ref_deferral_stats(run).set_index("cause").loc["other_device_section"]
            assert got.loc[run.name, "other_device_deferrals"] == other["count"]
