"""``vidseg visdom``: a Visdom server on loopback, with its page's scripts installed from npm tarballs."""

from __future__ import annotations

import argparse
import logging
import os
import sys

DESCRIPTION = """\
Start a Visdom server on 127.0.0.1 (what VISDOM_ON True trains against), after making sure its web page's
JavaScript and CSS files are installed. visdom's own 'python -m visdom.server' downloads them from CDNs at
every start and dies offline; here they come from npm tarballs at pinned versions whose sha512 is checked:
from --from DIR (tarballs written by 'npm pack NAME@VERSION'), the cache (~/.cache/vidseg/npm), or the npm
registry (NPM_CONFIG_REGISTRY, else registry.npmjs.org)."""

EPILOG = """\
examples:
  vidseg visdom                          # serve on http://127.0.0.1:8090 (the VISDOM_PORT default)
  vidseg visdom --fetch-only             # install the page's files and exit (e.g. in a setup step)
  vidseg visdom --from ./npm-tarballs    # install from tarballs copied onto an offline machine
  vidseg visdom --list                   # the pinned packages (for 'npm pack' on another machine)
then train with:  vidseg train --config-file F VISDOM_ON True  and open the printed address.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8090, help="port (default 8090, the VISDOM_PORT default)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="127.0.0.1 or localhost (the default) listen on loopback only; any other name listens on every "
        "interface (visdom binds either loopback or all)",
    )
    p.add_argument("--env-path", default=None, help="where envs are saved (default ~/.visdom)")
    p.add_argument("--from", dest="source", default=None, help="folder of npm tarballs (npm pack output)")
    p.add_argument("--registry", default=None, help="npm registry URL (default NPM_CONFIG_REGISTRY or npmjs)")
    p.add_argument("--fetch-only", action="store_true", help="install the page's files, do not serve")
    p.add_argument("--list", action="store_true", help="print the pinned npm packages and exit")


def _check_tornado() -> str | None:
    import tornado

    major, minor = (int(x) for x in tornado.version.split(".")[:2])
    if (major, minor) >= (6, 5):
        return (
            f"tornado {tornado.version} refuses visdom 0.2.4's page (HTTP 403 on ../user/style.css); "
            "install tornado<6.5: pip install 'tornado>=6.1,<6.5' (pip install 'vidseg[visdom]' pins it)"
        )
    return None


def run(args: argparse.Namespace) -> int:
    from vidseg.utils import visdom_assets as va

    if args.list:
        for pkg in va.PACKAGES:
            print(f"{pkg.name}@{pkg.version}  {pkg.tarball}  {pkg.integrity}")
        return 0
    try:
        import visdom  # noqa: F401
    except ImportError:
        print("error: the 'visdom' package is not installed (pip install 'vidseg[visdom]')", file=sys.stderr)
        return 1
    try:
        written = va.install_assets(source=args.source, registry=args.registry)
    except (OSError, ValueError) as e:
        print(f"error: the Visdom page's files could not be installed: {e}", file=sys.stderr)
        print(
            "  copy the tarballs of 'vidseg visdom --list' into a folder and pass --from FOLDER",
            file=sys.stderr,
        )
        return 1
    static = va.static_dir()
    print(f"visdom page files: {len(written)} installed, all present in {static}", flush=True)
    # index.html links static/../user/style.css (for user themes); without the file every page load logs an
    # error. An empty one changes nothing else.
    user_css = static.parent / "user" / "style.css"
    if not user_css.is_file():
        try:
            user_css.parent.mkdir(exist_ok=True)
            user_css.touch()
        except OSError:
            pass
    if args.fetch_only:
        return 0
    bad = _check_tornado()
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 1
    from visdom.server.run_server import start_server

    env_path = args.env_path or os.path.join(os.path.expanduser("~"), ".visdom")
    os.makedirs(env_path, exist_ok=True)
    # The server logs every request at INFO; warnings and errors still show.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s visdom: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    print(f"Visdom on http://{args.host}:{args.port}  (envs in {env_path}; Ctrl-C stops it)", flush=True)
    try:
        start_server(
            port=args.port,
            hostname=args.host,
            base_url="",  # what visdom's own main() passes for "/" (with "/" every route is '//name')
            env_path=env_path,
            print_func=lambda port: None,
            bind_local=args.host in ("127.0.0.1", "localhost"),
        )
    except KeyboardInterrupt:
        return 0
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0
