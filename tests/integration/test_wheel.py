"""The wheel installs anywhere: built from the checkout, installed in a fresh venv by an unprivileged
user (no root, no bpftrace needed), it opens runs, writes reports and diffs, runs every notebook on
data/, exports to Perfetto, and `record` says clearly what it needs."""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require, require_root

ROOT = Path(__file__).resolve().parents[2]
USER = "nobody"


def _as_user(args, home: Path, **kw):
    kw.setdefault("cwd", home)  # never the checkout, whose plugtrace/ would shadow the installed one
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "PIP_CACHE_DIR": str(home / "pip-cache"),
        "MPLCONFIGDIR": str(home / "mpl"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return subprocess.run(
        [shutil.which("runuser"), "-u", USER, "--", *map(str, args)], env=env, capture_output=True, text=True, **kw
    )


@pytest.fixture
def base():
    """A directory the unprivileged user can reach (pytest's own are private to root), removed afterwards."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="plugtrace-wheel-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_as_an_unprivileged_user(base):
    require_root()  # to become another user; the user itself has no privilege
    require(shutil.which("runuser") is not None, "runuser (util-linux) is missing")
    python = "/usr/bin/python3"
    require(
        subprocess.run([python, "-c", "import ensurepip, venv"]).returncode == 0,
        "Debian's python3 cannot make a venv (python3-venv)",
    )
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = glob.glob(str(dist / "plugtrace-*.whl"))[0]
    work = base / "work"
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    shutil.copytree(ROOT / "data", work / "data")
    home = base / "home"
    home.mkdir()
    for path in (base, *base.rglob("*")):
        os.chown(path, 65534, 65534)
    os.chmod(base, 0o755)

    venv = base / "venv"
    made = _as_user([python, "-m", "venv", venv], home)
    assert made.returncode == 0, made.stderr
    installed = _as_user([venv / "bin/pip", "install", "-q", f"{wheel}[notebooks]"], home, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]

    # the probes travel inside the wheel: the scripts, and our programs compiled
    probes = _as_user(
        [
            venv / "bin/python",
            "-c",
            "from plugtrace.tracing.probes import PROBES_DIR; "
            "print(PROBES_DIR, sorted(p.name for p in PROBES_DIR.glob('*.bt')), "
            "sorted(p.name for p in PROBES_DIR.glob('build/*.bpf.o')))",
        ],
        home,
    )
    assert probes.returncode == 0, probes.stderr
    assert str(venv) in probes.stdout and "block_rq.bt" in probes.stdout and "block_rq.bpf.o" in probes.stdout

    report = _as_user([venv / "bin/plugtrace", "report", work / "data", "-o", base / "report.html"], home)
    assert report.returncode == 0, report.stderr
    assert (base / "report.html").stat().st_size > 100_000
    diff = _as_user(
        [
            venv / "bin/plugtrace",
            "diff",
            work / "data/defer",
            work / "data/immediate",
            "--fail-if",
            "mean_sqes_per_submit < -10%",
        ],
        home,
    )
    assert diff.returncode == 1 and "FAILS" in diff.stdout, diff.stderr
    export = _as_user(
        [venv / "bin/plugtrace", "export", work / "data/defer", "--perfetto", "-o", base / "defer.pftrace"], home
    )
    assert export.returncode == 0, export.stderr

    # one notebook on the shipped data, through the venv's own kernel (tests/integration/test_notebooks.py
    # runs every notebook from the checkout)
    notebooks = sorted((work / "notebooks").glob("01-*.ipynb"))
    run = _as_user(
        [
            venv / "bin/jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--output-dir",
            base / "executed",
            *notebooks,
        ],
        home,
        cwd=work / "notebooks",
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((base / "executed").glob("*.ipynb"))) == len(notebooks)

    record = _as_user(
        [venv / "bin/plugtrace", "record", "--device", "zram", "--duration", "1", "-o", base / "run"], home
    )
    assert record.returncode != 0
    assert "root" in record.stderr and "Traceback" not in record.stderr
