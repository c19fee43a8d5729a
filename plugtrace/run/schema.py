"""Every table of a run directory, its columns and their types, in one place.

Whoever writes a table (the engine's log, the tracer's readers, the synthetic
generator) writes it through `RunWriter`, which casts each chunk to the schema
here, so two runs never disagree on a column's type. What each column means is
in docs/run-format.md. The engine's tables are declared once, as the C rows its
driver writes (plugtrace/engine/native/log_records.h), and read from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "LABEL",
    "TABLES",
    "ADDED_COLUMNS",
    "with_added_columns",
    "NON_NEGATIVE",
    "SQES_HISTOGRAMS",
    "schema_of",
    "conform",
    "check_table",
]

I32, I64 = pa.int32(), pa.int64()
#: a column of a few repeated names (an event kind, a marker): dictionary-encoded, as the tracer writes it
LABEL = pa.dictionary(pa.int32(), pa.string())


def _engine_tables() -> dict[str, pa.Schema]:
    """The engine's own log: a table per `struct pt_<table>_row` of plugtrace/engine/native/log_records.h, the
    struct's fields its columns (int32_t, int64_t, bool; an enum is a string column of its members' names)."""
    from cffi import FFI  # only its parser of C declarations: nothing is compiled or loaded

    header = (resources.files("plugtrace") / "engine" / "native" / "log_records.h").read_text()
    ffi = FFI()
    ffi.cdef("".join(line for line in header.splitlines(keepends=True) if not line.startswith("#")))
    types = {"int32_t": I32, "int64_t": I64, "_Bool": pa.bool_()}
    tables = {}
    for struct in ffi.list_types()[1]:
        fields = ffi.typeof(f"struct {struct}").fields
        columns = [(name, pa.string() if f.type.kind == "enum" else types[f.type.cname]) for name, f in fields]
        tables[struct.removeprefix("pt_").removesuffix("_row")] = pa.schema(columns)
    return tables


TABLES: dict[str, pa.Schema] = {
    **_engine_tables(),
    # --- the kernel's side, from the tracer ---------------------------------------------------------------
    "enters": pa.schema(
        [
            ("ts_ns", I64),
            ("tid", I32),
            ("fd", I32),
            ("to_submit", I32),
            ("min_complete", I32),
            ("flags", I32),
            ("ret", I32),
            ("latency_ns", I64),
        ]
    ),
    "uring_requests": pa.schema(
        [("ts_ns", I64), ("tid", I32), ("event", LABEL), ("user_data", pa.uint64()), ("opcode", I32), ("res", I32)]
    ),
    "block_rq": pa.schema(
        [
            ("issue_ns", I64),
            ("complete_ns", I64),
            ("latency_ns", I64),
            ("dev", I64),
            ("sector", I64),
            ("nr_bytes", I64),
            ("rwbs", pa.string()),
        ]
    ),
    "block_unplug": pa.schema([("ts_ns", I64), ("tid", I32), ("nr_rq", I32)]),
    "markers": pa.schema([("ts_ns", I64), ("tid", I32), ("marker", LABEL), ("arg0", I64), ("arg1", I64)]),
    # aggregate mode: in-kernel histograms (power-of-two or linear buckets) and counters
    "histograms": pa.schema([("name", pa.string()), ("low", I64), ("high", I64), ("count", I64)]),
    "counters": pa.schema([("name", pa.string()), ("value", I64)]),
    # --- a real QEMU's run (plugtrace qemu): its uprobes' counts and histograms, and its requests ---------
    "qemu_counters": pa.schema([("name", pa.string()), ("device", I32), ("value", I64)]),
    "qemu_histograms": pa.schema([("name", pa.string()), ("low", I64), ("high", I64), ("count", I64)]),
    "qemu_requests": pa.schema(
        [
            ("req_id", I64),
            ("thread", I32),
            ("tid", I32),
            ("device", I32),
            ("op", I32),
            ("offset_bytes", I64),
            ("length_bytes", I64),
            ("nr_guest_requests", I32),
            ("queue_ns", I64),
            ("submit_ns", I64),
            ("section_id", I64),
            ("section_owner", I32),
        ]
    ),
    # one row per row of `sections` / `handlers` of a QEMU run: what only a real QEMU's have
    "qemu_sections": pa.schema(
        [("section_id", I64), ("kind", LABEL), ("nr_nested_sections", I32), ("nr_completions", I32)]
    ),
    "qemu_handlers": pa.schema(
        [
            ("tid", I32),
            ("begin_ns", I64),
            ("vq", I32),
            ("cause", LABEL),
            ("nr_requests", I32),
            ("nr_submitted", I32),
            ("opened_section_id", I64),
        ]
    ),
    "replay_runs": pa.schema(
        [
            ("arrival", I32),
            ("device", I32),
            ("nr_requests", I32),
            ("vq", I32),
            ("cause", LABEL),
            ("begin_ns", I64),
            ("measured_enters", I32),
            ("measured_sqes_per_submit", pa.float64()),
            ("predicted_enters", I32),
            ("predicted_sqes_per_submit", pa.float64()),
            ("exact", pa.bool_()),
        ]
    ),
}


#: the in-kernel histograms of SQEs per submitting io_uring_enter(), preferred first:
#: the enters probe's (the syscall's result), then uring_requests' (request positions)
SQES_HISTOGRAMS = ("enter_nr_sqes", "submit_nr_sqes")


def schema_of(table: str) -> pa.Schema | None:
    """The schema of `table`, or None for a table this version does not know (kept as written)."""
    return TABLES.get(table)


def conform(name: str, table: pa.Table) -> pa.Table:
    """`table` in the columns and types `plugtrace.run.schema` gives table `name` (a table it does not know
    is kept as it is). A writer that produces other columns is a bug, and is told so."""
    schema = schema_of(name)
    if schema is None or table.schema == schema:
        return table
    if sorted(table.column_names) != sorted(schema.names):
        raise ValueError(
            f"table {name}: columns {table.column_names} are not those of plugtrace.schema ({schema.names})"
        )
    return table.select(schema.names).cast(schema)


#: columns added to a table after runs were recorded without them: table -> {column: the value it has in
#: such a run}. A run that lacks one is not corrupt; its readers see the column with that value.
ADDED_COLUMNS: dict[str, dict[str, int]] = {
    # before the engine merged requests (virtio-blk's request merging), each request was one guest request
    "requests": {"nr_guest_requests": 1, "queue": 0, "deferred_by_thread": -1},
    # before a device could have several virtqueues (--queues), each had one
    "handlers": {"queue": 0},
}


def with_added_columns(name: str, table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    """`table` (read from a run of table `name`) with the `ADDED_COLUMNS` it lacks, holding their value, in
    the order of `columns` (default: the run format's)."""
    added = ADDED_COLUMNS.get(name)
    if not added:
        return table
    schema = TABLES[name]
    wanted = list(columns) if columns else schema.names
    for column in wanted:
        if column in added and column not in table.column_names:
            value = pa.array([added[column]] * table.num_rows, type=schema.field(column).type)
            table = table.append_column(schema.field(column), value)
    return table.select([c for c in wanted if c in table.column_names])


#: columns that count things or measure a duration: a negative value means the table is corrupt
NON_NEGATIVE = {
    "requests": ("len_bytes",),
    "submits": ("nr_sqes", "latency_ns"),
    "sections": ("nr_deferred_calls", "nr_nested_polls"),
    "enters": ("to_submit", "latency_ns"),
    "block_rq": ("latency_ns", "nr_bytes"),
    "block_unplug": ("nr_rq",),
    "histograms": ("count",),
}


def _same_type(found: pa.DataType, wanted: pa.DataType) -> bool:
    """Types a reader treats alike: exactly the schema's, or strings dictionary-encoded or not."""

    def plain(t: pa.DataType) -> pa.DataType:
        t = t.value_type if pa.types.is_dictionary(t) else t
        return pa.string() if pa.types.is_large_string(t) else t

    return found == wanted or plain(found) == plain(wanted) == pa.string()


def check_table(name: str, metadata: pq.FileMetaData) -> str | None:
    """Why table `name`, as its Parquet footer describes it, is not what the run format says (another
    table's columns, a column of another type, negative counts or durations), or None when it is.

    Reads only the footer: values are checked through the column statistics plugtrace's writers keep."""
    schema = schema_of(name)
    if schema is None:  # a table this version does not know is kept as it is
        return None
    found = metadata.schema.to_arrow_schema()
    foreign = [c for c in found.names if c not in schema.names]
    if foreign:
        return f"it has columns the run format does not give '{name}' ({', '.join(foreign)})"
    missing = [c for c in schema.names if c not in found.names and c not in ADDED_COLUMNS.get(name, {})]
    if missing:
        return f"it lacks the columns {', '.join(missing)}"
    for field in schema:
        if field.name not in found.names:
            continue  # an added column (ADDED_COLUMNS) the run predates
        have = found.field(field.name).type
        if not _same_type(have, field.type):
            return f"its column '{field.name}' is {have}, where the run format has {field.type}"
    for column in NON_NEGATIVE.get(name, ()):
        index = found.names.index(column)
        for i in range(metadata.num_row_groups):
            stats = metadata.row_group(i).column(index).statistics
            if stats is not None and stats.has_min_max and stats.min < 0:
                return f"its column '{column}' holds negative values ({stats.min})"
    return None
