"""The guest kernel booted through its PVH entry: found in a constructed bzImage-like file, cached once."""

import lzma
import struct
import zlib

import pytest

from plugtrace.qemu import image


def _elf(notes: list[tuple[bytes, int]]) -> bytes:
    """A minimal ELF64 image with one PT_NOTE segment holding `notes` (name, type), 4-byte descriptors."""
    body = b""
    for name, n_type in notes:
        padded = name + b"\0" * (4 - len(name) % 4)
        body += struct.pack("<III", len(name) + 1, 4, n_type) + padded + b"\0\0\0\0"
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(body), len(body), 4)
    return bytes(header) + phdr + body


def _bzimage(elf: bytes, compress) -> bytes:
    return b"MZ setup code \xfd7zXZ not a stream " + compress(elf) + b"\0" * 64  # a false magic first


@pytest.mark.parametrize("compress", [lzma.compress, lambda d: zlib.compress(d, wbits=31)], ids=["xz", "gzip"])
def test_a_kernel_with_a_pvh_note_boots_as_its_elf_image(tmp_path, monkeypatch, compress):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    elf = _elf([(b"GNU", 3), (b"Xen", 6), (b"Xen", image._PVH_NOTE)])
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(_bzimage(elf, compress))
    got = image.pvh_kernel(vmlinuz)
    assert got is not None and got.read_bytes() == elf
    assert image.pvh_kernel(vmlinuz) == got  # cached: one file per kernel
    assert [p.name for p in got.parent.iterdir()] == [got.name]


def test_a_kernel_without_one_boots_as_vmlinuz(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(_bzimage(_elf([(b"Xen", 6), (b"GNU", image._PVH_NOTE)]), lzma.compress))
    assert image.pvh_kernel(vmlinuz) is None
    assert image.pvh_kernel(vmlinuz) is None  # remembered, not unpacked again
    assert [p.name.endswith(".none") for p in (tmp_path / "cache" / "plugtrace" / "guest").iterdir()] == [True]
    (tmp_path / "garbage").write_bytes(b"\xfd7zXZ\x00 broken")
    assert image.pvh_kernel(tmp_path / "garbage") is None
