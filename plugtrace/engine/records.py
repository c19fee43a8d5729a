"""The engine's log records, from their one declaration (native/log_records.h).

Each `struct pt_<table>_row` is one row of the run's table <table>: the driver's
C appends rows to numpy-owned logs, read here as records of `DTYPES[table]`,
laid out as the C compiler laid the struct out (cffi's offsets), and `columns()`
turns them into the table's columns, which are the struct's fields. An enum
field (`reason`) becomes a string column of its members' names.
"""

from __future__ import annotations

import re

import numpy as np

from ..uring._binding import ffi

__all__ = ["TABLES", "DTYPES", "SUBMIT_REASONS", "ctype", "columns"]


def ctype(table: str) -> str:
    """The C type of one row of `table`, e.g. "struct pt_requests_row"."""
    return f"struct pt_{table}_row"


#: the engine's tables, one per row struct of log_records.h
TABLES: tuple[str, ...] = tuple(m[1] for s in ffi.list_types()[1] if (m := re.fullmatch(r"pt_(\w+)_row", s)))


def _labels(enum) -> tuple[str, ...]:
    """The names an `enum pt_<x>` column holds, indexed by code: its members without `PT_<X>_`, lower case."""
    prefix = enum.cname.removeprefix("enum ").upper() + "_"
    codes = sorted(enum.elements)
    if codes != list(range(len(codes))):
        raise ValueError(f"{enum.cname}: a column's codes must be 0, 1, ... ({codes})")
    return tuple(enum.elements[code].removeprefix(prefix).lower() for code in codes)


def _format(field_type) -> str:
    if field_type.kind == "enum":
        return f"<i{ffi.sizeof(field_type)}"
    if field_type.cname == "_Bool":
        return "?"
    return f"<{'u' if field_type.cname.startswith('u') else 'i'}{ffi.sizeof(field_type)}"


def _dtype(table: str) -> np.dtype:
    fields = ffi.typeof(ctype(table)).fields
    return np.dtype(
        {
            "names": [name for name, _ in fields],
            "formats": [_format(f.type) for _, f in fields],
            "offsets": [f.offset for _, f in fields],
            "itemsize": ffi.sizeof(ctype(table)),
        }
    )


#: table -> the numpy dtype of its C rows
DTYPES: dict[str, np.dtype] = {table: _dtype(table) for table in TABLES}
#: table -> {enum column: its names, indexed by the code C stores}
_ENUM_LABELS: dict[str, dict[str, np.ndarray]] = {
    table: {
        name: np.asarray(_labels(f.type), dtype=object)
        for name, f in ffi.typeof(ctype(table)).fields
        if f.type.kind == "enum"
    }
    for table in TABLES
}
#: why the driver submitted, indexed by the `enum pt_submit_reason` code it passes to pt_flush
SUBMIT_REASONS: tuple[str, ...] = _labels(ffi.typeof("enum pt_submit_reason"))


def columns(table: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """`rows` (records of `DTYPES[table]`) as the columns of `table`: one contiguous array per field,
    an enum field's codes as its names."""
    labels = _ENUM_LABELS[table]
    return {
        name: labels[name][rows[name]] if name in labels else np.ascontiguousarray(rows[name])
        for name in rows.dtype.names or ()
    }
