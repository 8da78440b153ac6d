"""Training the tiny image model on synthetic images: a short CI run and a slow run that must learn.

No timing here (a loaded CI machine is slow): speed is measured in benchmarks/.
"""

import pytest
import torch
from ddetr_synth import make_batch

from vidseg.models import load_config
from vidseg.models.devis.build import build_image_stage as build


def _train(iters: int, seed: int = 0, lr: float = 2e-4, opts: tuple = (), bundle_out: list | None = None):
    torch.manual_seed(seed)
    cfg = load_config(
        "quickstart/deformable_mask_head_tiny.yaml",
        ["MODEL.NUM_CLASSES", "3", "SOLVER.BASE_LR", str(lr), "SOLVER.LR_BACKBONE", str(lr / 2), *opts],
    )
    bundle = build(cfg)
    if bundle_out is not None:
        bundle_out.append(bundle)
    model, criterion = bundle.model, bundle.criterion
    opt = torch.optim.AdamW(bundle.param_groups(model), lr=lr, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    model.train()
    history = []
    for it in range(iters):
        # A fixed pool of 16 batches, revisited: the model can fit it within a few hundred steps.
        batch = make_batch(2, (128, 128), seed=it % 16)
        losses = criterion(model(batch), batch.targets)
        total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.SOLVER.GRAD_CLIP_MAX_NORM)
        opt.step()
        history.append(float(total.detach()))
    return history


def test_ddetr_tiny_train_steps_run_and_update():
    bundles: list = []
    history = _train(3, bundle_out=bundles)
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(history)))
    untrained: list = []
    _train(0, bundle_out=untrained)  # the same seed: the initial weights
    before = untrained[0].model.state_dict()
    after = bundles[0].model.state_dict()
    changed = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any("class_embed" in k for k in changed) and any("mask_head" in k for k in changed)


def test_ddetr_tiny_train_steps_with_mdc_mask_head():
    # The COCO configs' modulated deformable convs train too: offsets and modulators receive updates.
    bundles: list = []
    history = _train(3, opts=("MODEL.MASK_HEAD.USE_MDC", "True"), bundle_out=bundles)
    assert all(torch.isfinite(torch.tensor(history)))
    lay5 = bundles[0].model.mask_head.lay5
    assert lay5.offset_conv.weight.abs().sum() > 0 and lay5.modulator_conv.weight.abs().sum() > 0


@pytest.mark.slow
def test_ddetr_tiny_training_reduces_loss():
    history = _train(300, lr=4e-4)
    first = sum(history[:20]) / 20
    last = sum(history[-20:]) / 20
    print(f"tiny DeformableDETRSegm: loss {first:.2f} -> {last:.2f}")
    assert last < 0.6 * first
