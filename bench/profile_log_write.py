"""What storing the engine's log costs per row, step by step: the CPU the log writer thread takes
from a 2-CPU machine's engine and io-wq threads while `plugtrace record` runs.

Builds `--rows` request records (the engine's `struct pt_requests_row`, filled as a 4k random
read load fills them) and times, in CPU time per row: turning them into columns, and writing
those as one Parquet row group with each encoding a run directory could use. Prints the bytes
per row each leaves on disk, and the host; then the same for the request rows
of the sample run `data/defer-zram` (real offsets and times compress differently).

    python -m bench.profile_log_write [--rows 131072] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plugtrace.engine import records
from plugtrace.run import RunWriter, parquet_writer

from .common import print_host

ROOT = Path(__file__).resolve().parents[1]


def request_rows(n: int) -> np.ndarray:
    """`n` request records as a defer run at iodepth 32 leaves them: random 4k offsets, sections of ~18."""
    rng = np.random.default_rng(0)
    rows = np.zeros(n, dtype=records.DTYPES["requests"])
    rows["req_id"] = np.arange(n)
    rows["tid"] = 4242
    rows["offset_bytes"] = rng.integers(0, 1 << 18, n) * 4096
    rows["len_bytes"] = 4096
    rows["nr_guest_requests"] = 1
    rows["queue_ns"] = 10**12 + np.cumsum(rng.integers(1500, 3500, n))
    rows["submit_ns"] = rows["queue_ns"] + rng.integers(2000, 9000, n)
    rows["complete_ns"] = rows["submit_ns"] + rng.integers(15000, 60000, n)
    rows["submit_seq"] = np.arange(n) // 18
    rows["section_id"] = np.arange(n) // 18
    rows["deferred_by_thread"] = -1
    rows["result"] = 4096
    return rows


def cpu_ns_per_row(fn, n: int, repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats / n * 1e9


def _encodings(table: pa.Table, tmp: Path, k: int) -> None:
    """Write `table` `k` times with each encoding; print CPU per row and bytes per row on disk."""
    n = table.num_rows
    encodings = {
        "Parquet zstd, dictionary on every column": lambda path: pq.ParquetWriter(
            path, table.schema, compression="zstd"
        ),
        "Parquet zstd, dictionary on strings (ours)": lambda path: parquet_writer(path, table.schema),
    }
    for label, make in encodings.items():
        path = tmp / "t.parquet"
        writer = make(path)
        cost = cpu_ns_per_row(lambda w=writer: w.write_table(table), n, k)
        writer.close()
        print(f"{label:<46}{cost:>8.0f}{os.path.getsize(path) / (n * k):>20.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1 << 17)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    n, k = args.rows, args.repeats
    rows = request_rows(n)
    cols = records.columns("requests", rows)
    table = pa.table(cols)
    print(f"log write profile: {n:,} request rows ({rows.dtype.itemsize} bytes each in C), CPU time per row")
    print_host()
    print(f"\n{'step':<46}{'ns/row':>8}{'bytes/row on disk':>20}")
    cost = cpu_ns_per_row(lambda: records.columns("requests", rows), n, k)
    print(f"{'records.columns (C rows to columns)':<46}{cost:>8.0f}")
    with tempfile.TemporaryDirectory() as tmp:
        _encodings(table, Path(tmp), k)
        sample = ROOT / "data" / "defer-zram" / "tables" / "requests.parquet"
        if sample.exists():
            real = pq.read_table(sample)  # not repeated to the size of a chunk: repeats would suit the dictionary
            print(f"\nthe requests of the sample run data/defer-zram ({real.num_rows:,} rows, recorded):")
            _encodings(real, Path(tmp), k)
        else:
            print(f"\ncould not measure the recorded sample: {sample} is missing")
        run = RunWriter(Path(tmp) / "run", {})
        cost = cpu_ns_per_row(lambda: run.append("requests", records.columns("requests", rows)), n, k)
        run.close()
        size = os.path.getsize(run.table_path("requests")) / (n * k)
        print(f"{'RunWriter.append (columns + conform + write)':<46}{cost:>8.0f}{size:>20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
