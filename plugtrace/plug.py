"""Thread-local plug / defer_call API, with QEMU's exact semantics.

QEMU batches I/O by deferring function calls until the end of a section
(``block/plug.c``, May 2023: ``blk_io_plug()`` / ``blk_io_unplug()`` /
``blk_io_plug_call()``; renamed ``util/defer-call.c``: ``defer_call_begin()`` /
``defer_call_end()`` / ``defer_call()``)::

    defer_call_begin()
    defer_call(submit, state)   # deferred
    defer_call(submit, state)   # same (fn, opaque): not added again
    defer_call_end()            # submit(state) runs once, here

Rules, each matched to the C code:

* State is per thread: a nesting level and an ordered array of pending calls.
* Outside a section, ``defer_call(fn, opaque)`` calls ``fn(opaque)`` at once.
* Inside, a call whose ``fn`` and ``opaque`` are the *same objects* as one in the
  array (C compares the pointers) is dropped; otherwise it is appended.
  Pass a plain function, as C passes a function pointer: ``obj.method`` makes a
  new bound-method object on every access and so never matches.
* When the outermost section ends, the array is walked in insertion order while
  its length is re-read on every step, then emptied.
* Ending a section that was never begun is an error (an assert in QEMU).

Corner cases, as QEMU behaves (the tests pin them down):

* A deferred function that calls ``defer_call()`` runs at nesting level 0, so its
  call runs at once.
* A deferred function that begins and ends a section of its own appends to the
  *same* array (still holding the outer entries, so duplicates of those are
  dropped), and its end walks that array from the start: entries the outer walk
  already ran run again, then the array is emptied, which also ends the outer
  walk.

Besides QEMU's API, a section can carry an ``owner`` tag (the emulated device
whose handler opened it) and hooks observe section begin/end and each deferred
call run. The engine uses them to log sections and fire uprobe markers; with no
hooks set they cost one ``is None`` test.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import PlugtraceError

__all__ = [
    "PlugError",
    "defer_call_begin",
    "defer_call_end",
    "defer_call",
    "blk_io_plug",
    "blk_io_unplug",
    "blk_io_plug_call",
    "deferred_calls",
    "plugged",
    "nesting_level",
    "current_section",
    "SectionHooks",
    "set_section_hooks",
]

DeferredFn = Callable[[Any], Any]


class PlugError(PlugtraceError, RuntimeError):
    """A section ended that was never begun (QEMU asserts)."""


class SectionHooks:
    """Observers of the outermost sections on one thread (override what you need).

    Methods run on the thread that owns the section.
    """

    def begin(self, section_id: int, owner: int) -> None:
        """An outermost section `section_id`, opened by `owner` (-1: no device), began."""

    def end(self, section_id: int, owner: int, nr_calls: int) -> None:
        """Section `section_id` ended; its `nr_calls` deferred calls are about to run."""

    def call_run(self, section_id: int, index: int) -> None:
        """Deferred call number `index` of the section is about to run."""

    def done(self, section_id: int, owner: int) -> None:
        """All deferred calls of section `section_id` have run."""


_section_ids = itertools.count(1)


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.nesting_level = 0
        self.calls: list[tuple[DeferredFn, Any]] = []
        self.keys: set[tuple[int, int]] = set()
        self.section_id = -1
        self.owner = -1
        self.hooks: SectionHooks | None = None


_state = _ThreadState()


def defer_call_begin(owner: int = -1) -> None:
    """Begin a section; calls deferred inside run when the outermost one ends.

    `owner` tags the outermost section with the emulated device whose handler
    opened it (ignored for nested sections, as only the outermost one matters).
    """
    st = _state
    st.nesting_level += 1
    if st.nesting_level == 1:
        st.section_id = next(_section_ids)
        st.owner = owner
        if st.hooks is not None:
            st.hooks.begin(st.section_id, owner)


def defer_call_end() -> None:
    """End a section; at the outermost end, run the deferred calls in order.

    Raises PlugError when no section is open.
    """
    st = _state
    if st.nesting_level <= 0:
        raise PlugError("defer_call_end() without a matching defer_call_begin()")
    st.nesting_level -= 1
    if st.nesting_level > 0:
        return
    calls = st.calls
    hooks = st.hooks
    section_id, owner = st.section_id, st.owner
    st.section_id, st.owner = -1, -1
    if hooks is not None:
        hooks.end(section_id, owner, len(calls))
    # Walk by index and re-read the length each step: the C loop does
    # `for (i = 0; i < array->len; i++)`, and a nested section in a deferred
    # function may empty the array under it.
    i = 0
    while i < len(calls):
        fn, opaque = calls[i]
        if hooks is not None:
            hooks.call_run(section_id, i)
        fn(opaque)
        i += 1
    calls.clear()
    st.keys.clear()
    if hooks is not None:
        hooks.done(section_id, owner)


def defer_call(fn: DeferredFn, opaque: Any = None) -> None:
    """Call ``fn(opaque)`` now, or at the end of the current section if one is open.

    Inside a section, a call with the same `fn` and `opaque` objects as a pending
    one is dropped, so ``fn(opaque)`` runs once per section.
    """
    st = _state
    if st.nesting_level == 0:
        fn(opaque)
        return
    key = (id(fn), id(opaque))
    if key in st.keys:
        return
    st.keys.add(key)
    st.calls.append((fn, opaque))


# QEMU 8.1's names for the same API.
blk_io_plug = defer_call_begin
blk_io_unplug = defer_call_end
blk_io_plug_call = defer_call


@contextmanager
def deferred_calls(owner: int = -1) -> Iterator[None]:
    """``with deferred_calls(): ...`` is ``defer_call_begin()`` ... ``defer_call_end()``.

    The section ends even when the body raises, so the thread is never left
    plugged.
    """
    defer_call_begin(owner)
    try:
        yield
    finally:
        defer_call_end()


plugged = deferred_calls


def nesting_level() -> int:
    """How many sections are open on this thread."""
    return _state.nesting_level


def current_section() -> tuple[int, int]:
    """``(section_id, owner)`` of the outermost open section, or ``(-1, -1)``."""
    st = _state
    return st.section_id, st.owner


def set_section_hooks(hooks: SectionHooks | None) -> None:
    """Install (or, with None, remove) section observers for the calling thread."""
    _state.hooks = hooks
