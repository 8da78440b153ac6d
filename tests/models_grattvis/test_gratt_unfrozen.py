"""GRAtt-VIS with ``MODEL.VITA.FREEZE_DETECTOR False`` (issue 16): the detector trains through its own
per-frame Mask2Former losses and through the frame queries the head reads, as the official
``Grattvis.train_model``; with True nothing changes and no detector loss is computed."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from test_gratt_model import K, _tiny_cfg, clip_batch

from vidseg.models import build_model
from vidseg.models.grattvis.criterion import GRAttVISCriterion
from vidseg.models.grattvis.joint_criterion import GRAttVISJointCriterion

DET_KEYS = ("loss_ce", "loss_mask", "loss_dice")


class CountingMatcher(torch.nn.Module):
    """Wraps a matcher and records the target counts of every call."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[list[int]] = []

    def forward(self, outputs, targets):
        self.calls.append([len(t["labels"]) for t in targets])
        return self.inner(outputs, targets)


@pytest.fixture(scope="module")
def unfrozen():
    """The tiny config's bundle with the detector unfrozen, and one training forward on 1 clip of 2 frames."""
    torch.manual_seed(0)
    bundle = build_model(_tiny_cfg("MODEL.VITA.FREEZE_DETECTOR", "False", "SOLVER.BASE_LR", "0.001"))
    batch = clip_batch(b=1, t=2)
    return bundle, batch, bundle.model.train()(batch)


def _total(losses: dict, weights: dict, keys) -> torch.Tensor:
    return sum(losses[k] * weights[k] for k in keys)


def test_the_loss_dict_holds_both_families_with_mask2former_and_grattvis_weights(unfrozen):
    bundle, batch, out = unfrozen
    crit = bundle.criterion
    assert isinstance(crit, GRAttVISJointCriterion)
    w = crit.weight_dict
    # Mask2Former's 2 / 5 / 5 on the final layer and, with deep supervision, on DEC_LAYERS - 1 = 3 aux layers.
    det = {k: v for k, v in w.items() if not k.startswith("loss_genvis")}
    assert det == {f"{k}{s}": v for s in ("", "_0", "_1", "_2") for k, v in zip(DET_KEYS, (2.0, 5.0, 5.0))}
    # The GRAtt-VIS weights are the frozen model's, unchanged.
    frozen = build_model(_tiny_cfg()).criterion.weight_dict
    assert {k: v for k, v in w.items() if k.startswith("loss_genvis")} == frozen
    losses = crit(out, batch.targets)
    assert set(w) <= set(losses)
    assert all(torch.isfinite(losses[k]) and losses[k].requires_grad for k in w)


def test_without_mask2former_deep_supervision_only_the_final_detector_layer_has_losses(unfrozen):
    from vidseg.models.grattvis.build import build_grattvis_criterion

    _, batch, out = unfrozen
    cfg = _tiny_cfg("MODEL.VITA.FREEZE_DETECTOR", "False", "MODEL.MASK_FORMER.DEEP_SUPERVISION", "False")
    crit = build_grattvis_criterion(cfg, K)
    assert {k for k in crit.weight_dict if not k.startswith("loss_genvis")} == set(DET_KEYS)
    losses = crit(out, batch.targets)
    assert set(DET_KEYS) <= set(losses) and not any(k.startswith(("loss_ce_", "loss_mask_")) for k in losses)
    assert "loss_genvis_sim" in losses and "loss_genvis_ce_1" in losses  # the video losses keep theirs


def test_the_detector_gets_gradients_from_its_losses_and_through_the_frame_queries(unfrozen):
    bundle, batch, out = unfrozen
    model, crit = bundle.model, bundle.criterion
    losses = crit(out, batch.targets)
    w = crit.weight_dict
    det_total = _total(losses, w, [k for k in w if not k.startswith("loss_genvis")])
    head_total = _total(losses, w, [k for k in w if k.startswith("loss_genvis")])
    class_embed = model.sem_seg_head.predictor.class_embed.weight  # the head never reads the frame logits
    adapter = model.sem_seg_head.pixel_decoder.adapter_1.weight
    stem = next(p for n, p in model.backbone.named_parameters() if p.requires_grad)
    params = [class_embed, adapter, stem, model.vita_module.class_embed.weight]
    g_det = torch.autograd.grad(det_total, params, retain_graph=True, allow_unused=True)
    g_head = torch.autograd.grad(head_total, params, allow_unused=True)
    # Detector losses: every detector part, no head parameter.
    assert all(g is not None and g.abs().sum() > 0 for g in g_det[:3]) and g_det[3] is None
    # Head losses: the detector through the frame queries and mask features, but not its class head.
    assert g_head[0] is None or g_head[0].abs().sum() == 0
    assert all(g is not None and g.abs().sum() > 0 for g in g_head[1:])


def test_each_detector_layer_is_matched_once_on_the_per_frame_targets_and_the_sim_loss_reuses_it(unfrozen):
    bundle, batch, out = unfrozen
    crit = bundle.criterion
    det_matcher, frame_matcher = crit.detector.matcher, crit.video.frame_matcher
    crit.detector.matcher = CountingMatcher(det_matcher)
    crit.video.frame_matcher = CountingMatcher(frame_matcher)
    try:
        losses = crit(out, batch.targets)
        det_calls, video_calls = crit.detector.matcher.calls, crit.video.frame_matcher.calls
    finally:
        crit.detector.matcher, crit.video.frame_matcher = det_matcher, frame_matcher
    # 4 decoder predictions (the initial queries + 3 layers); frame 0 shows 1 instance, frame 1 both.
    assert det_calls == [[1, 2]] * 4
    assert video_calls == []  # the last LAST_LAYER_NUM matchings are handed on (the official fg_indices)
    assert "loss_genvis_sim" in losses


def test_one_optimizer_step_moves_the_detector_with_the_backbone_at_a_tenth_of_the_lr(unfrozen):
    bundle, batch, _ = unfrozen
    model = bundle.model
    groups = bundle.param_groups(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(trainable)  # every trainable parameter, once
    det_ids = {id(p) for p in model.detector_parameters() if p.requires_grad}
    assert det_ids and det_ids <= set(in_groups)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["backbone"] == pytest.approx(1e-4) and lr["head"] == pytest.approx(1e-3)
    backbone_ids = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert all(g["lr"] == pytest.approx(1e-4) for g in groups for p in g["params"] if id(p) in backbone_ids)

    class_embed = model.sem_seg_head.predictor.class_embed.weight
    before = class_embed.detach().clone()
    opt = torch.optim.AdamW(groups)
    out = model.train()(batch)
    losses = bundle.criterion(out, batch.targets)
    w = bundle.criterion.weight_dict
    opt.zero_grad()
    _total(losses, w, w).backward()
    opt.step()
    assert not torch.equal(before, class_embed.detach())


def test_frozen_builds_the_video_criterion_alone_and_computes_no_detector_loss():
    torch.manual_seed(0)
    bundle = build_model(_tiny_cfg())
    crit = bundle.criterion
    assert isinstance(crit, GRAttVISCriterion)
    assert not set(crit.weight_dict) & {f"{k}{s}" for k in DET_KEYS for s in ("", "_0")}
    batch = clip_batch(b=1, t=2)
    out = bundle.model.train()(batch)
    assert "detector_outputs" not in out
    losses = crit(out, batch.targets)
    assert all(k.startswith("loss_genvis") for k in losses)
    assert all(not p.requires_grad for p in bundle.model.detector_parameters())


def test_unfrozen_logs_an_info_line_and_no_warning(caplog):
    cfg = _tiny_cfg("MODEL.VITA.FREEZE_DETECTOR", "False")
    from vidseg.models.grattvis.build import build_grattvis_criterion

    with caplog.at_level(logging.INFO, logger="vidseg.models.grattvis.build"):
        build_grattvis_criterion(cfg, K)
    mine = [r for r in caplog.records if r.name == "vidseg.models.grattvis.build"]
    assert not [r for r in mine if r.levelno >= logging.WARNING]
    assert any(r.levelno == logging.INFO and "the detector trains too" in r.getMessage() for r in mine)


def test_the_joint_criterion_names_a_frozen_model_s_missing_detector_outputs(unfrozen):
    bundle, batch, out = unfrozen
    frozen_like = {k: v for k, v in out.items() if k != "detector_outputs"}
    with pytest.raises(KeyError, match="FREEZE_DETECTOR False"):
        bundle.criterion(frozen_like, batch.targets)
    with pytest.raises(ValueError, match="both weigh"):
        GRAttVISJointCriterion(bundle.criterion.video, SimpleNamespace(weight_dict={"loss_genvis_ce": 1.0}))


@pytest.mark.slow
def test_vidseg_train_with_the_detector_unfrozen_logs_its_losses_and_moves_its_weights(tmp_path):
    from test_gratt_train_e2e import _data, _metrics, _model_state, _run

    from vidseg.checkpoints import write_weights
    from vidseg.models import load_config

    data = _data(tmp_path, train_videos=2, val_videos=1, frames=3)
    torch.manual_seed(0)
    cfg = load_config("quickstart/grattvis_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"])
    init = build_model(cfg).model.state_dict()
    write_weights(tmp_path / "init.pth", init)
    out = _run(
        "train", "quickstart/grattvis_tiny.yaml", tmp_path / "run", data,
        *("MODEL.WEIGHTS", str(tmp_path / "init.pth"), "MODEL.VITA.FREEZE_DETECTOR", "False"),
        *("SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(10,)", "SOLVER.GRAD_CLIP_MAX_NORM", "1.0"),
        *("TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "0", "VISDOM_AND_LOG_INTERVAL", "1"),
    )  # fmt: skip
    train, _ = _metrics(out)
    assert len(train) == 2 and all(r["loss"] == r["loss"] and r["loss"] > 0 for r in train), train
    assert {"loss_ce", "loss_dice_2", "loss_genvis_ce", "loss_genvis_sim"} <= set(train[0]), sorted(train[0])
    assert any(k.startswith("lr_backbone") for k in train[0])
    final = _model_state(out / "checkpoint.pth")
    for key in ("sem_seg_head.predictor.class_embed.weight", "sem_seg_head.pixel_decoder.adapter_1.weight"):
        assert not torch.equal(final[key], init[key]), key
