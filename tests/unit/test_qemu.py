"""The real-QEMU recorder's pure parts: guest image, console, probe output, command line."""

import json
import re
from pathlib import Path

import pytest

from plugtrace.errors import UsageError
from plugtrace.qemu import image, launch, probes, versions
from plugtrace.qemu.launch import Console, QemuGuest, Workload


def _read_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    files, pos = {}, 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = data[pos : pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        body = data[pos : pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return files
        files[name] = (mode, body)


def test_cpio_archive_holds_files_and_links():
    files = [("bin", 0o40755, b""), ("bin/busybox", 0o100755, b"x" * 5), ("bin/sh", 0o120777, b"busybox")]
    got = _read_cpio(image._cpio_newc(files))
    assert got == {name: (mode, data) for name, mode, data in files}


def test_module_order_puts_dependencies_first(tmp_path):
    def module(name, depends):
        (tmp_path / f"{name}.ko").write_bytes(b"\x7fELF junk\x00license=GPL\x00depends=" + depends.encode() + b"\x00")

    module("a", "b,c-d")
    module("b", "c_d")
    module("c_d", "")
    order = [p.name for p in image.module_order(tmp_path, ("a",))]
    assert order == ["c_d.ko", "b.ko", "a.ko"]
    with pytest.raises(Exception, match="missing"):
        image.module_order(tmp_path, ("nope",))


def test_console_parses_counts_and_disk_stats():
    c = Console()
    for line in [
        "booting ...",
        "ptstat before disk=vda 12 0 96 3 0 0 0 0 0 4 3 0 0 0 0 0 0",
        "\x1eptload start",
        "ptload disk=vda reads=1000 writes=0 errors=0",
        "ptload elapsed_s=2.000000",
        "ptload end rc=0",
        "ptstat after disk=vda 1012 0 8096 3 0 0 0 0 0 4 3 0 0 0 0 0 0",
    ]:
        c.feed(line)
    assert c.started.is_set() and c.done
    assert c.counts == {"vda": {"reads": 1000, "writes": 0, "errors": 0}}
    assert launch.guest_disk_totals(c) == {"workload_requests": 1000, "boot_requests": 12, "kernel_requests": 1012}
    assert launch.guest_iops(c) == 500.0


def test_workload_args_and_writes():
    w = Workload(rw="randrw", bs=8192, iodepth=4, jobs=2, duration_s=1.5)
    assert w.args() == "--rw,randrw,--bs,8192,--iodepth,4,--jobs,2,--duration,1.5,--rwmixread,50"
    assert w.writes and not Workload(rw="randread").writes


def test_command_line_has_iothreads_aio_and_readonly_ide_as_cdrom():
    q = versions.QemuBinary("10.0", Path("/q"), (Path("/fw"),), "10.0.2", "defer")
    g = QemuGuest(
        q,
        image.GuestImage(Path("/k"), Path("/i")),
        "/dev/loop9",
        disks=2,
        ide_disks=1,
        iothreads="shared",
        workload=Workload(),
        writable=False,
    )
    argv = " ".join(g.argv())
    assert argv.count("-object iothread,id=iot0") == 1 and "iot1" not in argv
    assert argv.count("aio=io_uring,cache=none") == 3 and argv.count("readonly=on") == 3
    assert "-device ide-cd,drive=ide0" in argv and "-L /fw" in argv and "pt.disks=3" in argv
    assert launch.disk_names(2, 1, False) == [("vda", "virtio-blk"), ("vdb", "virtio-blk"), ("sr0", "ide")]
    assert launch.iothread_ids(2, "per-disk") == ["iot0", "iot1"]


def _binary(version: str, design: str, symbols: set[str]) -> versions.QemuBinary:
    return versions.QemuBinary(
        version, Path("/usr/bin/qemu-system-x86_64"), (), version, design, symbols, 72, guest_notifier_offset=104
    )


def _symbols_of(design: str) -> set[str]:
    d = versions.DESIGNS[design]
    text = (probes.PROBES_DIR / versions.COMMON_SCRIPT).read_text() + (probes.PROBES_DIR / d.script).read_text()
    return {m.group(2) for m in probes._PROBE_HEAD.finditer(text)}


def test_probe_scripts_render_for_one_process():
    for design, d in versions.DESIGNS.items():
        used = _symbols_of(design)
        required = {*d.required, *versions.COMMON_REQUIRED}
        assert required <= used and used - required <= set(versions.OPTIONAL), design
        text, dropped = probes.render(_binary("x", design, used), 4242, events=True)
        assert "{{" not in text and "/pid == 4242" in text and not dropped
        assert text.count("\nEND") == 1 and "*(uint16 *)(arg1 + 72)" in text
    text, _ = probes.render(_binary("7.2", "plug", _symbols_of("plug")), 4242, events=False)
    assert "uprobe:/usr/bin/qemu-system-x86_64:blk_io_plug " in text and "(arg4 + 32)" in text


def test_no_uretprobe_on_a_function_qemu_runs_on_a_coroutine_stack():
    """A request's completion runs on its coroutine's stack inside the iothread's uretprobed frames; a
    uretprobe there makes the kernel drop theirs and QEMU dies of SIGILL (seen on 7.2's virtio_notify_irqfd)."""
    import re

    for name in (versions.COMMON_SCRIPT, *(d.script for d in versions.DESIGNS.values())):
        text = (probes.PROBES_DIR / name).read_text()
        returns = set(re.findall(r"^uretprobe:\{\{qemu\}\}:(\w+)", text, re.M))
        assert not returns & set(versions.ON_COROUTINE_STACK), name


def test_guest_notifications_need_the_notifiers_offset():
    assert versions.guest_notifier_offset(bytes.fromhex("488d4768c3")) == 0x68  # QEMU 7.2 and 10.0 here
    assert versions.guest_notifier_offset(bytes.fromhex("488d8790010000c3")) == 0x190
    assert (
        versions.guest_notifier_offset(bytes.fromhex("0fb74748c3")) is None
        and versions.guest_notifier_offset(b"") is None
    )
    q = _binary("7.2", "plug", _symbols_of("plug"))
    text, dropped = probes.render(q, 1, events=True)
    assert "@guest_notifier[arg1 + 104] = 1;" in text and "@guest_notifier[arg0]/" in text and not dropped
    q.guest_notifier_offset = None
    text, dropped = probes.render(q, 1, events=True)
    assert set(dropped) == {"event_notifier_set"} and ":event_notifier_set " not in text
    assert "guest_notifier's offset is unknown" in dropped["event_notifier_set"]


def test_aggregate_mode_probes_only_luring_co_submit_per_request():
    """Each QEMU-side uprobe hit traps into the kernel: the default aggregate probes keep one per request
    (luring_co_submit, for SQEs == requests), the per-request rest only in events mode or --qemu-probes full."""
    for design in versions.DESIGNS:
        q = _binary("x", design, _symbols_of(design))
        lean, _ = probes.render(q, 1, events=False)
        full, _ = probes.render(q, 1, events=False, detail=True)
        for symbol in versions.DETAIL:
            if symbol in q.symbols:
                assert f":{symbol} " not in lean and f":{symbol} " in full, (design, symbol)
        assert ":luring_co_submit " in lean and "{{" not in lean


def test_the_default_probes_put_nothing_in_qemus_iothread():
    """--qemu-probes mark (the default in aggregate mode): the only uprobe is the guest's start mark (it
    fires per console byte, never in the iothread); QEMU's requests are the kernel's io_uring_submit_req of
    QEMU's process, split at that mark. Events mode ignores it."""
    for design in versions.DESIGNS:
        q = _binary("x", design, _symbols_of(design))
        text, _ = probes.render(q, 7, events=False, mark_only=True)
        heads = re.findall(r"^(uprobe|uretprobe|tracepoint):(\S+)", text, re.M)
        assert [h for h in heads if h[0] != "tracepoint"] == [("uprobe", f"{q.binary}:qemu_chr_fe_write")], design
        assert [h[1] for h in heads if h[0] == "tracepoint"] == ["io_uring:io_uring_submit_req"]
        # with --queues, kernel-side only too: each QEMU thread's SQEs and submitting enters after the mark
        per_thread, _ = probes.render(q, 7, events=False, mark_only=True, per_thread=True)
        heads = re.findall(r"^(uprobe|uretprobe|tracepoint):(\S+)", per_thread, re.M)
        assert [h[1] for h in heads if h[0] == "tracepoint"] == [
            "io_uring:io_uring_submit_req",
            "syscalls:sys_enter_io_uring_enter",
        ]
        assert "@submit_req_by_thread[comm]" in per_thread and "if (1)" in per_thread and "if (0)" in text
        assert '@calls["io_uring_submit_req_workload"]' in text and "@queued" not in text and "{{" not in text
        assert text.count("{") == text.count("}") and "pid == 7" in text
        assert set(probes.probed_functions(q)) >= {"luring_co_submit", "virtio_blk_handle_vq", "qemu_chr_fe_write"}
    p = probes.QemuProbes(q, 7, events=True, max_events=10, mark_only=True)
    assert not p.mark_only


def test_a_probe_without_its_symbol_is_left_out_and_said_why():
    have = _symbols_of("defer") - {"virtqueue_pop", "virtio_queue_host_notifier_read"}
    text, dropped = probes.render(_binary("10.0", "defer", have), 1, events=True)
    assert set(dropped) == {"virtqueue_pop", "virtio_queue_host_notifier_read"}
    assert ":virtqueue_pop " not in text and ":virtio_queue_host_notifier_read " not in text
    assert ":virtqueue_push " in text and text.count("{") == text.count("}")
    assert "requests popped per handler run" in dropped["virtqueue_pop"]
    assert "is not a function in /usr/bin/qemu-system-x86_64's" in dropped["virtqueue_pop"]


def _fed(lines, maps):
    p = probes.QemuProbes.__new__(probes.QemuProbes)
    p.lines, p.maps = lines, maps
    return p


def test_events_become_sections_and_handlers_with_owners():
    maps = {
        "@handler_thread": {"100,IO iot1": 3, "200,IO iot0": 5},
        "@calls": {"sections": 3, "aio_poll": 9},
        "@sections_by_owner": {"100": 1, "200": 1, "0": 1},
    }
    lines = [
        "H 7 10 200 1 1",
        "B 7 11 200",
        "Q 7 11 1 4096 4096",
        "P 7 12",
        "h 7 13 1",
        "E 7 20 3 1 1 2",
        "Q 7 22 2 0 512",
        "H 8 30 100 0 0",
        "B 8 31 100",
        "h 8 35 2",
        "E 8 40 1 0 0 0",
        "B 8 50 0",
        "E 8 60 0 0 0 4",
    ]
    p = _fed(lines, maps)
    owners = p.device_of_handler({"iot0": 0, "iot1": 1})
    assert owners == {200: 0, 100: 1}
    t = p.event_tables(owners)
    requests, sections, handlers, qs, qh = (
        t[n] for n in ("qemu_requests", "sections", "handlers", "qemu_sections", "qemu_handlers")
    )
    assert requests["device"] == [0, -1] and requests["op"] == [0, 1] and requests["section_id"] == [0, -1]
    assert requests["offset_bytes"] == [4096, 0] and requests["section_owner"] == [0, -1]
    assert requests["length_bytes"] == [4096, 512] and requests["nr_guest_requests"] == [1, -1]
    assert sections["owner"] == [0, 1, -1] and sections["nr_deferred_calls"] == [3, 1, 0]
    assert sections["nr_nested_polls"] == [1, 0, 0] and sections["begin_ns"] == [11, 31, 50]
    assert qs["kind"] == ["handler", "handler", "completion"] and qs["nr_nested_sections"] == [1, 0, 0]
    assert qs["nr_completions"] == [2, 0, 4] and qs["section_id"] == sections["section_id"]
    assert handlers["device"] == [0, 1] and handlers["end_ns"] == [13, 35] and handlers["section_id"] == [-1, -1]
    assert qh["vq"] == [1, 0] and qh["cause"] == ["kick", "poll"] and qh["nr_requests"] == [1, 2]
    assert qh["nr_submitted"] == [1, 0] and qh["opened_section_id"] == [0, 1]
    counters = p.counters(owners)
    assert ("sections", 0, 1) in zip(counters["name"], counters["device"], counters["value"])
    assert ("aio_poll", -1, 9) in zip(counters["name"], counters["device"], counters["value"])
    assert ("sections_no_handler", -1, 1) in zip(counters["name"], counters["device"], counters["value"])


def test_events_printed_out_of_order_are_put_back_in_time_order():
    # the section's end was read from another CPU's buffer before its begin
    p = _fed(["E 7 20 3 0 0 0", "H 7 10 200 0 1", "B 7 11 200", "h 7 21 0"], {"@handler_thread": {"200,IO iot0": 1}})
    t = p.event_tables(p.device_of_handler({"iot0": 0}))
    assert t["sections"]["begin_ns"] == [11] and t["sections"]["end_ns"] == [20] and t["handlers"]["end_ns"] == [21]


def test_an_unknown_virtqueue_layout_gives_vq_minus_one():
    p = _fed([f"H 7 10 200 {probes.NO_VQ} 0", "h 7 11 0"], {"@handler_thread": {"200,IO iot0": 1}})
    assert p.event_tables(p.device_of_handler({"iot0": 0}))["qemu_handlers"]["vq"] == [-1]


def test_handlers_on_a_shared_thread_are_numbered_by_address():
    p = _fed([], {"@handler_thread": {"300,IO iot0": 1, "100,IO iot0": 1}})
    assert p.device_of_handler({}) == {100: 0, 300: 1}


def test_unknown_qemu_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="7.2, 10.0 or the path"):
        versions.find_qemu(str(tmp_path / "nope"))


def test_submit_times_take_the_next_submitting_enter_of_the_thread(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plugtrace.qemu.recording import submit_times

    (tmp_path / "tables").mkdir()
    pq.write_table(
        pa.table({"ts_ns": [5, 10, 30, 12], "tid": [1, 1, 1, 2], "to_submit": [1, 0, 2, 1]}),
        tmp_path / "tables" / "enters.parquet",
    )
    requests = {"queue_ns": [4, 6, 11, 31, 11], "tid": [1, 1, 2, 1, 3]}
    assert submit_times(tmp_path, requests) == [5, 30, 12, -1, -1]
    assert submit_times(tmp_path / "nowhere", requests) == [-1] * 5


def test_a_damaged_cached_guest_image_is_built_again(tmp_path, monkeypatch):
    """A truncated initramfs in the cache (a full disk, a killed build) is noticed and rebuilt, instead of
    booting a guest that hangs."""
    import shutil

    import pytest

    from plugtrace.errors import PlugtraceError
    from plugtrace.qemu import image

    if shutil.which("gcc") is None:
        pytest.skip("gcc builds the guest workload")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        first = image.guest_image()
    except PlugtraceError as exc:
        pytest.skip(exc.message)  # no guest kernel installed here
    whole = first.initrd.read_bytes()
    first.initrd.write_bytes(whole[: len(whole) // 2])
    again = image.guest_image()
    import gzip

    assert again.initrd == first.initrd and image._intact(again.initrd)
    assert gzip.decompress(again.initrd.read_bytes()) == gzip.decompress(whole)


STAND_IN = r"""
#include <stdio.h>
#include <string.h>
struct VirtQueue { char pad[0x30]; unsigned short queue_index; };
#define FN __attribute__((noinline, used))
FN void defer_call_begin(void) { __asm__ volatile(""); }
FN void defer_call_end(void) { __asm__ volatile(""); }
FN void defer_call(void (*fn)(void *), void *opaque) { fn(opaque); }
FN void virtio_blk_handle_vq(void *s, struct VirtQueue *vq) { __asm__ volatile("" :: "r"(s), "r"(vq)); }
FN int luring_co_submit(void *bs, int fd, unsigned long offset, void *qiov, int type) { return fd + type; }
FN unsigned short virtio_get_queue_index(struct VirtQueue *vq) { return vq->queue_index; }
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--version")) printf("QEMU emulator version 10.1.50\n");
    return 0;
}
"""


def test_a_build_that_exports_nothing_is_traced_by_its_symbol_table(tmp_path):
    """A developer's own QEMU build: functions in .symtab only (no -rdynamic), the layout read from code."""
    import shutil
    import subprocess

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    src, binary = tmp_path / "qemu.c", tmp_path / "qemu-system-x86_64"
    src.write_text(STAND_IN)
    subprocess.run([gcc, "-O2", "-fno-inline", "-o", str(binary), str(src)], check=True)
    dynamic = subprocess.run(["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True).stdout
    assert "defer_call_begin" not in dynamic  # what `nm -D` alone would have missed
    q = versions.find_qemu(str(binary))
    assert q.design == "defer" and q.version == "10.1.50" and q.symbol_tables == ("symtab",)
    assert q.missing_symbols == [] and q.vq_index_offset == 0x30
    text, dropped = probes.render(q, 1, events=True)
    assert f"uprobe:{binary}:defer_call_begin " in text and "*(uint16 *)(arg1 + 48)" in text
    # what it could not place, and why: every optional probe, each with its reason
    assert set(dropped) == _symbols_of("defer") - {*versions.DESIGNS["defer"].required, *versions.COMMON_REQUIRED}
    assert "aio_poll is not a function in" in dropped["aio_poll"] and ".symtab (stripped" in dropped["aio_poll"]
    subprocess.run(["strip", str(binary)], check=True)
    stripped = versions.find_qemu(str(binary))
    assert stripped.design is None and stripped.symbol_tables == ()


@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_the_sample_runs_sections_hold_every_request_and_one_per_handler_run(version):
    from plugtrace.analysis import Run, df_qemu_arrivals, df_qemu_handlers, df_qemu_sections

    run = Run.open(Path(__file__).resolve().parents[2] / "data" / f"qemu-{version}")
    sections, handlers, requests = df_qemu_sections(run), df_qemu_handlers(run), run.table("qemu_requests")
    assert set(requests.section_id[requests.section_id >= 0]) <= set(sections.section_id)
    assert (sections.kind == "handler").sum() == len(handlers)
    carried = set(requests.section_id[requests.device >= 0])
    assert carried == set(handlers.opened_section_id[handlers.nr_submitted > 0])
    arrivals = df_qemu_arrivals([run]).iloc[0]
    assert arrivals.kicks + arrivals.poll_hits == arrivals.handler_runs == len(handlers)
    assert arrivals.requests_per_handler == pytest.approx(handlers.nr_requests.mean())
    assert 0 < arrivals.notifications_per_completion < 1 and arrivals.wait_from == "events"


def test_compare_intervals_and_their_verdict():
    from plugtrace.analysis.ab import summarise, t975

    assert t975(1) == pytest.approx(12.706, abs=1e-3) and t975(4.9) == pytest.approx(2.776, abs=1e-3)
    assert t975(500) == pytest.approx(1.965, abs=1e-3) and t975(0) == float("inf")
    same = summarise([10.0, 11.0, 12.0], [10.5, 11.5, 12.5])
    assert same["a"] == 11.0 and same["a_ci_low"] == pytest.approx(11 - 4.303 / 3**0.5, abs=1e-3)
    assert not same["differ"] and same["change_ci_low"] < 0 < same["change_ci_high"]
    apart = summarise([10.0, 10.1, 9.9, 10.0], [12.0, 12.1, 11.9, 12.0])
    assert apart["differ"] and apart["change_pct"] == pytest.approx(20.0)
    assert not summarise([1.0], [2.0])["differ"]  # one run each: no interval, no verdict


def test_diff_gates_on_a_compare_result(tmp_path):
    """plugtrace diff OUT/A OUT/B --fail-if reads plugtrace qemu --compare's means."""
    import shutil
    import subprocess

    from plugtrace.analysis.ab import run_compare
    from tests.helpers import PLUGTRACE

    data = Path(__file__).resolve().parents[2] / "data"
    samples = {"7.2": data / "qemu-7.2", "10.0": data / "qemu-10.0"}

    def record(name: str, out: Path) -> dict:  # the recorded samples stand in for fresh guests
        shutil.copytree(samples[name], out)
        return {}

    result = run_compare(["7.2", "10.0"], 2, tmp_path, record)
    assert result is not None and result["runs"]["A"] == [str(tmp_path / "A" / "r1"), str(tmp_path / "A" / "r2")]
    assert sorted(p.name for p in (tmp_path / "A").iterdir()) == ["r1", "r2"]

    def diff(*fail_if: str) -> subprocess.CompletedProcess:
        args = [a for f in fail_if for a in ("--fail-if", f)]
        cmd = [*PLUGTRACE, "diff", str(tmp_path / "A"), str(tmp_path / "B"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    # 10.0 sends the guest far fewer notifications per completion than 7.2 (the samples: 0.044 vs 0.154)
    p = diff("notifications_per_completion < -50%")
    assert p.returncode == 1 and "means of 2 runs each" in p.stdout and "FAILS" in p.stdout, p.stdout + p.stderr
    assert diff("notifications_per_completion > 0%").returncode == 0
    assert "DIFFER" in p.stdout or "CHANGED" in p.stdout


def test_merged_requests_take_their_count_from_qemus_trace_events(tmp_path):
    log = tmp_path / "qemu-trace.log"
    log.write_text(
        "123@1700000000.000001:virtio_blk_submit_multireq vdev 0x1 mrb 0x2 start 0 num_reqs 3 offset 8192 "
        "size 12288 is_write 0\n"
        "123@1700000000.000002:virtio_blk_submit_multireq vdev 0x1 mrb 0x2 start 3 num_reqs 1 offset 0 size 4096 "
        "is_write 0\n"
        "garbage line\n"
    )
    requests = {
        "device": [0, 0, -1, 0],
        "offset_bytes": [0, 8192, 0, 65536],
        "length_bytes": [4096, 12288, 4096, 4096],
        "nr_guest_requests": [1, -1, -1, 1],
    }
    assert probes.merged_counts(log, requests) == [1, 3, -1, 1]
    g = QemuGuest(
        versions.QemuBinary("10.0", Path("/q"), (), "10.0.2", "defer"),
        image.GuestImage(Path("/k"), Path("/i")),
        "/dev/loop9",
        disks=1,
        ide_disks=0,
        iothreads="per-disk",
        workload=Workload(),
        writable=False,
        trace_log=str(log),
    )
    argv = " ".join(g.argv())
    assert f"-trace enable=virtio_blk_submit_multireq -D {log} -msg timestamp=on" in argv


def _guest(iothreads: str, queues: int | None, disks: int = 2) -> QemuGuest:
    return QemuGuest(
        versions.QemuBinary("10.0", Path("/q"), (), "10.0.2", "defer"),
        image.GuestImage(Path("/k"), Path("/i")),
        "/dev/loop9",
        disks=disks,
        ide_disks=0,
        iothreads=iothreads,
        workload=Workload(jobs=queues or 1, pin=bool(queues)),
        writable=False,
        queues=queues,
        cpus=max(2, queues or 0),
    )


def test_per_queue_iothreads_map_each_queue_of_each_disk_onto_its_own():
    argv = _guest("per-queue", 2).argv()
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-object"] == [f"iothread,id=iot{i}" for i in range(4)]
    devices = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-device"]
    assert devices == [
        {
            "driver": "virtio-blk-pci",
            "drive": f"vd{d}",
            "num-queues": 2,
            "iothread-vq-mapping": [{"iothread": f"iot{2 * d}"}, {"iothread": f"iot{2 * d + 1}"}],
        }
        for d in range(2)
    ]
    assert "pt.args=--rw,randread,--bs,4096,--iodepth,8,--jobs,2,--duration,3.0,--rwmixread,50,--pin,1" in argv[-1]
    assert launch.vq_iothreads(2, 2, "per-queue") == [["iot0", "iot1"], ["iot2", "iot3"]]


def test_queues_on_one_iothread_and_qemus_default():
    shared = " ".join(_guest("shared", 3).argv())
    assert "virtio-blk-pci,drive=vd0,num-queues=3,iothread=iot0" in shared and "-smp 3" in shared
    default = " ".join(_guest("per-disk", None).argv())
    assert "num-queues" not in default and "--pin" not in default  # QEMU's own: a queue per guest CPU
    assert "virtio-blk-pci,drive=vd1,iothread=iot1" in default
    assert launch.vq_iothreads(2, 2, "shared") == [["iot0", "iot0"], ["iot0", "iot0"]]


def test_console_reads_each_queues_cpus_and_each_pinned_jobs_count():
    c = launch.Console()
    for line in (
        "ptmq disk=vda queue=0 cpus=0",
        "ptmq disk=vda queue=1 cpus=1,3-4",
        "ptload job disk=vda job=1 cpu=1 reads=700 writes=0 errors=0",
    ):
        c.feed(line)
    assert c.mq == {"vda": {0: [0], 1: [1, 3, 4]}}
    assert c.jobs == [{"disk": "vda", "job": 1, "cpu": 1, "reads": 700, "writes": 0, "errors": 0}]
    assert launch._cpu_list("0, 2-3") == [0, 2, 3] and launch._cpu_list("") == []


def test_kernel_per_thread_counts_give_each_threads_sqes_per_enter():
    from plugtrace.qemu.recording import _per_thread

    calls = {
        "io_uring_submit_req_workload": 30,
        "io_uring_submit_req_workload:IO iot0": 20,
        "io_uring_submit_req_workload:IO iot1": 10,
        "submitting_enters_workload:IO iot0": 4,
    }
    assert _per_thread(calls) == [
        {"thread": "IO iot0", "sqes": 20, "enters": 4, "mean_sqes_per_enter": 5.0},
        {"thread": "IO iot1", "sqes": 10, "enters": 0, "mean_sqes_per_enter": None},
    ]
