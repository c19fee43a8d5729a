"""Run directories: the contract between recording and analysis.

A run directory is::

    RUN/meta.json            what was run, where, how, and what could not be measured
    RUN/tables/NAME.parquet  one table per kind of record (see docs/run-format.md)

`RunWriter` writes one; `read_meta` / `read_table` read one back and say which
file is wrong when something is. Tables are written in chunks (one Parquet row
group per chunk), so a long recording never holds all its rows in memory and a
run cut short still leaves readable files behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PlugtraceError, RunDirError
from .output import WriteError, output_file, write_error
from .schema import schema_of

SCHEMA_NAME = "plugtrace-run"
SCHEMA_VERSION = 1

#: run status values stored in meta.json["status"]
STATUS_RECORDING = "recording"
STATUS_COMPLETE = "complete"
STATUS_INTERRUPTED = "interrupted"
STATUS_FAILED = "failed"
STATUS_INCOMPLETE = "incomplete"


def _as_arrow(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, np.ndarray) and data.dtype.names:
        return pa.table({name: data[name] for name in data.dtype.names})
    if isinstance(data, Mapping):
        return pa.table(dict(data))
    raise TypeError(f"cannot store {type(data).__name__} as a table")


#: writing the run directory failed (disk full, quota, I/O error)
StoreWriteError = WriteError
_disk_error = write_error


def conform(name: str, table: pa.Table) -> pa.Table:
    """`table` in the columns and types `plugtrace.schema` gives table `name` (a table it does not know
    is kept as it is). A writer that produces other columns is a bug, and is told so."""
    schema = schema_of(name)
    if schema is None or table.schema == schema:
        return table
    if sorted(table.column_names) != sorted(schema.names):
        raise ValueError(
            f"table {name}: columns {table.column_names} are not those of plugtrace.schema ({schema.names})"
        )
    return table.select(schema.names).cast(schema)


class RunWriter:
    """Writes a run directory incrementally.

    `meta` is written at once with status "recording" and rewritten (atomically,
    by rename) on every `update_meta` and on `close`, so a reader never sees a
    half-written meta.json.
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()) and not overwrite:
            raise PlugtraceError(f"run directory {self.path} exists and is not empty (choose another -o)")
        (self.path / "tables").mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, Any] = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "status": STATUS_RECORDING,
            "tables": {},
            **meta,
        }
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._rows: dict[str, int] = {}
        self._close_error: PlugtraceError | None = None
        # the engine's log thread and the tracer's reader threads append at once
        self._lock = threading.RLock()
        self.write_meta()
        self._reserve = self.path / ".space-reserve"
        self._make_reserve()

    # Space kept back for the end: when the disk fills up, freeing it lets the
    # tables be finished (Parquet footers) and the final meta.json be written,
    # so a run cut short by a full disk stays readable and says so.
    RESERVE_BYTES = 256 << 10

    def _make_reserve(self) -> None:
        try:
            with open(self._reserve, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, self.RESERVE_BYTES)
        except OSError:
            self._release_reserve()

    def _release_reserve(self) -> None:
        try:
            self._reserve.unlink()
        except OSError:
            pass

    def table_path(self, name: str) -> Path:
        return self.path / "tables" / f"{name}.parquet"

    def append(self, name: str, data: Any) -> int:
        """Append rows to table `name`; returns the number of rows appended. Thread-safe."""
        table = _as_arrow(data)
        with self._lock:
            return self._append(name, table)

    def _append(self, name: str, table: pa.Table) -> int:
        path = self.table_path(name)
        table = conform(name, table)
        try:
            writer = self._writers.get(name)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                self._writers[name] = writer
                self._rows[name] = 0
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            if table.num_rows:
                writer.write_table(table)
        except OSError as exc:
            # The reserve is freed by close(), not here: other writers (the
            # tracer's workers) would take the space before meta.json gets it.
            self._mark_damaged(name)
            raise _disk_error(path, exc) from exc
        self._rows[name] += table.num_rows
        self.meta["tables"][name] = {"file": f"tables/{name}.parquet", "rows": self._rows[name]}
        return table.num_rows

    def _mark_damaged(self, name: str) -> None:
        """A failed write leaves the table without its Parquet footer: say so in meta."""
        writer = self._writers.pop(name, None)
        if writer is not None:
            try:
                writer.close()
            except Exception:  # the file is already broken; meta says so
                pass
        damaged = self.meta.setdefault("damaged_tables", [])
        if name not in damaged:
            damaged.append(name)
        self.meta["tables"].setdefault(name, {"file": f"tables/{name}.parquet", "rows": 0})["damaged"] = True

    def adopt_table(self, name: str, rows: int, damaged: bool = False) -> None:
        """Record in meta a table another process wrote at `table_path(name)`."""
        with self._lock:
            self._rows[name] = rows
            self.meta["tables"][name] = {"file": f"tables/{name}.parquet", "rows": rows}
            if damaged:
                self._mark_damaged(name)

    def write_table(self, name: str, data: Any) -> int:
        """Write a whole table at once (closing it)."""
        n = self.append(name, data)
        self.close_table(name)
        return n

    def close_table(self, name: str) -> None:
        with self._lock:
            writer = self._writers.get(name)
            if writer is not None:
                try:
                    writer.close()
                except OSError as exc:
                    raise _disk_error(self.table_path(name), exc) from exc
                del self._writers[name]

    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields)
        self.write_meta()

    def write_meta(self) -> None:
        with self._lock:
            self._write_meta()

    def _write_meta(self) -> None:
        # the recorder handles signals itself, and meta.json is rewritten from its threads too
        with output_file(self.path / "meta.json", text=True, interruptible=False) as fh:
            json.dump(self.meta, fh, indent=2, default=_json_default)
            fh.write("\n")

    def close_tables(self) -> PlugtraceError | None:
        """Finish every open table (so it can be read); returns the first error, if any.

        A table that cannot be finished (disk full) is listed in meta's
        `damaged_tables`.
        """
        first_error: PlugtraceError | None = None
        with self._lock:
            names = list(self._writers)
        for name in names:
            try:
                self.close_table(name)
            except PlugtraceError as exc:
                first_error = first_error or exc
                self._mark_damaged(name)
        self._close_error = self._close_error or first_error
        return first_error

    def close(self, status: str = STATUS_COMPLETE, **fields: Any) -> None:
        """Close every table and write the final meta.json with `status`.

        If a table could not be closed (disk full), the run is marked incomplete
        and the error is raised after meta.json has been written, when it can be.
        """
        self._release_reserve()
        self.close_tables()
        first_error = self._close_error
        if (first_error is not None or self.meta.get("damaged_tables")) and status == STATUS_COMPLETE:
            status = STATUS_INCOMPLETE  # complete only when every table is whole
        self.meta.update(fields)
        self.meta["status"] = status
        self.meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.write_meta()
        if first_error is not None:
            raise first_error


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: meta.json fields that readers use, with the JSON types they must have when present
_META_TYPES = (
    ("config", dict, "an object"),
    ("environment", dict, "an object"),
    ("summary", dict, "an object"),
    ("probes", dict, "an object"),
    ("tables", dict, "an object"),
    ("device", dict, "an object"),
    ("tracing_overhead", dict, "an object"),
    ("status", str, "a string"),
    ("damaged_tables", list, "a list"),
    ("events_lost", int, "a number"),
)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate RUN/meta.json; raises RunDirError naming the file on any problem."""
    run = Path(path)
    if not run.exists():
        raise RunDirError(f"{run}: no such run directory")
    if not run.is_dir():
        raise RunDirError(f"{run}: not a run directory (it is a file)")
    meta_path = run / "meta.json"
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        raise RunDirError(f"{meta_path}: missing; {run} is not a plugtrace run directory") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or an integer of 5,000 digits
        raise RunDirError(f"{meta_path}: not valid JSON ({exc}); the run directory is corrupt") from None
    except RecursionError:
        raise RunDirError(
            f"{meta_path}: nested too deeply to be a run's meta.json; the run directory is corrupt"
        ) from None
    except OSError as exc:
        raise RunDirError(f"{meta_path}: cannot read ({exc.strerror})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA_NAME:
        raise RunDirError(f'{meta_path}: not a plugtrace run (no \'"schema": "{SCHEMA_NAME}"\')')
    for key, kinds, what in _META_TYPES:
        if meta.get(key) is not None and not isinstance(meta[key], kinds):
            raise RunDirError(
                f"{meta_path}: {key!r} should be {what}, not {type(meta[key]).__name__} "
                f"({meta[key]!r:.40}); the run directory is corrupt"
            )
    version = meta.get("schema_version")
    if not isinstance(version, int):
        raise RunDirError(f"{meta_path}: schema_version missing or not a number")
    if version > SCHEMA_VERSION:
        raise RunDirError(
            f"{meta_path}: written with run schema version {version}, but this plugtrace reads "
            f"versions up to {SCHEMA_VERSION}; upgrade plugtrace to read it"
        )
    return meta


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
    missing = [c for c in schema.names if c not in found.names]
    if missing:
        return f"it lacks the columns {', '.join(missing)}"
    for field in schema:
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


def table_names(path: str | os.PathLike) -> list[str]:
    """The tables present in a run directory, sorted."""
    return sorted(p.stem for p in (Path(path) / "tables").glob("*.parquet"))


def read_table(path: str | os.PathLike, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read table `name` of a run as a DataFrame; raises RunDirError naming the file on failure."""
    file = Path(path) / "tables" / f"{name}.parquet"
    if not file.exists():
        raise RunDirError(f"{file}: missing (the run has no '{name}' table)")
    try:
        return pq.read_table(file, columns=columns).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RunDirError(f"{file}: cannot read Parquet ({exc}); the file is truncated or corrupt") from None
