"""A guest that takes time (engine.emulation.GuestTiming), through real io_uring on an O_DIRECT file:
its reaction to a completion, its pace, the handler's cost per request and a drawn device latency.
Every check is an exact count or a lower bound on a time (timers never fire early), never a rate."""

import numpy as np
import pytest

from plugtrace.engine import WorkloadConfig
from plugtrace.engine.emulation import Guest, GuestTiming
from plugtrace.errors import UsageError
from tests.unit.engine_rig import drive

K = 4096
SIZE = 8 << 20
MS = 1_000_000


def run(fd, timing, n, depth, merge=False, rw="randread"):
    ran = drive(fd, SIZE, lambda dev: Guest(dev, depth, K, rw, 1.0, n, seed=1, timing=timing), merge=merge)
    assert ran.completed == n
    req = ran.requests
    req["since_start_ns"] = req["queue_ns"] - ran.t0_ns
    return req, ran.submits


def test_the_guest_reacts_to_a_completion_no_sooner_than_its_reaction_time(direct_file):
    req, sub = run(direct_file, GuestTiming(reaction_ns=200 * MS), n=32, depth=8)
    assert list(sub.nr_sqes) == [8, 8, 8, 8]  # it reissues every completed request at once
    batches = req.groupby("submit_seq")
    first_queued, last_done = batches.queue_ns.min(), batches.complete_ns.max()
    # batch k + 1 begins at least a reaction after the first completion of batch k
    first_done = batches.complete_ns.min()
    assert (first_queued.iloc[1:].to_numpy() >= first_done.iloc[:-1].to_numpy() + 200 * MS).all()
    assert (first_queued.iloc[1:].to_numpy() > last_done.iloc[:-1].to_numpy()).all()


def test_the_handler_spends_its_cost_on_each_request_and_takes_them_in_one_section(direct_file):
    req, sub = run(direct_file, GuestTiming(iothread_request_ns=2 * MS), n=8, depth=4)
    assert list(sub.nr_sqes) == [4, 4]
    for _, batch in req.groupby("submit_seq"):
        assert batch.section_id.nunique() == 1
        assert (np.diff(np.sort(batch.queue_ns.to_numpy())) >= 2 * MS).all()


def test_the_guest_makes_its_requests_available_at_its_pace(direct_file):
    req, sub = run(direct_file, GuestTiming(request_ns=3 * MS), n=8, depth=4)
    assert int(sub.nr_sqes.sum()) == 8
    # the k-th request of its first burst is made available no sooner than k paces after the start
    assert (req.since_start_ns.to_numpy()[:4] >= np.arange(4) * 3 * MS).all()


@pytest.mark.parametrize("merge", [False, True])
def test_each_request_takes_at_least_its_drawn_latency(direct_file, merge):
    req, _ = run(direct_file, GuestTiming(latency_ns=(5 * MS, 6 * MS)), n=24, depth=8, merge=merge)
    assert ((req.complete_ns - req.submit_ns) >= 5 * MS).all()


def test_a_timing_that_cannot_be_is_refused():
    for bad in ({"reaction_ns": -1}, {"latency_ns": [3, 1]}, {"reaction_quantiles_ns": [5]}):
        with pytest.raises(ValueError):
            GuestTiming.from_dict(bad)
        with pytest.raises(UsageError, match="guest timing"):
            WorkloadConfig(guest_timing=bad).validate()
    assert GuestTiming.from_dict({"reaction_quantiles_ns": [1, 1, 4]}).draw_reaction(np.random.default_rng(0)) in range(
        1, 5
    )
