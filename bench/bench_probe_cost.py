"""Benchmark: what each aggregate-mode probe costs per I/O, counted by the kernel.

IOPS ratios of traced and untraced fio move by several percent between runs on
a shared VM, which hides what a single probe costs. The kernel can count each
BPF program's runs and time spent (`kernel.bpf_stats_enabled`), so here fio
runs once per device with all of our aggregate programs attached (filtered to
fio, as `plugtrace record -- fio` does) plus an empty program on
io_uring_submit_req, and the table gives, per program: hits per I/O, ns per
hit as counted, ns above the empty program (what the program's own
instructions cost; the empty program's time is the counting itself and the
call), and so ns of program time per I/O. The last column relates it to
fio's time per I/O (1 / IOPS). What a hit costs outside the program (the
tracepoint's call into BPF) is not counted by the kernel: the IOPS ratios of
`bench_tracing_overhead` include it.

    python -m bench.bench_probe_cost [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json

from bench.common import (default_aggregate_probes, device, empty_programs, fio_command, held, machine, print_table,
                          require_root, write_json)
from plugtrace.tracing.rawbpf import Programs, bpf_stats
from plugtrace.tracing.rawprobes import AGGREGATES

DEFAULT_PROBES = default_aggregate_probes()
_EMPTY_ON = "io_uring_submit_req"


def measure(kind: str, runtime_s: float) -> tuple[list[dict], dict]:
    with device(kind, "1G") as target:
        # fio waits for a line on stdin until the programs are attached, so the
        # job process it forks is followed from the start
        fio = held(fio_command(target.path, runtime_s=runtime_s))
        attached: dict[str, Programs] = {}
        try:
            with bpf_stats():
                attached["(empty program)"] = empty_programs([_EMPTY_ON])
                for name in DEFAULT_PROBES + ("enters",):
                    attached[name] = AGGREGATES[name](fio.pid)
                out, _ = fio.communicate("go\n")
                stats = {name: progs.run_stats() for name, progs in attached.items()}
        finally:
            for progs in attached.values():
                progs.close()
            if fio.poll() is None:
                fio.kill()
                fio.wait()
    job = json.loads(out[out.index("{"):])["jobs"][0]
    ios, iops = int(job["read"]["total_ios"]), float(job["read"]["iops"])
    runs, ns = stats["(empty program)"][_EMPTY_ON]
    floor = ns / runs if runs else 0.0
    rows = []
    for name, per_tp in stats.items():
        for tracepoint, (runs, ns) in per_tp.items():
            per_hit = ns / runs if runs else None
            above = None if per_hit is None else max(0.0, per_hit - floor)
            rows.append({"device": kind, "probe": name, "tracepoint": tracepoint, "hits_per_io": runs / ios,
                         "ns_per_hit": per_hit, "ns_above_empty": above,
                         "ns_per_io": None if above is None else above * runs / ios})
    default_ns = sum(r["ns_per_io"] or 0 for r in rows if r["probe"] in DEFAULT_PROBES)
    summary = {"device": kind, "fio_iops": iops, "fio_ns_per_io": 1e9 / iops, "default_probes_ns_per_io": default_ns,
               "share_of_fio_time": default_ns * iops / 1e9, "empty_program_ns_per_hit": floor}
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s of fio per device: check the benchmark runs")
    ap.add_argument("--runtime", type=float, default=5.0, help="seconds of fio per device (default 5)")
    ap.add_argument("--devices", nargs="+", default=["zram", "loop"])
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    require_root()
    rows, summaries = [], []
    for kind in args.devices:
        r, s = measure(kind, 1 if args.quick else args.runtime)
        rows += r
        summaries.append(s)
    print_table("BPF program time per I/O, fio 4k randread iodepth 32 (kernel.bpf_stats_enabled)", rows,
                ["device", "probe", "tracepoint", "hits_per_io", "ns_per_hit", "ns_above_empty", "ns_per_io"])
    print_table(f"default aggregate probes ({', '.join(DEFAULT_PROBES)}): program time vs fio's time per I/O",
                summaries, ["device", "fio_iops", "fio_ns_per_io", "default_probes_ns_per_io", "share_of_fio_time",
                            "empty_program_ns_per_hit"])
    write_json(args.json, {"benchmark": "probe_cost", "machine": machine(), "quick": args.quick, "rows": rows,
                           "summary": summaries})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
