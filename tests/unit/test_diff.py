"""`df_diff` and `plugtrace diff`: what changed between runs, beyond noise or not, and --fail-if for CI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plugtrace.analysis import Run, df_diff
from plugtrace.analysis.diff import _ks
from plugtrace.synthetic import write_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("diff")
    made = {}
    for name, spec in {
        "defer": dict(strategy="defer"),
        "defer-again": dict(strategy="defer", seed=2),
        "immediate": dict(strategy="immediate"),
    }.items():
        made[name] = write_run(base / name, requests=4000, devices=3, **spec)
    for side in ("main", "branch"):  # two directories of runs with the same names
        for strategy in ("defer", "immediate"):
            write_run(base / side / strategy, strategy=strategy, requests=2000, seed=3 if side == "main" else 4)
    made["base"] = base
    return made


def test_a_run_against_itself_changed_nothing(runs):
    diff = df_diff(Run.open(runs["defer"]), Run.open(runs["defer"]))
    assert not diff["beyond_noise"].any()
    assert (diff.loc[diff["test"] == "ks", "statistic"] == 0).all()


def test_immediate_against_defer_changed_the_batches(runs):
    diff = df_diff(Run.open(runs["defer"]), Run.open(runs["immediate"])).set_index("metric")
    assert diff.loc["mean_sqes_per_submit", "b"] == 1.0
    assert diff.loc["mean_sqes_per_submit", "change_pct"] < -50
    assert diff.loc["mean_sqes_per_submit", "beyond_noise"]
    assert diff.loc["batch_size_distribution", "beyond_noise"]


def test_two_seeds_of_one_workload_stay_within_noise_on_the_mean(runs):
    diff = df_diff(Run.open(runs["defer"]), Run.open(runs["defer-again"])).set_index("metric")
    assert abs(diff.loc["mean_sqes_per_submit", "change_pct"]) < 10
    assert not diff.loc["mean_sqes_per_submit", "beyond_noise"]


def test_ks_distance_equals_the_largest_gap_of_the_raw_cdfs():
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 30, 5000), rng.integers(3, 33, 4000)
    import pandas as pd

    d, p = _ks(pd.Series(a).value_counts(), pd.Series(b).value_counts())
    grid = np.arange(0, 40)
    expected = np.abs(
        np.searchsorted(np.sort(a), grid, "right") / len(a) - np.searchsorted(np.sort(b), grid, "right") / len(b)
    ).max()
    assert d == pytest.approx(expected) and p < 1e-10
    same = pd.Series(a).value_counts()
    assert _ks(same, same) == (0.0, 1.0)


def _diff(*args):
    return subprocess.run([sys.executable, "-m", "plugtrace", "diff", *map(str, args)], capture_output=True, text=True)


def test_fail_if_sets_the_exit_status(runs):
    worse = _diff(runs["defer"], runs["immediate"], "--fail-if", "mean_sqes_per_submit < -10%")
    assert worse.returncode == 1 and "FAILS" in worse.stdout
    fine = _diff(
        runs["defer"], runs["defer"], "--fail-if", "mean_sqes_per_submit < -10%", "--fail-if", "submit_p99_ns > 1000"
    )
    assert fine.returncode == 0, fine.stderr
    bad = _diff(runs["defer"], runs["defer"], "--fail-if", "batch_size < 3")
    assert bad.returncode == 2 and "no number named 'batch_size'" in bad.stderr


def test_directories_of_runs_are_compared_by_name(runs, tmp_path):
    out = _diff(runs["base"] / "main", runs["base"] / "branch", "--csv", tmp_path / "d.csv")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" -> ") == 2
    import pandas as pd

    table = pd.read_csv(tmp_path / "d.csv")
    assert set(table["a_run"].str.rsplit("/", n=1).str[-1]) == {"defer", "immediate"}


def test_diff_compares_the_iops_each_run_recorded(tmp_path):
    """One number for a run's IOPS: the one its summary holds (what record printed, what the report shows)."""
    import json
    import shutil

    run = tmp_path / "defer"
    shutil.copytree(Path(__file__).resolve().parents[2] / "data" / "defer", run)
    meta = json.loads((run / "meta.json").read_text())
    meta["summary"]["iops"] = 80682.9
    (run / "meta.json").write_text(json.dumps(meta))
    diff = df_diff(Run.open(run), Run.open(run)).set_index("metric")
    assert diff.loc["iops", "a"] == diff.loc["iops", "b"] == 80682.9
    assert "80,683" in _diff(run, run).stdout
