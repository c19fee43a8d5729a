"""The HTML report as a reader sees it: written by the real CLI, opened in headless Chromium."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PLUGTRACE, require

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
PARALLEL = True  # reads data/ and its own files only: beside other tests (tests/conftest.py)


# Appended to a copy of the report: after load, list every image and whether
# the browser decoded it, where --dump-dom can read it.
PROBE_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const rows = [...document.images].map(i =>
    `${i.complete && i.naturalWidth > 0 ? "ok" : "BROKEN"} ${i.naturalWidth}x${i.naturalHeight} ${i.alt}`);
  const pre = document.createElement("pre");
  pre.id = "plugtrace-image-check";
  pre.textContent = rows.join("\\n");
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    require(exe is not None, "chromium is not installed (make install installs it)")
    return exe


def browse(exe: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def report(tmp_path: Path, *runs: str) -> Path:
    out = tmp_path / "report.html"
    p = subprocess.run(
        [*PLUGTRACE, "report", *[str(DATA / r) for r in runs], "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    return out


def check_renders(exe: str, html: Path, tmp_path: Path, min_images: int) -> list[str]:
    text = html.read_text()
    # HTML attributes only: the inlined BokehJS holds a loader URL for MathJax, used only by LaTeX labels,
    # which the report has none of; the browser below runs with every host name unresolvable anyway
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", text, flags=re.S)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup), (
        "the report must not load anything from a network"
    )
    assert "$$" not in markup
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE_SCRIPT + "</body>"))
    p = browse(exe, probe, "--dump-dom")
    assert p.returncode == 0, p.stderr[-2000:]
    # warnings and errors only: BokehJS logs its start at INFO level
    console_errors = [
        line for line in p.stderr.splitlines() if re.search(r":(WARNING|ERROR):CONSOLE", line) or "Uncaught" in line
    ]
    assert not console_errors, console_errors
    m = re.search(r'<pre id="plugtrace-image-check">(.*?)</pre>', p.stdout, re.S)
    assert m, "the page did not finish loading"
    rows = m.group(1).strip().splitlines()
    assert len(rows) >= min_images, rows
    assert all(r.startswith("ok ") for r in rows), [r for r in rows if not r.startswith("ok ")]
    assert all(int(r.split()[1].split("x")[0]) >= 300 for r in rows), "plots should be drawn at a readable size"
    return rows


def screenshot(exe: str, html: Path, png: Path, width: int = 1200, height: int = 2400) -> np.ndarray:
    import matplotlib.image

    p = browse(exe, html, f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars")
    assert p.returncode == 0 and png.exists(), p.stderr[-2000:]
    return matplotlib.image.imread(png)


# Appended to a copy of an interactive report: zoom the timeline through BokehJS's own models and
# say whether the canvas drew something else (and, first, that it draws the same twice when untouched).
ZOOM_SCRIPT = """
<script>
window.addEventListener("load", () => setTimeout(async () => {
  const out = [];
  try {
    const fig = Bokeh.documents.map(d => d.get_model_by_name("timeline")).find(m => m);
    const view = [...Bokeh.index.all_views()].find(v => v.model === fig);
    const snap = () => view.export("png").canvas.toDataURL();
    const pause = () => new Promise(r => setTimeout(r, 300));
    const before = snap();
    await pause();
    out.push("stable " + (snap() === before));
    const r = fig.x_range, span = r.end - r.start;
    r.start = r.start + span * 0.45;
    r.end = r.start + span * 0.05;
    await pause();
    out.push("zoomed " + (snap() !== before));
    out.push("figures " + Bokeh.documents.length);
  } catch (e) { out.push("ERROR " + e); }
  const pre = document.createElement("pre");
  pre.id = "plugtrace-zoom-check";
  pre.textContent = out.join("\\n");
  document.body.appendChild(pre);
}, 1000));
</script>
"""


def test_report_of_one_run_renders_with_its_plots(tmp_path):
    exe = chromium()
    html = report(tmp_path, "defer-interleave")
    rows = check_renders(exe, html, tmp_path, min_images=1)
    assert any("Wait before submission" in r for r in rows), rows
    text = html.read_text()
    for plot in ("Batch sizes", "Batch size over time", "Submit latency", "Timeline"):
        assert f'title="{plot}: drag to pan' in text, f"no zoomable {plot!r} plot"
    pixels = screenshot(exe, html, tmp_path / "shot.png")
    # not blank: many distinct colours (plots), not one background colour
    flat = (pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(flat[::7], axis=0)) > 50


def test_zooming_the_timeline_changes_what_is_drawn(tmp_path):
    exe = chromium()
    html = report(tmp_path, "defer-interleave")
    probe = tmp_path / "zoom.html"
    probe.write_text(html.read_text().replace("</body>", ZOOM_SCRIPT + "</body>"))
    p = browse(exe, probe, "--dump-dom")
    m = re.search(r'<pre id="plugtrace-zoom-check">(.*?)</pre>', p.stdout, re.S)
    assert m, p.stderr[-2000:]
    result = m.group(1).split("\\n") if "\\n" in m.group(1) else m.group(1).splitlines()
    assert result[:3] == ["stable true", "zoomed true", "figures 4"], result


def test_static_report_has_no_javascript(tmp_path):
    out = tmp_path / "static.html"
    p = subprocess.run(
        [*PLUGTRACE, "report", str(DATA / "defer-interleave"), "--static", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "<script" not in out.read_text()
    check_renders(chromium(), out, tmp_path, min_images=5)


def test_report_of_several_runs_compares_them(tmp_path):
    exe = chromium()
    html = report(tmp_path, "immediate", "device-plug", "defer", "loop-iteration")
    rows = check_renders(exe, html, tmp_path, min_images=4 + 1)  # per run the deferral plot, and the comparison
    assert any("comparison" in r for r in rows), rows
    text = html.read_text()
    for name in ("immediate", "device-plug", "defer", "loop-iteration"):
        assert name in text


def test_report_lists_what_could_not_be_measured(tmp_path):
    from plugtrace.synthetic import write_run

    exe = chromium()
    why = "uprobes are not available on this test machine"
    partial = write_run(
        tmp_path / "partial",
        strategy="defer",
        requests=3000,
        kernel="events",
        could_not_measure={"markers": why, "block_unplug": ""},
        events_lost=77,
    )
    # a probe left off by default (a traced program's block probes without --watch-device)
    meta = json.loads((partial / "meta.json").read_text())
    off = "off for a traced program unless asked for: name its device with --watch-device DEV"
    meta["probes"]["could_not_measure"].pop("block_unplug")
    meta["probes"]["not_asked"] = {"block_unplug": off}
    (partial / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "report.html"
    lossy = write_run(tmp_path / "lossy", strategy="immediate", requests=3000, kernel="events", events_lost=1330)
    p = subprocess.run(
        [*PLUGTRACE, "report", str(partial), str(lossy), "-o", str(out)], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    check_renders(exe, out, tmp_path, min_images=2)
    text = out.read_text()
    assert "could not measure" in text.lower() and why in text
    assert "not recorded" in text and off in text
    assert "77" in text and "1,330" in text, "events lost, per run, must be shown"


def test_report_of_a_replay_shows_its_measured_vs_predicted_plot(tmp_path):
    from tests.unit.test_report_replay import replay_run

    exe = chromium()
    run = replay_run(tmp_path / "replay")
    out = tmp_path / "report.html"
    p = subprocess.run(
        [*PLUGTRACE, "report", str(run.path), "-o", str(out)], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    rows = check_renders(exe, out, tmp_path, min_images=1)
    assert any(r.startswith("ok ") and "Replay: measured vs predicted" in r for r in rows), rows


@pytest.mark.skipif(not (ROOT / "docs").is_dir(), reason="no docs/ directory")
def test_readme_screenshot_is_a_real_report(tmp_path):
    """docs/report-screenshot.png, shown in the README, is a PNG of a report (regenerate with
    `python -m tests.integration.test_report_chromium`)."""
    png = ROOT / "docs" / "report-screenshot.png"
    assert png.exists(), "docs/report-screenshot.png is missing"
    assert png.read_bytes()[:8] == base64.b64decode("iVBORw0KGgo=")
    assert "docs/report-screenshot.png" in (ROOT / "README.md").read_text()


if __name__ == "__main__":  # regenerate the README's screenshot
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        html = report(Path(d), "defer-interleave")
        screenshot(chromium(), html, ROOT / "docs" / "report-screenshot.png", 1200, 1600)
    print("wrote docs/report-screenshot.png")
