"""The synthetic run generator writes runs whose tables agree with each other."""

import json

import numpy as np
import pandas as pd
import pytest

from plugtrace import run as store
from plugtrace.synthetic import STRATEGIES, SyntheticSpec, write_run


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_request_is_carried_by_its_submit(tmp_path, strategy):
    path = write_run(
        tmp_path / "run", strategy=strategy, requests=3000, devices=3, threads=2, interleave=0.3, chunk_requests=1000
    )
    req = store.read_table(path, "requests")
    sub = store.read_table(path, "submits")
    assert (req["submit_ns"] >= req["queue_ns"]).all()
    assert (req["complete_ns"] > req["submit_ns"]).all()
    carried = req.groupby(["thread", "submit_seq"]).size()
    declared = sub.set_index(["thread", "submit_seq"])["nr_sqes"]
    assert carried.sort_index().equals(declared.sort_index().astype(carried.dtype))
    assert req["req_id"].is_unique
    assert (~req["sync"]).sum() == 3000


def test_meta_summary_matches_tables(tmp_path):
    path = write_run(tmp_path / "run", requests=5000, interleave=0.2)
    meta = store.read_meta(path)
    sub = store.read_table(path, "submits")
    assert meta["summary"]["nr_submits"] == len(sub) == meta["tables"]["enters"]["rows"]
    assert meta["summary"]["nr_requests"] == meta["tables"]["requests"]["rows"]
    assert meta["summary"]["mean_sqes_per_submit"] == pytest.approx(sub["nr_sqes"].mean())
    assert meta["summary"]["submit_latency_p99_ns"] == int(np.percentile(sub["latency_ns"], 99))


def test_interleave_puts_requests_into_other_devices_sections(tmp_path):
    off = store.read_table(write_run(tmp_path / "off", requests=4000, interleave=0.0), "requests")
    on = store.read_table(write_run(tmp_path / "on", requests=4000, interleave=0.4), "requests")
    assert not ((off["section_owner"] >= 0) & (off["section_owner"] != off["device"])).any()
    assert ((on["section_owner"] >= 0) & (on["section_owner"] != on["device"])).sum() > 100
    assert on["sync"].sum() > 100 and not off["sync"].any()


def test_could_not_measure_leaves_the_table_out(tmp_path):
    path = write_run(tmp_path / "run", requests=500, could_not_measure={"block_rq": "no block tracepoints"})
    meta = json.loads((path / "meta.json").read_text())
    assert "block_rq" not in store.table_names(path)
    assert meta["probes"]["could_not_measure"] == {"block_rq": "no block tracepoints"}


def test_kernel_only_run_has_no_app_tables(tmp_path):
    path = write_run(tmp_path / "fio", SyntheticSpec(app=False, kernel="events", requests=500))
    assert {"requests", "submits", "sections"}.isdisjoint(store.table_names(path))
    assert isinstance(store.read_table(path, "enters"), pd.DataFrame)


def test_bad_spec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="strategy"):
        write_run(tmp_path / "run", strategy="sometimes")
