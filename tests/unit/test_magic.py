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


@pytest.mark.parametrize(
    "line, said",
    [
        ("--help", "usage: plugtrace"),
        ("record --help", "usage: plugtrace record"),
        ("--version", "plugtrace "),
        ("record --bogus", "unrecognized arguments: --bogus"),
        ("report 'unbalanced", "cannot read the command line: No closing quotation"),
    ],
)
def test_help_bad_options_and_quotes_are_messages_not_exceptions(ip, capsys, line, said):
    assert ip.run_line_magic("plugtrace", line) is None  # no SystemExit, no ValueError into the notebook
    captured = capsys.readouterr()
    assert said in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("form", ["--output={}", "-o{}", "--out {}"])
def test_the_run_directory_is_found_however_it_is_spelled(ip, capsys, tmp_path, form):
    """Every spelling argparse accepts names the run: the magic adds no second -o that would win."""
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    # record refuses a file as its run directory: that it names this path shows it got it
    disk = tmp_path / "disk.img"
    ip.run_line_magic(
        "plugtrace", f"record --device file:{disk} --size 1M --mode off --requests 10 {form.format(blocker)}"
    )
    captured = capsys.readouterr()
    assert str(blocker) in captured.err and "exited with status" in captured.out
    assert blocker.read_text() == "mine" and not disk.exists()
