"""The plug / defer_call API against QEMU's util/defer-call.c behaviour."""

import threading

import pytest

from plugtrace import plug
from plugtrace.plug import (
    PlugError,
    blk_io_plug,
    blk_io_plug_call,
    blk_io_unplug,
    defer_call,
    defer_call_begin,
    defer_call_end,
    deferred_calls,
)


@pytest.fixture(autouse=True)
def balanced():
    yield
    assert plug.nesting_level() == 0, "a test left the thread plugged"


def recorder():
    log = []

    def fn(opaque):
        log.append(opaque)

    return log, fn


def test_outside_a_section_the_call_runs_at_once():
    log, fn = recorder()
    defer_call(fn, "a")
    assert log == ["a"]


def test_inside_a_section_calls_wait_for_the_end():
    log, fn = recorder()
    defer_call_begin()
    defer_call(fn, "a")
    assert log == []
    defer_call_end()
    assert log == ["a"]


def test_same_fn_and_opaque_run_once():
    log, fn = recorder()
    state = object()
    with deferred_calls():
        for _ in range(5):
            defer_call(fn, state)
    assert log == [state]


def test_dedupe_is_by_identity_not_equality():
    log, fn = recorder()
    a, b = [1], [1]  # equal, not the same object
    with deferred_calls():
        defer_call(fn, a)
        defer_call(fn, b)
        defer_call(fn, a)
    assert log == [a, b]
    assert log[0] is a and log[1] is b


def test_same_opaque_with_another_fn_is_a_separate_call():
    log1, fn1 = recorder()
    log2, fn2 = recorder()
    with deferred_calls():
        defer_call(fn1, "x")
        defer_call(fn2, "x")
    assert log1 == ["x"] and log2 == ["x"]


def test_first_insertion_order():
    order = []

    def make(name):
        return lambda opaque: order.append(name)

    f, g, h = make("f"), make("g"), make("h")
    with deferred_calls():
        defer_call(g, None)
        defer_call(f, None)
        defer_call(g, None)
        defer_call(h, None)
        defer_call(f, None)
    assert order == ["g", "f", "h"]


def test_nested_sections_run_only_at_the_outermost_end():
    log, fn = recorder()
    defer_call_begin()
    defer_call_begin()
    defer_call(fn, 1)
    defer_call_end()
    assert log == [], "inner end must not run deferred calls"
    defer_call(fn, 2)
    defer_call_end()
    assert log == [1, 2]


def test_unbalanced_end_is_an_error():
    with pytest.raises(PlugError):
        defer_call_end()
    with deferred_calls():
        pass
    with pytest.raises(PlugError):
        defer_call_end()


def test_old_and_new_names_are_one_api():
    log, fn = recorder()
    blk_io_plug()
    defer_call(fn, "a")
    defer_call_begin()
    blk_io_plug_call(fn, "a")
    defer_call_end()
    blk_io_unplug()
    assert log == ["a"]


def test_state_is_per_thread():
    log, fn = recorder()
    seen_in_other = []

    def other():
        # the main thread is plugged; this thread is not, so it runs at once
        seen_in_other.append(plug.nesting_level())
        defer_call(fn, "other")

    with deferred_calls():
        defer_call(fn, "main")
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert log == ["other"]
    assert seen_in_other == [0]
    assert log == ["other", "main"]


def test_a_deferred_fn_that_defers_runs_its_call_at_once():
    # At the end of the outermost section the nesting level is already 0,
    # so defer_call() from a deferred function calls straight through.
    log, fn = recorder()

    def outer(opaque):
        log.append("outer")
        defer_call(fn, "inner")
        log.append("after inner")

    with deferred_calls():
        defer_call(outer, None)
    assert log == ["outer", "inner", "after inner"]


def test_a_deferred_fn_opening_a_section_replays_the_array_like_qemu():
    # util/defer-call.c: the nested section appends to the same array, whose
    # end walks it from index 0 (re-running entries the outer walk already ran)
    # and empties it, which ends the outer walk too.
    log = []
    opened = []

    def a(opaque):
        log.append("a")

    def b(opaque):
        log.append("b")
        if not opened:
            opened.append(True)
            defer_call_begin()
            defer_call(a, None)  # already in the array: dropped
            defer_call(d, None)  # new: appended
            defer_call_end()

    def c(opaque):
        log.append("c")

    def d(opaque):
        log.append("d")

    with deferred_calls():
        defer_call(a, None)
        defer_call(b, None)
        defer_call(c, None)
    # outer walk: a, b -> nested end walks [a, b, c, d] from 0 -> array emptied
    assert log == ["a", "b", "a", "b", "c", "d"]


def test_section_ends_when_the_body_raises():
    log, fn = recorder()
    with pytest.raises(ValueError):
        with deferred_calls():
            defer_call(fn, 1)
            raise ValueError
    assert log == [1]


def test_section_ids_and_owner_and_hooks():
    events = []

    class Hooks(plug.SectionHooks):
        def begin(self, sid, owner):
            events.append(("begin", owner))

        def end(self, sid, owner, n):
            events.append(("end", owner, n))

        def call_run(self, sid, i):
            events.append(("run", i))

        def done(self, sid, owner):
            events.append(("done", owner))

    plug.set_section_hooks(Hooks())
    try:
        log, fn = recorder()
        assert plug.current_section() == (-1, -1)
        with deferred_calls(owner=3):
            sid, owner = plug.current_section()
            assert sid > 0 and owner == 3
            with deferred_calls(owner=7):  # nested: keeps the outer owner
                assert plug.current_section() == (sid, 3)
            defer_call(fn, 1)
            defer_call(fn, 2)
        assert plug.current_section() == (-1, -1)
        with deferred_calls():
            assert plug.current_section()[0] > sid
    finally:
        plug.set_section_hooks(None)
    assert events[:5] == [("begin", 3), ("end", 3, 2), ("run", 0), ("run", 1), ("done", 3)]
