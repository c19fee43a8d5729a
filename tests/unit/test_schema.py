"""Every writer of a table writes the columns and types of `plugtrace.run.schema`."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plugtrace import synthetic
from plugtrace.run import conform
from plugtrace.run.schema import ADDED_COLUMNS, LABEL, TABLES

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
            assert name in TABLES, f"{run.name}: table {name} is not in plugtrace.run.schema"
            wanted = TABLES[name]
            for column in ADDED_COLUMNS.get(name, {}):  # a sample recorded before the column was added
                if column not in schema.names:
                    wanted = wanted.remove(wanted.get_field_index(column))
            assert schema.remove_metadata() == wanted, f"{run.name}/{name}"
            seen.add(name)
    # the engine's log and the tracer's usual tables are all among them
    assert {"requests", "submits", "sections", "handlers", "uring_requests", "histograms"} <= seen


def test_a_run_recorded_before_a_column_was_added_reads_with_its_value():
    from plugtrace.run import Run

    assert "nr_guest_requests" not in pq.read_schema(DATA / "defer" / "tables" / "requests.parquet").names
    run = Run.open(DATA / "defer")
    assert not run.corrupt
    req = run.table("requests")
    assert list(req.columns) == TABLES["requests"].names
    assert (req["nr_guest_requests"] == 1).all() and len(req) == run.summary["nr_requests"]
    assert list(run.table("requests", ["nr_guest_requests", "op"]).columns) == ["nr_guest_requests", "op"]


def test_a_synthetic_run_has_the_schema(tmp_path):
    run = synthetic.write_run(tmp_path / "syn", synthetic.SyntheticSpec(requests=2000, interleave=0.2))
    found = dict(_tables(run))
    assert {"requests", "submits", "sections", "uring_requests", "markers", "enters", "block_rq"} <= set(found)
    for name, schema in found.items():
        assert schema.remove_metadata() == TABLES[name], name


def test_each_events_script_prints_one_field_per_column_of_its_table():
    import re

    from plugtrace.tracing.probes import PROBES

    checked = 0
    for spec in PROBES:
        if "events" not in spec.modes:
            assert spec.columns == ()
            continue
        schema = TABLES[spec.table]
        # a label column is printed as its code and named by the spec's labels
        assert {c for c, _ in spec.labels} == {f.name for f in schema if f.type == LABEL}, spec.table
        formats = re.findall(r'printf\("([^"]*)\\n"', spec.path.read_text())
        assert formats, spec.file
        for fmt in formats:
            assert fmt.count(",") + 1 == len(spec.columns) == len(schema), f"{spec.file}: {fmt}"
        checked += 1
    assert checked >= 5


def test_conform_casts_and_refuses_other_columns():
    t = pa.table({"tid": [2], "ts_ns": [1], "event": ["submit"], "user_data": [5], "opcode": [1], "res": [0]})
    assert conform("uring_requests", t).schema == TABLES["uring_requests"]
    assert conform("a_table_of_the_future", t) is t
    with pytest.raises(ValueError, match="not those of plugtrace.schema"):
        conform("uring_requests", t.drop_columns(["res"]))
    with pytest.raises(pa.ArrowInvalid):
        conform("uring_requests", t.set_column(3, "user_data", pa.array([-1])))  # no silent wrap-around
