"""The real-QEMU recorder's pure parts: guest image, console, probe output, command line."""

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


def test_probe_scripts_render_for_one_process():
    q = versions.QemuBinary("7.2", Path("/usr/bin/qemu-system-x86_64"), (), "7.2.22", "plug")
    text = probes.render(q, 4242, events=True)
    assert "{{" not in text and "/pid == 4242/" in text and "uprobe:/usr/bin/qemu-system-x86_64:blk_io_plug" in text
    for script, symbols in versions.DESIGNS.values():
        body = (probes.PROBES_DIR / script).read_text()
        for sym in (*symbols, *versions.COMMON_SYMBOLS):
            assert f":{sym} " in body, (script, sym)


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
        "H 7 10 200",
        "B 7 11 200",
        "Q 7 11 1 4096",
        "P 7 12",
        "E 7 20 3 1",
        "h 7 21",
        "Q 7 22 2 0",
        "H 8 30 100",
        "B 8 31 100",
        "E 8 40 1 0",
        "h 8 41",
    ]
    p = _fed(lines, maps)
    owners = p.device_of_handler({"iot0": 0, "iot1": 1})
    assert owners == {200: 0, 100: 1}
    sections, handlers, requests = p.event_tables(owners)
    assert requests["device"] == [0, -1] and requests["op"] == [0, 1] and requests["section_id"] == [0, -1]
    assert requests["offset_bytes"] == [4096, 0] and requests["section_owner"] == [0, -1]
    assert sections["owner"] == [0, 1] and sections["nr_deferred_calls"] == [3, 1]
    assert sections["nr_nested_polls"] == [1, 0] and sections["begin_ns"] == [11, 31]
    assert handlers["device"] == [0, 1] and handlers["end_ns"] == [21, 41] and handlers["section_id"] == [-1, -1]
    counters = p.counters(owners)
    assert ("sections", 0, 1) in zip(counters["name"], counters["device"], counters["value"])
    assert ("aio_poll", -1, 9) in zip(counters["name"], counters["device"], counters["value"])
    assert ("sections_no_handler", -1, 1) in zip(counters["name"], counters["device"], counters["value"])


def test_events_printed_out_of_order_are_put_back_in_time_order():
    # the section's end was read from another CPU's buffer before its begin
    p = _fed(["E 7 20 3 0", "H 7 10 200", "B 7 11 200", "h 7 21"], {"@handler_thread": {"200,IO iot0": 1}})
    sections, handlers, _ = p.event_tables(p.device_of_handler({"iot0": 0}))
    assert sections["begin_ns"] == [11] and sections["end_ns"] == [20] and handlers["end_ns"] == [21]


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
