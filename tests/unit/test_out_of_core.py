"""The out-of-core summaries give what the in-memory ones gave, on the sample runs in data/.

tests/unit/golden/ holds the outputs of the summarising df_* functions as the
in-memory implementation (numpy and pandas over whole tables) computed them on
data/ before analysis moved to plugtrace.query. Counts and percentiles must be
equal; means, summed in another order, equal to 1e-12 relative.
"""

from pathlib import Path

import pandas as pd
import pytest

from plugtrace.analysis import (
    Run,
    df_batch_sizes,
    df_compare,
    df_deferral_stats,
    df_latency_percentiles,
    df_unplugs,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "unit" / "golden"
DATA = ROOT / "data"


def _per_run_goldens() -> list[Path]:
    """Goldens of one run each (RUN.FUNCTION[.SOURCE].parquet); all.df_compare has its own test."""
    return sorted(p for p in GOLDEN.glob("*.df_*.parquet") if not p.name.startswith("all."))


def _compare(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    exact = [c for c in expected.columns if "mean" not in c and "fraction" not in c]
    pd.testing.assert_frame_equal(got[exact], expected[exact], check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-12)


FUNCTIONS = {"df_batch_sizes": df_batch_sizes, "df_unplugs": df_unplugs,
             "df_latency_percentiles": df_latency_percentiles, "df_deferral_stats": df_deferral_stats}


@pytest.mark.parametrize("golden", _per_run_goldens(), ids=lambda p: p.stem)
def test_summaries_equal_the_in_memory_ones(golden):
    run_name, function, *source = golden.stem.split(".")
    run = Run.open(DATA / run_name)
    kwargs = {"source": source[0]} if source else {}
    _compare(FUNCTIONS[function](run, **kwargs), pd.read_parquet(golden))


def test_compare_equals_the_in_memory_one():
    runs = [Run.open(p) for p in sorted(DATA.iterdir()) if p.is_dir()]
    _compare(df_compare(runs), pd.read_parquet(GOLDEN / "all.df_compare.parquet"))
