"""Every writer of a table writes the columns and types of `plugtrace.schema`."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plugtrace import synthetic
from plugtrace.schema import LABEL, TABLES
from plugtrace.store import conform

DATA = Path(__file__).resolve().parents[2] / "data"


def _tables(run: Path):
    for path in sorted((run / "tables").glob("*.parquet")):
        yield path.stem, pq.read_schema(path)


def test_the_recorded_sample_runs_have_the_schema():
    runs = sorted(p.parent for p in DATA.glob("*/meta.json"))
    assert runs, "no sample runs in data/"
    seen = set()
    for run in runs:
        for name, schema in _tables(run):
            assert name in TABLES, f"{run.name}: table {name} is not in plugtrace.schema"
            assert schema.remove_metadata() == TABLES[name], f"{run.name}/{name}"
            seen.add(name)
    # the engine's log and the tracer's usual tables are all among them
    assert {"requests", "submits", "sections", "handlers", "uring_requests", "histograms"} <= seen


def test_a_synthetic_run_has_the_schema(tmp_path):
    run = synthetic.write_run(tmp_path / "syn", synthetic.SyntheticSpec(requests=2000, interleave=0.2))
    found = dict(_tables(run))
    assert {"requests", "submits", "sections", "uring_requests", "markers", "enters", "block_rq"} <= set(found)
    for name, schema in found.items():
        assert schema.remove_metadata() == TABLES[name], name


def test_the_tracers_probe_columns_are_those_of_the_schema():
    from plugtrace.tracing.probes import PROBES

    for spec in PROBES:
        if not spec.columns:
            continue
        labelled = {column for column, _ in spec.labels}
        expected = TABLES[spec.table]
        assert [n for n, _ in spec.columns] == expected.names, spec.table
        for column, dtype in spec.columns:
            want = expected.field(column).type
            assert (want == LABEL) if column in labelled else (dtype == want), f"{spec.table}.{column}"


def test_conform_casts_and_refuses_other_columns():
    t = pa.table({"tid": [2], "ts_ns": [1], "event": ["submit"], "user_data": [5], "opcode": [1], "res": [0]})
    assert conform("uring_requests", t).schema == TABLES["uring_requests"]
    assert conform("a_table_of_the_future", t) is t
    with pytest.raises(ValueError, match="not those of plugtrace.schema"):
        conform("uring_requests", t.drop_columns(["res"]))
    with pytest.raises(pa.ArrowInvalid):
        conform("uring_requests", t.set_column(3, "user_data", pa.array([-1])))  # no silent wrap-around
