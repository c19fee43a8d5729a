"""The event loop's busy-polling (QEMU's poll-max-ns) without any I/O."""

import os
import threading
import time

import pytest

from plugtrace.engine.eventloop import POLL_MAX_NS, EventLoop


@pytest.fixture
def wake_after():
    """An eventfd written after some seconds: a blocked aio_poll() always comes back."""
    made = []

    def make(loop: EventLoop, seconds: float) -> int:
        fd = os.eventfd(0, os.EFD_NONBLOCK)
        loop.set_fd_handler(fd, lambda: os.eventfd_read(fd))
        timer = threading.Timer(seconds, os.eventfd_write, (fd, 1))
        timer.start()
        made.append((loop, fd, timer))
        return fd

    yield make
    for loop, fd, timer in made:
        timer.cancel()
        timer.join()
        loop.set_fd_handler(fd, None)
        os.close(fd)
        loop.close()


def test_a_completion_arriving_while_polling_is_handled_without_sleeping(wake_after):
    loop = EventLoop(poll_max_ns=200_000_000)
    wake_after(loop, 5.0)
    ready_at = time.monotonic() + 0.01
    handled = []
    loop.add_poll_handler(
        lambda: False, lambda: handled.append(time.monotonic()), busy_ready=lambda: time.monotonic() >= ready_at
    )
    t0 = time.monotonic()
    assert loop.aio_poll(True)
    assert handled and handled[0] - t0 < 1.0, "the poll handler should have run, not the 5 s eventfd"
    assert loop.poll_hits == 1


def test_polling_gives_up_after_poll_max_ns_and_sleeps(wake_after):
    loop = EventLoop(poll_max_ns=2_000_000)
    wake_after(loop, 0.2)
    calls = []
    loop.add_poll_handler(lambda: False, lambda: None, busy_ready=lambda: calls.append(1) and False)
    t0 = time.monotonic()
    loop.aio_poll(True)
    assert time.monotonic() - t0 >= 0.15  # woken by the eventfd, not by polling
    assert calls and loop.poll_hits == 0


def test_poll_max_ns_zero_never_polls(wake_after):
    loop = EventLoop(poll_max_ns=0)
    wake_after(loop, 0.05)
    calls = []
    loop.add_poll_handler(lambda: False, lambda: None, busy_ready=lambda: calls.append(1) or True)
    loop.aio_poll(True)
    assert calls == [] and loop.poll_hits == 0


def test_defaults_and_bad_values():
    assert EventLoop().poll_max_ns == POLL_MAX_NS == 32768
    with pytest.raises(ValueError):
        EventLoop(poll_max_ns=-1)


def test_polling_time_adapts_as_qemus(wake_after):
    loop = EventLoop(poll_max_ns=32768)
    assert loop.poll_ns == 32768
    wake_after(loop, 0.05)
    loop.add_poll_handler(lambda: False, lambda: None)
    loop.aio_poll(True)  # polled 32 µs in vain, then slept 50 ms: polling would not have paid
    assert loop.poll_ns == 0 and loop.poll_hits == 0
    grown = []
    for block_ns in (1000, 3000, 5000, 9000, 20000, 32500, 30000):
        loop._adjust_polling(block_ns)  # longer than polled but shorter than poll_max_ns: poll longer
        grown.append(loop.poll_ns)
    assert grown == [4000, 4000, 8000, 16000, 32000, 32768, 32768]
    loop.poll_ns = 16000
    loop._adjust_polling(32768)  # not shorter than the maximum, not longer either: unchanged
    assert loop.poll_ns == 16000
    loop._adjust_polling(40000)
    assert loop.poll_ns == 0


def test_timers_run_in_deadline_order_after_the_bottom_halves():
    from time import monotonic_ns

    loop = EventLoop(poll_max_ns=0)
    seen = []
    now = monotonic_ns()
    loop.timer_at(now - 10, lambda: seen.append("second"))
    loop.timer_at(now - 20, lambda: seen.append("first"))
    loop.bh_new(lambda: seen.append("bh")).schedule()
    assert loop.aio_poll(False)
    assert seen == ["bh", "first", "second"] and not loop.timers_pending


def test_a_timer_armed_by_a_timer_waits_for_the_next_iteration():
    """A replay arms its next arrival from the last one's timer: two arrivals already due still
    take two iterations (two handler runs), never one."""
    from time import monotonic_ns

    loop = EventLoop(poll_max_ns=0)
    seen = []

    def first():
        seen.append(1)
        loop.timer_at(monotonic_ns() - 1, lambda: seen.append(2))

    loop.timer_at(monotonic_ns() - 1, first)
    loop.aio_poll(False)
    assert seen == [1] and loop.timers_pending
    loop.aio_poll(False)
    assert seen == [1, 2]


def test_a_blocking_poll_returns_for_a_timer_with_nothing_else_to_wait_for():
    from time import monotonic_ns

    loop = EventLoop()
    seen = []
    loop.timer_at(monotonic_ns() + 3_000_000, lambda: seen.append("due"))
    while not seen:  # without the timer's deadline, the wait would never end
        loop.aio_poll(True)
    assert seen == ["due"]
