#!/usr/bin/env bash
# The main job: record a demo run on a loop device plugtrace creates (and removes),
# then write an HTML report of it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/demo-$(date +%Y%m%d-%H%M%S)
.venv/bin/plugtrace record --device loop --size 512M --strategy defer \
    --devices 2 --ide-devices 1 --iodepth 32 --interleave 0.1 --duration 5 -o "$out"
.venv/bin/plugtrace report "$out" -o "$out/report.html"
echo
echo "open the report in a browser: $(pwd)/$out/report.html"
echo "or explore the run in JupyterLab: .venv/bin/jupyter lab notebooks/  (set RUN = \"../$out\")"
