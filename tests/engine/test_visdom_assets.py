"""The Visdom page's files: npm tarballs checked against their pinned sha512 and copied where visdom serves
them; the installed visdom has all of them (the page is not blank), and tornado serves the page."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from vidseg.cli import main
from vidseg.utils import visdom_assets as va


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _pin(name: str, data: bytes, files: dict[str, str]) -> va.Package:
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    return va.Package(name, "1.0.0", integrity, files)


def test_install_from_a_folder_of_tarballs_checks_the_hash(tmp_path):
    data = _tarball({"dist/lib.min.js": b"var lib = 1;", "css/s.css": b"p{}"})
    pkg = _pin("lib", data, {"dist/lib.min.js": "js/lib.min.js", "css/s.css": "css/lib.css"})
    src, static, cache = tmp_path / "tarballs", tmp_path / "static", tmp_path / "cache"
    src.mkdir()
    (src / pkg.tarball).write_bytes(data)
    written = va.install_assets(static, source=src, cache=cache, packages=(pkg,), log=lambda *_: None)
    assert sorted(written) == ["css/lib.css", "js/lib.min.js"]
    assert (static / "js/lib.min.js").read_bytes() == b"var lib = 1;"
    assert (cache / pkg.tarball).read_bytes() == data  # kept for the next install
    # Nothing missing: nothing read, nothing written.
    assert va.install_assets(static, source=tmp_path / "nowhere", packages=(pkg,), log=lambda *_: None) == []

    (static / "js/lib.min.js").unlink()
    (src / pkg.tarball).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit changed
    with pytest.raises(ValueError, match=r"lib-1\.0\.0\.tgz: sha512 differs from the pinned lib@1\.0\.0"):
        va.install_assets(static, source=src, cache=cache, packages=(pkg,), log=lambda *_: None)
    assert not (static / "js/lib.min.js").exists()


def test_pins_cover_every_file_the_page_loads():
    visdom = pytest.importorskip("visdom")
    index = (Path(visdom.__file__).parent / "static" / "index.html").read_text()
    loaded = set(re.findall(r"static_url\(['\"]([^'\"]+)['\"]\)", index))
    pinned = {d for p in va.PACKAGES for d in p.files.values()}
    shipped = {"js/main.js", "css/style.css", "css/network.css", "../user/style.css"}  # in the visdom wheel
    assert loaded - shipped <= pinned, loaded - shipped - pinned


def test_list_prints_the_pins(capsys):
    assert main(["visdom", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(va.PACKAGES)
    assert out[0].startswith("jquery@3.1.1  jquery-3.1.1.tgz  sha512-")


def test_installed_tornado_serves_the_visdom_page():
    pytest.importorskip("visdom")
    from vidseg.commands.visdom import _check_tornado

    assert _check_tornado() is None  # pyproject pins tornado<6.5 with the visdom extra
