"""The one atomic write: old or new file after a failure, never a torn one; umask mode; the file named."""

import errno
import os

import pytest

from vidseg.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_text, remove_stale_temporaries


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_new_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o027)
    try:
        p = atomic_write_bytes(tmp_path / "a.pth", b"x")
    finally:
        os.umask(old)
    assert p.read_bytes() == b"x"
    assert (p.stat().st_mode & 0o777) == 0o640


def test_an_os_error_without_a_file_name_gets_the_target(tmp_path):
    with pytest.raises(OSError) as e:
        with atomic_path(tmp_path / "ckpt.pth"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.filename == str(tmp_path / "ckpt.pth") and e.value.errno == errno.ENOSPC


def test_stale_temporaries_of_our_files_only(tmp_path):
    atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    ours = [
        tmp_path / ".checkpoint.pth.k3j4.tmp",
        tmp_path / ".config.yaml.x9.tmp",
        tmp_path / "config.yaml.tmp",
    ]
    other = tmp_path / ".notes.txt.tmp"
    for p in [*ours, other]:
        p.write_text("")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(ours)
    assert other.exists() and (tmp_path / "config.yaml").read_text() == "a: 1\n"
