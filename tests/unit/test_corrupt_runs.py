"""Run directories that are well-formed JSON and Parquet but not what the run format says: each table is
checked against plugtrace.run.schema when the run is opened, and the run is called corrupt, naming the table,
instead of a DuckDB BinderException, a TypeError or a RecursionError halfway through an analysis."""

import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plugtrace.analysis import Run, Runs, df_diff
from plugtrace.errors import RunDirError
from plugtrace.synthetic import write_run


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("good") / "run", strategy="defer", requests=2000, kernel="events")


def _set(run, table, column, values):
    path = run / "tables" / f"{table}.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(t.schema.get_field_index(column), column, values(t)), path)


def _swap(run):
    tables = run / "tables"
    (tables / "requests.parquet").rename(tables / "x")
    (tables / "submits.parquet").rename(tables / "requests.parquet")
    (tables / "x").rename(tables / "submits.parquet")


DAMAGE = {
    "swapped tables": (_swap, "requests.parquet is corrupt: it has columns the run format does not give 'requests'"),
    "string column": (
        lambda r: _set(r, "submits", "latency_ns", lambda t: pa.array([str(v) for v in t["latency_ns"].to_pylist()])),
        "submits.parquet is corrupt: its column 'latency_ns' is string, where the run format has int64",
    ),
    "foreign column": (
        lambda r: pq.write_table(
            pq.read_table(r / "tables" / "enters.parquet").append_column("colour", pa.array(["red"] * 329)),
            r / "tables" / "enters.parquet",
        ),
        "enters.parquet is corrupt: it has columns the run format does not give 'enters' (colour)",
    ),
    "negative nr_sqes": (
        lambda r: _set(r, "submits", "nr_sqes", lambda t: pa.array([-3] * len(t), pa.int32())),
        "submits.parquet is corrupt: its column 'nr_sqes' holds negative values (-3)",
    ),
    "negative latency": (
        lambda r: _set(r, "block_rq", "latency_ns", lambda t: pa.array([-1] * len(t), pa.int64())),
        "block_rq.parquet is corrupt: its column 'latency_ns' holds negative values (-1)",
    ),
    "meta nested 100k deep": (
        lambda r: (r / "meta.json").write_text("[" * 100_000 + "]" * 100_000),
        "meta.json: nested too deeply",
    ),
}


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request, good, tmp_path):
    damage, message = DAMAGE[request.param]
    run = tmp_path / "damaged"
    shutil.copytree(good, run)
    if request.param == "foreign column":
        assert pq.read_metadata(run / "tables" / "enters.parquet").num_rows == 329
    damage(run)
    return run, message


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "plugtrace", *map(str, args)], capture_output=True, text=True)


def test_diff_and_export_call_the_run_corrupt_naming_the_table(damaged, good, tmp_path):
    run, message = damaged
    for args in (["diff", good, run], ["export", run, "--perfetto", "-o", tmp_path / "t.pftrace"]):
        p = _cli(*args)
        assert p.returncode == 3, (args, p.stderr)
        assert message in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t.pftrace").exists()


def test_the_library_sets_a_corrupt_table_aside_and_says_why(damaged, good):
    run_path, message = damaged
    if "meta.json" in message:
        with pytest.raises(RunDirError, match="nested too deeply"):
            Run.open(run_path)
        return
    run = Run.open(run_path)
    assert run.partial and any(message in why for why in run.corrupt.values())
    with pytest.raises(RunDirError, match="the run directory is corrupt"):
        df_diff(Run.open(good), run)
    runs = Runs([good, run_path])
    assert len(runs.df_compare()) == 2, "every summary runs, without the corrupt table"
    assert len(runs.df_latency_percentiles()) > 0


def test_a_report_shows_a_corrupt_run_and_says_which_table(good, tmp_path):
    run = tmp_path / "corrupt"
    shutil.copytree(good, run)
    DAMAGE["string column"][0](run)
    out = tmp_path / "r.html"
    p = _cli("report", good, run, "--static", "-o", out)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "submits.parquet is corrupt: its column 'latency_ns' is string" in p.stderr
    assert "is corrupt: its column &#39;latency_ns&#39; is string" in out.read_text()
