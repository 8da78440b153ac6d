"""The JavaScript, CSS and font files of the Visdom page, from npm package tarballs at pinned versions.

visdom 0.2.4's server downloads them at start (``visdom.server.build.download_scripts``) from unpkg.com,
cdn.plot.ly, d3js.org and cdnjs; offline it dies, and without them the page is blank. The same files are in
the npm packages of the same versions. :func:`install_assets` takes each tarball from a folder of tarballs
(``npm pack <name>@<version>`` writes them) or from the npm registry, checks its sha512 against the pin
(the registry's ``dist.integrity``), and copies the files the page loads into visdom's ``static/`` folder,
under the names ``download_scripts`` gives them; it then writes ``static/version.built`` as
``download_scripts`` does, so ``python -m visdom.server`` finds everything in place too.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vidseg.utils.atomic import atomic_write_bytes

__all__ = ["Package", "PACKAGES", "static_dir", "missing_assets", "install_assets", "default_registry"]


@dataclass(frozen=True)
class Package:
    """An npm tarball: ``files`` maps a path inside it (under ``package/``) to a path under ``static/``."""

    name: str
    version: str
    integrity: str  # "sha512-<base64>", the registry's dist.integrity
    files: dict[str, str]

    @property
    def tarball(self) -> str:
        """The tarball's file name (``npm pack`` and the registry use the same)."""
        return f"{self.name.split('/')[-1]}-{self.version}.tgz"


_BS = "dist/fonts/glyphicons-halflings-regular"
_MJ = "js/mathjax/2.7.5"
PACKAGES: tuple[Package, ...] = (
    Package(
        "jquery",
        "3.1.1",
        "sha512-zuiWRmx65Kd1oFGdWLvAjbsumdOBFvs3r1vuqCyKFF79R7exBHNbiNEJ8LR+xkzgfxqBznMD/4Cv6PHXS6mvEw==",
        {"dist/jquery.min.js": "js/jquery.min.js"},
    ),
    Package(
        "bootstrap",
        "3.3.7",
        "sha512-qcFaisBrcBhTFkz1IUnGDYnX6ZWfFzH8zOixUDtHW9Ip+r+7MfMFav2rzy7cIHc7rgIg7xjhWBoo1mS/U26j4g==",
        {
            "dist/js/bootstrap.min.js": "js/bootstrap.min.js",
            "dist/css/bootstrap.min.css": "css/bootstrap.min.css",
            f"{_BS}.eot": "fonts/glyphicons-halflings-regular.eot",
            f"{_BS}.woff2": "fonts/glyphicons-halflings-regular.woff2",
            f"{_BS}.woff": "fonts/glyphicons-halflings-regular.woff",
            f"{_BS}.ttf": "fonts/glyphicons-halflings-regular.ttf",
            # download_scripts keeps the URL's fragment in the file name; the same name lets it skip the file.
            f"{_BS}.svg": "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular",
        },
    ),
    Package(
        "react",
        "16.2.0",
        "sha512-ZmIomM7EE1DvPEnSFAHZn9Vs9zJl5A9H7el0EGTE6ZbW9FKe/14IYAlPbC8iH25YarEQxZL+E8VW7Mi7kfQrDQ==",
        {"umd/react.production.min.js": "js/react-react.min.js"},
    ),
    Package(
        "react-dom",
        "16.2.0",
        "sha512-zpGAdwHVn9K0091d+hr+R0qrjoJ84cIBFL2uU60KvWBPfZ7LPSrfqviTxGHWN0sjPZb2hxWzMexwrvJdKePvjg==",
        {"umd/react-dom.production.min.js": "js/react-dom.min.js"},
    ),
    Package(
        "react-modal",
        "3.1.10",
        "sha512-7b77AGWCkdg0YOf/qcYIGCpuwbxRwOA8P3UrUovk4grUNv+idOmHovJAx/Dcd3fuwHtgixxVjpcjVG60985MSA==",
        {"dist/react-modal.min.js": "js/react-modal.min.js"},
    ),
    Package(  # cdn.plot.ly/plotly-2.11.1.min.js
        "plotly.js-dist-min",
        "2.11.1",
        "sha512-F9WWNht0D3yBLZGHbLoJNfvplXvy+GUPSsA/lCbMuYd/UwzSu6Vmyprxlps9Einw1LDS1hYBrJeioK0lE3ieXA==",
        {"plotly.min.js": "js/plotly-plotly.min.js"},
    ),
    Package(
        "sjcl",
        "1.0.7",
        "sha512-xQbiwKfiAj6vyk44ANJ5RRymALRdRZOuRoKNYkWUU404p/RFXmMaay1Z5vRn30GJjkD+psox4Jd38jZojSuNYA==",
        {"sjcl.js": "js/sjcl.js"},
    ),
    Package(
        "layout-bin-packer",
        "1.4.0",
        "sha512-dQOZnajbOBGIcS9YlzKrkRtMCGa2oEpyf1zGRn93suphSvPclJe54Sbgtb053GJ21DUk84IBzaeQvjn+Gb10fA==",
        {
            "dist/layout-bin-packer.js": "js/layout_bin_packer.js",
            "dist/layout-bin-packer.js.map": "js/layout-bin-packer.js.map",
        },
    ),
    Package(  # d3js.org/d3.v3.min.js is the last v3 release
        "d3",
        "3.5.17",
        "sha512-yFk/2idb8OHPKkbAL8QaOaqENNoMhIaSHZerk3oQsECwkObkCpJyjYwCe+OHiq6UEdhe1m8ZGARRRO3ljFjlKg==",
        {"d3.min.js": "js/d3.v3.min.js"},
    ),
    Package(  # d3js.org/d3-selection-multi.v1.js is the last v1 release
        "d3-selection-multi",
        "1.0.1",
        "sha512-mEnRkJ6A+Otd1LuRPV3az+s/RLDmIEhuz/MnT21O2nPcWNH7wZotdIlRjMA4Wpr+n7AESQ5fD8v1J3nL2Mnw9g==",
        {"build/d3-selection-multi.js": "js/d3-selection-multi.v1.js"},
    ),
    Package(
        "save-svg-as-png",
        "1.4.17",
        "sha512-7QDaqJsVhdFPwviCxkgHiGm9omeaMBe1VKbHySWU6oFB2LtnGCcYS13eVoslUgq6VZC6Tjq/HddBd1K6p2PGpA==",
        {"lib/saveSvgAsPng.js": "js/saveSvgAsPng.js"},
    ),
    Package(
        "react-resizable",
        "1.4.6",
        "sha512-4zLORO51u0/mlDsrVCAA4p266d+3mb2ZMNdiWOotAh/PdnfrRzZhgePmKE08PSQatXVIfMjmyD+Sapay8tmxdQ==",
        {"css/styles.css": "css/react-resizable-styles.css"},
    ),
    Package(
        "react-grid-layout",
        "0.16.3",
        "sha512-ytP92EqUjqcFhGzvdeKrK610dQ04GdFwRCWtD6PoeL5wR3liETcFISO7k8RBqnosV86JtXf/DwIfrL0COLs0gg==",
        {"css/styles.css": "css/react-grid-layout-styles.css"},
    ),
    Package(
        "classnames",
        "2.2.5",
        "sha512-DTt3GhOUDKhh4ONwIJW4lmhyotQmV2LjNlGK/J2hkwUcqcbKkCLAdJPtxQnxnlc7SR3f1CEXCyMmc7WLUsWbNA==",
        {"index.js": "fonts/classnames"},
    ),
    Package(  # 21 MB for eight files; the page loads MathJax.js and its TeX config at start
        "mathjax",
        "2.7.5",
        "sha512-OzsJNitEHAJB3y4IIlPCAvS0yoXwYjlo2Y4kmm9KQzyIBZt2d8yKRalby3uTRNN4fZQiGL2iMXjpdP1u2Rq2DQ==",
        {
            f: f"{_MJ}/{f}"
            for f in (
                "MathJax.js",
                "config/Safe.js",
                "config/TeX-AMS-MML_HTMLorMML.js",
                "extensions/Safe.js",
                "jax/output/SVG/config.js",
                "jax/output/SVG/jax.js",
                "jax/output/SVG/fonts/TeX/fontdata.js",
                "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js",
            )
        },
    ),
)


def default_registry() -> str:
    """``NPM_CONFIG_REGISTRY`` / ``npm_config_registry`` when set (what npm itself uses), else npmjs.org."""
    for k in ("NPM_CONFIG_REGISTRY", "npm_config_registry"):
        if os.environ.get(k):
            return os.environ[k].rstrip("/")
    return "https://registry.npmjs.org"


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidseg" / "npm"


def static_dir() -> Path:
    """Where the installed visdom serves its page's files from (``visdom/static``)."""
    import visdom

    return Path(visdom.__file__).resolve().parent / "static"


def missing_assets(static: Path | None = None) -> list[str]:
    """The files of :data:`PACKAGES` absent from ``static`` (paths relative to it)."""
    static = static or static_dir()
    return [dst for p in PACKAGES for dst in p.files.values() if not (static / dst).is_file()]


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _tarball(pkg: Package, source: Path | None, cache: Path, registry: str, timeout_s: float) -> bytes:
    """The checked tarball bytes of ``pkg``: from ``source`` (a folder of tarballs), else the cache, else the
    registry (then cached). A tarball whose hash differs from the pin raises ValueError."""
    where = (source or cache) / pkg.tarball
    if where.is_file():
        data = where.read_bytes()
        origin = str(where)
    elif source is not None:
        raise FileNotFoundError(f"{where}: missing (npm pack {pkg.name}@{pkg.version} writes it)")
    else:
        origin = f"{registry}/{pkg.name}/-/{pkg.tarball}"
        with urllib.request.urlopen(origin, timeout=timeout_s) as r:  # noqa: S310 - an https registry URL
            data = r.read()
    if _integrity(data) != pkg.integrity:
        raise ValueError(f"{origin}: sha512 differs from the pinned {pkg.name}@{pkg.version}; not installed")
    if origin != str(where) or source is not None:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache / pkg.tarball, data, durable=False)
    return data


def install_assets(
    static: Path | None = None,
    source: str | os.PathLike | None = None,
    registry: str | None = None,
    cache: str | os.PathLike | None = None,
    timeout_s: float = 120.0,
    log=print,
    packages: tuple[Package, ...] = PACKAGES,
) -> list[str]:
    """Install every missing file of ``packages`` under ``static`` (default: visdom's own). Returns the
    files written. Raises ``OSError`` (unreachable registry, missing tarball) or ``ValueError`` (hash
    mismatch) naming the package; files of packages already checked stay in place."""
    static = Path(static) if static is not None else static_dir()
    src = Path(source) if source is not None else None
    cache_dir = Path(cache) if cache is not None else default_cache()
    registry = (registry or default_registry()).rstrip("/")
    written: list[str] = []
    for pkg in packages:
        todo = {s: d for s, d in pkg.files.items() if not (static / d).is_file()}
        if not todo:
            continue
        log(f"visdom page: {pkg.name}@{pkg.version} -> {len(todo)} file(s)")
        data = _tarball(pkg, src, cache_dir, registry, timeout_s)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for inner, dst in todo.items():
                member = tar.extractfile(f"package/{inner}")
                if member is None:
                    raise ValueError(f"{pkg.tarball}: package/{inner} is not a file")
                atomic_write_bytes(static / dst, member.read(), durable=False)
                written.append(dst)
    _mark_built(static)
    return written


def _mark_built(static: Path) -> None:
    """``static/version.built`` = the visdom version, as ``download_scripts`` writes after a download: with
    it, ``python -m visdom.server`` downloads only files that are missing (none)."""
    try:
        import visdom

        version = visdom.__version__
    except ImportError:  # installing into a folder for another machine
        return
    if not missing_assets(static):
        (static / "version.built").write_text(version, encoding="utf-8")
