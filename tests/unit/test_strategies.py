"""Queueing requests in runs decides exactly as queueing them one at a time.

A virtio-blk handler hands the driver its whole queue; the driver queues it
in runs (`Strategy.queue_in_runs`) to cross into C once per run. Here a model
of the driver's counters and of a ring with limited room replays the same
handler both ways, for every strategy, across MAX_ENTRIES, a blocked ring and
sections opened or not, and the submits and deferred calls must be equal.
"""

import random

import pytest

from plugtrace import plug
from plugtrace.engine.driver import MAX_ENTRIES
from plugtrace.engine.strategies import STRATEGIES, make_strategy


class ModelDriver:
    """The counters a strategy reads, and a ring that takes at most `room` more."""

    def __init__(self, in_flight: int, room: int, plugged: int):
        self.in_flight, self.in_queue, self.room, self.plugged = in_flight, 0, room, plugged
        self.blocked = False
        self.log: list[tuple] = []

    def ioq_submit(self, reason: str) -> None:
        taken = min(self.in_queue, self.room)
        self.log.append((reason, self.in_flight, self.in_queue, taken))
        self.in_queue -= taken
        self.in_flight += taken
        self.room -= taken
        self.blocked = self.in_queue > 0


class Sections(plug.SectionHooks):
    def __init__(self, log):
        self.log = log

    def end(self, section_id, owner, nr_calls):
        self.log.append(("section_end", nr_calls))


def replay(strategy_name: str, scenario: dict, in_runs: bool) -> list[tuple]:
    strategy = make_strategy(strategy_name)
    driver = ModelDriver(scenario["in_flight"], scenario["room"], scenario["plugged"])
    plug.set_section_hooks(Sections(driver.log))
    try:
        if scenario["section"]:
            plug.defer_call_begin(0)
        for n in scenario["handler_batches"]:
            if in_runs:
                strategy.queue_in_runs(driver, n, lambda i, k: None)
            else:
                for _ in range(n):
                    driver.in_queue += 1
                    strategy.on_queued(driver)
            driver.log.append(("batch_done", driver.in_flight, driver.in_queue))
        if scenario["section"]:
            plug.defer_call_end()
    finally:
        plug.set_section_hooks(None)
    return driver.log


def scenarios(count: int, seed: int = 7):
    rng = random.Random(seed)
    for _ in range(count):
        yield {
            "in_flight": rng.choice([0, 1, rng.randrange(MAX_ENTRIES), MAX_ENTRIES - 1, MAX_ENTRIES]),
            "room": rng.choice([10_000, rng.randrange(1, 3 * MAX_ENTRIES), 0]),
            "plugged": rng.choice([0, 1]),
            "section": rng.random() < 0.8,
            "handler_batches": [rng.choice([1, 2, rng.randrange(1, 300)]) for _ in range(rng.randrange(1, 4))],
        }


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_runs_submit_as_one_request_at_a_time(strategy):
    with_submits = 0
    for scenario in scenarios(400):
        one_by_one = replay(strategy, scenario, in_runs=False)
        assert replay(strategy, scenario, in_runs=True) == one_by_one, scenario
        with_submits += any(e[0] not in ("batch_done", "section_end") for e in one_by_one)
    assert with_submits > 50  # the scenarios do reach the submits


def test_defer_queues_a_whole_handler_batch_in_one_run():
    strategy = make_strategy("defer")
    driver = ModelDriver(in_flight=0, room=10_000, plugged=0)
    runs = []
    with plug.deferred_calls(0):
        strategy.queue_in_runs(driver, 40, lambda i, k: runs.append((i, k)))
        assert driver.in_queue == 40 and driver.log == []
    assert runs == [(0, 40)]
    assert driver.log == [("deferred", 0, 40, 40)]


def test_defer_outside_a_section_queues_one_request_per_run():
    strategy = make_strategy("defer")
    driver = ModelDriver(in_flight=0, room=10_000, plugged=0)
    runs = []
    strategy.queue_in_runs(driver, 3, lambda i, k: runs.append((i, k)))
    assert runs == [(0, 1), (1, 1), (2, 1)]
    assert [e[0] for e in driver.log] == ["deferred"] * 3
