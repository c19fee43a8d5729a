"""The report's multi-queue tables, on the shipped sample runs (data/mq-*, data/qemu-10.0-mq)."""

import html
import re
from pathlib import Path

from plugtrace.analysis import Run, df_queue_stats, df_thread_batching
from plugtrace.report import render

DATA = Path(__file__).resolve().parents[2] / "data"


def _text(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_a_multi_queue_run_shows_batching_per_thread_and_queue():
    model, qemu = Run.open(DATA / "mq-device-plug"), Run.open(DATA / "qemu-10.0-mq")
    page = render([model, qemu], interactive=False)
    text = _text(page)
    assert "Batching per thread" in text and page.count('alt="SQEs per enter, per thread"') == 2
    assert "Batching per queue (requests another thread's plug held: other_thread)" in text
    assert "Queues (guest CPUs, QEMU thread, guest requests)" in text
    threads = df_thread_batching([model, qemu])
    # the model's threads from its own log, QEMU's from the kernel's counts: every request once
    assert threads[threads.run == "mq-device-plug"]["sqes"].sum() == model.summary["nr_requests"]
    assert threads[threads.run == "qemu-10.0-mq"]["sqes"].sum() == qemu.summary["qemu_workload_requests"]
    queues = df_queue_stats(model)
    assert list(queues["queue"]) == [0, 1] and queues["requests"].sum() == model.summary["nr_requests"]


def test_a_one_queue_run_has_no_multi_queue_tables():
    text = _text(render([Run.open(DATA / "defer")], interactive=False))
    assert "Batching per thread" not in text and "Batching per queue" not in text
