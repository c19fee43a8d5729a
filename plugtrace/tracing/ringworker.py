"""One events-mode probe as our own programs: attach, read the ring buffer, write Parquet.

    python -m plugtrace.tracing.ringworker TABLE OUT.parquet [--pid P] [--device MAJ:MIN] [--max-events N]

The programs (`bpfprobes.py`) write fixed-size binary records into a BPF ring
buffer without waking anyone; this process reads the ring on its own clock
(as seldom as the ring's fill allows, POLL_S to MAX_POLL_S), takes the records as numpy columns and writes them to the
table in chunks: no text, no per-event wakeup, no Python object per event.
It speaks `worker.py`'s protocol on stdout (``{"attached_probes": N}``, then
``{"done": {...}}``), so `Tracer` runs it in place of a bpftrace | worker
pair. SIGINT or SIGTERM end it: it reads what is left in the ring, closes
the table and reports. Events a full ring refused are counted by the
programs themselves (``lost_events``, exact); rows over ``--max-events`` are
counted as ``dropped``.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time

import numpy as np
import pyarrow as pa

from .bpfprobes import EVENTS
from .probes import PROBES
from .worker import FLUSH_INTERVAL_S, FLUSH_ROWS, _say, _TableFile

#: the shortest and longest pause between reads of the ring: the reader wakes as seldom as the
#: ring allows, since each wake-up takes a CPU from the engine on a small machine (a 20,000-request
#: run on zram lasts under 0.1 s: its readers should not run at all meanwhile)
POLL_S = 0.02
MAX_POLL_S = 0.25


def next_pause(read_bytes: int, pause: float, ring_bytes: int) -> float:
    """Seconds to sleep before the next read, given that the last one found `read_bytes` after
    sleeping `pause`: long enough that the ring fills to about a quarter at the rate seen, within
    [POLL_S, MAX_POLL_S]; 0 (read again at once) when it was a quarter full already."""
    if read_bytes >= ring_bytes // 4:
        return 0.0
    if read_bytes <= 0:
        return MAX_POLL_S
    rate = read_bytes / max(pause, POLL_S)
    return min(MAX_POLL_S, max(POLL_S, ring_bytes / 4 / rate))


def to_table(values: dict, spec) -> pa.Table:
    """The programs' columns (`_Events.columns()`) -> the probe's table, columns as `probes.py` declares them."""
    labels = dict(spec.labels)
    cols = []
    for name, typ in spec.columns:
        if name in labels:
            cols.append(pa.DictionaryArray.from_arrays(pa.array(values[name].astype(np.int32)), pa.array(labels[name])))
        else:
            cols.append(pa.array(values[name]).cast(typ))
    return pa.Table.from_arrays(cols, names=[n for n, _ in spec.columns])


def run(
    table: str, out: str, pid: int | None, device: str | None, max_events: int | None, existing_children: bool = False
) -> dict:
    spec = next(p for p in PROBES if p.table == table and "events" in p.modes)
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(1))
    wake_r, wake_w = os.pipe()  # a signal ends a pause at once (a sleep would be resumed after the handler)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    progs = EVENTS[table](pid, device, existing_children=existing_children)
    progs.start()
    _say({"attached_probes": len(progs.attached)})
    sink = _TableFile(out, table)
    pending: list[np.ndarray] = []  # records read, not yet converted: converted per flush, not per read
    pending_rows, kept, dropped, last_flush = 0, 0, 0, time.monotonic()
    pause = POLL_S
    try:
        while True:
            done = bool(stopping)  # decided before reading: the last read sees everything before the signal
            recs = progs.read()
            if len(recs):
                room = len(recs) if max_events is None else max(0, min(len(recs), max_events - kept))
                dropped += len(recs) - room
                if room:
                    pending.append(recs[:room])
                    pending_rows += room
                    kept += room
            now = time.monotonic()
            if pending and (done or pending_rows >= FLUSH_ROWS or now - last_flush >= FLUSH_INTERVAL_S):
                sink.write([to_table(progs.columns(np.concatenate(pending)), spec)])
                pending, pending_rows, last_flush = [], 0, time.monotonic()
            if done and not len(recs):
                break
            ring = progs.ring
            if ring is not None:
                pause = next_pause(len(recs) * ring.dtype.itemsize, pause, ring.size)
                if pause and not stopping:
                    select.select([wake_r], [], [], pause)
        lost = progs.lost()
    finally:
        progs.stop()
        sink.close()
    return {
        "rows": sink.rows,
        "kept": kept,
        "dropped": dropped,
        "lost_events": lost,
        "maps": {},
        "messages": [],
        "error": sink.error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=sorted(EVENTS))
    parser.add_argument("out", help="Parquet file to write")
    parser.add_argument("--pid", type=int, default=None, help="process to trace, with its children (default: all)")
    parser.add_argument(
        "--existing-children", action="store_true", help="also the children --pid forked before tracing began"
    )
    parser.add_argument("--device", default=None, help="MAJ:MIN of the block device to watch")
    parser.add_argument("--max-events", type=int, default=None, help="keep at most this many rows")
    args = parser.parse_args(argv)
    # Arrow's default pool (mimalloc) kept more memory per reader than malloc, which hands
    # the small, short-lived buffers of each read back; one reader runs per probe (the README's
    # "Benchmarks" gives the recorder's memory with both)
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        done = run(args.table, args.out, args.pid, args.device, args.max_events, args.existing_children)
    except OSError as exc:  # BpfError among them: the message says which program and why
        print(f"our {args.table} programs could not load: {exc.strerror or exc}", file=sys.stderr)
        return 1
    _say({"done": done})
    return 0


if __name__ == "__main__":
    sys.exit(main())
