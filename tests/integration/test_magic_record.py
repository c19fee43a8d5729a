"""`%plugtrace record` in a real IPython shell records on a real device and returns the run."""

import pytest

from tests.helpers import require_root

InteractiveShell = pytest.importorskip("IPython.core.interactiveshell").InteractiveShell


@pytest.mark.slow
def test_record_magic_returns_the_run(tmp_path):
    require_root()
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "plugtrace")
    run = ip.run_cell_magic(
        "plugtrace",
        "record --device zram --size 64M --quiet",
        f"--strategy defer --requests 3000\n-o {tmp_path / 'run'}\n",
    )
    assert run is not None and run.status == "complete"
    assert run.summary["nr_requests"] >= 3000
    # the notebook shows the run as its summary card
    html, _ = ip.display_formatter.format(run, include=["text/html"])
    assert "plugtrace" in html["text/html"] and run.name in html["text/html"]
