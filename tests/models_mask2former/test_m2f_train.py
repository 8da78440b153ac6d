"""Training the tiny Mask2Former on synthetic video frames: a short CI run, and a slow run that must learn and
reach a clearly non-zero COCO mask AP on held-out frames.

No timing here (a loaded CI machine is slow): speed is measured in benchmarks/models.py.
"""

from __future__ import annotations

import pytest
import torch
from m2f_synth import make_clips
from pycocotools.coco import COCO

from vidseg.evaluation import COCOEvaluator
from vidseg.models import build_model, load_config
from vidseg.structures.clip_batch import ClipBatch, frame_targets
from vidseg.structures.masks import encode_rle


def _bundle(seed: int = 0, opts: tuple = ()):
    torch.manual_seed(seed)
    cfg = load_config("quickstart/mask2former_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", *opts])
    return cfg, build_model(cfg)


def _train(bundle, cfg, iters: int, pool: int = 16, lr: float = 1e-3, size: int = 64) -> list[float]:
    model, criterion = bundle.model.train(), bundle.criterion
    opt = torch.optim.AdamW(bundle.param_groups(model), lr=lr, weight_decay=0.05)
    history = []
    for it in range(iters):
        batch = make_clips(2, frames=2, size=size, seed=it % pool)  # a fixed pool, revisited
        losses = criterion(model(batch), batch.targets)
        total = criterion.criterion.weighted_total(losses)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(float(total.detach()))
    return history


def test_short_training_on_synthetic_frames_lowers_the_loss():
    # The backbone frozen (FREEZE_AT 5): the pixel decoder and the decoder learn, in half the time.
    cfg, bundle = _bundle(opts=("MODEL.BACKBONE.FREEZE_AT", "5"))
    assert not any(p.requires_grad for p in bundle.model.backbone.parameters())
    history = _train(bundle, cfg, 24, pool=2, size=48)
    assert all(torch.isfinite(torch.tensor(history)))
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def _coco_gt(batches: list[ClipBatch]) -> COCO:
    images, anns = [], []
    for batch in batches:
        for b, t in enumerate(batch.targets):
            img_id = int(batch.meta[b]["video_id"])
            tg = frame_targets(t, 0)
            images.append({"id": img_id, "height": 64, "width": 64})
            for lbl, m in zip(tg["labels"].tolist(), tg["masks"]):
                ys, xs = m.nonzero(as_tuple=True)
                rle = encode_rle(m.numpy())
                box = [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1),
                ]
                anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": lbl + 1, "iscrowd": 0,
                             "segmentation": rle, "area": float(m.sum()), "bbox": box})  # fmt: skip
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": str(i)} for i in range(3)],
    }
    coco.createIndex()
    return coco


@pytest.mark.slow
def test_training_on_synthetic_frames_learns_and_scores_mask_ap():
    cfg, bundle = _bundle()
    history = _train(bundle, cfg, 400, pool=32)
    first, last = sum(history[:20]) / 20, sum(history[-20:]) / 20
    print(f"tiny Mask2Former: loss {first:.2f} -> {last:.2f}")
    assert last < 0.6 * first
    held_out = []
    for s in range(100, 110):
        clip = make_clips(4, frames=1, seed=s)
        held_out.append(clip)
    evaluator = COCOEvaluator(_coco_gt(held_out), tasks=("segm",), distributed=False)
    model = bundle.model.eval()
    for batch in held_out:
        evaluator.process(
            batch,
            bundle.inference(model, ClipBatch(frames=batch.frames, pad_mask=batch.pad_mask, meta=batch.meta)),
        )
    metrics = evaluator.evaluate()
    print("held-out synthetic frames:", metrics)
    assert metrics["segm"]["AP"] > 20.0
