"""An AioContext-like event loop: fd handlers, bottom halves, nested aio_poll().

Modelled on QEMU's util/aio-posix.c closely enough for batching to behave the
same way:

* `aio_poll(blocking)` runs one iteration: prepare hooks (where the
  loop-iteration strategy submits), a readiness check of poll handlers (no
  syscall), then epoll, then fd handlers, then the bottom halves that were
  scheduled when the BH pass began.
* Before it would block, it busy-polls the poll handlers for up to
  `poll_ns`, as QEMU's IOThreads do: a completion that arrives meanwhile is
  handled without the thread going to sleep. `poll_ns` adapts as in QEMU
  (`poll-max-ns`, 32768 by default, with `poll-grow` and `poll-shrink` at
  their defaults; 0 turns polling off, as in QEMU's main loop): after an
  iteration that waited longer than `poll_max_ns` it drops to 0 (polling
  would not have paid), after one that waited less than that it doubles
  (starting at 4 µs), up to `poll_max_ns`. One difference: QEMU starts at
  0, this loop at `poll_max_ns`; both settle the same way within a few
  iterations. In poll mode, an iteration that would not wait (bottom halves
  pending, a handler ready) skips epoll altogether, as QEMU does: the poll
  handlers stand for the fds.
* Timers (`timer_at`), as an AioContext's timer list: the wait ends at the
  earliest deadline, and the timers due when the timer pass begins run after
  the bottom halves (a timer armed by one of them waits for the next
  iteration). A replayed run's arrivals come through them.
* A handler may call `aio_poll()` again (a synchronous read, a drain). The
  nested call runs *other* handlers and BHs inside whatever plug section the
  caller has open: that is how one device's I/O ends up deferred into another
  device's section.
"""

from __future__ import annotations

import heapq
import os
import select
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic_ns

__all__ = ["EventLoop", "BottomHalf", "POLL_MAX_NS"]

#: QEMU's default poll-max-ns for an IOThread
POLL_MAX_NS = 32768
#: where QEMU's adaptive polling starts growing from 0 (ns), and by how much (its poll-grow default)
_POLL_GROW_START_NS, _POLL_GROW = 4000, 2
#: epoll waits in whole milliseconds: a deadline nearer than this is waited for without sleeping
_SLEEP_GRAIN_NS = 2_000_000


class BottomHalf:
    """A callback scheduled to run once in the next BH pass (QEMUBH)."""

    __slots__ = ("loop", "cb", "scheduled")

    def __init__(self, loop: EventLoop, cb: Callable[[], None]):
        self.loop = loop
        self.cb = cb
        self.scheduled = False

    def schedule(self) -> None:
        """Run `cb` in the next BH pass; scheduling twice before it runs runs it once."""
        if not self.scheduled:
            self.scheduled = True
            self.loop._bhs.append(self)

    def cancel(self) -> None:
        self.scheduled = False


class EventLoop:
    """One event loop per engine thread (one AioContext)."""

    def __init__(self, poll_max_ns: int = POLL_MAX_NS) -> None:
        if poll_max_ns < 0:
            raise ValueError("poll_max_ns must be >= 0")
        self.poll_max_ns = poll_max_ns
        #: how long the next blocking iteration busy-polls (adapts between 0 and poll_max_ns)
        self.poll_ns = poll_max_ns
        #: aio_poll() iterations that found work by busy-polling instead of sleeping
        self.poll_hits = 0
        self._epoll = select.epoll()
        self._fd_handlers: dict[int, Callable[[], None]] = {}
        self._bhs: deque[BottomHalf] = deque()
        self._poll_handlers: list[tuple[Callable[[], bool], Callable[[], None]]] = []
        self._busy_handlers: list[tuple[Callable[[], bool], Callable[[], None]]] = []
        #: called at the start of every aio_poll() iteration, before waiting
        self.prepare_hooks: list[Callable[[], None]] = []
        #: (deadline_ns, order, callback), earliest first
        self._timers: list[tuple[int, int, Callable[[], None]]] = []
        self._timer_order = 0
        self.depth = 0
        #: aio_poll() calls made from inside a handler (depth > 0)
        self.nested_polls = 0
        #: callbacks other threads asked this loop to run (`call_soon_threadsafe`), once enabled
        self._remote: deque[tuple[int, Callable[[], None]]] | None = None
        self._remote_fd = -1
        self._remote_lock = threading.Lock()
        #: callbacks from other threads run, and the time from their call_soon_threadsafe() to their run
        #: (ns; summed, and the longest): in this Python model that includes waiting for the GIL
        self.remote_calls = 0
        self.remote_wait_ns = 0
        self.remote_wait_max_ns = 0

    def close(self) -> None:
        with self._remote_lock:
            if self._remote_fd >= 0:
                os.close(self._remote_fd)
                self._remote_fd = -1
        self._epoll.close()

    def enable_remote(self) -> None:
        """Let other threads hand this loop callbacks (`call_soon_threadsafe`), as aio_bh_schedule() on
        another thread's AioContext does: an eventfd wakes a sleeping loop, a busy-polling one sees them."""
        if self._remote is not None:
            return
        self._remote = deque()
        self._remote_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.set_fd_handler(self._remote_fd, self._run_remote)
        remote = self._remote
        self.add_poll_handler(lambda: bool(remote), self._run_remote)

    def call_soon_threadsafe(self, cb: Callable[[], None]) -> None:
        """From any thread: run `cb()` in this loop's next iteration (dropped once the loop is closed)."""
        with self._remote_lock:
            if self._remote is None or self._remote_fd < 0:
                return
            self._remote.append((monotonic_ns(), cb))
            os.eventfd_write(self._remote_fd, 1)

    def _run_remote(self) -> None:
        try:
            os.eventfd_read(self._remote_fd)
        except BlockingIOError:
            pass
        remote = self._remote
        assert remote is not None
        while remote:
            asked_ns, cb = remote.popleft()
            wait = monotonic_ns() - asked_ns
            self.remote_calls += 1
            self.remote_wait_ns += wait
            self.remote_wait_max_ns = max(self.remote_wait_max_ns, wait)
            cb()

    def set_fd_handler(self, fd: int, handler: Callable[[], None] | None) -> None:
        """Call `handler()` whenever `fd` is readable; None removes it."""
        if handler is None:
            if self._fd_handlers.pop(fd, None) is not None:
                self._epoll.unregister(fd)
            return
        if fd in self._fd_handlers:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)
        self._fd_handlers[fd] = handler

    def add_poll_handler(
        self, ready: Callable[[], bool], handler: Callable[[], None], busy_ready: Callable[[], bool] | None = None
    ) -> None:
        """`ready()` is checked each iteration without a syscall; when true, `handler()` runs.

        `busy_ready()`, if given, replaces `ready()` while busy-polling (it may
        enter the kernel, e.g. to let completions be posted).
        """
        self._poll_handlers.append((ready, handler))
        self._busy_handlers.append((busy_ready or ready, handler))

    def bh_new(self, cb: Callable[[], None]) -> BottomHalf:
        return BottomHalf(self, cb)

    def timer_at(self, deadline_ns: int, cb: Callable[[], None]) -> None:
        """Run `cb()` once, in the first timer pass at or after `deadline_ns` (time.monotonic_ns())."""
        self._timer_order += 1
        heapq.heappush(self._timers, (deadline_ns, self._timer_order, cb))

    @property
    def timers_pending(self) -> bool:
        return bool(self._timers)

    def _timeout(self) -> int | float:
        """How long a blocking wait may sleep (epoll's timeout: -1 forever, else seconds)."""
        if not self._timers:
            return -1
        wait_ns = self._timers[0][0] - monotonic_ns()
        return 0 if wait_ns < _SLEEP_GRAIN_NS else (wait_ns - _SLEEP_GRAIN_NS // 2) / 1e9

    def _run_timers(self) -> bool:
        timers = self._timers
        if not timers:
            return False
        now = monotonic_ns()
        due = []
        while timers and timers[0][0] <= now:
            due.append(heapq.heappop(timers)[2])
        for cb in due:
            cb()
        return bool(due)

    def aio_poll(self, blocking: bool) -> bool:
        """Run one loop iteration; returns whether any handler or BH ran.

        With `blocking`, waits for an event when nothing is ready. May be called
        from inside a handler.
        """
        if self.depth:
            self.nested_polls += 1
        self.depth += 1
        try:
            start = monotonic_ns() if self.poll_max_ns else 0
            for hook in self.prepare_hooks:
                hook()
            progress = False
            polled = [h for ready, h in self._poll_handlers if ready()]
            if blocking and not polled and not self._bhs and self.poll_ns and self._busy_handlers:
                polled = self._busy_poll()
            timeout = 0 if (not blocking or self._bhs or polled) else self._timeout()
            events: list = []
            # As QEMU's aio_poll(): in poll mode a wait with no timeout is skipped
            # (the fds' readiness is what the poll handlers check).
            if timeout or not self.poll_max_ns:
                try:
                    events = self._epoll.poll(timeout)
                except InterruptedError:
                    pass
            if self.poll_max_ns:
                self._adjust_polling(monotonic_ns() - start)
            for fd, _ in events:
                handler = self._fd_handlers.get(fd)
                if handler is not None:
                    handler()
                    progress = True
            for handler in polled:
                handler()
                progress = True
            # Run only the BHs scheduled before this pass: ones scheduled while
            # it runs wait for the next iteration, as in aio_bh_poll().
            # A BH that calls aio_poll() lets the nested pass run some of them.
            bhs = self._bhs
            for _ in range(len(bhs)):
                if not bhs:
                    break
                bh = bhs.popleft()
                if bh.scheduled:
                    bh.scheduled = False
                    bh.cb()
                    progress = True
            if self._run_timers():
                progress = True
            return progress
        finally:
            self.depth -= 1

    def _adjust_polling(self, block_ns: int) -> None:
        """QEMU's adaptive polling: `block_ns` is how long this iteration polled and waited."""
        if block_ns <= self.poll_ns:
            return  # the sweet spot: polling found the work
        if block_ns > self.poll_max_ns:
            self.poll_ns = 0  # polling long enough would cost too much: poll-shrink's default
        elif block_ns < self.poll_max_ns and self.poll_ns < self.poll_max_ns:
            self.poll_ns = min(self.poll_ns * _POLL_GROW if self.poll_ns else _POLL_GROW_START_NS, self.poll_max_ns)

    def _busy_poll(self) -> list[Callable[[], None]]:
        """Check the poll handlers until one is ready or `poll_ns` has passed."""
        handlers = self._busy_handlers
        now = monotonic_ns
        deadline = now() + self.poll_ns
        if self._timers:
            deadline = min(deadline, self._timers[0][0])
        while True:
            polled = [h for ready, h in handlers if ready()]
            if polled:
                self.poll_hits += 1
                return polled
            if now() >= deadline:
                return polled
