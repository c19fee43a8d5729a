"""Which tests may run side by side (`-m parallel`, on several cores with pytest-xdist): the unit tests and
the integration modules that say `PARALLEL = True` (notebooks, reports in Chromium), except a test
marked `devices`. Device, tracer and QEMU tests run one at a time: they check that no device
or bpftrace process is left behind, which another test running beside them would break."""

import signal
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent / "unit"

# A suite started with SIGINT ignored (nohup, a background job of some shells and CI runners) hands
# that on to every recorder it starts, which then rightly ignores Ctrl-C: the Ctrl-C tests would test
# the launcher. With a handler here, what the suite starts begins with SIGINT at its default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("devices") is not None:
            continue
        if UNIT in Path(item.fspath).parents or getattr(item.module, "PARALLEL", False):
            item.add_marker(pytest.mark.parallel)
