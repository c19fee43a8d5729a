"""bpftrace -f json output decoding, on recorded output lines."""

import pyarrow as pa

from plugtrace.tracing.decode import JsonStreamDecoder, counter_rows, histogram_rows

SCHEMA = pa.schema([("ts_ns", pa.int64()), ("tid", pa.int32()), ("marker", pa.int32())])
OUTPUT = (
    b'{"type": "attached_probes", "data": {"probes": 3}}\n'
    b'{"type": "printf", "data": "100,7,0\\n"}\n'
    b'{"type": "printf", "data": "150,7,1\\n"}\n'
    b'{"type": "lost_events", "data": {"events": 12}}\n'
    b'{"type": "printf", "data": "200,8,0\\n"}\n'
    b'{"type": "hist", "data": {"@enter_nr_sqes": '
    b'[{"min": 1, "max": 1, "count": 5}, {"min": 2, "max": 2, "count": 0}]}}\n'
    b'{"type": "map", "data": {"@nr_markers": {"0": 4, "1": 3}}}\n'
)


def decode_in_pieces(decoder, data, size):
    tables, rest = [], []
    for i in range(0, len(data), size):
        d = decoder.feed(data[i : i + size])
        rest.append(d)
        if d.events is not None:
            tables.append(d.events)
    rest.append(decoder.feed(b"", final=True))
    return (pa.concat_tables(tables) if tables else None), rest


def test_events_split_at_any_byte_decode_the_same():
    for size in (1, 7, 64, len(OUTPUT)):
        table, rest = decode_in_pieces(JsonStreamDecoder(SCHEMA), OUTPUT, size)
        assert table.column("ts_ns").to_pylist() == [100, 150, 200]
        assert table.column("tid").to_pylist() == [7, 7, 8]
        assert sum(d.lost_events for d in rest) == 12
        assert [d.attached_probes for d in rest if d.attached_probes] == [3]
        maps = {k: v for d in rest for k, v in d.maps.items()}
        assert set(maps) == {"enter_nr_sqes", "nr_markers"}


def test_max_events_keeps_the_first_and_counts_the_rest():
    decoder = JsonStreamDecoder(SCHEMA, max_events=2)
    table, _ = decode_in_pieces(decoder, OUTPUT, 40)
    assert table.num_rows == 2 and decoder.kept == 2 and decoder.dropped == 1


def test_labels_turn_codes_into_names():
    decoder = JsonStreamDecoder(SCHEMA, labels={"marker": ("begin", "end")})
    d = decoder.feed(OUTPUT, final=True)
    assert d.events.column("marker").to_pylist() == ["begin", "end", "begin"]


def test_a_stray_printf_line_is_kept_as_text_not_lost():
    data = b'{"type": "printf", "data": "100,7,0\\n"}\n{"type": "printf", "data": "hello\\n"}\n'
    d = JsonStreamDecoder(SCHEMA).feed(data, final=True)
    assert d.events.num_rows == 1 and d.other == ["hello"]


def test_histogram_rows_make_high_exclusive_and_skip_empty_buckets():
    rows = histogram_rows(
        "h", [{"min": 0, "max": 0, "count": 2}, {"min": 1, "max": 1, "count": 0}, {"min": 2, "max": 3, "count": 4}]
    )
    assert rows == {"name": ["h", "h"], "low": [0, 2], "high": [1, 4], "count": [2, 4]}


def test_counter_rows_name_keyed_maps():
    assert counter_rows("n", 5) == {"name": ["n"], "value": [5]}
    assert counter_rows("m", {"1": 3, "0": 4}, ("begin", "end")) == {"name": ["m_begin", "m_end"], "value": [4, 3]}


def test_batch_sizes_follow_from_positions_in_the_batch():
    from plugtrace.tracing.decode import batch_sizes_from_positions

    # batches of 1, 3, 3 and 1000+ requests: positions 1..3 seen 4, 3, 3 times, 4..999 once, >= 1000 once
    pos = [{"min": 1, "max": 1, "count": 4}, {"min": 2, "max": 2, "count": 3}, {"min": 3, "max": 3, "count": 3}]
    pos += [{"min": k, "max": k, "count": 1} for k in range(4, 1000)] + [{"min": 1000, "count": 1}]
    assert batch_sizes_from_positions(pos) == [
        {"min": 1, "max": 1, "count": 1},
        {"min": 3, "max": 3, "count": 2},
        {"min": 1000, "count": 1},
    ]
    assert batch_sizes_from_positions([]) == []


def test_request_flags_are_spelled_as_the_block_tracepoints_spell_rwbs():
    """The kernel's blk_fill_rwbs order: preflush, operation, then FUA, read-ahead, sync, meta;
    zoned operations as the kernels that spell them do."""
    import os

    import numpy as np
    import pytest

    from plugtrace.tracing.bpfprobes import _Rwbs
    from plugtrace.tracing.libbpf import KernelBtf

    if not os.access("/sys/kernel/btf/vmlinux", os.R_OK):
        pytest.skip("the kernel's BTF is not readable here")
    kernel = KernelBtf()
    op, bit = kernel.enum("req_op"), {k: 1 << v for k, v in kernel.enum("req_flag_bits").items()}
    cases = {
        op["REQ_OP_READ"]: "R",
        op["REQ_OP_READ"] | bit["__REQ_RAHEAD"]: "RA",
        op["REQ_OP_WRITE"] | bit["__REQ_SYNC"] | bit["__REQ_IDLE"]: "WS",
        op["REQ_OP_WRITE"] | bit["__REQ_PREFLUSH"] | bit["__REQ_FUA"] | bit["__REQ_SYNC"]: "FWFS",
        op["REQ_OP_WRITE"] | bit["__REQ_META"] | bit["__REQ_SYNC"]: "WSM",
        op["REQ_OP_FLUSH"]: "F",
        op["REQ_OP_DISCARD"]: "D",
        op["REQ_OP_SECURE_ERASE"]: "DE",
        op["REQ_OP_WRITE_ZEROES"] | bit["__REQ_SYNC"]: "NS",
    }
    flags = np.array(list(cases) * 3, dtype=np.uint32)
    assert list(_Rwbs(kernel)(flags)) == list(cases.values()) * 3
    zoned = {
        op["REQ_OP_ZONE_APPEND"] | bit["__REQ_FUA"]: ("ZAF", "NF"),
        op["REQ_OP_ZONE_RESET_ALL"]: ("ZRA", "N"),
        op["REQ_OP_ZONE_CLOSE"]: ("ZC", "N"),
    }
    for spelled, pick in ((True, 0), (False, 1)):
        got = _Rwbs(kernel, zoned=spelled)(np.array(list(zoned), dtype=np.uint32))
        assert list(got) == [v[pick] for v in zoned.values()]


def test_a_table_file_keeps_a_write_error_instead_of_raising():
    # /dev/full fails every write with ENOSPC, as a full disk does: the worker keeps reading
    # (so bpftrace is not blocked) and reports the error, and the table is marked damaged.
    from plugtrace.run.schema import TABLES
    from plugtrace.tracing.worker import _TableFile

    sink = _TableFile("/dev/full", "block_unplug")
    schema = TABLES["block_unplug"]
    for _ in range(2):
        sink.write([pa.table({f.name: pa.array([1], f.type) for f in schema}, schema=schema)])
    sink.close()
    assert sink.error is not None and "No space left" in sink.error
    assert sink.rows == 0
