"""Benchmark: what each aggregate-mode probe costs per I/O, counted by the kernel.

IOPS ratios of traced and untraced fio move by several percent between runs on
a shared VM, which hides what a single probe costs. The kernel can count each
BPF program's runs and time spent (`kernel.bpf_stats_enabled`), so here fio
runs once per device with all of our aggregate programs attached (filtered to
fio, as `plugtrace record --watch-device DEV -- fio` does) plus an empty program on
io_uring_submit_req, and the table gives, per program: hits per I/O, ns per
hit as counted, ns above the empty program (what the program's own
instructions cost; the empty program's time is the counting itself and the
call), and so ns of program time per I/O. The last column relates it to
fio's time per I/O (1 / IOPS). What a hit costs outside the program (the
tracepoint's call into BPF) is not counted by the kernel: the IOPS ratios of
`bench_tracing_overhead` include it.

That part is measured here too, with the kernel's counting off: a C loop
submits one io_uring NOP per io_uring_enter() (one io_uring_submit_req hit
each) and times itself with and without an empty program on that
tracepoint, alternating; the difference per NOP is what a hit costs before
any program instruction runs.

    python -m bench.bench_probe_cost [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json

from bench.common import (
    aggregate_programs,
    default_aggregate_probes,
    device,
    empty_programs,
    fio_command,
    held,
    machine,
    print_table,
    require_root,
    write_json,
)
from plugtrace.tracing.libbpf import bpf_stats

#: what `record -- CMD` runs by default, and with --watch-device
PROBE_SETS = {
    "traced program (default)": default_aggregate_probes(),
    "with --watch-device": default_aggregate_probes(device_known=True),
}
_EMPTY_ON = "io_uring_submit_req"


_NOP_LOOP = r"""
#include <liburing.h>
#include <time.h>
static double nop_loop_ns(long n)
{
    struct io_uring ring;
    struct io_uring_cqe *cqe;
    struct timespec a, b;
    if (io_uring_queue_init(8, &ring, 0) < 0)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        io_uring_prep_nop(io_uring_get_sqe(&ring));
        io_uring_submit_and_wait(&ring, 1);
        if (io_uring_peek_cqe(&ring, &cqe) == 0)
            io_uring_cqe_seen(&ring, cqe);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    io_uring_queue_exit(&ring);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}
"""


def _nop_loop():
    """The NOP loop, compiled against the system liburing (as our binding is)."""
    import importlib.util
    import tempfile

    from cffi import FFI

    ffi = FFI()
    ffi.cdef("double nop_loop_ns(long n);")
    ffi.set_source("_pt_bench_nop", _NOP_LOOP, libraries=["uring"], extra_compile_args=["-O2"])
    with tempfile.TemporaryDirectory(prefix="plugtrace-bench-") as d:  # loaded, the library needs no file
        spec = importlib.util.spec_from_file_location("_pt_bench_nop", ffi.compile(tmpdir=d))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.lib.nop_loop_ns


def hit_cost(rounds: int, nops: int) -> dict:
    """ns per io_uring_submit_req hit of an empty program, kernel counting off:
    the fastest of `rounds` NOP loops with it attached minus the fastest without."""
    loop = _nop_loop()
    bare, traced = [], []
    for _ in range(rounds):
        bare.append(loop(nops))
        with contextlib.closing(empty_programs([_EMPTY_ON])):
            traced.append(loop(nops))
    if min(bare) < 0:
        raise SystemExit("io_uring_queue_init failed: io_uring is not available")
    return {
        "nop_ns_untraced": min(bare),
        "nop_ns_with_empty_program": min(traced),
        "ns_per_hit": min(traced) - min(bare),
        "rounds": rounds,
        "nops_per_round": nops,
    }


def measure(kind: str, runtime_s: float) -> tuple[list[dict], list[dict]]:
    with device(kind, "1G") as target:
        # fio waits for a line on stdin until the programs are attached, so the
        # job process it forks is followed from the start
        fio = held(fio_command(target.path, runtime_s=runtime_s))
        attached: dict = {}
        try:
            with bpf_stats():
                attached["(empty program)"] = empty_programs([_EMPTY_ON])
                for name in PROBE_SETS["with --watch-device"] + ("enters",):
                    attached[name] = aggregate_programs(name, fio.pid, target.dev_t)  # as --watch-device
                out, _ = fio.communicate("go\n")
                stats = {name: progs.run_stats() for name, progs in attached.items()}
        finally:
            for progs in attached.values():
                progs.close()
            if fio.poll() is None:
                fio.kill()
                fio.wait()
    job = json.loads(out[out.index("{") :])["jobs"][0]
    ios, iops = int(job["read"]["total_ios"]), float(job["read"]["iops"])
    runs, ns = stats["(empty program)"][_EMPTY_ON]
    floor = ns / runs if runs else 0.0
    rows = []
    for name, per_tp in stats.items():
        for tracepoint, (runs, ns) in per_tp.items():
            per_hit = ns / runs if runs else None
            above = None if per_hit is None else max(0.0, per_hit - floor)
            rows.append(
                {
                    "device": kind,
                    "probe": name,
                    "tracepoint": tracepoint,
                    "hits_per_io": runs / ios,
                    "ns_per_hit": per_hit,
                    "ns_above_empty": above,
                    "ns_per_io": None if above is None else above * runs / ios,
                }
            )
    summary = []
    for label, probes in PROBE_SETS.items():
        mine = [r for r in rows if r["probe"] in probes]
        ns_per_io = sum(r["ns_per_io"] or 0 for r in mine)
        summary.append(
            {
                "device": kind,
                "probes": f"{label}: {', '.join(probes)}",
                "fio_iops": iops,
                "fio_ns_per_io": 1e9 / iops,
                "hits_per_io": sum(r["hits_per_io"] for r in mine),
                "program_ns_per_io": ns_per_io,
                "share_of_fio_time": ns_per_io * iops / 1e9,
                "empty_program_ns_per_hit": floor,
            }
        )
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s of fio per device: check the benchmark runs")
    ap.add_argument("--runtime", type=float, default=5.0, help="seconds of fio per device (default 5)")
    ap.add_argument("--devices", nargs="+", default=["zram", "loop"])
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    require_root()
    hit = hit_cost(3 if args.quick else 9, 50_000 if args.quick else 300_000)
    print(
        f"one hit of an empty program on {_EMPTY_ON}, kernel counting off (io_uring NOP loop): "
        f"{hit['ns_per_hit']:.0f} ns ({hit['nop_ns_untraced']:.0f} ns per NOP untraced, "
        f"{hit['nop_ns_with_empty_program']:.0f} ns traced; fastest of {hit['rounds']} rounds)"
    )
    rows, summaries = [], []
    for kind in args.devices:
        r, s = measure(kind, 1 if args.quick else args.runtime)
        rows += r
        summaries += s
    print_table(
        "BPF program time per I/O, fio 4k randread iodepth 32 (kernel.bpf_stats_enabled)",
        rows,
        ["device", "probe", "tracepoint", "hits_per_io", "ns_per_hit", "ns_above_empty", "ns_per_io"],
    )
    print_table(
        "aggregate probes of `record -- fio`: hits and program time vs fio's time per I/O (a hit also "
        "costs about the empty program's ns before any program runs, not in program_ns_per_io)",
        summaries,
        [
            "device",
            "probes",
            "fio_iops",
            "fio_ns_per_io",
            "hits_per_io",
            "program_ns_per_io",
            "share_of_fio_time",
            "empty_program_ns_per_hit",
        ],
    )
    write_json(
        args.json,
        {
            "benchmark": "probe_cost",
            "machine": machine(),
            "quick": args.quick,
            "hit_cost": hit,
            "rows": rows,
            "summary": summaries,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
