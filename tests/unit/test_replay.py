"""Replay's reading of a QEMU run and its comparison, on the recorded sample runs and a constructed case."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plugtrace.errors import UsageError
from plugtrace.replay import ReplaySource, _arrivals, _Comparison, read_source

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("name", ["qemu-7.2", "qemu-10.0"])
def test_every_workload_request_arrives_once_with_its_handler_run(name):
    src = read_source(DATA / name)
    meta = json.loads((DATA / name / "meta.json").read_text())
    qr = pd.read_parquet(DATA / name / "tables" / "qemu_requests.parquet")
    qh = pd.read_parquet(DATA / name / "tables" / "qemu_handlers.parquet")
    # the workload's requests, all queued inside handler runs in these samples
    assert len(src.requests) == meta["summary"]["qemu_workload_requests"]
    assert src.not_replayed == {}
    assert int(src.runs["nr_requests"].sum()) == len(src.requests)
    # one arrival per handler run that handed QEMU's driver a workload request: never more than ran
    assert len(src.runs) <= int((qh["nr_submitted"] > 0).sum())
    assert (src.runs["at_ns"].diff().dropna() >= 0).all() and src.runs["at_ns"].iloc[0] == 0
    # each arrival's requests are in the order QEMU queued them, and are QEMU's own
    workload = qr.sort_values("req_id").tail(len(src.requests))
    assert sorted(src.requests["offset_bytes"]) == sorted(workload["offset_bytes"])
    # the measured mean is over the enters that carried the workload: the kernel's own rows
    enters = pd.read_parquet(DATA / name / "tables" / "enters.parquet")
    carried = enters[enters["ts_ns"].isin(set(workload["submit_ns"]))]
    assert src.measured_mean == pytest.approx(carried["ret"].mean())
    for latency in (True, False):
        arrivals = _arrivals(src, latency)
        assert sorted(arrivals) == sorted(src.runs["device"].unique())
        assert sum(a.nr_requests for a in arrivals.values()) == len(src.requests)
        assert all((a.hold_ns is not None) == latency for a in arrivals.values())


def test_a_run_that_is_not_qemus_cannot_be_replayed():
    with pytest.raises(UsageError, match="not a real QEMU run"):
        read_source(DATA / "defer")


def _source() -> ReplaySource:
    """Two arrivals on device 0 (3 then 2 requests), one on device 1 (4): QEMU submitted each in one enter,
    except device 1's, which went out in two (MAX_ENTRIES)."""
    runs = pd.DataFrame(
        {
            "handler": [0, 1, 2],
            "device": [0, 1, 0],
            "nr_requests": [3, 4, 2],
            "vq": [0, 0, 0],
            "cause": ["kick", "poll", "kick"],
            "begin_ns": [100, 200, 300],
            "at_ns": [0, 100, 200],
            "measured_enters": [1, 2, 1],
            "measured_sqes_per_submit": [3.0, 2.0, 2.0],
        }
    )
    arrival = [0, 0, 0, 1, 1, 1, 1, 2, 2]
    device = [0, 0, 0, 1, 1, 1, 1, 0, 0]
    requests = pd.DataFrame(
        {"arrival": arrival, "device": device, "op": 0, "offset_bytes": np.arange(9) * 4096, "length_bytes": 4096}
    )
    return ReplaySource(Path("src"), {}, runs, requests, 7 / 3, {})


def test_each_arrival_is_matched_to_the_model_submits_that_carried_its_requests():
    cmp = _Comparison(_source(), "recorded")
    # the model: device 0's first arrival in submit 0 (3 SQEs), device 1's in one submit of 4 (QEMU: 2 of 2),
    # device 0's second in submit 2 with 2 SQEs; logged in completion order, not queue order
    cmp.observe(
        "requests",
        {
            "req_id": np.array([7, 3, 4, 0, 1, 2, 5, 6, 8]),
            "thread": np.zeros(9, np.int32),
            "device": np.array([0, 1, 1, 0, 0, 0, 1, 1, 0]),
            "submit_seq": np.array([2, 1, 1, 0, 0, 0, 1, 1, 2]),
            "sync": np.zeros(9, bool),
        },
    )
    cmp.observe(
        "submits", {"thread": np.zeros(3, np.int32), "submit_seq": np.arange(3), "nr_sqes": np.array([3, 4, 2])}
    )
    table = cmp.table()
    assert table["arrival"].tolist() == [0, 1, 2]
    assert table["predicted_enters"].tolist() == [1, 1, 1]
    assert table["predicted_sqes_per_submit"].tolist() == [3.0, 4.0, 2.0]
    assert table["exact"].tolist() == [True, False, True]
    meta = cmp.meta(table, "defer", 3.0)
    assert meta["per_run_exact"] == round(2 / 3, 4) and meta["handler_runs"] == 3 and meta["requests"] == 9
    assert meta["mean_error_pct"] == round(100 * (3.0 - 7 / 3) / (7 / 3), 2)


def test_an_arrival_the_model_never_submitted_is_not_exact():
    cmp = _Comparison(_source(), "recorded")
    table = cmp.table()
    assert not table["exact"].any() and (table["predicted_enters"] == 0).all()
