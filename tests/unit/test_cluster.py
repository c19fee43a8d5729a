"""The across-run summaries on a Dask cluster equal the embedded engine's.

A local cluster of two worker processes reads the same run directories; each
task runs a summary's query on a piece of one Parquet file (pieces made small
here, so every table is split across tasks and workers).
"""

import pandas as pd
import pytest

from plugtrace.analysis import Runs
from plugtrace.synthetic import write_run

distributed = pytest.importorskip("distributed", reason="the cluster extra (dask[distributed]) is not installed")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster-runs")
    for i, (strategy, interleave) in enumerate((("defer", 0.3), ("immediate", 0.0), ("device-plug", 0.1))):
        write_run(
            base / strategy,
            strategy=strategy,
            interleave=interleave,
            requests=20_000,
            devices=3,
            seed=i + 1,
            chunk_requests=2_000,
        )
    write_run(base / "aggregate", strategy="defer", kernel="aggregate", requests=5_000)
    return base


@pytest.mark.slow
def test_cluster_summaries_equal_the_embedded_engine(run_dir):
    from plugtrace.query import DaskEngine

    local = Runs(run_dir)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        engine = DaskEngine(client, rows_per_piece=5_000)
        on_cluster = Runs(run_dir, engine=engine)
        with distributed.get_task_stream(client) as tasks:
            for name in (
                "df_batch_sizes",
                "df_latency_percentiles",
                "df_deferral_stats",
                "df_device_stats",
                "df_compare",
                "df_unplugs",
            ):
                pd.testing.assert_frame_equal(
                    getattr(on_cluster, name)(), getattr(local, name)(), check_exact=False, rtol=1e-12, obj=name
                )
    # the work ran on both workers, in pieces: more tasks than the runs have files
    files = sum(len(local.files(t)) for t in ("submits", "enters", "requests", "block_unplug", "histograms"))
    assert len(tasks.data) > files
    assert len({t["worker"] for t in tasks.data}) == 2
