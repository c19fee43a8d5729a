"""`RunWriter`: writes a run directory (`plugtrace.run.reader.Run` reads it back).

Tables are written in chunks (one Parquet row
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

from ..errors import PlugtraceError
from .meta import SCHEMA_NAME, SCHEMA_VERSION, RunMeta, Status
from .output import output_file, write_error
from .schema import conform


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
        self.meta = RunMeta(
            {
                "schema": SCHEMA_NAME,
                "schema_version": SCHEMA_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "status": Status.RECORDING,
                "tables": {},
                **meta,
            }
        )
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
                writer = parquet_writer(path, table.schema)
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
            raise write_error(path, exc) from exc
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
                    raise write_error(self.table_path(name), exc) from exc
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

    def close(self, status: str = Status.COMPLETE, **fields: Any) -> None:
        """Close every table and write the final meta.json with `status`.

        If a table could not be closed (disk full), the run is marked incomplete
        and the error is raised after meta.json has been written, when it can be.
        """
        self._release_reserve()
        self.close_tables()
        first_error = self._close_error
        if (first_error is not None or self.meta.get("damaged_tables")) and status == Status.COMPLETE:
            status = Status.INCOMPLETE  # complete only when every table is whole
        self.meta.update(fields)
        self.meta["status"] = status
        self.meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.write_meta()
        if first_error is not None:
            raise first_error


def parquet_writer(path: str | os.PathLike, schema: pa.Schema) -> pq.ParquetWriter:
    """A table file as every writer of a run directory opens it (the engine's log, the tracer's workers):
    zstd, with Parquet's dictionary encoding on the string columns only (a submit's reason, a probe's
    name). On numbers the dictionary's hashing costs more than it saves (bench/profile_log_write.py:
    the recorded requests of data/defer-zram took ~300 ns of CPU per row with it and ~220 without,
    in files of 8.8 and 5.7 bytes per row; 131,072 rows of distinct offsets and times ~900 against
    ~290): CPU that writing while a run records takes from what it measures."""
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=strings)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
