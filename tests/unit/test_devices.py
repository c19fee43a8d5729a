"""Devices plugtrace makes for a run: only what it made is removed."""

import os

from plugtrace import devices


def test_a_file_we_made_is_removed_but_not_one_put_in_its_place(tmp_path):
    path = tmp_path / "disk.img"
    target = devices.open_file(str(path), 1 << 20)
    assert target.created_by_plugtrace and path.stat().st_size == 1 << 20
    os.rename(path, tmp_path / "moved.img")
    path.write_text("the user's")  # another file under the same name, meanwhile
    target.close()
    assert path.read_text() == "the user's"
    again = devices.open_file(str(tmp_path / "other.img"), 1 << 20)
    again.close()
    assert not (tmp_path / "other.img").exists()


def test_a_file_appearing_under_the_name_is_not_overwritten(tmp_path):
    """The file is made with O_EXCL: a name that is a link to nowhere is refused, not followed."""
    link = tmp_path / "disk.img"
    link.symlink_to(tmp_path / "nowhere.img")
    try:
        devices.open_file(str(link), 1 << 20)
    except devices.DeviceError as exc:
        assert "symbolic link" in exc.message
    else:
        raise AssertionError("a dangling link was followed")
    assert link.is_symlink() and not (tmp_path / "nowhere.img").exists()
