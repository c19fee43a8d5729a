"""An io_uring driver modelled on QEMU's block/io_uring.c (2023).

One `IoUringDriver` per event-loop thread, shared by every emulated device of
that thread, as QEMU shares one LuringState per AioContext: that sharing is
what lets requests of different devices leave in one io_uring_enter().

State and rules, as in QEMU:

* requests are *queued* (`in_queue`), then moved into SQEs and submitted by
  `ioq_submit()`, which retries on -EAGAIN/-EINTR and sets `blocked` when the
  ring could not take everything;
* reaching `MAX_ENTRIES` (`in_flight + in_queue`) forces a submit;
* completions are read from the CQ when the eventfd registered with the ring
  fires (or when a poll finds CQEs ready); a short read is resubmitted for the
  rest, a read at end of file is padded with zeroes, a short write is -ENOSPC;
* *when* a queued request is submitted is the strategy's business
  (`strategies.py`).

How the ring is set up is a choice (`RING_SETUPS`): QEMU's block/io_uring.c
asks for no flags, so the kernel runs each completion's task work at once,
interrupting the submitting thread (an inter-processor interrupt when it runs
elsewhere: expensive in a VM). `coop` (IORING_SETUP_COOP_TASKRUN |
TASKRUN_FLAG | SINGLE_ISSUER; fio too sets its rings up cooperatively) lets
completions wait until the thread next enters the kernel; a sleeping thread
is still woken, and the kernel flags pending completions in the SQ ring, so
the poll handler sees them without a syscall and enters the kernel only
then. Batching decisions are the same under both.

The per-request part runs in C over request slots: taking requests off a
guest's virtqueue into free slots (`pt_queue_vq`), copying queued requests
into SQEs and io_uring_submit (`pt_flush`), reaping CQEs, counting each
completion to its guest and logging it (`pt_reap`). The decisions above stay
here in Python, taken once per batch.
"""

from __future__ import annotations

import errno
import heapq
import mmap
import os
from collections.abc import Callable

import numpy as np

from .. import plug
from ..uring import Ring
from ..uring._binding import ffi, lib
from . import records
from .batching import Batching
from .eventloop import EventLoop

__all__ = [
    "IoUringDriver",
    "MAX_ENTRIES",
    "MAX_TRANSFER",
    "RING_SETUPS",
    "OP_READ",
    "OP_WRITE",
]

MAX_ENTRIES = 128
OP_READ, OP_WRITE = 0, 1
#: the longest request virtio-blk's merging makes (blk_get_max_transfer(): a host block device or file
#: under file-posix sets no max_transfer, so INT_MAX rounded down to the request alignment)
MAX_TRANSFER = (2**31 - 1) // 4096 * 4096

#: ring setup name -> io_uring_setup flags to ask for, best first (fallbacks for older kernels)
_COOP = lib.IORING_SETUP_COOP_TASKRUN | lib.IORING_SETUP_TASKRUN_FLAG
RING_SETUPS: dict[str, tuple[int, ...]] = {
    "coop": (_COOP | lib.IORING_SETUP_SINGLE_ISSUER, _COOP, lib.IORING_SETUP_COOP_TASKRUN, 0),
    "plain": (0,),
}
_SETUP_FLAG_NAMES = {
    lib.IORING_SETUP_COOP_TASKRUN: "COOP_TASKRUN",
    lib.IORING_SETUP_TASKRUN_FLAG: "TASKRUN_FLAG",
    lib.IORING_SETUP_SINGLE_ISSUER: "SINGLE_ISSUER",
}


def setup_flag_names(flags: int) -> str:
    """e.g. "COOP_TASKRUN|SINGLE_ISSUER", or "0"."""
    return "|".join(n for f, n in _SETUP_FLAG_NAMES.items() if flags & f) or "0"


def _open_ring(setup: str) -> tuple[Ring, int]:
    """A ring with the first flag set of `setup` the kernel accepts."""
    choices = RING_SETUPS[setup]
    for flags in choices:
        try:
            return Ring(MAX_ENTRIES, flags), flags
        except OSError as exc:
            if exc.errno != errno.EINVAL or flags == choices[-1]:
                raise
    raise AssertionError("unreachable")


#: submit reason -> the `enum pt_submit_reason` code pt_flush logs
REASON = {name: code for code, name in enumerate(records.SUBMIT_REASONS)}

Callback = Callable[[int, int], None]  # (slot, result) -> None


class _LogBuffer:
    """The driver's log of one table: C appends rows (`<table>_log`, `_cap`, `_len` in struct
    pt_driver) to a numpy-owned buffer, handed out without a copy."""

    def __init__(self, d, table: str, capacity: int):
        self._d, self._table = d, table
        self._ctype, self._dtype = records.ctype(table), records.DTYPES[table]
        self.capacity = capacity
        setattr(d, f"{table}_cap", capacity)
        self._fresh()

    def _fresh(self) -> None:
        self._buf = np.empty(self.capacity * self._dtype.itemsize, dtype=np.uint8)
        self._ptr = ffi.from_buffer(f"{self._ctype}[]", self._buf)
        setattr(self._d, f"{self._table}_log", self._ptr)

    def take(self) -> np.ndarray | None:
        """The records logged so far (or None); C goes on in a fresh buffer."""
        n = getattr(self._d, f"{self._table}_len")
        if not n:
            return None
        rows = self._buf[: n * self._dtype.itemsize].view(self._dtype)
        if n < self.capacity // 2:
            rows = rows.copy()  # the log thread may hold it a while: not the whole buffer with it
        else:
            self._fresh()
        setattr(self._d, f"{self._table}_len", 0)
        return rows


class IoUringDriver:
    """QEMU's LuringState for one thread: a ring, a request queue, counters."""

    def __init__(
        self,
        loop: EventLoop,
        strategy: Batching,
        thread: int,
        nslots: int,
        max_bytes: int,
        log_sink: Callable[[str, np.ndarray], None],
        log_capacity: int = 16384,
        ring_setup: str = "coop",
    ):
        self.loop = loop
        self.strategy = strategy
        self.thread = thread
        self.in_queue = 0
        self.in_flight = 0
        self.blocked = False
        #: requests the device finished before their given latency was up (a replay's recorded one, a timed
        #: guest's drawn one): (due_ns, slot, result), and the deadline of the timer armed for the earliest
        self._held: list[tuple[int, int, int]] = []
        self._held_timer_ns: int | None = None
        #: device-plug strategy: plug count shared by the devices of this thread
        self.plugged = 0
        self._log_sink = log_sink

        self.ring, self.ring_flags = _open_ring(ring_setup)
        self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ring.register_eventfd(self._eventfd)

        d = self._d = ffi.new("struct pt_driver *")
        self._reqs = ffi.new("struct pt_req[]", nslots)
        self._queue = ffi.new("uint32_t[]", nslots)
        # the order free.pop() took them in: slot 0 first
        self._free = ffi.new("uint32_t[]", list(range(nslots - 1, -1, -1)))
        d.ring = self._ring = self.ring.ptr
        d.reqs, d.nreqs = self._reqs, nslots
        d.queue, d.qcap = self._queue, nslots
        self._logs = {table: _LogBuffer(d, table, log_capacity) for table in records.TABLES}
        d.free_slots, d.nfree = self._free, nslots
        d.thread = thread
        d.tid = lib.pt_gettid()
        self.tid = d.tid
        self._log_capacity = log_capacity

        # One page-aligned buffer per slot (O_DIRECT wants alignment).
        self._slot_bytes = -(-max_bytes // mmap.PAGESIZE) * mmap.PAGESIZE
        self._buffers = mmap.mmap(-1, self._slot_bytes * nslots)
        base = ffi.from_buffer(self._buffers)
        self._base = base
        self.slot_buf = [base + i * self._slot_bytes for i in range(nslots)]
        d.bufbase, d.slot_bytes = base, self._slot_bytes
        # virtio-blk's merging: iovecs of merged requests, and the MultiReqBuffer
        self._iovs = ffi.new("struct iovec[]", nslots * lib.PT_MRB_MAX)
        self._mrb = (ffi.new("uint32_t[]", lib.PT_MRB_MAX), ffi.new("uint32_t[]", lib.PT_MRB_MAX))
        d.iovs, (d.mrb_slots, d.mrb_heads) = self._iovs, self._mrb
        d.next_req_id = thread << 40
        #: callbacks of requests queued by `submit_request` (the rest count to their guest in C)
        self._callbacks: dict[int, Callback] = {}
        self._guests: list = []  # keeps the C guest records alive
        self._guest_ptrs = ffi.new("struct pt_guest *[]", nslots)
        self._touched = ffi.new("uint32_t[]", nslots)
        d.guests, d.touched = self._guest_ptrs, self._touched
        self._on_guest_completions: list[Callable[[], None]] = []
        self._reap_max = 256
        self._out_slots = ffi.new("uint32_t[]", self._reap_max)
        self._out_res = ffi.new("int32_t[]", self._reap_max)
        self._out_pending = ffi.new("uint8_t[]", self._reap_max)
        # plug's thread-local state, read directly on the hot path (this object
        # resolves to the calling thread's values, and only this thread calls)
        self._plug_state = plug._state

        loop.set_fd_handler(self._eventfd, self._completion_cb)
        # On a coop ring completions only appear after a kernel entry: with the
        # TASKRUN flag the readiness check makes one when the kernel asks for it;
        # without it (older kernels) busy-polling makes one every time round.
        if self.ring_flags & lib.IORING_SETUP_TASKRUN_FLAG:
            loop.add_poll_handler(self._cq_ready_taskrun, self.process_completions_and_submit)
        else:
            busy = self._cq_ready_kernel if self.ring_flags & lib.IORING_SETUP_COOP_TASKRUN else None
            loop.add_poll_handler(self._cq_ready, self.process_completions_and_submit, busy_ready=busy)
        strategy.attach(self)

    # -- requests ----------------------------------------------------------
    @property
    def pattern_seed(self) -> int:
        """Seed of the data pattern writes carry (see pt_fill_pattern)."""
        return self._d.seed

    @pattern_seed.setter
    def pattern_seed(self, seed: int) -> None:
        self._d.seed = seed

    def request(self, slot: int):
        """The C record of the request in `slot` (its requests row `log`; `offset`, `len`, `buf` of what is
        left to transfer), valid until the slot is reused."""
        return self._reqs[slot]

    @property
    def state(self):
        """The C driver state (`struct pt_driver *`) the engine's C helpers take."""
        return self._d

    def free_slots(self) -> int:
        return self._d.nfree

    @property
    def completed(self) -> int:
        """Requests finished so far (any thread may read it for progress)."""
        return self._d.completed

    def add_guest(self, iodepth: int, max_requests: int | None, on_completions: Callable[[], None]):
        """A closed-loop guest's C record (`struct pt_guest`) and its index: `(index, record)`.

        Its requests (`submit_from_guest`) complete in C, counted to it;
        `on_completions()` runs once per reaped batch in which some did.
        """
        d = self._d
        index = d.nguests
        if index >= len(self._guest_ptrs):
            raise IndexError("more guests than request slots")
        g = ffi.new("struct pt_guest *")
        g.iodepth = iodepth
        g.max_requests = -1 if max_requests is None else max_requests
        vq = (ffi.new("int64_t[]", iodepth), ffi.new("int32_t[]", iodepth))
        g.vq_offsets, g.vq_ops = vq
        self._guests.append((g, vq))
        self._guest_ptrs[index] = g
        self._on_guest_completions.append(on_completions)
        d.nguests = index + 1
        return index, g

    def mark_written(self, bitmap: np.ndarray, block_bytes: int) -> None:
        """Set `bitmap[offset // block_bytes]` (a bool array over the device) for every guest write that succeeds."""
        self._written = ffi.from_buffer("uint8_t[]", bitmap)
        self._d.written, self._d.written_bs = self._written, block_bytes

    def submit_request(
        self, fd: int, op: int, offset: int, nbytes: int, device: int, cb: Callback, sync: bool = False
    ) -> int:
        """Queue one read/write of `nbytes` at byte `offset`; `cb(slot, result)` runs on completion.

        Returns the slot, whose buffer (`slot_buf[slot]`) holds the data. A
        write's buffer is filled with the verifiable pattern of `pattern_seed`.
        """
        st = self._plug_state
        slot = lib.pt_queue(self._d, op, fd, nbytes, offset, device, st.section_id, st.owner, sync, -1)
        if slot < 0:
            raise IndexError("no free request slot")
        self._callbacks[slot] = cb
        self.in_queue += 1
        if sync:
            # A synchronous request is waited for with a nested aio_poll(), so it
            # must not sit in the queue behind the caller's own plug section.
            self.ioq_submit("sync")
        else:
            self.strategy.on_queued(self)
        return slot

    def submit_from_guest(self, guest: int, n: int, fd: int, nbytes: int, device: int) -> None:
        """Queue the next `n` requests the guest `guest` made available, in order.

        A virtio-blk handler drains its whole virtqueue through here. Requests
        are queued in runs the strategy says it would not act on until the
        run's last request (`Strategy.run_length`), each run with one call into
        C, and the strategy then hears of the run at once
        (`Strategy.on_queued_run`): the same submits as one request at a time.
        """
        d, st = self._d, self._plug_state

        def queue(i: int, k: int) -> None:
            if lib.pt_queue_vq(d, guest, k, fd, nbytes, device, st.section_id, st.owner) < 0:
                raise IndexError("no free request slot")

        self.strategy.queue_in_runs(self, n, queue)

    def submit_merged_from_guest(self, guest: int, n: int, fd: int, nbytes: int, device: int) -> None:
        """Queue the next `n` requests the guest `guest` made available, merged as virtio-blk does
        (`virtio_blk_submit_multireq`): each buffer of up to 32 requests of one direction, sorted by
        offset, becomes one request per run of contiguous ones, and the strategy hears of those."""
        d, st = self._d, self._plug_state

        def queue(i: int, k: int) -> None:
            lib.pt_mrb_queue(d, i, k)

        while n > 0:
            before = self._guest_ptrs[guest].vq_head
            merged = lib.pt_mrb_fill(d, guest, n, fd, nbytes, device, st.section_id, st.owner, MAX_TRANSFER)
            if merged < 0:
                raise IndexError("no free request slot")
            n -= self._guest_ptrs[guest].vq_head - before
            self.strategy.queue_in_runs(self, merged, queue)

    # -- submission (QEMU's ioq_submit) -----------------------------------
    def ioq_submit(self, reason: str) -> int:
        code = REASON[reason]
        ret = 0
        while self.in_queue > 0:
            ret = lib.pt_flush(self._d, code)
            if ret <= 0:
                if ret == -errno.EAGAIN or ret == -errno.EINTR:
                    continue
                break
            self.in_flight += ret
            self.in_queue -= ret
        self.blocked = self.in_queue > 0
        if self._d.submits_len >= self._log_capacity - 1:
            self.flush_logs()
        if self.in_flight:
            # Complete what already finished right away (QEMU does the same).
            self.process_completions()
        return ret

    def remote_unplug(self, by_thread: int) -> None:
        """Another thread's last unplug of a device this thread serves released this driver (device-plug
        with several queues, `batching.DevicePlugState`): submit what is queued, unless a plug holds it
        again. Runs on this driver's own thread, from its event loop."""
        if self.plugged == 0 and not self.blocked and self.in_queue > 0:
            self._d.unplugged_by = by_thread
            self.ioq_submit("remote_unplug")

    # -- completion ----------------------------------------------------------
    def _cq_ready(self) -> bool:
        return self.in_flight > 0 and lib.io_uring_cq_ready(self._ring) > 0

    def _cq_ready_taskrun(self) -> bool:
        return self.in_flight > 0 and lib.pt_cq_ready_taskrun(self._ring) > 0

    def _cq_ready_kernel(self) -> bool:
        """`_cq_ready()` after letting the kernel post what finished (coop rings)."""
        if self.in_flight == 0:
            return False
        ring = self._d.ring
        lib.io_uring_get_events(ring)
        return lib.io_uring_cq_ready(ring) > 0

    def _completion_cb(self) -> None:
        try:
            os.eventfd_read(self._eventfd)
        except BlockingIOError:
            pass
        self.process_completions_and_submit()

    def process_completions_and_submit(self) -> None:
        self.process_completions()
        if self.in_queue > 0 and self.strategy.submit_after_completions(self):
            self.ioq_submit("completion")

    def process_completions(self) -> None:
        d = self._d
        while True:
            n = lib.pt_reap(d, self._out_slots, self._out_res, self._out_pending, self._reap_max)
            if n == 0:
                if d.requests_len >= self._log_capacity:
                    self.flush_logs()
                    continue
                break
            self.in_flight -= n - d.nheld  # a held request stays in flight until its latency is up
            if d.nout:
                self._reaped_for_python(d.nout)
            if d.ntouched:
                self._notify_guests()
            if d.requests_len > self._log_capacity - self._reap_max:
                self.flush_logs()
        if self._held:
            if self._held[0][0] <= lib.pt_now_ns():
                self._release_due()
            self._arm_held()

    def _arm_held(self) -> None:
        """One timer for the earliest held request: when the device would have posted it, the completion
        eventfd fires; each reap then releases every held request that is due and arms the next."""
        held = self._held
        if held and (self._held_timer_ns is None or held[0][0] < self._held_timer_ns):
            self._held_timer_ns = held[0][0]
            self.loop.timer_at(self._held_timer_ns, self._held_due)

    def _held_due(self) -> None:
        if self._held_timer_ns is not None and self._held_timer_ns <= lib.pt_now_ns():
            self._held_timer_ns = None
        self.process_completions_and_submit()

    def _notify_guests(self) -> None:
        """Each guest with completions hears once per batch; it was listed at its first completion, in order."""
        d = self._d
        on_completions, guests = self._on_guest_completions, self._guest_ptrs
        for gi in ffi.unpack(self._touched, d.ntouched):
            guests[gi].touched = 0
            on_completions[gi]()
        d.ntouched = 0

    def _reaped_for_python(self, nout: int) -> None:
        """Completions C left to Python: callbacks and (rare) short transfers and -EAGAIN."""
        slots = ffi.unpack(self._out_slots, nout)
        results = ffi.unpack(self._out_res, nout)
        pending = ffi.unpack(self._out_pending, nout)
        for slot, res, partial in zip(slots, results, pending):
            if partial == 2:
                r = self._reqs[slot]
                due = r.log.submit_ns + r.hold_ns
                heapq.heappush(self._held, (due, slot, res))
                continue
            if partial:
                guest = self._reqs[slot].guest
                res = self._finish_partial(slot, res)
                if res is None or guest >= 0:
                    continue  # resubmitted, or counted to its guest
            self._callbacks.pop(slot)(slot, res)

    def _release_due(self) -> None:
        """Held requests (a replay's, a timed guest's) whose latency is up complete now, at this reap, as QEMU's
        luring_process_completions() would have reaped them: a held request leaves `in_flight` only at a
        reap (after a submit, or when the completion eventfd fires), never in the middle of a handler."""
        d, held = self._d, self._held
        now = lib.pt_now_ns()
        while held and held[0][0] <= now:
            _, slot, res = heapq.heappop(held)
            if d.requests_len >= self._log_capacity:
                self.flush_logs()
            self._reqs[slot].log.complete_ns = now
            lib.pt_finish(d, slot, res, res)
            self.in_flight -= 1
        if d.ntouched:
            self._notify_guests()

    def _finish_partial(self, slot: int, res: int) -> int | None:
        """A short transfer or -EAGAIN/-EINTR: resubmit (None) or the final result."""
        r = self._reqs[slot]
        if res < 0 or (res > 0 and r.log.op == OP_READ):
            # -EAGAIN/-EINTR: submit again; short read: read the rest
            lib.pt_requeue_short(self._d, slot, max(res, 0))
            self.in_queue += 1
            return None
        if r.log.op == OP_READ:
            # End of file: pad the rest with zeroes; the guest sees success, the
            # log keeps the bytes really read.
            lib.pt_zero_rest(self._d, slot)
            lib.pt_finish(self._d, slot, r.done, r.log.len_bytes)
            return r.log.len_bytes
        lib.pt_finish(self._d, slot, -errno.ENOSPC, -errno.ENOSPC)
        return -errno.ENOSPC

    # -- logs ----------------------------------------------------------------
    def flush_logs(self) -> None:
        """Hand the C-side logs (requests, submits, sections, handlers) to the sink as numpy
        records (`records.DTYPES`), and start them afresh."""
        for name, log in self._logs.items():
            rows = log.take()
            if rows is not None:
                self._log_sink(name, rows)

    def close(self) -> None:
        self.flush_logs()
        self.loop.set_fd_handler(self._eventfd, None)
        try:
            self.ring.unregister_eventfd()
        except OSError:
            pass
        self.ring.close()
        os.close(self._eventfd)
