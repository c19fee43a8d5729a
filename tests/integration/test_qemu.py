"""plugtrace qemu as a user runs it: real QEMU 7.2 and 10.0 guests (TCG), real bpftrace, real devices.

Each test boots one guest for about 10 s; the counts it checks are exact:
the SQEs the kernel saw QEMU submit equal QEMU's own io_uring requests (uprobes), those after
the guest's start mark equal the guest workload's own count, and sections equal the calls
that open them.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from plugtrace.analysis import Run
from tests.helpers import PLUGTRACE, require, require_bpftrace


def require_qemu(version: str) -> None:
    require_bpftrace()
    from plugtrace.errors import PlugtraceError
    from plugtrace.qemu.image import guest_image
    from plugtrace.qemu.versions import find_qemu

    try:
        find_qemu(version)
        guest_image()
    except PlugtraceError as exc:
        require(False, exc.message)


def qemu(*args, timeout=180):
    return subprocess.run(
        [*PLUGTRACE, "qemu", "--accel", "tcg", "--size", "256M", "--sparse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def counters(run_dir: Path) -> dict:
    rows = pq.read_table(run_dir / "tables" / "qemu_counters.parquet").to_pylist()
    return {(r["name"], r["device"]): r["value"] for r in rows}


def leftovers() -> tuple:
    qemus = subprocess.run(["pgrep", "-f", "plugtrace-guest"], capture_output=True, text=True).stdout.split()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.count("plugtrace")
    return qemus, loops


def test_qemu_10_default_probes_count_the_guest_exactly_from_the_kernel(tmp_path):
    """The default (--qemu-probes mark): no uprobe in QEMU's iothread, the guest's requests counted by the
    kernel after the guest's start mark, exactly the guest's own count."""
    require_qemu("10.0")
    before = leftovers()
    out = tmp_path / "q10"
    p = qemu("--qemu", "10.0", "--device", "loop", "--disks", "2", "--duration", "1", "-o", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    s, c = meta["summary"], counters(out)
    assert meta["config"]["qemu_probes"] == "mark" and s["workload_requests"] > 1000
    assert s["qemu_workload_requests"] == s["workload_requests"] and s["qemu_boot_requests"] == s["boot_requests"]
    assert s["qemu_requests_source"].startswith("io_uring_submit_req")
    assert {name for name, _ in c} == {"io_uring_submit_req", "io_uring_submit_req_workload"}
    h = pq.read_table(out / "tables" / "histograms.parquet").to_pandas()
    sizes = h[h.name == "submit_nr_sqes"]
    assert int((sizes.low * sizes["count"]).sum()) == s["qemu_requests"] == c[("io_uring_submit_req", -1)]
    not_asked = meta["probes"]["not_asked"]
    assert {"qemu:luring_co_submit", "qemu:virtio_blk_handle_vq", "qemu:aio_poll"} <= set(not_asked)
    assert "not recorded (--qemu-probes mark" in p.stdout
    assert leftovers() == before


def test_qemu_10_aggregate_counts_match_the_guest(tmp_path):
    require_qemu("10.0")
    before = leftovers()
    out = tmp_path / "q10"
    p = qemu("--qemu", "10.0", "--device", "loop", "--disks", "2", "--duration", "2", "--qemu-probes", "on",
             "-o", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    s, c = meta["summary"], counters(out)
    assert meta["config"]["qemu"]["design"] == "defer" and meta["config"]["accel"] == "tcg"
    assert s["workload_requests"] > 1000
    # the guest's own count = what QEMU handed io_uring after the guest's start mark
    assert s["qemu_workload_requests"] == s["workload_requests"]
    # every request QEMU handed io_uring is one SQE the kernel saw QEMU submit
    h = pq.read_table(out / "tables" / "histograms.parquet").to_pandas()
    sizes = h[h.name == "submit_nr_sqes"]
    assert int((sizes.low * sizes["count"]).sum()) == s["qemu_requests"] == c[("luring_co_submit", -1)]
    # sections: each handler run opens one; begins and ends pair up
    assert c[("defer_call_begin", -1)] == c[("defer_call_end", -1)]
    assert c[("sections", 0)] + c[("sections", 1)] == c[("virtio_blk_handle_vq", -1)] == c[("sections_handler", -1)]
    assert c[("sections", 0)] > 0 and c[("sections", 1)] > 0  # both disks' iothreads
    # arrivals, from the aggregate probes (none per request but luring_co_submit): every handler
    # run was a kick or a poll, and handed its requests to io_uring (all of them: no IDE disk here)
    assert c.get(("handler_runs_kick", -1), 0) + c.get(("handler_runs_poll", -1), 0) == c[("virtio_blk_handle_vq", -1)]
    hist = pq.read_table(out / "tables" / "qemu_histograms.parquet").to_pandas()
    per_handler = hist[hist.name == "requests_per_handler"]
    assert int(per_handler["count"].sum()) == c[("virtio_blk_handle_vq", -1)]
    # the requests handler runs handed io_uring; a request whose coroutine waited submits later, outside one
    in_handler = c[("luring_co_submit_in_handler", -1)]
    assert int((per_handler.low * per_handler["count"]).sum()) == in_handler <= c[("luring_co_submit", -1)]
    # each request's wait before the kernel took it: one per SQE
    assert int(hist[hist.name == "wait_before_submit_ns"]["count"].sum()) == s["qemu_requests"]
    # the per-request probes are off in aggregate mode, and the run says how to have them
    assert ("virtqueue_pop", -1) not in c and "qemu:virtqueue_pop" in meta["probes"]["not_asked"]
    assert "qemu:defer" in meta["probes"]["ran"]
    assert leftovers() == before
    run = Run.open(out)
    assert run.strategy == "real QEMU 10.0.2"
    # the report puts a model run (a shipped sample) and the real one side by side
    model = Path(__file__).resolve().parents[2] / "data" / "defer"
    report = subprocess.run(
        [*PLUGTRACE, "report", str(model), str(out), "-o", str(tmp_path / "r.html"), "--static"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "r.html").read_text()
    assert "real QEMU 10.0.2" in html and "defer" in html


def test_qemu_72_events_sections_and_requests(tmp_path):
    require_qemu("7.2")
    before = leftovers()
    out = tmp_path / "q72"
    p = qemu(
        "--qemu",
        "7.2",
        "--device",
        "zram",
        "--disks",
        "2",
        "--iothreads",
        "shared",
        "--ide-disks",
        "1",
        "--duration",
        "2",
        "--mode",
        "events",
        "-o",
        str(out),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    s, c = meta["summary"], counters(out)
    assert meta["config"]["qemu"]["design"] == "plug"
    assert s["qemu_workload_requests"] == s["workload_requests"] > 1000
    assert set(meta["guest"]["workload"]) == {"vda", "vdb", "sda"}
    uring = pq.read_table(out / "tables" / "uring_requests.parquet").to_pandas()
    assert (uring.event == "submit").sum() == c[("luring_co_submit", -1)] == s["qemu_requests"]
    # both tracers' buffers are deep enough for this load: nothing lost, and the loss is said per tracer
    assert meta["probes"]["lost_events"] == {"qemu:plug": 0}, meta["probes"]["lost_events"]
    assert meta["events_lost"] == 0, meta["kernel_summary"]
    sections = pq.read_table(out / "tables" / "sections.parquet").to_pandas()
    handlers = pq.read_table(out / "tables" / "handlers.parquet").to_pandas()
    assert len(sections) == c[("sections", -1)] == c[("virtio_blk_handle_vq", -1)]
    assert c[("blk_io_plug", -1)] == c[("blk_io_unplug", -1)] >= len(sections)
    assert len(handlers) == c[("virtio_blk_handle_vq", -1)]
    # notifications are event_notifier_set() on a guest notifier: at most one per completion
    assert 0 < c[("guest_notifications", -1)] <= c[("virtqueue_push", -1)]
    assert sorted(sections.owner.unique()) == [0, 1]  # both disks, one shared iothread
    assert sections.nr_deferred_calls.sum() == c[("luring_co_submit_in_section", -1)]
    assert (sections.end_ns >= sections.begin_ns).all()
    requests = pq.read_table(out / "tables" / "qemu_requests.parquet").to_pandas()
    assert len(requests) == c[("luring_co_submit", -1)]
    check_sections_and_arrivals(out, c)
    virtio = requests[requests.device >= 0]  # IDE requests run outside any handler
    assert sorted(virtio.device.unique()) == [0, 1] and (virtio.op == 0).all()
    sent = requests[requests.submit_ns >= 0]
    assert len(sent) > 0.99 * len(requests) and (sent.submit_ns >= sent.queue_ns).all()
    assert leftovers() == before
    from plugtrace.analysis import df_batch_sizes, df_sections

    assert len(df_sections(Run.open(out))) == len(sections)
    assert df_batch_sizes(Run.open(out))["count"].sum() > 0


def check_sections_and_arrivals(out: Path, c: dict) -> None:
    """An events run's sections, handler runs and requests, against each other and the counters."""
    t = {
        n: pq.read_table(out / "tables" / f"{n}.parquet").to_pandas()
        for n in ("sections", "qemu_sections", "handlers", "qemu_handlers", "qemu_requests")
    }
    sections = t["sections"].merge(t["qemu_sections"], on="section_id", validate="1:1")
    assert len(sections) == len(t["sections"]) == c[("sections", -1)]
    # every request's section is a row of sections, and a handler's where a handler queued it
    requests = t["qemu_requests"]
    assert set(requests.section_id[requests.section_id >= 0]) <= set(sections.section_id)
    assert (requests.section_id[requests.device >= 0] >= 0).all()
    handlers = pd.concat([t["handlers"], t["qemu_handlers"].drop(columns=["tid", "begin_ns"])], axis=1)
    assert (t["qemu_handlers"][["tid", "begin_ns"]] == t["handlers"][["tid", "begin_ns"]]).all().all()
    assert len(handlers) == c[("virtio_blk_handle_vq", -1)]
    # one handler section per handler run; those that carried requests are the runs that queued I/O
    kind = sections.set_index("section_id")["kind"]
    assert (kind == "handler").sum() == len(handlers) == c[("sections_handler", -1)]
    queued = set(handlers.opened_section_id[handlers.nr_submitted > 0])
    assert queued == set(requests.section_id[requests.device >= 0]) == set(kind[list(queued)].index)
    assert (kind[list(queued)] == "handler").all()
    assert handlers.nr_submitted.sum() == (requests.device >= 0).sum()
    # arrivals: the requests each run popped, why it ran, from which virtqueue
    assert handlers.nr_requests.sum() == c[("virtqueue_pop", -1)] and (handlers.nr_requests >= 0).all()
    assert handlers.cause.value_counts().to_dict() == {
        k: c[(f"handler_runs_{k}", -1)] for k in ("kick", "poll") if (f"handler_runs_{k}", -1) in c
    }
    assert set(handlers.vq) <= {0, 1}  # a virtqueue per vCPU (-smp 2)
    assert (requests.length_bytes[requests.device >= 0] == 4096).all()
    assert (requests.nr_guest_requests[requests.device >= 0] == 1).all()


def test_qemu_10_events_sections_by_their_own_nesting(tmp_path):
    require_qemu("10.0")
    out = tmp_path / "q10e"
    p = qemu(
        "--qemu",
        "10.0",
        "--device",
        "zram",
        "--disks",
        "2",
        "--iothreads",
        "shared",
        "--duration",
        "2",
        "--mode",
        "events",
        "-o",
        str(out),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    s, c = meta["summary"], counters(out)
    assert s["qemu_workload_requests"] == s["workload_requests"] > 1000
    uring = pq.read_table(out / "tables" / "uring_requests.parquet").to_pandas()
    assert (uring.event == "submit").sum() == c[("luring_co_submit", -1)] == s["qemu_requests"]
    assert meta["probes"]["lost_events"] == {"qemu:defer": 0} and meta["events_lost"] == 0
    check_sections_and_arrivals(out, c)
    # 10.0 also opens sections to reap completions: outside a handler, or nested in the handler's
    # own (its submit reaps at once), which QEMU's level alone would have ended early
    q = pq.read_table(out / "tables" / "qemu_sections.parquet").to_pandas()
    assert (q.kind == "completion").sum() == c[("sections_completion", -1)] > 0
    assert q.nr_nested_sections.sum() > 0
    assert c[("defer_call_begin", -1)] == c[("sections", -1)] + q.nr_nested_sections.sum()


def test_compare_two_qemus_and_gate_on_it(tmp_path):
    """--compare on real guests (2 runs each, 1 s: the shortest that gives an interval)."""
    require_qemu("7.2")
    require_qemu("10.0")
    before = leftovers()
    out = tmp_path / "ab"
    # --qemu-probes full: notifications per completion need the per-request probes the default leaves off
    p = qemu("--compare", "7.2", "10.0", "--repeats", "2", "--device", "zram", "--duration", "1",
             "--qemu-probes", "full", "-o", str(out), timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((out / "compare.json").read_text())
    assert result["runs"] == {k: [str(out / k / f"r{i}") for i in (1, 2)] for k in ("A", "B")}
    for label, version in (("A", "7.2"), ("B", "10.0")):
        for path in result["runs"][label]:
            meta = json.loads((Path(path) / "meta.json").read_text())
            assert meta["config"]["qemu"]["name"] == version
            assert meta["summary"]["qemu_workload_requests"] == meta["summary"]["workload_requests"]
    rows = {r["metric"]: r for r in result["metrics"]}
    assert rows["iops"]["n_a"] == rows["iops"]["n_b"] == 2 and rows["iops"]["a_ci_low"] <= rows["iops"]["a"]
    assert rows["mean_sqes_per_submit"]["a"] > 1 and rows["notifications_per_completion"]["b"] > 0
    gate = subprocess.run(
        [*PLUGTRACE, "diff", str(out / "A"), str(out / "B"), "--fail-if", "iops < -1000%"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert gate.returncode == 0 and "means of 2 runs each" in gate.stdout, gate.stdout + gate.stderr
    assert leftovers() == before


def test_missing_qemu_says_could_not_measure(tmp_path):
    require_bpftrace()
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 9.9.9'\n")
    fake.chmod(0o755)
    p = qemu("--qemu", str(fake), "--device", "loop", "-o", str(tmp_path / "r"), timeout=60)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "could not measure" in p.stderr or "did not" in p.stderr, p.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_stopped_recorder_leaves_no_qemu_device_or_probe(tmp_path, sig):
    require_qemu("10.0")
    before = leftovers()
    proc = subprocess.Popen(
        [
            *PLUGTRACE,
            "qemu",
            "--qemu",
            "10.0",
            "--accel",
            "tcg",
            "--size",
            "64M",
            "--sparse",
            "--duration",
            "30",
            "-o",
            str(tmp_path / "r"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not leftovers()[0]:
        time.sleep(0.2)
    assert leftovers()[0], "QEMU never started"
    time.sleep(3)  # booted and traced
    bpftraces = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "bpftrace"], capture_output=True, text=True
    ).stdout.split()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and leftovers() != before:
        time.sleep(0.2)
    assert leftovers() == before

    def alive(pid: str) -> bool:  # a zombie waiting for init to reap it holds no probe
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(map(alive, bpftraces)):
        time.sleep(0.2)
    assert not any(map(alive, bpftraces))
    events = Path("/sys/kernel/tracing/uprobe_events")
    assert "qemu-system" not in (events.read_text() if events.exists() else "")
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert json.loads((tmp_path / "r" / "meta.json").read_text())["status"] == "interrupted"


def test_qemu_10_queues_on_iothreads_of_their_own_count_exactly_per_queue(tmp_path):
    """Two virtqueues on two iothreads (iothread-vq-mapping): each guest job pinned to a CPU issues on
    that CPU's queue, and the kernel's count of each iothread's SQEs is exactly its queue's guest requests."""
    require_qemu("10.0")
    before = leftovers()
    out = tmp_path / "mq"
    p = qemu("--qemu", "10.0", "--device", "loop", "--queues", "2", "--iothreads", "per-queue", "--iodepth", "16",
             "--duration", "1", "-o", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    s = meta["summary"]
    assert meta["config"]["queues"] == 2 and meta["emulated_devices"][0]["vq_threads"] == ["IO iot0", "IO iot1"]
    queues = {q["thread"]: q for q in s["queues"]}
    assert [(q["queue"], q["cpus"], q["guest_jobs"]) for q in s["queues"]] == [(0, [0], 1), (1, [1], 1)]
    threads = {t["thread"]: t for t in s["qemu_threads"]}
    assert set(threads) == set(queues) == {"IO iot0", "IO iot1"}  # nothing else submitted during the workload
    for name, q in queues.items():
        assert threads[name]["sqes"] == q["guest_requests"] > 100
        assert threads[name]["enters"] > 0
    assert sum(q["guest_requests"] for q in s["queues"]) == s["workload_requests"] == s["qemu_workload_requests"]
    assert "IO iot1: " in p.stdout and "queue vda/1 (guest CPUs 1, IO iot1)" in p.stdout
    assert leftovers() == before


def test_qemu_10_events_mode_records_each_queues_handler_runs(tmp_path):
    """Two queues on one iothread, events mode: the handler runs of each vq after the start mark popped
    exactly that queue's guest requests."""
    require_qemu("10.0")
    from plugtrace.analysis import df_qemu_queue_stats

    out = tmp_path / "mq"
    p = qemu("--qemu", "10.0", "--device", "loop", "--queues", "2", "--iothreads", "shared", "--iodepth", "16",
             "--duration", "1", "--mode", "events", "-o", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    run = Run.open(out)
    stats = df_qemu_queue_stats(run)
    guest = {q["queue"]: q["guest_requests"] for q in run.meta["summary"]["queues"]}
    assert dict(zip(stats["vq"], stats["requests"])) == guest and len(guest) == 2
    assert stats["tid"].nunique() == 1  # one iothread serves both
    handlers = pq.read_table(out / "tables" / "handlers.parquet").to_pandas()
    assert set(handlers["queue"]) == {0, 1}


def test_qemu_72_per_queue_iothreads_could_not_measure(tmp_path):
    require_qemu("7.2")
    before = leftovers()
    p = qemu(
        "--qemu", "7.2", "--device", "loop", "--queues", "2", "--iothreads", "per-queue", "-o", str(tmp_path / "x")
    )
    assert p.returncode != 0 and "could not measure --iothreads per-queue" in p.stderr
    assert "iothread-vq-mapping" in p.stderr and not (tmp_path / "x").exists()
    assert leftovers() == before
