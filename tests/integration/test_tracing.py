"""Real bpftrace on real devices: what eBPF sees must agree with the engine's own log and with fio."""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plugtrace.devices import block_stat
from plugtrace.run import read_meta, read_table
from plugtrace.tracing.capabilities import detect_capabilities
from plugtrace.tracing.probes import kernel_dev_t
from tests.helpers import PLUGTRACE, require, require_bpftrace


def record(out, *args, env=None, check=True):
    p = subprocess.run(
        [*PLUGTRACE, "record", "--quiet", "-o", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@functools.cache
def capabilities():
    return detect_capabilities()


def bpftrace_processes() -> str:
    return subprocess.run(["pgrep", "-a", "bpftrace"], capture_output=True, text=True).stdout


def submitting_enters(out) -> pd.DataFrame:
    enters = read_table(out, "enters")
    return enters[enters["to_submit"] > 0]


@pytest.fixture
def bpf():
    require_bpftrace()
    before = bpftrace_processes()
    yield
    assert bpftrace_processes() == before, "a bpftrace process was left behind"


@pytest.mark.parametrize("backend", ["libbpf", "bpftrace"])
def test_defer_sqes_per_enter_match_the_app_log_exactly(tmp_path, bpf, backend):
    """Events mode, with our ring buffer programs and with the bpftrace scripts."""
    if backend == "libbpf":
        require(capabilities().libbpf[0], f"our libbpf programs cannot load: {capabilities().libbpf[1]}")
    out = tmp_path / "run"
    record(
        out,
        "--device",
        "loop",
        "--size",
        "128M",
        "--strategy",
        "defer",
        "--devices",
        "2",
        "--iodepth",
        "32",
        "--requests",
        "20000",
        "--mode",
        "events",
        env={"PLUGTRACE_FORCE_MISSING": "libbpf"} if backend == "bpftrace" else None,
    )
    submits = read_table(out, "submits")
    enters = submitting_enters(out)
    meta = read_meta(out)
    assert meta["probes"]["backends"]["enters"].startswith(backend)
    assert meta["probes"]["backends"]["uring_requests"].startswith(backend)
    uring = read_table(out, "uring_requests")
    requests = read_table(out, "requests")
    assert (uring["event"] == "submit").sum() == (uring["event"] == "complete").sum() == len(requests)
    assert (uring[uring["event"] == "complete"]["res"] == 4096).all()
    assert meta["events_lost"] == 0
    assert len(enters) == len(submits), "eBPF and the app log disagree on the number of submits"
    assert np.array_equal(np.sort(enters["ret"].to_numpy()), np.sort(submits["nr_sqes"].to_numpy()))
    assert enters["ret"].mean() > 8, "defer at iodepth 32 should batch"
    assert set(enters["tid"]) == set(submits["tid"])
    # the two clocks are one: every app submit lies within the recording's kernel events
    assert enters["ts_ns"].min() <= submits["start_ns"].min() + 10_000_000


@pytest.mark.parametrize("mode", ["aggregate", "events"])
def test_a_program_the_verifier_refuses_falls_back_to_its_script(tmp_path, bpf, mode):
    """The run says why our program could not load, at which line of C, and bpftrace measures the probe."""
    require(capabilities().libbpf[0], f"our libbpf programs cannot load: {capabilities().libbpf[1]}")
    from tests.integration.test_libbpf import probes_copy_with_a_bug

    probes, line = probes_copy_with_a_bug(tmp_path)
    out = tmp_path / "run"
    p = record(
        out,
        "--device",
        "loop",
        "--size",
        "64M",
        "--strategy",
        "defer",
        "--iodepth",
        "32",
        "--requests",
        "2000",
        "--mode",
        mode,
        "--probes",
        "uring_requests,block_unplug",
        env={"PLUGTRACE_PROBES": str(probes)},
    )
    meta = read_meta(out)
    backends = meta["probes"]["backends"]
    assert backends["uring_requests"] == "libbpf"
    assert (
        backends["block_unplug"].startswith("bpftrace (libbpf: ")
        and f"block_plug.bpf.c:{line}" in backends["block_unplug"]
    ), backends
    said = [s for s in p.stderr.splitlines() if "could not measure: block_unplug: " in s]
    assert len(said) == 1 and "the verifier rejected unplug" in said[0] and "with bpftrace instead" in said[0]
    assert "block_unplug" not in meta["probes"]["could_not_measure"]
    if mode == "events":
        assert len(read_table(out, "block_unplug")) > 0 and len(read_table(out, "uring_requests")) > 0
    else:
        counters = dict(zip(*read_table(out, "counters")[["name", "value"]].T.values))
        assert counters["nr_unplugs"] > 0 and counters["nr_submits"] > 0


def test_immediate_submits_one_sqe_per_enter(tmp_path, bpf):
    out = tmp_path / "run"
    record(
        out,
        "--device",
        "loop",
        "--size",
        "128M",
        "--strategy",
        "immediate",
        "--iodepth",
        "16",
        "--requests",
        "5000",
        "--mode",
        "events",
    )
    enters = submitting_enters(out)
    assert len(enters) >= 5000
    assert (enters["ret"] == 1).all() and (enters["to_submit"] == 1).all()


@pytest.mark.parametrize("backend", ["libbpf", "bpftrace"])
def test_aggregate_histogram_matches_the_app_log(tmp_path, bpf, backend):
    """Both ways of counting SQEs per enter in the kernel (the syscall's result, and each
    request's position in its batch), in both forms: our programs and the bpftrace scripts."""
    if backend == "libbpf":
        require(capabilities().libbpf[0], f"our libbpf programs cannot load: {capabilities().libbpf[1]}")
    out = tmp_path / "run"
    # a sparse loop device is fast enough that batches of many sizes happen (on a filled one all are full)
    record(
        out,
        "--device",
        "loop",
        "--sparse",
        "--size",
        "128M",
        "--strategy",
        "defer",
        "--devices",
        "2",
        "--iodepth",
        "32",
        "--requests",
        "20000",
        "--probes",
        "enters,uring_requests,markers",
        env={"PLUGTRACE_FORCE_MISSING": "libbpf"} if backend == "bpftrace" else None,
    )
    meta = read_meta(out)
    assert meta["probes"]["backends"]["enters"].startswith(backend)
    assert meta["probes"]["backends"]["uring_requests"].startswith(backend)
    assert "histograms" in meta["probes"]["ran"]
    hist = read_table(out, "histograms")
    app = read_table(out, "submits")["nr_sqes"].value_counts()
    assert len(app) > 3  # batches of several sizes, so the positions are really told apart
    for name in ("enter_nr_sqes", "submit_nr_sqes"):
        sqes = hist[hist["name"] == name]
        assert dict(zip(sqes["low"], sqes["count"])) == app.to_dict(), name
        assert (sqes["high"] == sqes["low"] + 1).all()
    assert hist[hist["name"] == "enter_latency_ns"]["count"].sum() == len(read_table(out, "submits"))
    counters = dict(zip(*read_table(out, "counters")[["name", "value"]].T.values))
    assert (
        counters["nr_markers_section_begin"] == counters["nr_markers_section_end"] == len(read_table(out, "sections"))
    )
    assert meta["kernel_summary"]["nr_enters"] == int(app.sum())


def test_markers_give_one_begin_end_pair_per_section(tmp_path, bpf):
    out = tmp_path / "run"
    record(
        out,
        "--device",
        "loop",
        "--size",
        "128M",
        "--strategy",
        "defer",
        "--devices",
        "2",
        "--iodepth",
        "8",
        "--interleave",
        "0.2",
        "--requests",
        "5000",
        "--mode",
        "events",
        "--probes",
        "markers,enters",
    )
    markers = read_table(out, "markers")
    sections = read_table(out, "sections")
    begins = markers[markers["marker"] == "section_begin"]
    ends = markers[markers["marker"] == "section_end"]
    assert len(begins) == len(ends) == len(sections)
    assert sorted(begins["arg0"]) == sorted(ends["arg0"]) == sorted(sections["section_id"])
    pairs = begins.set_index("arg0")["ts_ns"].to_frame("begin").join(ends.set_index("arg0")["ts_ns"].rename("end"))
    assert (pairs["end"] >= pairs["begin"]).all()
    # the queued marker fires once per request the driver queued
    assert (markers["marker"] == "request_queued").sum() == len(read_table(out, "requests"))


def test_record_fio_counts_match_fio_json(tmp_path, bpf):
    require(shutil.which("fio") is not None, "fio is not installed")
    out = tmp_path / "run"
    data = tmp_path / "fio.dat"
    fio_json = tmp_path / "fio.json"
    p = record(
        out,
        "--mode",
        "events",
        "--",
        "fio",
        "--name=t",
        f"--filename={data}",
        "--size=16M",
        "--rw=randread",
        "--ioengine=io_uring",
        "--direct=1",
        "--iodepth=8",
        "--iodepth_batch_submit=4",
        "--number_ios=3000",
        "--output-format=json",
        f"--output={fio_json}",
    )
    job = json.loads(fio_json.read_text())["jobs"][0]
    ios = job["read"]["total_ios"]
    uring = read_table(out, "uring_requests")
    assert (uring["event"] == "submit").sum() == ios, p.stdout
    assert (uring["event"] == "complete").sum() == ios
    enters = submitting_enters(out)
    assert enters["ret"].sum() == ios
    # fio's iodepth_submit histogram: share of submit calls carrying 1-4 SQEs, 5-8, ...
    share_1_4 = (enters["ret"] <= 4).mean() * 100
    assert abs(share_1_4 - job["iodepth_submit"]["4"]) < 2.0


@pytest.mark.parametrize("backend", ["libbpf", "bpftrace"])
def test_aggregate_record_fio_counts_every_enter_of_its_job_process(tmp_path, bpf, backend):
    """fio forks its job: the forked child is followed, and every I/O it submits is counted."""
    require(shutil.which("fio") is not None, "fio is not installed")
    if backend == "libbpf":
        require(capabilities().libbpf[0], f"our libbpf programs cannot load: {capabilities().libbpf[1]}")
    out = tmp_path / "run"
    fio_json = tmp_path / "fio.json"
    record(
        out,
        "--",
        "fio",
        "--name=t",
        f"--filename={tmp_path / 'fio.dat'}",
        "--size=16M",
        "--rw=randread",
        "--ioengine=io_uring",
        "--direct=1",
        "--iodepth=8",
        "--number_ios=4000",
        "--output-format=json",
        f"--output={fio_json}",
        env={"PLUGTRACE_FORCE_MISSING": "libbpf"} if backend == "bpftrace" else None,
    )
    ios = json.loads(fio_json.read_text())["jobs"][0]["read"]["total_ios"]
    meta = read_meta(out)
    assert meta["probes"]["backends"]["uring_requests"].startswith(backend)
    assert "aggregate:enters" not in meta["probes"]["ran"]  # the syscall tracepoints only when asked
    hist = read_table(out, "histograms")
    sqes = hist[hist["name"] == "submit_nr_sqes"]
    assert int((sqes["low"] * sqes["count"]).sum()) == ios
    assert meta["kernel_summary"]["nr_enters"] == int(sqes["count"].sum()) > 0


# reads in io_uring batches, O_DIRECT writes, a flush, zeroing: requests of four kinds on the device
BLOCK_WORKLOAD = """
import fcntl, mmap, os, struct, sys
from tests.integration.test_libbpf import _read_batches
_read_batches(sys.argv[1], 3, 4)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 8192)
for k in range(5):
    os.pwrite(fd, buf, (100 + k) * 65536)
os.fsync(fd)
fcntl.ioctl(fd, 0x127f, struct.pack("QQ", 1 << 20, 65536))  # BLKZEROOUT
os.close(fd)
"""


def _completed_requests(path: str) -> int:
    """Requests the device completed, from its /sys/block stat: reads, writes and discards. An
    fsync's flush is counted there twice, as the data-less write asking for it (which the
    driver never gets, so no tracepoint shows it) and as the flush the driver got: the write
    stands for both."""
    stat = block_stat(path)
    return stat["reads"] + stat["writes"] + stat["discards"]


def test_block_request_events_are_those_bpftrace_prints(tmp_path, bpf):
    """Events mode with --watch-device: our block_rq programs give the requests the kernel
    counted on the device, with the same sectors, sizes and rwbs as probes/block_rq.bt."""
    require(capabilities().libbpf[0], f"our libbpf programs cannot load: {capabilities().libbpf[1]}")
    from plugtrace import devices

    tables = {}
    with devices.create_loop(16 << 20, str(tmp_path)) as dev:
        for backend, env in (("libbpf", None), ("bpftrace", {"PLUGTRACE_FORCE_MISSING": "libbpf"})):
            out = tmp_path / backend
            before = _completed_requests(dev.path)
            record(
                out,
                "--mode",
                "events",
                "--probes",
                "block_rq",
                "--watch-device",
                dev.path,
                "--",
                sys.executable,
                "-c",
                BLOCK_WORKLOAD,
                dev.path,
                env={"PYTHONPATH": str(Path(__file__).parents[2]), **(env or {})},
            )
            done = _completed_requests(dev.path) - before
            meta = read_meta(out)
            assert meta["probes"]["backends"]["block_rq"].startswith(backend)
            assert meta["config"]["watch_device"] == dev.path
            t = read_table(out, "block_rq")
            assert len(t) == done and set(t["dev"]) == {kernel_dev_t(dev.dev_t)}, (backend, len(t), done)
            assert (t["latency_ns"] == t["complete_ns"] - t["issue_ns"]).all() and (t["latency_ns"] > 0).all()
            tables[backend] = sorted(zip(t["sector"], t["nr_bytes"], t["rwbs"]))
    raw, reference = tables["libbpf"], tables["bpftrace"]
    # requests that move data are the same; the fsync's flush differs in its flags only: the script,
    # matching by (device, sector), can pair the flush the driver got with the completion of the
    # data-less write that asked for it (rwbs WS), where ours match the flush request itself by its tag
    assert [r for r in raw if r[1]] == [r for r in reference if r[1]] and len(raw) == len(reference)
    assert [r for r in raw if not r[1]] == [(0, 0, "FF")]  # sector 0 as the tracepoints give a flush
    kinds = {rwbs for _, _, rwbs in raw}
    assert {"R", "WS"} <= kinds and len(kinds) >= 4, kinds  # with the flush and the zeroing
    p = record(tmp_path / "bad", "--watch-device", "/dev/null", "--", "true", check=False)
    assert p.returncode != 0 and "not a block device" in p.stderr


def test_a_traced_program_gets_the_block_probes_when_its_device_is_named(tmp_path, bpf):
    """Without --watch-device, a traced program's block probes are off, and the run says so and
    how to turn them on; with it they count the device's requests and the program's unplugs."""
    from plugtrace import devices

    read = [
        sys.executable,
        "-c",
        "import sys; from tests.integration.test_libbpf import _read_batches; _read_batches(sys.argv[1], 6, 4)",
    ]
    env = {"PYTHONPATH": str(Path(__file__).parents[2])}
    with devices.create_loop(16 << 20, str(tmp_path)) as dev:
        p = record(tmp_path / "plain", "--", *read, dev.path, env=env)
        meta = read_meta(tmp_path / "plain")
        assert set(meta["probes"]["not_asked"]) == {"block_rq", "block_unplug"}
        assert "--watch-device" in meta["probes"]["not_asked"]["block_rq"]
        assert meta["probes"]["ran"] == ["histograms", "counters", "aggregate:uring_requests"]
        # a traced command owns stdout: the summary goes to stderr
        assert "not recorded block_rq, block_unplug: " in p.stderr and "not recorded" not in p.stdout
        before = block_stat(dev.path)["reads"]
        record(tmp_path / "watched", "--watch-device", dev.path, "--", *read, dev.path, env=env)
        done = block_stat(dev.path)["reads"] - before
    meta = read_meta(tmp_path / "watched")
    assert meta["probes"]["not_asked"] == {}
    assert {"aggregate:block_rq", "aggregate:block_unplug"} <= set(meta["probes"]["ran"])
    counters = dict(zip(*read_table(tmp_path / "watched", "counters")[["name", "value"]].T.values))
    assert counters["nr_block_rq"] == done == 24, (counters, done)
    hist = read_table(tmp_path / "watched", "histograms")
    unplugs = hist[hist["name"] == "unplug_nr_rq"]
    depths = dict(zip(unplugs["low"], unplugs["count"]))
    # one flush of 4 requests per submit; Python reading its own files may unplug single requests
    assert depths.get(4) == 6 and set(depths) <= {1, 4}, depths


def test_a_traced_program_gets_the_markers_only_when_it_loads_plugtrace(tmp_path, bpf):
    """fio or QEMU never load our extension: no marker bpftrace for them. A running process
    that has it loaded (here a workload of ours with its own tracing off) gets them."""
    record(tmp_path / "plain", "--", "true")
    assert not any("markers" in r for r in read_meta(tmp_path / "plain")["probes"]["ran"])
    ours = subprocess.Popen(
        [
            *PLUGTRACE,
            "record",
            "--quiet",
            "--device",
            f"file:{tmp_path / 'f.img'}",
            "--size",
            "64M",
            "--mode",
            "off",
            "--duration",
            "20",
            "-o",
            str(tmp_path / "ours"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # its extension loaded and its sections running
        record(tmp_path / "default", "--pid", str(ours.pid), "--duration", "1")
        record(tmp_path / "attached", "--pid", str(ours.pid), "--duration", "2", "--probes", "uring_requests,markers")
    finally:
        ours.terminate()
        ours.wait(30)
    # off by default even then (a uprobe trap per marker), and the run says how to turn them on
    assert "--probes" in read_meta(tmp_path / "default")["probes"]["not_asked"]["markers"]
    counters = dict(zip(*read_table(tmp_path / "attached", "counters")[["name", "value"]].T.values))
    assert counters.get("nr_markers_section_begin", 0) > 0, counters


def test_probes_option_runs_only_the_probes_asked_for(tmp_path, bpf):
    out = tmp_path / "run"
    record(out, "--device", "zram", "--size", "64M", "--requests", "3000", "--probes", "enters")
    meta = read_meta(out)
    assert [r for r in meta["probes"]["ran"] if r.startswith("aggregate:")] == ["aggregate:enters"]
    counters = set(read_table(out, "counters")["name"])
    assert "nr_enters" in counters and not any(n.startswith(("nr_markers", "nr_unplugs", "nr_block")) for n in counters)


def test_sigkill_of_bpftrace_is_reported_and_nothing_is_left(tmp_path, bpf):
    """The markers' events come from bpftrace (uprobes; the others from our ring buffer readers)."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *PLUGTRACE,
            "record",
            "--device",
            "loop",
            "--size",
            "128M",
            "--duration",
            "8",
            "--mode",
            "events",
            "--probes",
            "enters,uring_requests,block_rq,block_unplug,markers",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        for line in bpftrace_processes().splitlines():
            if "markers.bt" in line:
                victim = int(line.split()[0])
        time.sleep(0.2)
    assert victim, "bpftrace never started"
    time.sleep(2)
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    meta = read_meta(out)
    assert meta["status"] == "incomplete"
    assert "markers.bt" in meta["tracer_error"] and "SIGKILL" in meta["tracer_error"]
    assert "SIGKILL" in stderr
    assert len(read_table(out, "markers")) > 0, "what was captured before the kill is kept"
    assert len(read_table(out, "block_rq")) > 0
    assert len(read_table(out, "enters")) > 0
    assert len(read_table(out, "requests")) > 0


@pytest.mark.parametrize(
    "forced, probe",
    [
        ("block:block_rq_issue", "block_rq"),
        ("uprobes", "markers"),
        ("syscalls:sys_enter_io_uring_enter", "enters"),
    ],
)
def test_a_missing_capability_is_listed_and_the_rest_is_measured(tmp_path, bpf, forced, probe):
    out = tmp_path / "run"
    p = record(
        out,
        "--device",
        "loop",
        "--size",
        "128M",
        "--requests",
        "2000",
        "--mode",
        "events",
        "--probes",
        f"uring_requests,{probe}",
        env={"PLUGTRACE_FORCE_MISSING": forced},
    )
    meta = read_meta(out)
    assert meta["status"] == "complete"
    assert forced in meta["probes"]["could_not_measure"][probe]
    assert probe not in meta["probes"]["ran"] and probe not in meta["tables"]
    assert "uring_requests" in meta["probes"]["ran"]
    assert f"could not measure {probe}" in p.stdout + p.stderr


def test_with_no_way_to_load_programs_the_app_log_is_still_recorded(tmp_path, bpf):
    out = tmp_path / "run"
    p = record(
        out,
        "--device",
        "loop",
        "--size",
        "128M",
        "--requests",
        "2000",
        env={"PLUGTRACE_FORCE_MISSING": "bpftrace,libbpf"},
    )
    meta = read_meta(out)
    assert meta["status"] == "complete"
    assert "bpftrace is not installed" in meta["probes"]["could_not_measure"]["kernel"]
    assert "bpftrace is not installed" in p.stderr
    assert meta["events_lost"] is None
    assert len(read_table(out, "submits")) > 0


def test_doctor_reports_each_capability(bpf):
    p = subprocess.run([*PLUGTRACE, "doctor"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    for word in ("bpftrace", "tracefs", "btf", "uprobes", "io_uring", "liburing", "block:block_rq_issue"):
        assert word in p.stdout
    p = subprocess.run(
        [*PLUGTRACE, "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PLUGTRACE_FORCE_MISSING": "bpftrace,block:block_unplug"},
    )
    assert p.returncode == 4
    assert "bpftrace is not installed" in p.stdout and "block:block_unplug" in p.stdout


def test_without_bpftrace_our_own_programs_run_and_bpftrace_only_probes_are_listed(tmp_path, bpf):
    out = tmp_path / "run"
    p = record(
        out,
        "--device",
        "loop",
        "--size",
        "128M",
        "--requests",
        "2000",
        "--probes",
        "uring_requests,block_rq,markers",
        env={"PLUGTRACE_FORCE_MISSING": "bpftrace"},
    )
    meta = read_meta(out)
    assert meta["status"] == "complete"
    assert meta["probes"]["backends"]["uring_requests"] == "libbpf"
    assert "bpftrace is not installed" in meta["probes"]["could_not_measure"]["markers"]
    assert "could not measure markers" in p.stdout + p.stderr


@pytest.mark.parametrize("backend", ["libbpf", "bpftrace"])
def test_pid_of_a_program_whose_io_is_in_children_it_already_forked(tmp_path, bpf, backend):
    """fio's main process forks its jobs before we attach: --pid of it traces them too, with our own
    programs and with the bpftrace scripts that stand in for them."""
    require(shutil.which("fio") is not None, "fio is not installed")
    target = tmp_path / "f.img"
    fio = subprocess.Popen(
        [
            "fio",
            "--name=t",
            f"--filename={target}",
            "--size=64M",
            "--ioengine=io_uring",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=8",
            "--numjobs=2",
            "--time_based",
            "--runtime=8",
            "--direct=1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from plugtrace.procfs import descendants

        deadline = time.monotonic() + 30
        while len(descendants(fio.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # the jobs are running
        env = {"PLUGTRACE_FORCE_MISSING": "libbpf"} if backend == "bpftrace" else None
        p = record(tmp_path / "run", "--pid", str(fio.pid), "--duration", "2", env=env)
    finally:
        fio.terminate()
        fio.wait(30)
    assert "already has" in p.stderr
    meta = read_meta(tmp_path / "run")
    assert meta["probes"]["backends"]["uring_requests"].startswith(backend), meta["probes"]["backends"]
    assert meta["kernel_summary"]["nr_enters"] > 1000, meta["kernel_summary"]


@pytest.mark.parametrize("strategy", ["device-plug", "defer"])
def test_multi_queue_counts_hold_per_thread_and_queue(tmp_path, bpf, strategy):
    """Two queues of one device on two threads: eBPF's enters per thread are the app log's, every queue's
    requests are its guest job's, and only device-plug's shared plug holds one thread's requests for another."""
    out = tmp_path / strategy
    record(
        out,
        *("--device loop --size 128M --iodepth 16 --requests 12000 --mode events --queues 2 --threads 2".split()),
        *("--strategy", strategy),
    )
    meta = read_meta(out)
    assert meta["status"] == "complete"
    assert [(q["device"], q["queue"], q["thread"]) for q in meta["virtqueues"]] == [(0, 0, 0), (0, 1, 1)]
    requests = read_table(out, "requests")
    per_queue = requests.groupby("queue")["nr_guest_requests"].sum().to_dict()
    assert per_queue == {q["queue"]: q["completed"] for q in meta["virtqueues"]}
    assert sum(per_queue.values()) == meta["summary"]["nr_requests"] == 12000
    assert (requests["thread"] == requests["queue"]).all()  # queue q on thread q
    submits = read_table(out, "submits")
    enters = submitting_enters(out)
    for tid, mine in submits.groupby("tid"):
        theirs = enters[enters["tid"] == tid]
        assert np.array_equal(np.sort(theirs["ret"].to_numpy()), np.sort(mine["nr_sqes"].to_numpy()))
    held = requests[requests["deferred_by_thread"] >= 0]
    remote = submits[submits["reason"] == "remote_unplug"]
    if strategy == "defer":
        assert held.empty and remote.empty and "plug_overlaps" in meta["summary"]
        assert meta["summary"]["plug_overlaps"] == 0
    else:
        # a request another thread's unplug released left in an enter its own thread made for that unplug
        assert (held["deferred_by_thread"] != held["thread"]).all()
        assert len(held) == remote["nr_sqes"].sum()
        assert set(zip(held["thread"], held["submit_seq"])) == set(zip(remote["thread"], remote["submit_seq"]))
