"""A replay's recorded device latency (Arrivals.hold_ns), through real io_uring on an O_DIRECT file: a request
the model's device finishes sooner stays in flight until its recorded latency is up, and so counts
towards MAX_ENTRIES as it did in QEMU."""

import numpy as np

from plugtrace.engine.driver import MAX_ENTRIES, OP_READ, REASON
from plugtrace.engine.emulation import Arrivals, ReplayGuest
from tests.unit.engine_rig import drive

K = 4096
SIZE = 4 << 20
HOLD_NS = 2_000_000_000  # far longer than the second arrival's 10 ms, however busy the machine


def replay(fd, hold, counts=(100, 60), queue_at_ns=None, hold_ns=HOLD_NS):
    """Two arrivals on one virtio-blk device under defer, 10 ms apart; when `hold`, the first one's
    requests held for `hold_ns` (or `hold_ns` per request); `queue_at_ns`: each request's time."""
    n = sum(counts)
    arrivals = Arrivals(
        at_ns=np.array([0, 10_000_000]),
        counts=np.array(counts),
        offsets=np.arange(n) * 2 * K,
        ops=np.full(n, OP_READ),
        lens=np.full(n, K),
        hold_ns=(np.array([hold_ns] * counts[0] + [0] * counts[1]) if np.isscalar(hold_ns) else hold_ns)
        if hold
        else None,
        queue_at_ns=queue_at_ns,
    )
    ran = drive(fd, SIZE, lambda dev: ReplayGuest(dev, 256, arrivals))
    assert ran.completed == n
    req = ran.requests
    req["queue_at_ns"] = req["queue_ns"] - ran.t0_ns
    return req, ran.submits


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


def test_a_held_request_leaves_in_flight_at_the_next_reap_and_a_paced_handler_waits_for_each_request(direct_file):
    """QEMU's in_flight drops when luring_process_completions() reaps, which a handler busy popping the
    virtqueue does only after a submit: the first run's 100 requests and the second's first 28, held 1 s,
    still count when the second run's 29th request is queued at 1.2 s, which leaves alone (MAX_ENTRIES);
    that submit's reap finds them due, and the last 31 leave together at the section's end."""
    late = 1_200_000_000
    queue_at = np.array([0] * 100 + [10_000_000] * 28 + [late] * 32)
    hold = np.array([1_000_000_000] * 128 + [0] * 32)
    req, sub = replay(direct_file, hold=True, queue_at_ns=queue_at, hold_ns=hold)
    assert list(sub.nr_sqes) == [100, 28, 1, 31]
    assert list(sub.reason) == [REASON["deferred"], REASON["max_entries"], REASON["max_entries"], REASON["deferred"]]
    # no request reached the driver before its time; the paced ones waited inside one handler run
    assert (req.queue_at_ns >= queue_at).all()
    assert req.iloc[128:].section_id.nunique() == 1 and req.iloc[100:128].section_id.nunique() == 1
    assert req.iloc[100].section_id == req.iloc[128].section_id
