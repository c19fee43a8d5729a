"""The README's main job, as a newcomer runs it (after the install step): a demo run and its report."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import require_root

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_records_a_run_and_writes_its_report():
    require_root()
    p = subprocess.run([str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    m = re.search(r"open the report in a browser: (\S+)", p.stdout)
    try:
        assert p.returncode == 0, p.stderr[-2000:]
        assert m, p.stdout
        report = Path(m.group(1))
        assert report.stat().st_size > 100_000 and "plugtrace report" in report.read_text()
    finally:
        if m:
            shutil.rmtree(Path(m.group(1)).parent, ignore_errors=True)
