"""Every notebook runs top to bottom without an error: on the shipped sample
runs in data/ (their defaults), and on synthetic runs.

For the synthetic runs the parameters cell (tagged "parameters",
papermill-style) is followed by an injected cell pointing the notebook at them.
"""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from plugtrace.synthetic import STRATEGIES, write_run

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PARALLEL = True  # beside other tests (tests/conftest.py), but the recorded sweep (devices)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    made = {s: write_run(base / s, strategy=s, requests=4000, devices=3, interleave=0.0) for s in STRATEGIES}
    made["defer-interleave"] = write_run(
        base / "defer-interleave", strategy="defer", requests=4000, devices=3, interleave=0.3
    )
    return made


def parameters_for(name: str, runs: dict) -> str:
    if name.startswith("02"):
        return f"RUN_CALM = {str(runs['defer'])!r}\nRUN_INTERLEAVED = {str(runs['defer-interleave'])!r}"
    if name.startswith("04"):
        return f"RUNS = {[str(runs[s]) for s in STRATEGIES]!r}"
    if name.startswith("05"):  # the model's side synthetic; the real QEMU runs are only ever recorded
        return f"MODEL_RUNS = {[str(runs[s]) for s in ('device-plug', 'defer')]!r}\nREPLAY_RUN = None"
    if name.startswith("07"):  # single-queue synthetic runs: the per-thread and per-queue tables still hold
        return f"MODEL_RUNS = {[str(runs[s]) for s in ('device-plug', 'defer')]!r}\nQEMU_RUNS = []\nBENCH = None"
    if name.startswith("06"):
        return f"RUNS = {[str(path) for path in runs.values()]!r}"
    return f"RUN = {str(runs['defer-interleave'])!r}"


def execute(path: Path, parameters: str | None = None) -> nbformat.NotebookNode:
    """Run the notebook top to bottom (parameters injected after its parameters cell); check it plotted.
    Returns the notebook with its outputs."""
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs cleared"
    if parameters is not None:
        index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(index + 1, nbformat.v4.new_code_cell(parameters))
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook should draw at least one plot"
    return nb


def printed(nb: nbformat.NotebookNode) -> str:
    """What the notebook's code cells printed."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs_on_synthetic_runs(path, runs):
    nb = execute(path, parameters_for(path.name, runs))
    if path.name.startswith("05"):  # no replay given: the notebook says so and goes on
        assert "No replay run given" in printed(nb)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_runs_on_the_shipped_sample_data(path, monkeypatch):
    monkeypatch.delenv("PLUGTRACE_REPLAY_RUN", raising=False)
    nb = execute(path)
    if path.name.startswith("05"):  # the shipped replay of data/qemu-10.0, with its own numbers
        exact = json.loads((NOTEBOOKS.parent / "data" / "replay-10.0" / "meta.json").read_text())["replay"]
        assert f"handler runs predicted exactly (per_run_exact): {exact['per_run_exact']:.1%}" in printed(nb)
        fidelity = json.loads((NOTEBOOKS.parent / "data" / "model-fidelity.json").read_text())
        assert f"Spearman {fidelity['spearman']:.3f}" in printed(nb)


@pytest.mark.slow
@pytest.mark.devices
def test_real_qemu_notebook_on_a_replay_of_the_sample(tmp_path):
    """Notebook 05's replay section on a real replay of data/qemu-10.0 (a loop device, a few seconds)."""
    import subprocess

    from tests.helpers import PLUGTRACE, require_root

    require_root()
    replay = tmp_path / "replay-10.0"
    p = subprocess.run(
        [*PLUGTRACE, "replay", str(NOTEBOOKS.parent / "data" / "qemu-10.0"), "--quiet", "-o", str(replay)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    out = printed(execute(NOTEBOOKS / "05-real-qemu.ipynb", f"REPLAY_RUN = {str(replay)!r}"))
    assert "handler runs predicted exactly (per_run_exact):" in out and "No replay run given" not in out


@pytest.mark.slow
@pytest.mark.devices
def test_many_runs_notebook_on_a_recorded_sweep(tmp_path):
    """Notebook 06 on real runs: an iodepth x strategy sweep recorded by plugtrace record on zram."""
    import subprocess
    import sys

    from tests.helpers import require_root

    require_root()
    sweep = tmp_path / "sweep"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_sweep",
            "--quick",
            "--strategies",
            "defer,immediate",
            "--runs-dir",
            str(sweep),
            "--json",
            str(tmp_path / "sweep.json"),
        ],
        check=True,
        cwd=NOTEBOOKS.parent,
        stdout=subprocess.DEVNULL,
    )
    from plugtrace.analysis import Runs

    summary = Runs(sweep).df_compare().set_index("run")
    assert len(summary) == 6 and (summary["status"] == "complete").all()
    # batching works: defer's batches grow with the queue depth, immediate's stay at one SQE
    assert summary.loc["defer-qd32", "mean_sqes_per_submit"] > summary.loc["defer-qd1", "mean_sqes_per_submit"]
    assert summary.loc["immediate-qd32", "mean_sqes_per_submit"] == 1.0
    execute(NOTEBOOKS / "06-many-runs.ipynb", f"RUNS = {str(sweep / '*')!r}")
