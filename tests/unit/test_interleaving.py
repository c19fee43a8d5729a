"""The exact delay aio_poll() interleaving causes, on a constructed run whose delays are known."""

import numpy as np
import pytest

from plugtrace.analysis import Run, df_deferrals, df_interleaving_delays
from plugtrace.run import RunWriter


@pytest.fixture
def run(tmp_path):
    """Device 0's handler opens section 1 at t=1000 and polls for a sync read; device 1's handler runs
    inside it from 1100 and its own section ends at 1300; device 2 (IDE, no handler section) queues at
    2000; section 1 ends and everything leaves at 5000. Later device 1 runs alone (section 2)."""
    writer = RunWriter(tmp_path / "run", {"config": {"strategy": "defer"}})
    rows = [  # req_id, device, section_id, section_owner, sync, queue_ns, submit_ns
        (0, 0, 1, 0, False, 1050, 5000),  # its own section: no interleaving delay
        (1, 0, 1, 0, True, 1060, 1070),  # the sync read: left out
        (2, 1, 1, 0, False, 1150, 5000),  # deferred: 5000 - 1300
        (3, 1, 1, 0, False, 1200, 5000),  # deferred: 5000 - 1300
        (4, 1, 1, 0, False, 1250, 1280),  # left before its handler's section ended (e.g. MAX_ENTRIES): 0
        (5, 2, 1, 0, False, 2000, 5000),  # IDE inside device 0's section: would have left at once, 5000 - 2000
        (6, 1, 2, 1, False, 6100, 6400),  # device 1 alone, its own section
    ]
    cols = list(zip(*rows))
    writer.append(
        "requests",
        {
            "req_id": np.array(cols[0], np.int64),
            "thread": np.zeros(len(rows), np.int32),
            "tid": np.full(len(rows), 7, np.int32),
            "device": np.array(cols[1], np.int32),
            "section_id": np.array(cols[2], np.int64),
            "section_owner": np.array(cols[3], np.int32),
            "sync": np.array(cols[4], bool),
            "queue_ns": np.array(cols[5], np.int64),
            "submit_ns": np.array(cols[6], np.int64),
            "complete_ns": np.array(cols[6], np.int64) + 100,
            "offset_bytes": np.arange(len(rows), dtype=np.int64) * 4096,
            # what these delays do not depend on
            "op": np.zeros(len(rows), np.int32),
            "len_bytes": np.full(len(rows), 4096, np.int64),
            "submit_seq": np.array(cols[6], np.int64),
            "resubmits": np.zeros(len(rows), np.int32),
            "nr_guest_requests": np.ones(len(rows), np.int32),
            "queue": np.zeros(len(rows), np.int32),
            "deferred_by_thread": np.full(len(rows), -1, np.int32),
            "result": np.full(len(rows), 4096, np.int32),
        },
    )
    writer.append(
        "handlers",
        {  # thread, tid, device, begin_ns, end_ns, section_id, section_owner
            "thread": np.zeros(3, np.int32),
            "tid": np.full(3, 7, np.int32),
            "device": np.array([0, 1, 1], np.int32),
            "queue": np.zeros(3, np.int32),
            "begin_ns": np.array([1000, 1100, 6000], np.int64),
            "end_ns": np.array([4900, 1300, 6300], np.int64),
            "section_id": np.array([1, 1, 2], np.int64),
            "section_owner": np.array([0, 0, 1], np.int32),
        },
    )
    writer.close_tables()
    writer.close("complete")
    return Run.open(tmp_path / "run")


def test_each_deferred_request_gets_the_delay_its_own_section_end_implies(run):
    delays = df_interleaving_delays(run).set_index("req_id")
    assert sorted(delays.index) == [2, 3, 4, 5]
    assert delays.loc[2, "deferral_ns"] == delays.loc[3, "deferral_ns"] == 5000 - 1300
    assert delays.loc[2, "handler_end_ns"] == 1300
    assert delays.loc[4, "deferral_ns"] == 0
    assert delays.loc[5, "deferral_ns"] == 5000 - 2000 and np.isnan(delays.loc[5, "handler_end_ns"])


def test_df_deferrals_carries_the_delay_and_zero_for_the_rest(run):
    d = df_deferrals(run).set_index("req_id")
    assert 1 not in d.index  # sync reads are left out
    assert d.loc[0, "deferral_ns"] == d.loc[6, "deferral_ns"] == 0
    assert d.loc[2, "deferral_ns"] == 3700 and d.loc[2, "wait_ns"] == 3850
    assert (d["deferral_ns"] <= d["wait_ns"]).all()


def test_without_a_handler_log_the_delay_is_unknown(run):
    (run.path / "tables" / "handlers.parquet").unlink()
    import json

    meta = json.loads((run.path / "meta.json").read_text())
    meta["tables"].pop("handlers", None)
    (run.path / "meta.json").write_text(json.dumps(meta))
    d = df_deferrals(Run.open(run.path))
    assert d["deferral_ns"].isna().all()
