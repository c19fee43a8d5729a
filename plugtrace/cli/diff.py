"""`plugtrace diff A B`: what changed between two runs, and fail a CI job when batching regresses."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

import pandas as pd

from ..analysis import DIFF_NUMBERS, Run
from ..errors import RunDirError, UsageError
from ..run.output import check_not_in_runs, output_file

HELP = "compare two runs (or two directories of runs): what changed, beyond noise or not"
DESCRIPTION = """\
Compare run B with run A: IOPS, mean SQEs per io_uring_enter(), p50 / p99
submit latency, deferrals into another device's section, and the whole
batch-size and submit-latency distributions. Each change says whether it is
beyond run-to-run noise: a number must move by at least --noise (default 10%)
and, where a test applies, the test must agree (Welch's test on the mean batch
size, a two-sample Kolmogorov-Smirnov test on distributions, p < 0.01 and
D >= 0.05).

Given two directories of runs, runs of the same name are compared pairwise,
and a run only one side has is named; given the A and B directories of
`plugtrace qemu --compare`, its means over the repeated runs are compared (a
change is beyond noise when the 95% interval of the difference excludes zero),
and --fail-if takes its metrics too. A run that stopped early (killed,
interrupted, a table unreadable) covers only part of its workload: its
numbers are shown with no verdict, and diff exits 3. A run with a corrupt
table is refused (exit 3), naming the table.

--fail-if makes the exit status fail a CI job (exit 1) when a condition on a
change holds, or cannot be checked because a run lacks the number:

  METRIC OP VALUE     change B - A, in the metric's unit (ns, SQEs, IOPS)
  METRIC OP VALUE%    change relative to A, in percent

  plugtrace diff runs/main runs/branch
  plugtrace diff runs/main runs/branch --fail-if 'mean_sqes_per_submit < -10%' \\
                                       --fail-if 'submit_p99_ns > 20%'
"""

#: exit status when a --fail-if condition holds (or cannot be checked), as diff(1) uses 1 for "different"
EXIT_CONDITION_MET = 1

_CONDITION = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[-+]?[0-9.]+(?:e[-+]?\d+)?)"
    r"\s*(?P<pct>%?)\s*$"
)
_OPS = {"<": lambda x, y: x < y, "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, ">=": lambda x, y: x >= y}


@dataclass(frozen=True)
class Condition:
    """One --fail-if: `metric`'s change compared with `value` (percent of A when `relative`)."""

    text: str
    metric: str
    op: str
    value: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Condition:
        m = _CONDITION.match(text)
        if not m:
            raise UsageError(f"--fail-if {text!r}: expected METRIC OP VALUE[%], e.g. 'mean_sqes_per_submit < -10%'")
        from ..analysis.ab import COMPARE_METRICS

        names = (*DIFF_NUMBERS, *(n for n in COMPARE_METRICS if n not in DIFF_NUMBERS))
        if m["metric"] not in names:
            raise UsageError(f"--fail-if {text!r}: no number named {m['metric']!r} (one of: {', '.join(names)})")
        return cls(text, m["metric"], m["op"], float(m["value"]), bool(m["pct"]))

    def check(self, diff: pd.DataFrame) -> tuple[bool, str]:
        """(holds, why): holds is True when the condition is met or cannot be checked."""
        row = diff[diff["metric"] == self.metric]
        change = float(row["change_pct" if self.relative else "change"].iloc[0]) if len(row) else math.nan
        if math.isnan(change):
            return True, f"{self.text}: cannot be checked, a run lacks {self.metric}"
        unit = "%" if self.relative else ""
        holds = _OPS[self.op](change, self.value)
        return holds, f"{self.text}: change is {change:+.4g}{unit} -> {'FAILS' if holds else 'ok'}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="the run (or directory of runs) to compare with")
    parser.add_argument("b", metavar="B", help="the run (or directory of runs) that may have changed")
    parser.add_argument(
        "--noise",
        type=_percent,
        default=10.0,
        metavar="PCT",
        help="smallest relative change called beyond noise, percent (default: %(default)g)",
    )
    parser.add_argument(
        "--fail-if",
        action="append",
        default=[],
        metavar="COND",
        help="exit 1 when this holds for a change, e.g. 'mean_sqes_per_submit < -10%%' (repeatable)",
    )
    parser.add_argument("--csv", metavar="FILE", help="also write the comparison as CSV")


def _percent(text: str) -> float:
    """--noise: a finite percentage in (0, 100]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= 100):
        raise argparse.ArgumentTypeError(f"{text!r}: a percentage above 0 and at most 100")
    return value


def _pairs(a: str, b: str) -> tuple[list[tuple[Run, Run]], list[str]]:
    """The runs to compare, paired, and a line for each run that has no partner."""
    from ..analysis import Runs

    runs_a, runs_b = Runs(a), Runs(b)
    if len(runs_a) == 1 and len(runs_b) == 1:
        return [(runs_a.runs[0], runs_b.runs[0])], []
    by_name = {run.name: run for run in runs_b}
    pairs = [(run, by_name[run.name]) for run in runs_a if run.name in by_name]
    if not pairs:
        raise UsageError(f"{a} and {b} have no runs of the same name to compare")
    names_a = {run.name for run in runs_a}
    unpaired = [f"only in {a}: {run.name} (not compared)" for run in runs_a if run.name not in by_name]
    unpaired += [f"only in {b}: {run.name} (not compared)" for run in runs_b if run.name not in names_a]
    return pairs, unpaired


def _partial(run: Run) -> str | None:
    """Why `run`'s numbers cover only part of it, or None."""
    if not run.partial:
        return None
    if run.unreadable:
        return f"its table {', '.join(sorted(run.unreadable))} cannot be read ({next(iter(run.unreadable.values()))})"
    return f"its status is '{run.status}': it stopped before the end"


def _format(diff: pd.DataFrame) -> str:
    def number(v: float) -> str:
        return "–" if pd.isna(v) else f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"

    lines = [f"{'metric':30} {'A':>14} {'B':>14} {'change':>14} {'change %':>9}  {'test':9} {'p':>9}  verdict"]
    for r in diff.itertuples(index=False):
        if r.test == "ks":
            a_txt, b_txt, change = "", "", f"D={r.statistic:.3f}" if not pd.isna(r.statistic) else "–"
        else:
            a_txt, b_txt, change = number(r.a), number(r.b), number(r.change)
        pct = "–" if pd.isna(r.change_pct) else f"{r.change_pct:+.1f}%"
        p = "–" if pd.isna(r.p_value) else f"{r.p_value:.2g}"
        verdict = "no verdict" if pd.isna(r.beyond_noise) else "CHANGED" if r.beyond_noise else "within noise"
        lines.append(f"{r.metric:30} {a_txt:>14} {b_txt:>14} {change:>14} {pct:>9}  {r.test:9} {p:>9}  {verdict}")
    return "\n".join(lines)


def _compare_result(a: str, b: str) -> dict | None:
    """`plugtrace qemu --compare`'s result for its A and B directories, with its metrics as a diff frame
    (a change is beyond noise when the 95% interval of the difference of the means excludes zero)."""
    from ..analysis.ab import result_of

    result = result_of(a, b)
    if result is None:
        return None
    rows = [
        {"metric": r["metric"], "a": r["a"], "b": r["b"], "change": r["change"], "change_pct": r["change_pct"],
         "test": "welch-t", "statistic": math.nan, "p_value": math.nan, "beyond_noise": r["differ"]}
        for r in result["metrics"]
    ]  # fmt: skip
    return {**result, "diff": pd.DataFrame(rows)}


def run(args: argparse.Namespace) -> int:
    from ..analysis import df_diff

    conditions = [Condition.parse(text) for text in args.fail_if]
    failed = False
    compared = _compare_result(args.a, args.b)
    if compared is not None:  # plugtrace qemu --compare's A and B: their means, not one pair of runs
        print(f"{args.a} -> {args.b}: the means of {compared['repeats']} runs each (plugtrace qemu --compare)")
        print(_format(compared["diff"]))
        for condition in conditions:
            holds, why = condition.check(compared["diff"])
            failed |= holds
            print(f"  --fail-if {why}")
        if args.csv:
            with output_file(args.csv, text=True, protect=[args.a, args.b], option="--csv") as fh:
                compared["diff"].to_csv(fh, index=False)
        return EXIT_CONDITION_MET if failed else 0
    frames = []
    pairs, unpaired = _pairs(args.a, args.b)
    inputs = [run.path for pair in pairs for run in pair]
    if args.csv:  # before any work: the CSV must never go over a run being compared
        check_not_in_runs(args.csv, inputs, "--csv")
    partial = []
    for a, b in pairs:
        diff = df_diff(a, b, noise=args.noise / 100)
        print(f"{a.path} -> {b.path}")
        for run in (a, b):
            stopped = _partial(run)
            if stopped:
                print(f"  {run.path} is partial: {stopped}; its numbers are no measure of a change, so no verdict")
                partial.append(f"{run.path} ({stopped})")
        print(_format(diff))
        for condition in conditions:
            holds, why = condition.check(diff)
            failed |= holds
            print(f"  --fail-if {why}")
        print()
        frames.append(diff.assign(a_run=str(a.path), b_run=str(b.path)))
    for line in unpaired:
        print(line)
    if args.csv:
        with output_file(args.csv, text=True, protect=inputs, option="--csv") as fh:
            pd.concat(frames, ignore_index=True).to_csv(fh, index=False)
    if partial:
        raise RunDirError(f"no verdict: a partial run cannot be compared: {'; '.join(partial)}")
    return EXIT_CONDITION_MET if failed else 0
