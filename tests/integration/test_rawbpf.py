"""Our raw tracepoint programs against io_uring_enter() calls we make ourselves: exact counts."""

import os
import subprocess
import sys
import textwrap

from plugtrace.tracing.capabilities import detect_capabilities
from plugtrace.uring import Ring

from .conftest import require, require_root

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
    from plugtrace.tracing.rawbpf import EntersAggregate

    other = subprocess.Popen([sys.executable, "-c", OTHER, str(tmp_path / "o")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    f = open(tmp_path / "f", "wb")
    with EntersAggregate(os.getpid()) as agg:
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
    other.wait()
    f.close()
    sqes = {b["min"]: b["count"] for b in maps["enter_nr_sqes"]}
    assert sqes == {3: 5, 4: 2}, maps
    assert maps["nr_enters"] == 7
    assert sum(b["count"] for b in maps["enter_latency_ns"]) == 7
    assert all(b["max"] >= b["min"] for b in maps["enter_latency_ns"])


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
