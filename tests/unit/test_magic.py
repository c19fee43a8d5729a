"""The %plugtrace magic in a real IPython shell."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"
InteractiveShell = pytest.importorskip("IPython.core.interactiveshell").InteractiveShell


@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "plugtrace")
    return shell


def test_line_magic_runs_the_command_line(ip, capsys, tmp_path):
    ip.run_line_magic("plugtrace", f"diff {DATA / 'defer'} {DATA / 'immediate'}")
    assert "mean_sqes_per_submit" in capsys.readouterr().out
    ip.run_cell_magic("plugtrace", f"report {DATA / 'defer'}", f"# the output\n-o {tmp_path / 'r.html'}\n")
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_a_failure_is_one_line_not_a_traceback(ip, capsys):
    assert ip.run_line_magic("plugtrace", "report /nonexistent/run") is None
    captured = capsys.readouterr()
    assert "exited with status 3" in captured.out and "Traceback" not in captured.err + captured.out
