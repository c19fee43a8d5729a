"""Decode one bpftrace's output into one Parquet table, in a process of its own.

    bpftrace -f json probes/X.bt ... | python -m plugtrace.tracing.worker TABLE OUT.parquet [--max-events N]

Decoding hundreds of thousands of events per second in the recording process
would take the interpreter lock from the engine whose batching is being
measured; in a separate process it takes only a CPU share. The worker reads
its stdin until bpftrace exits, writes events as they come (one Parquet row
group per chunk: memory stays flat), and reports on stdout, one JSON object
per line: ``{"attached_probes": N}`` as soon as bpftrace has attached, then
``{"done": {...}}`` with the rows kept, rows dropped over the bound, bpftrace's
lost events, the maps printed at exit, messages and any write error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..run import conform, parquet_writer
from .decode import JsonStreamDecoder
from .probes import PROBES

FLUSH_ROWS = 65536
FLUSH_INTERVAL_S = 1.0


class _TableFile:
    """Table `table`'s Parquet file, opened on the first rows, in the columns and types of
    `plugtrace.run.schema`; a write error stops writing, not reading."""

    def __init__(self, path: str, table: str):
        self.path = path
        self.table = table
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.error: str | None = None

    def write(self, tables: list[pa.Table]) -> None:
        if self.error or not tables:
            return
        table = conform(self.table, pa.concat_tables(tables))
        try:
            if self.writer is None:
                self.writer = parquet_writer(self.path, table.schema)
            self.writer.write_table(table)
            self.rows += table.num_rows
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror or exc}"

    def close(self) -> None:
        if self.writer is not None and not self.error:
            try:
                self.writer.close()
            except OSError as exc:
                self.error = f"cannot finish {self.path}: {exc.strerror or exc}"


def _say(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run(table: str, out: str, max_events: int | None) -> dict:
    spec = next(p for p in PROBES if p.table == table)
    decoder = JsonStreamDecoder(spec.schema, max_events, dict(spec.labels))
    sink = _TableFile(out, table)
    pending: list[pa.Table] = []
    pending_rows, last_flush = 0, time.monotonic()
    lost = 0
    maps: dict[str, Any] = {}
    messages: list[str] = []
    while True:
        data = os.read(0, 1 << 20)
        d = decoder.feed(data, final=not data)
        if d.attached_probes is not None:
            _say({"attached_probes": d.attached_probes})
        lost += d.lost_events
        maps.update(d.maps)
        messages.extend(d.other[: max(0, 20 - len(messages))])
        if d.events is not None:
            pending.append(d.events)
            pending_rows += d.events.num_rows
        now = time.monotonic()
        if pending and (not data or pending_rows >= FLUSH_ROWS or now - last_flush >= FLUSH_INTERVAL_S):
            sink.write(pending)
            pending, pending_rows, last_flush = [], 0, now
        if not data:
            break
    sink.close()
    return {
        "rows": sink.rows,
        "kept": decoder.kept,
        "dropped": decoder.dropped,
        "lost_events": lost,
        "maps": maps,
        "messages": messages,
        "error": sink.error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=[p.table for p in PROBES])
    parser.add_argument("out", help="Parquet file to write (events mode)")
    parser.add_argument("--max-events", type=int, default=None, help="keep at most this many rows")
    args = parser.parse_args(argv)
    # The recording process stops bpftrace; this end just reads until EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _say({"done": run(args.table, args.out, args.max_events)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
