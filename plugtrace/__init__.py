"""plugtrace: a workbench for seeing whether I/O batching on io_uring works.

It runs QEMU-style request batching (the thread-local plug / defer_call API and
the strategies around it) on real block devices, traces what the kernel did
with bpftrace, stores each run as a self-describing directory, and shows it in
notebooks and HTML reports.
"""

from ._version import __version__

__all__ = ["__version__", "load_ipython_extension"]


def _show_runs_in_notebooks() -> None:
    """In a running IPython, show a `Run` as its summary card (`plugtrace.report.render_summary`).

    Registered by name, so the data classes never import the report; outside
    IPython this does nothing and imports nothing.
    """
    import sys

    ipython_module = sys.modules.get("IPython")
    shell = ipython_module.get_ipython() if ipython_module is not None else None
    if shell is None:
        return

    def run_html(run):
        from .report import render_summary

        return render_summary(run)

    shell.display_formatter.formatters["text/html"].for_type_by_name("plugtrace.run.reader", "Run", run_html)


_show_runs_in_notebooks()


def load_ipython_extension(ipython):
    """``%load_ext plugtrace`` in Jupyter: the `%plugtrace` magic (see plugtrace.magic)."""
    from .magic import load_ipython_extension as load

    _show_runs_in_notebooks()
    load(ipython)
