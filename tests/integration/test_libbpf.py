"""Our eBPF programs (probes/*.bpf.c, loaded with libbpf) against I/O we make ourselves: exact counts."""

import mmap
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from plugtrace.devices import block_stat
from plugtrace.tracing.capabilities import detect_capabilities
from plugtrace.tracing.probes import PROBES_DIR
from plugtrace.uring import Ring
from tests.helpers import require, require_root

# an unrelated process: started before attaching, it is neither us nor our child
OTHER = textwrap.dedent("""
    import sys
    from plugtrace.uring import Ring
    f = open(sys.argv[1], "wb")
    sys.stdin.readline()
    with Ring(8) as r:
        for _ in range(7):
            r.prep_fsync(f.fileno(), 1)
            r.submit()
            r.wait()
            r.peek_batch()
    print("done", flush=True)
""")


def batches(ring: Ring, fd: int, n: int, size: int) -> None:
    for _ in range(n):
        for k in range(size):
            ring.prep_fsync(fd, k)
        assert ring.submit() == size
        got = 0
        while got < size:
            ring.wait()
            got += len(ring.peek_batch())


def test_enters_of_us_and_our_children_are_counted_exactly(tmp_path):
    require_root()
    ok, why = detect_capabilities().libbpf
    require(ok, f"our libbpf programs cannot load: {why}")
    from plugtrace.tracing.bpfprobes import EntersAggregate, SubmitAggregate
    from plugtrace.tracing.decode import batch_sizes_from_positions

    other = subprocess.Popen(
        [sys.executable, "-c", OTHER, str(tmp_path / "o")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    f = open(tmp_path / "f", "wb")
    with EntersAggregate(os.getpid()) as agg, SubmitAggregate(os.getpid()) as sub:
        with Ring(16) as ring:
            batches(ring, f.fileno(), 5, 3)
        pid = os.fork()
        if pid == 0:  # a child forked after attaching is followed
            try:
                with Ring(16) as ring:
                    batches(ring, f.fileno(), 2, 4)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        other.stdin.write("go\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "done"
        maps = agg.result()
        positions = sub.result()["uring_submit_pos"]
    other.wait()
    f.close()
    sqes = {b["min"]: b["count"] for b in maps["enter_nr_sqes"]}
    assert sqes == {3: 5, 4: 2}, maps
    assert maps["nr_enters"] == 7
    assert sum(b["count"] for b in maps["enter_latency_ns"]) == 7
    assert all(b["max"] >= b["min"] for b in maps["enter_latency_ns"])
    # the same batches from io_uring's per-request tracepoint: 7 batches reach positions 1-3, 2 reach 4
    assert {b["min"]: b["count"] for b in positions} == {1: 7, 2: 7, 3: 7, 4: 2}
    assert {b["min"]: b["count"] for b in batch_sizes_from_positions(positions)} == sqes


def test_a_verifier_rejection_names_the_c_source_line(tmp_path):
    """A program the verifier refuses: one line with the verifier's message and the line of C it points at."""
    require_root()
    from plugtrace.tracing.libbpf import BpfError, BpfObject

    probes, line = probes_copy_with_a_bug(tmp_path)
    with pytest.raises(BpfError) as refused:
        BpfObject("block_plug", path=probes / "build" / "block_plug.bpf.o").start()
    message = str(refused.value)
    assert "the verifier rejected unplug" in message and "invalid mem access" in message, message
    assert f"block_plug.bpf.c:{line}: {BROKEN}" in message, message
    assert "\n" not in message


#: a counter bumped without checking that the lookup found it: the verifier refuses the program
BROKEN = "{ uint32_t k = depth; uint64_t *c = bpf_map_lookup_elem(&unplug_nr_rq, &k); *c += 1; }"


def probes_copy_with_a_bug(tmp_path: Path) -> tuple[Path, int]:
    """probes/ copied and built, with block_plug.bpf.c's counting broken (`BROKEN`), and the
    line it is on."""
    require(shutil.which("clang") is not None and shutil.which("make") is not None, "clang or make is missing")
    probes = tmp_path / "probes"
    shutil.copytree(PROBES_DIR, probes, ignore=shutil.ignore_patterns("*.bpf.o"))
    source = probes / "block_plug.bpf.c"
    lines = source.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "if (!current_is_traced())" in line)
    lines.insert(at, "\t" + BROKEN)  # before the modes part: both meet it
    source.write_text("\n".join(lines) + "\n")
    subprocess.run(["make", "-s", "-C", str(probes)], check=True, capture_output=True)
    return probes, at + 1


def _read_batches(path: str, batches: int, size: int) -> None:
    """`batches` io_uring_enter calls of `size` 4 KiB O_DIRECT reads each, 64 KiB apart (nothing merges)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096 * size)
    try:
        with Ring(16) as ring:
            for b in range(batches):
                for k in range(size):
                    ring.prep_read(fd, memoryview(buf)[4096 * k : 4096 * (k + 1)], (b * size + k) * 65536, k)
                assert ring.submit() == size
                got = 0
                while got < size:
                    ring.wait()
                    got += len(ring.peek_batch())
    finally:
        os.close(fd)


def test_block_requests_and_unplugs_are_counted_exactly(tmp_path):
    """Requests on the watched device only (the kernel's own count is the reference);
    unplugs of our process only, each carrying the requests of one submit."""
    require_root()
    ok, why = detect_capabilities().libbpf
    require(ok, f"our libbpf programs cannot load: {why}")
    from plugtrace import devices
    from plugtrace.tracing.bpfprobes import BlockRqAggregate, UnplugAggregate

    with devices.create_loop(16 << 20, str(tmp_path)) as watched, devices.create_loop(16 << 20, str(tmp_path)) as other:
        # unrelated: started before attaching, neither us nor a child of ours; 5 reads per submit
        unrelated = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; sys.path[:0] = [sys.argv[1]]; "
                "from tests.integration.test_libbpf import _read_batches as r; "
                "sys.stdin.readline(); r(sys.argv[2], 4, 5); print('done', flush=True)",
                str(Path(__file__).parents[2]),
                other.path,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        before = block_stat(watched.path)["reads"]
        with BlockRqAggregate(os.getpid(), watched.dev_t) as rq, UnplugAggregate(os.getpid()) as unplug:
            _read_batches(watched.path, 6, 4)
            _read_batches(other.path, 3, 3)
            unrelated.stdin.write("go\n")
            unrelated.stdin.flush()
            assert unrelated.stdout.readline().strip() == "done"
            rq_maps, unplug_maps = rq.result(), unplug.result()
        after = block_stat(watched.path)["reads"]
        unrelated.wait()
    assert rq_maps["nr_block_rq"] == after - before == 24, rq_maps
    assert sum(b["count"] for b in rq_maps["block_latency_ns"]) == 24
    depths = {b["min"]: b["count"] for b in unplug_maps["unplug_nr_rq"]}
    # io_uring plugs a submit of more than 2 SQEs; other I/O of ours (Python reading a file) may unplug 1
    assert depths.get(4) == 6 and depths.get(3) == 3 and set(depths) <= {1, 3, 4}, unplug_maps
    assert unplug_maps["nr_unplugs"] == sum(depths.values())


def test_events_a_full_ring_refuses_are_counted_exactly(tmp_path):
    """Nobody reads a one-page ring: what did not fit is lost, and counted, to the
    event (the aggregate programs count the same calls as the reference)."""
    require_root()
    ok, why = detect_capabilities().libbpf
    require(ok, f"our libbpf programs cannot load: {why}")
    from plugtrace.tracing.bpfprobes import EntersAggregate, EntersEvents

    f = open(tmp_path / "f", "wb")
    with EntersAggregate(os.getpid()) as agg, EntersEvents(os.getpid(), ring_bytes=mmap.PAGESIZE) as ev:
        with Ring(16) as ring:
            batches(ring, f.fileno(), 200, 1)
        fits = mmap.PAGESIZE // ev.ring.dtype.itemsize
        recs, lost = ev.read(), ev.lost()
        assert len(ev.read()) == 0
        maps = agg.result()
    f.close()
    assert len(recs) == fits and lost > 0
    assert len(recs) + lost == maps["nr_enters"] + maps["nr_wait_enters"]
    submitting = recs[recs["to_submit"] > 0]
    assert (submitting["ret"] == 1).all() and (recs["latency_ns"] > 0).all()
    assert (recs["tid"] == threading.get_native_id()).all()
