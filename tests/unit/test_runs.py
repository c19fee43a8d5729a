"""Many runs at once (`Runs`), the out-of-core engine's exactness, and per-event reads in bounded pieces."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plugtrace.analysis import (
    Run,
    Runs,
    df_batch_sizes,
    df_compare,
    df_deferral_stats,
    df_deferrals,
    df_device_stats,
    df_latency_cdf,
    df_latency_percentiles,
    df_requests,
    df_sqes_over_time,
    df_submits,
    df_wait_histogram,
)
from plugtrace.errors import RunDirError
from plugtrace.query import LocalEngine, TableFile, percentiles
from plugtrace.synthetic import write_run

SPECS = {
    "defer-qd8": dict(strategy="defer", iodepth=8, interleave=0.2),
    "defer-qd32": dict(strategy="defer", iodepth=32, interleave=0.2),
    "immediate-qd32": dict(strategy="immediate", iodepth=32),
    "aggregate": dict(strategy="defer", kernel="aggregate"),
    "fio": dict(strategy="immediate", app=False, kernel="events"),
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep")
    for i, (name, spec) in enumerate(SPECS.items()):
        write_run(base / name, requests=3000, devices=3, seed=i + 1, **spec)
    (base / "not-a-run").mkdir()
    return base


def test_runs_from_a_directory_a_glob_and_a_list_are_the_same(sweep):
    by_dir = Runs(sweep)
    assert sorted(by_dir.labels) == sorted(SPECS)
    assert sorted(Runs(str(sweep / "defer-*")).labels) == ["defer-qd32", "defer-qd8"]
    listed = Runs([sweep / "fio", Run.open(sweep / "aggregate")])
    assert listed.labels == ["fio", "aggregate"]
    with pytest.raises(RunDirError, match="no run directories"):
        Runs(str(sweep / "nothing-*"))


def test_meta_has_each_runs_configuration_as_columns(sweep):
    meta = Runs(sweep).meta().set_index("run")
    assert meta.loc["defer-qd8", "iodepth"] == 8
    assert meta.loc["immediate-qd32", "strategy"] == "immediate"
    assert meta.loc["fio", "summary.nr_submits"] == Run.open(sweep / "fio").summary["nr_submits"]


def test_one_query_over_all_runs_equals_each_run_alone(sweep):
    runs = Runs(sweep)
    stacked = runs.df_batch_sizes()
    for label, run in zip(runs.labels, runs):
        alone = df_batch_sizes(run)
        mine = stacked[stacked["run"] == label].drop(columns="run").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)
    lat = runs.df_latency_percentiles()
    for label, run in zip(runs.labels, runs):
        pd.testing.assert_frame_equal(
            lat[lat["run"] == label].drop(columns="run").reset_index(drop=True), df_latency_percentiles(run)
        )
    stats = runs.df_deferral_stats()
    assert set(stats["run"]) == {"defer-qd8", "defer-qd32", "immediate-qd32", "aggregate"}  # fio has no app log
    pd.testing.assert_frame_equal(df_compare(runs), df_compare(list(runs)))


def test_summaries_equal_numpy_on_the_whole_tables(sweep):
    run = Run.open(sweep / "defer-qd32")
    req = run.table("requests")
    kept = req[~req["sync"] & (req["submit_ns"] >= 0)]
    wait = (kept["submit_ns"] - kept["queue_ns"]).to_numpy()
    other = (kept["section_owner"] >= 0) & (kept["section_owner"] != kept["device"])
    stats = df_deferral_stats(run).set_index("cause")
    np.testing.assert_array_equal(
        stats.loc["other_device_section", ["p50_wait_ns", "p99_wait_ns"]].to_numpy(float),
        np.percentile(wait[other.to_numpy()], [50, 99]),
    )
    assert stats.loc["other_device_section", "count"] == other.sum() > 0
    lat = df_latency_percentiles(run, (1, 50, 99.9)).set_index("metric")
    sub = run.table("submits")["latency_ns"].to_numpy()
    np.testing.assert_array_equal(
        lat.loc["submit", ["p1_ns", "p50_ns", "p99.9_ns"]].to_numpy(float), np.percentile(sub, [1, 50, 99.9])
    )
    devices = df_device_stats(run).set_index("device")
    for device, rows in kept.groupby("device"):
        w = (rows["submit_ns"] - rows["queue_ns"]).to_numpy()
        assert devices.loc[device, "count"] == len(w)
        assert devices.loc[device, "p99_wait_ns"] == np.percentile(w, 99)
        assert devices.loc[device, "other_device_deferrals"] == other[rows.index].sum()
    assert devices["count"].sum() == len(kept)


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_numpys_exactly_for_awkward_data(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    pieces = [
        rng.lognormal(8, 3, n).astype(np.int64),
        -rng.integers(0, 10**12, n // 7),
        np.full(n // 3, 42),
        rng.integers(0, 2**62, 3),
    ]
    values = np.concatenate(pieces)
    rng.shuffle(values)
    group = rng.integers(0, 3, len(values))
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"v": values, "g": group}), path, row_group_size=997)
    qs = [0, 0.1, 25, 50, 99, 99.99, 100]
    got = percentiles(LocalEngine(threads=2), [TableFile(0, str(path))], "t", "v", qs, by={"g": "g"})
    for row in got.to_dict("records"):
        mine = values[group == row["g"]]
        np.testing.assert_array_equal([row[f"p{q:g}"] for q in qs], np.percentile(mine, qs))
        assert (row["count"], row["min"], row["max"]) == (len(mine), mine.min(), mine.max())


def test_time_bins_and_cdf_count_every_submit(sweep):
    run = Run.open(sweep / "defer-qd32")
    submits = df_submits(run)
    bins = df_sqes_over_time(run, bins=50)
    assert bins["nr_submits"].sum() == len(submits) and len(bins) <= 50
    assert bins["max_nr_sqes"].max() == submits["nr_sqes"].max()
    assert (bins["mean_nr_sqes"] * bins["nr_submits"]).sum() == pytest.approx(submits["nr_sqes"].sum())
    pd.testing.assert_frame_equal(df_sqes_over_time(submits, bins=50, start_ns=run.start_ns), bins)
    cdf = df_latency_cdf(run)
    assert cdf["fraction"].iloc[-1] == 1.0 and cdf["latency_ns"].iloc[-1] == submits["latency_ns"].max()
    lat = np.sort(submits["latency_ns"].to_numpy())
    for value, fraction in cdf.sample(10, random_state=1).itertuples(index=False):
        assert fraction == np.searchsorted(lat, value, side="right") / len(lat)


def test_wait_histogram_from_a_run_equals_that_from_its_deferrals(sweep):
    run = Run.open(sweep / "defer-qd8")
    hist, stats = df_wait_histogram(run)
    deferrals = df_deferrals(run)
    assert hist["count"].sum() == len(deferrals)
    by_frame = df_wait_histogram(deferrals)
    pd.testing.assert_frame_equal(hist, by_frame[0])
    pd.testing.assert_frame_equal(stats, by_frame[1])


def test_per_event_frames_take_a_window_or_a_sample(sweep):
    run = Run.open(sweep / "defer-qd32")
    everything = df_requests(run, kernel=False)
    t_ms = (everything["queue_ns"] - run.start_ns) / 1e6
    window = df_requests(run, window_ms=(1.0, 3.0))
    assert len(window) == ((t_ms >= 1.0) & (t_ms < 3.0)).sum() > 0
    assert "kernel_submit_ns" not in window
    sample = df_submits(run, sample=0.25)
    assert 0.15 < len(sample) / len(df_submits(run)) < 0.35
    pd.testing.assert_frame_equal(sample, df_submits(run, sample=0.25))  # the same sample each time
    with pytest.raises(ValueError, match="fraction"):
        df_submits(run, sample=1.5)


def test_sql_over_all_runs(sweep):
    runs = Runs(sweep)
    got = runs.sql("SELECT run, count(*) AS submits FROM submits GROUP BY run ORDER BY run")
    for label, n in got.itertuples(index=False):
        assert n == len(df_submits(Run.open(sweep / label), source="app"))
    joined = runs.sql("SELECT r.iodepth, count(*) AS n FROM requests JOIN runs AS r USING (run) GROUP BY 1 ORDER BY 1")
    assert list(joined["iodepth"]) == [8, 32]
