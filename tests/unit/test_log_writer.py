"""The engine's log writer thread holds the log while the workload runs and writes it when the
workload has stopped, unless it outgrows what it may hold; what it hands on stays in order."""

import numpy as np

from plugtrace.engine import records
from plugtrace.engine import run as engine_run


def _chunk(start: int, n: int) -> np.ndarray:
    rows = np.zeros(n, dtype=records.DTYPES["requests"])
    rows["req_id"] = np.arange(start, start + n)
    return rows


_KEY = {"requests": "req_id", "submits": "submit_seq"}


def _writer(hold_bytes: int):
    handed: list[tuple[str, list[int]]] = []
    writer = engine_run._LogWriterThread(
        lambda name, cols: handed.append((name, cols[_KEY[name]].tolist())),
        on_error=lambda: None,
        hold_bytes=hold_bytes,
    )
    return writer, handed


def test_held_log_is_handed_on_at_close_with_each_tables_first_chunk_at_once():
    writer, handed = _writer(hold_bytes=1 << 30)
    for k in range(5):
        writer.put("requests", _chunk(100 * k, 100))
    writer.put("submits", np.zeros(3, dtype=records.DTYPES["submits"]))
    writer.close()
    assert [name for name, _ in handed] == ["requests", "submits", "requests"]
    assert handed[0][1] == list(range(100))
    assert handed[2][1] == list(range(100, 500))
    assert writer.rows_while_running == 0 and not writer.overflowed


def test_a_log_over_its_budget_is_written_while_running_and_counted(monkeypatch):
    monkeypatch.setattr(engine_run, "LOG_BATCH_ROWS", 250)
    size = _chunk(0, 100).nbytes
    writer, handed = _writer(hold_bytes=2 * size)  # the first chunk goes at once; the 4th puts 3 over
    for k in range(10):
        writer.put("requests", _chunk(100 * k, 100))
    writer.close()
    ids = [i for _, rows in handed for i in rows]
    assert ids == list(range(1000))  # nothing lost, nothing reordered
    assert writer.overflowed
    assert all(len(rows) <= 250 for _, rows in handed)
    # chunks 1-3 went when the 4th passed the budget, then 4-6 and 7-9 as each reached 250 rows
    assert writer.rows_while_running == 300 + 300 + 300
