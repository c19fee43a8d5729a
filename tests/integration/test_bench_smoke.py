"""Each benchmark script runs on a tiny setting (numbers are not asserted: benchmarks are not tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require_root

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_runs_quick(name, tmp_path):
    require_root()
    out = tmp_path / "r.json"
    p = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result.get("machine"), "a benchmark must state the machine it ran on"
