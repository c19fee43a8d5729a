"""Which tests may run side by side (`-m parallel`, on several cores with pytest-xdist): the unit tests and
the integration modules that say `PARALLEL = True` (notebooks, reports in Chromium), except a test
marked `devices`. Device, tracer and QEMU tests run one at a time: they check that no device
or bpftrace process is left behind, which another test running beside them would break."""

from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent / "unit"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("devices") is not None:
            continue
        if UNIT in Path(item.fspath).parents or getattr(item.module, "PARALLEL", False):
            item.add_marker(pytest.mark.parallel)
