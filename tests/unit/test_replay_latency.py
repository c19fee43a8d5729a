"""A replay's recorded device latency (Arrivals.hold_ns), through real io_uring on an O_DIRECT file: a request
the model's device finishes sooner stays in flight until its recorded latency is up, and so counts
towards MAX_ENTRIES as it did in QEMU."""

import collections
import os

import numpy as np
import pandas as pd
import pytest

from plugtrace.engine.driver import MAX_ENTRIES, OP_READ, REASON, IoUringDriver
from plugtrace.engine.emulation import Arrivals, ReplayGuest, VirtioBlk
from plugtrace.engine.eventloop import EventLoop
from plugtrace.engine.strategies import make_strategy

K = 4096
SIZE = 4 << 20
HOLD_NS = 2_000_000_000  # far longer than the second arrival's 10 ms, however busy the machine


@pytest.fixture
def direct_file(tmp_path):
    path = tmp_path / "disk"
    with open(path, "wb") as f:
        f.truncate(SIZE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    except OSError:
        pytest.skip("no O_DIRECT on this filesystem")
    yield fd
    os.close(fd)


def replay(fd, hold, counts=(100, 60)):
    """Two arrivals on one virtio-blk device under defer, 10 ms apart; the first one's requests held
    for HOLD_NS when `hold`."""
    logs = collections.defaultdict(list)
    loop = EventLoop()
    strategy = make_strategy("defer")
    driver = IoUringDriver(loop, strategy, 0, 256, K, lambda name, rows: logs[name].append(rows), ring_setup="plain")
    dev = VirtioBlk(0, loop, driver, strategy, fd, 0, SIZE)
    n = sum(counts)
    arrivals = Arrivals(
        at_ns=np.array([0, 10_000_000]),
        counts=np.array(counts),
        offsets=np.arange(n) * 2 * K,
        ops=np.full(n, OP_READ),
        lens=np.full(n, K),
        hold_ns=np.array([HOLD_NS] * counts[0] + [0] * counts[1]) if hold else None,
    )
    guest = ReplayGuest(dev, 256, arrivals)
    guest.start()
    while not guest.finished:
        loop.aio_poll(True)
    assert guest.completed == n and guest.errors == 0 and driver.in_flight == 0
    driver.close()
    loop.close()
    req = pd.DataFrame(np.concatenate(logs["requests"])).sort_values("req_id", ignore_index=True)
    sub = pd.DataFrame(np.concatenate(logs["submits"])).sort_values("submit_seq", ignore_index=True)
    return req, sub


def test_held_requests_stay_in_flight_and_split_the_next_run_at_max_entries(direct_file):
    req, sub = replay(direct_file, hold=True)
    first = 100
    room = MAX_ENTRIES - first  # what the second run can queue before in_flight + in_queue reaches MAX_ENTRIES
    assert list(sub.nr_sqes[:2]) == [first, room]
    assert list(sub.reason[:2]) == [REASON["deferred"], REASON["max_entries"]]
    # the rest of the second run leaves as the unheld requests complete (ioq_submit reaps after each
    # submit): how many at a time depends on the device, but never more than MAX_ENTRIES in flight
    assert int(sub.nr_sqes[1:].sum()) == 60
    assert set(sub.reason[2:]) <= {REASON["max_entries"], REASON["deferred"]}
    held = req.iloc[:first]
    assert ((held.complete_ns - held.submit_ns) >= HOLD_NS).all()
    assert ((req.iloc[first:].complete_ns - req.iloc[first:].submit_ns) < HOLD_NS).all()


def test_held_requests_below_max_entries_change_no_submit_and_none_is_held_without_a_latency(direct_file):
    req, sub = replay(direct_file, hold=True, counts=(60, 60))
    assert list(sub.nr_sqes) == [60, 60]
    assert ((req.iloc[:60].complete_ns - req.iloc[:60].submit_ns) >= HOLD_NS).all()
    req, sub = replay(direct_file, hold=False, counts=(60, 60))
    assert list(sub.nr_sqes) == [60, 60]
    assert ((req.complete_ns - req.submit_ns) < HOLD_NS).all()
