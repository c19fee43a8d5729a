"""virtio-blk's request merging (virtio_blk_submit_multireq) on constructed handler runs, through real
io_uring on an O_DIRECT file: which requests merge, in what order, and that merged writes land."""

import numpy as np

from plugtrace.engine.driver import OP_READ, OP_WRITE
from plugtrace.engine.emulation import Arrivals, ReplayGuest
from plugtrace.engine.verify import verify_blocks
from tests.unit.engine_rig import drive

K = 4096
SIZE = 1 << 20


def handler_run(fd, offsets, ops, merge=True, seed=3):
    """One handler run that pops `offsets` / `ops` in this order; returns (requests, submits) as DataFrames."""
    n = len(offsets)
    arrivals = Arrivals(
        at_ns=np.array([0]), counts=np.array([n]), offsets=np.array(offsets), ops=np.array(ops), lens=np.full(n, K)
    )
    ran = drive(fd, SIZE, lambda dev: ReplayGuest(dev, 64, arrivals), merge=merge, nslots=128, pattern_seed=seed)
    assert ran.completed == n
    return ran.requests, ran.submits


def test_a_buffer_is_sorted_and_each_run_of_contiguous_requests_becomes_one(direct_file):
    # popped: 8K, 0, 4K, 20K (reads), then 40K, 36K (writes): the change of direction submits the reads first
    offsets = [2 * K, 0, K, 5 * K, 10 * K, 9 * K]
    ops = [OP_READ] * 4 + [OP_WRITE] * 2
    req, sub = handler_run(direct_file, offsets, ops)
    got = list(zip(req.op, req.offset_bytes, req.len_bytes, req.nr_guest_requests))
    assert got == [(0, 0, 3 * K, 3), (0, 5 * K, K, 1), (1, 9 * K, 2 * K, 2)]
    assert list(sub.nr_sqes) == [3]  # one handler run, one section, one enter
    assert list(req.result) == [3 * K, K, 2 * K]


def test_a_buffer_holds_32_requests(direct_file):
    req, sub = handler_run(direct_file, [i * K for i in range(40)], [OP_READ] * 40)
    assert list(req.nr_guest_requests) == [32, 8]
    assert list(req.len_bytes) == [32 * K, 8 * K]
    assert list(sub.nr_sqes) == [2]


def test_without_merging_every_request_is_its_own(direct_file):
    req, sub = handler_run(direct_file, [i * K for i in range(10)], [OP_READ] * 10, merge=False)
    assert (req.nr_guest_requests == 1).all() and len(req) == 10
    assert list(sub.nr_sqes) == [10]


def test_merged_writes_write_every_request_s_own_data(direct_file):
    offsets = [i * K for i in range(16)][::-1]  # popped backwards: sorted, one write of 64 KiB
    req, _ = handler_run(direct_file, offsets, [OP_WRITE] * 16, seed=11)
    assert list(req.nr_guest_requests) == [16]
    written = np.zeros(SIZE // K, dtype=bool)
    written[:16] = True
    report = verify_blocks(direct_file, written, K, seed=11)
    assert report["checked_blocks"] == 16 and report["mismatches"] == 0
