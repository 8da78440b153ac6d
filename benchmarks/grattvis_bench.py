"""``benchmarks/models.py --model grattvis``: GRAtt-VIS online inference (the ``GRAttVISInference`` of the
config's bundle) on synthetic videos, random weights.

- online FPS at 360x640: frames / seconds of the whole online loop (frame read, resize, normalise, detector,
  head step, per-query mask sums and RLEs of every frame), and the model steps alone on the same frames;
  the tiny quickstart config, and with ``--full`` also the OVIS R50 config;
- peak memory over a 100- and a 1,000-frame video (``--mem-frames``) of small frames (``--mem-size``,
  default 96x160, then the config's test resize): on CUDA ``torch.cuda.max_memory_allocated`` above the
  start; on the CPU the peak of the bytes malloc has handed out (glibc ``mallinfo2``, sampled every 2 ms;
  tensors are invisible to tracemalloc; the resident size where mallinfo2 is missing) above the start, next
  to the bytes the inference state holds (its tensors and the RLE strings, which do grow, by design: random
  weights make speckled masks, so long RLEs) and the stride-4 mask features the official inference would
  keep for the same video. The ratios 1,000 / 100 frames are the point: flat means ~1.

With ``--train``, one training step at the OVIS R50 setting (``INPUT.NUM_FRAMES`` 5-frame clips,
``--train-batch`` clips of ``--size`` or 384x640, detector frozen, AdamW on the head's groups, full-model
gradient clipping at ``SOLVER.CLIP_GRADIENTS.CLIP_VALUE``, AMP on CUDA): median step time and peak memory.

Frames are made on demand by a synthetic source (moving rectangles on noise), so the video itself takes no
memory.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from vidseg.data.transforms import shortest_edge_size
from vidseg.data.video_dataset import VideoFrames, VideoItem
from vidseg.models import build_model, load_config
from vidseg.structures.clip_batch import pad_frames

CONFIGS = {"tiny": "quickstart/grattvis_tiny.yaml", "R50 OVIS": "grattvis/ovis/grattvis_R50_bs8.yaml"}
TARGET_FPS_H100 = 80.0  # issue 16: at least 80 FPS on an H100
VITA_FPS_V100 = 46.1  # VITA's reported FPS (V100)


class SyntheticFrames:
    """``len`` and ``[t] -> uint8 [H, W, 3]`` made on demand: three rectangles moving over noise."""

    def __init__(self, n: int, h: int, w: int) -> None:
        self.n, self.h, self.w = n, h, w

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, t: int) -> np.ndarray:
        rng = np.random.default_rng(t)
        img = rng.integers(0, 60, (self.h, self.w, 3), dtype=np.uint8)
        for i in range(3):
            y = (self.h // 6 + 2 * t + i * self.h // 4) % max(1, self.h - self.h // 4)
            x = (self.w // 8 + 3 * t + i * self.w // 3) % max(1, self.w - self.w // 5)
            img[y : y + self.h // 4, x : x + self.w // 5] = (200, 80 * i, 255 - 60 * i)
        return img


def synthetic_video(cfg, n: int, h: int, w: int) -> VideoItem:
    size = shortest_edge_size(h, w, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST) or None)
    mean, std = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    frames = VideoFrames(SyntheticFrames(n, h, w), size, mean, std, expected_size=(h, w))
    return VideoItem(0, None, frames, (h, w), size)


def build(name: str, device: torch.device):
    opts = ["MODEL.WEIGHTS", ""]
    if name == "tiny":  # its class count comes from the training set otherwise; OVIS has 25
        opts += ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "25"]
    cfg = load_config(CONFIGS[name], opts)
    torch.manual_seed(0)
    bundle = build_model(cfg)
    return cfg, bundle.model.to(device).eval(), bundle.inference


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def online_fps(cfg, model, inference, device, n: int, warmup: int) -> tuple[float, float]:
    """``(FPS of the whole online loop, FPS of its model steps alone)`` on an ``n``-frame 360x640 video; the
    model steps are timed inside the same run (a timing wrapper around ``online_step``)."""
    if warmup:
        inference.run(model, synthetic_video(cfg, warmup, 360, 640))
    video = synthetic_video(cfg, n, 360, 640)
    step, spent = model.online_step, [0.0]

    def timed_step(images, state):
        _sync(device)
        t1 = time.perf_counter()
        out = step(images, state)
        _sync(device)
        spent[0] += time.perf_counter() - t1
        return out

    model.online_step = timed_step
    try:
        _sync(device)
        t0 = time.perf_counter()
        inference.run(model, video)
        _sync(device)
        total = time.perf_counter() - t0
    finally:
        del model.online_step  # back to the class's method
    return n / total, n / spent[0]


def _in_use_bytes() -> int:
    """Bytes malloc has handed out (glibc ``mallinfo2``: arena + mmapped), else the resident set size."""
    try:
        return _mallinfo2()
    except (OSError, AttributeError):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096


def _mallinfo2() -> int:
    import ctypes

    class Info(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                      "fordblks", "keepcost")
        ]  # fmt: skip

    fn = ctypes.CDLL("libc.so.6").mallinfo2
    fn.restype = Info
    info = fn()
    return int(info.uordblks + info.hblkhd)


class CpuPeak:
    """``with CpuPeak() as m: ...`` -> ``m.peak``: the most bytes in use (:func:`_in_use_bytes`, sampled every
    2 ms by a thread) above the start."""

    def __enter__(self) -> CpuPeak:
        self.base, self.top, self._done = _in_use_bytes(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.top = max(self.top, _in_use_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(0, self.top - self.base)


@torch.no_grad()
def peak_memory(cfg, model, inference, device, n: int, h: int, w: int) -> dict:
    """Peak memory of one ``n``-frame ``h x w`` video through ``inference.run`` (see the module docstring)."""
    video = synthetic_video(cfg, n, h, w)
    out: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        state = inference.run(model, video)
        torch.cuda.synchronize(device)
        out["gpu"] = torch.cuda.max_memory_allocated(device) - start
    else:
        with CpuPeak() as meter:
            state = inference.run(model, video)
        out["cpu"] = meter.peak
    out["tensors"], out["rles"] = state.tensor_bytes(), state.rle_bytes()
    ph, pw = pad_frames([video.frames.get([0])], 32)[0].shape[-2:]
    out["official"] = n * int(cfg.MODEL.VITA.HIDDEN_DIM) * (ph // 4) * (pw // 4) * 4
    return out


def video_clip_batch(b: int, t: int, h: int, w: int, num_classes: int, seed: int = 0):
    """``b`` clips of ``t`` frames: three rectangles moving over noise, one appearing at frame 1."""
    from vidseg.structures.clip_batch import ClipBatch, ClipTargets

    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, 3, h, w, generator=g) * 0.3
    targets = []
    for i in range(b):
        masks = torch.zeros(3, t, h, w, dtype=torch.bool)
        for n in range(3):
            for f in range(1 if n == 2 else 0, t):
                y, x = h // 8 + n * h // 4 + 2 * f, w // 10 + n * w // 4 + 4 * f
                masks[n, f, y : y + h // 5, x : x + w // 6] = True
                frames[i, f][:, masks[n, f]] += 1.0 + n
        labels = torch.randint(0, num_classes, (3,), generator=g)
        valid = masks.flatten(2).any(-1)
        targets.append(ClipTargets(labels, torch.arange(1, 4), masks, torch.zeros(3, t, 4), valid))
    meta = [{"video_id": i, "orig_size": (h, w), "image_size": (h, w)} for i in range(b)]
    return ClipBatch(frames, torch.zeros(b, t, h, w, dtype=torch.bool), targets, meta)


def train_step_bench(args, device: torch.device) -> None:
    """Median time and peak memory of a training step of the OVIS R50 config (see the module docstring)."""
    cfg = load_config(CONFIGS["R50 OVIS"], ["MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    bundle = build_model(cfg)
    model, crit = bundle.model.to(device).train(), bundle.criterion.to(device)
    groups = bundle.param_groups(model)
    opt = torch.optim.AdamW(groups, lr=float(cfg.SOLVER.BASE_LR), weight_decay=float(cfg.SOLVER.WEIGHT_DECAY))
    clip = float(cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE or 0.01)
    t = int(cfg.INPUT.NUM_FRAMES)
    h, w = args.size or (384, 640)
    k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    batch = video_clip_batch(args.train_batch, t, h, w, k).to(device)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            losses = crit(model(batch), batch.targets)
            total = sum(crit.weight_dict[n] * v for n, v in losses.items() if n in crit.weight_dict)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, clip)  # the full model's trainable parameters at once
        scaler.step(opt)
        scaler.update()

    cpu = device.type == "cpu"
    iters = args.iters or (1 if cpu else 10)
    warmup = args.warmup if args.warmup is not None else (1 if cpu else 3)
    for _ in range(warmup):
        step()
    if not cpu:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with CpuPeak() as meter:
        for _ in range(iters):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if not cpu else meter.peak
    times.sort()
    med = times[len(times) // 2]
    print(f"\n### Training step, R50 OVIS: {args.train_batch} clip(s) of {t} frames at {h}x{w}")
    print(f"trainable parameters {sum(p.numel() for p in params) / 1e6:.2f} M (the detector is frozen)")
    print("| what | value |")
    print("|---|---|")
    print(f"| step time (median of {iters}) | {med:.2f} s |")
    print(f"| clips per second | {args.train_batch / med:.3f} |")
    if not cpu:
        print(f"| peak GPU memory (allocated) | {peak / 2**30:.2f} GiB |")
    else:
        print(f"| malloc in-use peak above the start (after {warmup} warm-up) | {peak / 2**20:.0f} MiB |")


def run_grattvis(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available")
        return 2
    names = ["tiny", "R50 OVIS"] if args.full else ["tiny"]
    cpu = device.type == "cpu"
    print(f"\n## GRAtt-VIS online inference, {device.type}, random weights")
    print(
        f"torch threads: {torch.get_num_threads()}" if cpu else f"GPU: {torch.cuda.get_device_name(device)}"
    )
    print("\n### Online FPS, 360x640 input frames (then the config's test resize)")
    print("| config | frames | online loop FPS | model steps alone FPS |")
    print("|---|---|---|---|")
    for name in names:
        cfg, model, inference = build(name, device)
        n = args.fps_frames or (4 if cpu and name != "tiny" else (20 if cpu else 100))
        warmup = args.warmup if args.warmup is not None else (1 if cpu else 10)
        fps, model_fps = online_fps(cfg, model, inference, device, n, warmup)
        ih, iw = synthetic_video(cfg, 1, 360, 640).image_size
        print(f"| {name} (`{CONFIGS[name]}`), processed at {ih}x{iw} | {n} | {fps:.2f} | {model_fps:.2f} |")
        if not cpu:
            print(f"target on an H100: >= {TARGET_FPS_H100} FPS; VITA: {VITA_FPS_V100} FPS on a V100")

    mh, mw = args.mem_size
    lengths = args.mem_frames
    print(f"\n### Peak memory against the video length, {mh}x{mw} frames, tiny config")
    cfg, model, inference = build("tiny", device)
    peak_memory(cfg, model, inference, device, 3, mh, mw)  # warm caches and allocator pools first
    rows = {n: peak_memory(cfg, model, inference, device, n, mh, mw) for n in lengths}
    kind = "GPU allocated peak" if not cpu else "malloc in-use peak"
    video = synthetic_video(cfg, 1, mh, mw)
    print(f"frames {mh}x{mw}, processed at {video.image_size[0]}x{video.image_size[1]} (test resize)")
    print(f"| frames | {kind} | state tensors | state RLE strings | official: mask features kept |")
    print("|---|---|---|---|---|")
    key = "gpu" if not cpu else "cpu"
    for n, r in rows.items():
        print(
            f"| {n} | {r[key] / 2**20:.2f} MiB | {r['tensors'] / 2**10:.1f} KiB "
            f"| {r['rles'] / 2**20:.3f} MiB | {r['official'] / 2**20:.0f} MiB |"
        )
    if len(lengths) >= 2:
        a, b = rows[lengths[0]], rows[lengths[-1]]
        # On the CPU the RLE strings are inside the peak; without them it is the per-frame working set.
        rest_a = a[key] - (a["rles"] if cpu else 0)
        rest_b = b[key] - (b["rles"] if cpu else 0)
        print(
            f"peak ratio {lengths[-1]} / {lengths[0]} frames: {b[key] / max(1, a[key]):.2f}"
            + (f"; without the RLE strings {rest_b / max(1, rest_a):.2f}" if cpu else "")
            + f" (the video is {lengths[-1] / lengths[0]:.0f}x longer; the official features would grow "
            f"{b['official'] / a['official']:.0f}x)"
        )
    if args.train:
        train_step_bench(args, device)
    return 0
