"""Peak memory and speed of the DeVIS clip tracker on a long vs a short video (no model).

    python benchmarks/tracker_memory.py             # 100 vs 1,000 frames, 20 candidates, T=6, S=4, 360x640
    python benchmarks/tracker_memory.py --quick     # 180x320, 10 candidates (shared machines)
    python benchmarks/tracker_memory.py --stream    # the streaming path: ClipInference.stream, a stub model

Each length runs in a fresh process; the figure is that process's peak resident memory (VmHWM) above its
resident memory just before the first clip (torch imported, one clip already built), so both lengths start
from the same state. The tracker keeps soft masks only for frames a later clip covers and RLE-encodes the
rest, so the 1,000-frame peak should stay within 1.5x of the 100-frame one. Clip results are synthetic
moving boxes (soft edges), built the same way for every clip.

``--stream`` measures the whole streaming path instead: ``ClipInference.stream`` (the predictor's DeVIS path)
with a stub model whose per-clip output (top-k and /4 mask logits of the same moving boxes) costs no
network time, so the figure is clip_result (bilinear upsampling to the original size), the tracker with
``keep_released`` and the per-frame ``FrameOutput`` masks, consumed frame by frame as the predictor does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def child(frames: int, k: int, h: int, w: int, t: int, s: int) -> dict:
    import torch

    from vidseg.data.frame_sampling import overlapping_clips
    from vidseg.models.devis.tracker import ClipTracker

    torch.set_num_threads(1)
    ys = torch.arange(h).view(1, 1, h, 1).float()
    xs = torch.arange(w).view(1, 1, 1, w).float()

    def clip_result(start: int) -> dict:
        pos = torch.arange(t).float().view(1, t, 1, 1) + start
        j = torch.arange(k).float().view(k, 1, 1, 1)
        x0 = (j * w / k + pos * 2) % (w * 0.8)
        y0 = (j * 7) % (h * 0.5)
        m = torch.sigmoid((xs - x0) * 0.5) * torch.sigmoid((x0 + w * 0.15 - xs) * 0.5)
        m = m * torch.sigmoid((ys - y0) * 0.5) * torch.sigmoid((y0 + h * 0.3 - ys) * 0.5)  # [k, T, H, W]
        scores = 0.3 + 0.5 * torch.rand(t, k)
        boxes = torch.stack([x0, x0 * 0 + y0, x0 + w * 0.15, x0 * 0 + y0 + h * 0.3], -1).view(k, t, 4)
        boxes = boxes.transpose(0, 1).contiguous()  # [T, k, 4]
        centers = torch.stack(
            [(boxes[..., 0] + boxes[..., 2]) / 2 / w, (boxes[..., 1] + boxes[..., 3]) / 2 / h], -1
        )
        return {
            "frame_scores": scores,
            "labels": torch.arange(k) % 3,
            "boxes": boxes,
            "centers": centers,
            "masks": m,
        }

    clips = overlapping_clips(frames, t, s)
    first = clip_result(0)
    base = _vm("VmRSS")
    tracker = ClipTracker(frames, h, w, t, s)
    secs = 0.0  # tracker time only (update + finish), not the building of the synthetic clips
    for i, c in enumerate(clips):
        res = first if i == 0 else clip_result(c.start)
        t0 = time.perf_counter()
        tracker.update(res)
        secs += time.perf_counter() - t0
    t0 = time.perf_counter()
    tracks = tracker.finish()
    secs += time.perf_counter() - t0
    return {"frames": frames, "peak_above_start_mb": (_vm("VmHWM") - base) / 2**20, "tracks": len(tracks),
            "frames_per_s": frames / secs}  # fmt: skip


def child_stream(frames: int, k: int, h: int, w: int, t: int, s: int) -> dict:
    from types import SimpleNamespace

    import torch
    from torch import nn

    from vidseg.models.devis.clip_inference import ClipInference

    torch.set_num_threads(1)
    hq, wq = h // 4, w // 4
    ys = torch.arange(hq).view(1, 1, hq, 1).float()
    xs = torch.arange(wq).view(1, 1, 1, wq).float()

    class Stub(nn.Module):
        """Per-clip DeVIS output of k moving boxes (no network): what ``ClipInference.run_clip`` reads."""

        def __init__(self) -> None:
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(1))  # the device ClipInference reads
            self.start = 0

        def forward(self, batch):
            pos = torch.arange(t).float().view(1, t, 1, 1) + self.start
            self.start += s
            j = torch.arange(k).float().view(k, 1, 1, 1)
            x0 = (j * wq / k + pos * 0.5) % (wq * 0.8)
            y0 = (j * 2) % (hq * 0.5)
            inside = torch.minimum(
                torch.minimum(xs - x0, x0 + wq * 0.15 - xs), torch.minimum(ys - y0, y0 + hq * 0.3 - ys)
            )
            cx, cy = (x0 + wq * 0.075) / wq, (y0 + hq * 0.15) / hq  # [k, T, 1, 1]
            boxes = torch.cat([cx, cy + 0 * cx, 0.15 + 0 * cx, 0.3 + 0 * cx], -1).view(k, t, 4)
            top = {"frame_scores": 0.3 + 0.5 * torch.rand(t, k), "labels": torch.arange(k) % 3,
                   "slots": torch.arange(k), "boxes": boxes.transpose(0, 1).contiguous()}  # fmt: skip
            return {"clip_topk": [top], "pred_masks": (inside * 2.0)[None]}  # [1, k, T, h/4, w/4] logits

    blank = torch.zeros(3, h, w)
    video = SimpleNamespace(
        video_id=1, frames=[blank] * frames, orig_size=(h, w), image_size=(h, w), length=frames
    )
    inference = ClipInference(t, size_divisibility=1, stride=s)
    base = _vm("VmRSS")
    t0 = time.perf_counter()
    shown = 0
    gen = inference.stream(Stub(), video)
    while True:
        try:
            out = next(gen)
        except StopIteration as stop:
            tracks = stop.value.tracks
            break
        shown += len(out.track_ids)  # consumed and dropped, as the predictor's loop does
    secs = time.perf_counter() - t0
    return {"frames": frames, "peak_above_start_mb": (_vm("VmHWM") - base) / 2**20, "tracks": len(tracks),
            "frames_per_s": frames / secs, "detections": shown}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--stream", action="store_true", help="ClipInference.stream with a stub model")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    h, w, k = (180, 320, 10) if args.quick else (360, 640, 20)
    if args.child:
        print(json.dumps((child_stream if args.stream else child)(args.child, k, h, w, 6, 4)))
        return 0
    rows = []
    what = "stream path" if args.stream else "tracker only"
    for n in (100, 1000):
        flags = (["--quick"] if args.quick else []) + (["--stream"] if args.stream else [])
        cmd = [sys.executable, __file__, "--child", str(n)] + flags
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['frames']:5d} frames: peak +{r['peak_above_start_mb']:.1f} MiB, {r['tracks']} tracks, "
              f"{r['frames_per_s']:.1f} frames/s ({what})")  # fmt: skip
    ratio = rows[1]["peak_above_start_mb"] / max(rows[0]["peak_above_start_mb"], 1e-6)
    print(
        f"peak ratio 1000/100 frames ({what}): {ratio:.2f}x (target <= 1.5x); {h}x{w}, {k} candidates, "
        "T=6, S=4"
    )
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
