"""Our raw tracepoint programs against io_uring_enter() calls we make ourselves: exact counts."""

import mmap
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from plugtrace.devices import block_stat
from plugtrace.tracing.capabilities import detect_capabilities
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
    ok, why = detect_capabilities().raw_tracepoints
    require(ok, f"no raw tracepoints: {why}")
    from plugtrace.tracing.decode import batch_sizes_from_positions
    from plugtrace.tracing.rawprobes import EntersAggregate, SubmitAggregate

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
        maps = agg.read()
        positions = sub.read()["uring_submit_pos"]
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


def test_a_program_that_cannot_load_is_a_clear_error():
    require_root()
    from plugtrace.tracing import rawbpf

    bad = rawbpf.mov(rawbpf.R0, 0)  # no exit: the verifier refuses it
    try:
        rawbpf._prog_load(rawbpf._PROG_RAW_TP, bad, "pt_bad")
    except rawbpf.RawBpfError as exc:
        assert "loading pt_bad" in str(exc)
    else:
        raise AssertionError("the verifier accepted a program without exit")


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
    ok, why = detect_capabilities().raw_tracepoints
    require(ok, f"no raw tracepoints: {why}")
    from plugtrace import devices
    from plugtrace.tracing.rawprobes import BlockRqAggregate, UnplugAggregate

    with devices.create_loop(16 << 20, str(tmp_path)) as watched, devices.create_loop(16 << 20, str(tmp_path)) as other:
        # unrelated: started before attaching, neither us nor a child of ours; 5 reads per submit
        unrelated = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; sys.path[:0] = [sys.argv[1]]; "
                "from tests.integration.test_rawbpf import _read_batches as r; "
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
            rq_maps, unplug_maps = rq.read(), unplug.read()
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
    ok, why = detect_capabilities().raw_tracepoints
    require(ok, f"no raw tracepoints: {why}")
    from plugtrace.tracing.rawprobes import EntersAggregate, EntersEvents

    f = open(tmp_path / "f", "wb")
    with EntersAggregate(os.getpid()) as agg, EntersEvents(os.getpid(), ring_bytes=mmap.PAGESIZE) as ev:
        with Ring(16) as ring:
            batches(ring, f.fileno(), 200, 1)
        fits = mmap.PAGESIZE // ev.ring.dtype.itemsize
        recs, lost = ev.read(), ev.lost()
        assert len(ev.read()) == 0
        maps = agg.read()
    f.close()
    assert len(recs) == fits and lost > 0
    assert len(recs) + lost == maps["nr_enters"] + maps["nr_wait_enters"]
    submitting = recs[recs["to_submit"] > 0]
    assert (submitting["ret"] == 1).all() and (recs["latency_ns"] > 0).all()
    assert (recs["tid"] == threading.get_native_id()).all()
