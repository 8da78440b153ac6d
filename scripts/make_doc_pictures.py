"""Regenerate the pictures of the README and docs/ from a real quickstart run (CPU, a few minutes).

    python scripts/make_doc_pictures.py [--out output/doc_pictures] [--epochs E]

Writes into docs/images/:
  quickstart_prediction.png  frames of the rendered demo video (prediction.mp4), evenly spread, side by side
  quickstart_curves.png      the run's curves.png (loss terms, learning rates, evaluation, time)
  visdom_page.png            the Visdom page of the same run in headless Chromium (only when visdom, its page
                             files and a chromium are there; the quickstart then trains with VISDOM_ON True)
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
sys.path.insert(0, str(REPO))  # this checkout's vidseg, installed or not


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _browser() -> str | None:
    return next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
    )


def _start_visdom(out: Path) -> tuple[subprocess.Popen, int] | None:
    """``vidseg visdom`` on a free loopback port, or None (with the reason printed)."""
    try:
        from vidseg.utils.visdom_assets import missing_assets

        if missing_assets():
            print("visdom page files missing (run: vidseg visdom --fetch-only): no visdom_page.png")
            return None
    except ImportError:
        print("visdom is not installed: no visdom_page.png")
        return None
    if _browser() is None:
        print("no chromium: no visdom_page.png")
        return None
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "vidseg",
        "visdom",
        "--port",
        str(port),
        "--env-path",
        str(out / "visdom_env"),
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.1)
    proc.kill()
    print("the visdom server did not start: no visdom_page.png")
    return None


def _prediction_strip(video: Path, dst: Path, frames: int = 4, scale: int = 1) -> None:
    """``frames`` frames of ``video``, evenly spread from the first to the last, enlarged ``scale`` times,
    side by side (the quickstart renders at least 320 px wide already)."""
    import av

    with av.open(str(video)) as c:
        all_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    idx = np.linspace(0, len(all_frames) - 1, min(frames, len(all_frames))).round().astype(int)
    picked = [all_frames[i] for i in idx]
    gap = np.full((picked[0].shape[0], 4, 3), 255, np.uint8)
    strip = np.concatenate([x for f in picked for x in (f, gap)][:-1], axis=1)
    img = Image.fromarray(strip)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(dst, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", default="output/doc_pictures", help="quickstart folder (default output/doc_pictures)"
    )
    ap.add_argument(
        "--epochs", type=int, default=None, help="quickstart epochs (default: the quickstart's own)"
    )
    args = ap.parse_args()
    out = Path(args.out).resolve()
    IMAGES.mkdir(parents=True, exist_ok=True)
    server = _start_visdom(out)
    try:
        cmd = [sys.executable, "-m", "vidseg", "quickstart", "--out", str(out)]
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        cmd += [
            "TEST.EVAL_PERIOD",
            "2",
        ]  # the quickstart evaluates once, at the end; a curve needs a few points
        if server is not None:
            cmd += ["VISDOM_ON", "True", "VISDOM_SERVER", "http://127.0.0.1", "VISDOM_PORT", str(server[1])]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, env=_env(), check=True)
        shutil.copyfile(out / "run" / "curves.png", IMAGES / "quickstart_curves.png")
        _prediction_strip(out / "run" / "prediction.mp4", IMAGES / "quickstart_prediction.png")
        if server is not None:
            url = f"http://127.0.0.1:{server[1]}/env/run"  # the env is the run folder's name
            shot = IMAGES / "visdom_page.png"
            browser = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
            browser += ["--window-size=1300,1600", "--virtual-time-budget=15000", f"--screenshot={shot}", url]
            subprocess.run(browser, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        if server is not None:
            server[0].terminate()
            server[0].wait(10)
    for p in sorted(IMAGES.glob("*.png")):
        # 256-colour palette: a third of the bytes, no visible change for plots and flat-shaded frames.
        Image.open(p).convert("RGB").quantize(256).save(p, optimize=True)
        w, h = Image.open(p).size
        print(f"{p.relative_to(REPO)}  {w}x{h}  {p.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
