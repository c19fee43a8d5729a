"""The engine's log rows are declared once (plugtrace/engine/native/log_records.h): the C the driver
fills, the numpy records Python reads and the run's tables all come from that one declaration."""

import numpy as np
import pyarrow as pa
import pytest

from plugtrace.engine import records
from plugtrace.run.schema import TABLES
from plugtrace.uring import Ring
from plugtrace.uring._binding import ffi, lib


def test_the_engine_writes_its_four_tables():
    assert sorted(records.TABLES) == ["handlers", "requests", "sections", "submits"]


@pytest.mark.parametrize("table", records.TABLES)
def test_a_tables_columns_are_its_c_rows_fields(table):
    row = ffi.typeof(records.ctype(table))
    dtype = records.DTYPES[table]
    assert dtype.itemsize == ffi.sizeof(row)
    assert list(dtype.names) == [name for name, _ in row.fields] == TABLES[table].names
    assert [dtype.fields[name][1] for name in dtype.names] == [f.offset for _, f in row.fields]


@pytest.mark.parametrize("table", records.TABLES)
def test_rows_become_columns_of_the_tables_types(table):
    """What the writer thread hands the run writer needs no cast: each column has the schema's type."""
    rows = np.zeros(3, dtype=records.DTYPES[table])
    columns = records.columns(table, rows)
    assert pa.table(columns).schema == TABLES[table]
    assert all(len(c) == 3 for c in columns.values())


def test_a_submits_reason_is_named_from_the_c_enum():
    enum = ffi.typeof("enum pt_submit_reason")
    # the names runs already store (docs/run-format.md), in the order of their codes
    assert records.SUBMIT_REASONS == (
        "deferred",
        "max_entries",
        "immediate",
        "iteration",
        "completion",
        "unplug",
        "sync",
        "remote_unplug",
    )
    assert {code: f"PT_SUBMIT_REASON_{name.upper()}" for code, name in enumerate(records.SUBMIT_REASONS)} == (
        enum.elements
    )
    rows = np.zeros(2, dtype=records.DTYPES["submits"])
    rows["reason"] = [enum.relements["PT_SUBMIT_REASON_SYNC"], enum.relements["PT_SUBMIT_REASON_DEFERRED"]]
    assert list(records.columns("submits", rows)["reason"]) == ["sync", "deferred"]


def test_the_c_fills_the_rows_python_reads():
    """A request queued and finished, a section and a handler run, through the driver's C (no ring needed)."""
    nslots, cap = 2, 4
    d = ffi.new("struct pt_driver *")
    keep = [ffi.new("struct pt_req[]", nslots), ffi.new("uint32_t[]", nslots), ffi.new("uint32_t[]", [1, 0])]
    d.reqs, d.queue, d.free_slots = keep
    d.nreqs = d.qcap = d.nfree = nslots
    buffers = bytearray(nslots * 4096)
    d.bufbase, d.slot_bytes = ffi.from_buffer(buffers), 4096
    d.thread, d.tid, d.next_req_id = 3, 77, 3 << 40
    logs = {t: np.zeros(cap, dtype=records.DTYPES[t]) for t in records.TABLES}
    for table, rows in logs.items():
        setattr(d, f"{table}_log", ffi.cast(f"{records.ctype(table)} *", ffi.from_buffer(rows)))
        setattr(d, f"{table}_cap", cap)

    slot = lib.pt_queue(d, 0, -1, 4096, 1 << 20, 5, 9, 5, 1, -1)
    assert slot == 0
    lib.pt_requeue_short(d, slot, 512)  # a short read: the row keeps the request as asked
    lib.pt_finish(d, slot, 4096, 4096)
    lib.pt_section_begin(d, 9, 5, 0)
    lib.pt_section_end(d, 9, 2)
    lib.pt_section_done(d, 9, 5, 1)
    lib.pt_handler_done(d, 5, 1, 10, 9, 5)
    with Ring(8) as ring:
        d.ring = ring.ptr
        d.qhead = d.qtail  # the request was finished by hand: nothing is left to submit
        assert lib.pt_flush(d, records.SUBMIT_REASONS.index("unplug")) == 0  # nothing queued: an empty submit

    (req,) = logs["requests"][: d.requests_len]
    assert (req["req_id"], req["thread"], req["tid"], req["device"], req["op"]) == (3 << 40, 3, 77, 5, 0)
    assert (req["queue"], req["deferred_by_thread"]) == (0, -1)  # a request of no guest: queue 0; not held
    assert (req["offset_bytes"], req["len_bytes"], req["submit_ns"], req["submit_seq"]) == (1 << 20, 4096, -1, -1)
    assert (req["section_id"], req["section_owner"], req["sync"], req["resubmits"], req["result"]) == (
        9,
        5,
        True,
        1,
        4096,
    )
    (sec,) = logs["sections"][: d.sections_len]
    assert (sec["section_id"], sec["owner"], sec["nr_deferred_calls"], sec["nr_nested_polls"]) == (9, 5, 2, 1)
    assert 0 < sec["begin_ns"] <= sec["end_ns"]
    (hnd,) = logs["handlers"][: d.handlers_len]
    assert (hnd["thread"], hnd["tid"], hnd["device"], hnd["begin_ns"], hnd["section_id"], hnd["section_owner"]) == (
        3,
        77,
        5,
        10,
        9,
        5,
    )
    (sub,) = logs["submits"][: d.submits_len]
    assert (sub["submit_seq"], sub["thread"], sub["tid"], sub["nr_sqes"], sub["ret"]) == (0, 3, 77, 0, 0)
    assert sub["latency_ns"] == sub["end_ns"] - sub["start_ns"] >= 0
    assert list(records.columns("submits", logs["submits"][:1])["reason"]) == ["unplug"]
    assert d.nfree == nslots


def test_the_run_writer_dictionary_encodes_only_string_columns(tmp_path):
    """Dictionary-encoding the engine's numbers costs the log thread twice the rest of the write
    (bench/profile_log_write.py) and makes the files larger: only strings get a dictionary."""
    import pyarrow.parquet as pq

    from plugtrace.run import Run, RunWriter

    rows = np.zeros(1000, dtype=records.DTYPES["submits"])
    rows["submit_seq"] = np.arange(1000)
    rows["reason"] = np.arange(1000) % 2
    writer = RunWriter(tmp_path / "run", {})
    writer.append("submits", records.columns("submits", rows))
    writer.close()
    meta = pq.ParquetFile(writer.table_path("submits")).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["reason"])
    assert not any("DICTIONARY" in e for e in encodings["submit_seq"])
    df = Run.open(tmp_path / "run").table("submits")
    assert df["submit_seq"].tolist() == list(range(1000))
    assert df["reason"].tolist() == [records.SUBMIT_REASONS[i % 2] for i in range(1000)]
