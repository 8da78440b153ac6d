"""The GRAtt-VIS model: official key names, the frozen detector, training outputs the criterion reads,
propagation through the steps, and the online API (``init_state`` / ``online_step`` / ``preprocess``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidseg.checkpoints.detectron2 import vidseg_to_detectron2
from vidseg.models import load_config
from vidseg.models.grattvis.criterion import grattvis_criterion
from vidseg.models.grattvis.model import GRAttVIS, OnlineState
from vidseg.models.grattvis.vis_head import GRAttVISHead
from vidseg.models.mask2former.build import build_mask2former
from vidseg.structures.clip_batch import ClipBatch, ClipTargets

SPEC_KEYS = Path(__file__).resolve().parents[1] / "spec_keys" / "grattvis-state-dict-keys-R50-OVIS.txt"
K, H, W = 3, 64, 64


def tiny_model(seed: int = 0, **kw) -> GRAttVIS:
    """The quickstart-sized Mask2Former (ResNet-18, width 64, 10 queries, last 3 layers) + a small head."""
    torch.manual_seed(seed)
    cfg = load_config("quickstart/mask2former_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(K)])
    head_kw = dict(
        num_classes=K, hidden_dim=64, num_frame_queries=10, num_queries=10, nheads=4, dim_feedforward=128,
        enc_layers=1, dec_layers=3, mask_dim=32, conv_dim=64,
    )  # fmt: skip
    head_kw.update({k: kw.pop(k) for k in list(kw) if k in ("use_mem", "gated_prop", "window")})
    return GRAttVIS(build_mask2former(cfg, K), GRAttVISHead(**head_kw), **kw)


def clip_batch(b: int = 2, t: int = 3, seed: int = 0) -> ClipBatch:
    """B clips of T frames: a bright square moving right and a dark one appearing in frame 1."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, 3, H, W, generator=g) * 0.3
    targets = []
    for i in range(b):
        masks = torch.zeros(2, t, H, W, dtype=torch.bool)
        for f in range(t):
            masks[0, f, 10 + 2 * i : 26 + 2 * i, 8 + 4 * f : 24 + 4 * f] = True
            if f >= 1:
                masks[1, f, 36:56, 30 + 2 * f : 50 + 2 * f] = True
        frames[i][:, :, masks[0].any(0)] = 0.0
        for f in range(t):
            frames[i, f][:, masks[0, f]] = 2.0
            frames[i, f][:, masks[1, f]] = -2.0
        targets.append(
            ClipTargets(labels=torch.tensor([0, 2]), ids=torch.tensor([1, 2]), masks=masks,
                        boxes=torch.zeros(2, t, 4), valid=masks.flatten(2).any(-1))
        )  # fmt: skip
    meta = [{"video_id": i, "orig_size": (H, W), "image_size": (H, W)} for i in range(b)]
    return ClipBatch(frames, torch.zeros(b, t, H, W, dtype=torch.bool), targets, meta)


@pytest.fixture(scope="module")
def model() -> GRAttVIS:
    return tiny_model()


# ---------------------------------------------------------------------------------------- official keys
def _official() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in SPEC_KEYS.read_text().splitlines():
        key, shape = line.split(" ", 1)
        out[key] = tuple(int(x) for x in shape.strip("()").split(",") if x.strip())
    return out


def _shipped(config: str) -> GRAttVIS:
    """The model of a shipped GRAtt-VIS config, on the meta device (names and shapes, no memory)."""
    from vidseg.models.grattvis.build import build_grattvis_model

    cfg = load_config(config, ["MODEL.WEIGHTS", ""])
    with torch.device("meta"):
        return build_grattvis_model(cfg, int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES))


def test_ovis_r50_model_has_every_official_key_and_shape_but_the_criteria_buffers():
    official = _official()
    assert len(official) == 709
    m = _shipped("grattvis/ovis/grattvis_R50_bs8.yaml")
    ours = {k: tuple(v.shape) for k, v in vidseg_to_detectron2(m.state_dict()).items()}
    # The three [K+1] class-weight buffers of the official criteria are rebuilt from the config, not stored.
    recomputed = {"criterion.empty_weight", "vita_criterion.empty_weight", "genvis_criterion.empty_weight"}
    assert set(official) - set(ours) == recomputed
    assert set(ours) - set(official) == set()
    assert {k: (v, official[k]) for k, v in ours.items() if v != official[k]} == {}
    # The detector object is not a submodule: its keys would appear twice.
    assert not any(k.startswith("_detector") or k.startswith("detector.") for k in m.state_dict())
    assert m.detector.backbone is m.backbone and m.detector.sem_seg_head is m.sem_seg_head


def test_ytvis19_r50_model_adds_the_memory_and_a_40_class_head():
    official = _official()
    ours = {k: tuple(v.shape) for k, v in vidseg_to_detectron2(_shipped(
        "grattvis/youtubevis_2019/grattvis_R50_bs8.yaml").state_dict()).items()}  # fmt: skip
    memory = {
        f"vita_module.pre_{a}_embed_{b}.{p}"
        for a in ("memory", "query")
        for b in "kv"
        for p in ("weight", "bias")
    }
    assert len(ours) == 714 and set(ours) - set(official) == memory  # 717 officially, with the 3 buffers
    assert ours["vita_module.class_embed.weight"] == (41, 256)
    assert ours["sem_seg_head.predictor.class_embed.weight"] == (41, 256)


# ---------------------------------------------------------------------------------------- frozen detector
def test_frozen_detector_stays_in_eval_and_gets_no_gradient():
    m = tiny_model().train()
    assert m.training and m.vita_module.training
    assert not any(mod.training for mod in (*m.backbone.modules(), *m.sem_seg_head.modules()))
    assert not any(p.requires_grad for p in m.detector_parameters())
    assert all(p.requires_grad for p in m.vita_module.parameters())
    out = m(clip_batch())
    total = sum(s["pred_logits"].sum() + s["pred_masks"].mean() for s in out["steps"])
    total.backward()
    assert all(p.grad is None for p in m.detector_parameters())
    grads = [p.grad for p in m.vita_module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # The decoder's own flag is restored after the call (only raised to keep the last L layers).
    assert not m.sem_seg_head.predictor.training


def test_unfrozen_detector_trains_through_the_head():
    m = tiny_model(freeze_detector=False).train()
    assert m.sem_seg_head.training and all(p.requires_grad for p in m.detector_parameters())
    out = m(clip_batch(b=1, t=2))
    out["steps"][-1]["pred_masks"].mean().backward()
    assert m.sem_seg_head.pixel_decoder.adapter_1.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- training forward
def test_training_outputs_are_what_the_criterion_reads_and_backward_works(model):
    model.train()
    batch = clip_batch(b=2, t=3)
    out = model(batch)
    n_l, cq, hf, wf = 3, model.num_queries, H // 4, W // 4
    assert out["num_layers_copies"] == n_l and out["window"] == 1 and len(out["steps"]) == 3
    for step in out["steps"]:
        assert step["pred_logits"].shape == (n_l, 2, cq, K + 1)
        assert step["pred_masks"].shape == (n_l, 2, cq, 1, hf, wf)
        assert len(step["aux_outputs"]) == 2
        assert all(a["pred_masks"].shape == (n_l, 2, cq, 1, hf, wf) for a in step["aux_outputs"])
        assert step["pred_fq_embed"].shape == (n_l, 2, 1, 10, 64)
    assert len(out["frame_outputs"]) == n_l
    for fo in out["frame_outputs"]:
        assert fo["pred_logits"].shape == (6, 10, K + 1) and fo["pred_masks"].shape == (6, 10, hf, wf)
    # The summary keys every method has: last step, last copy; each frame's masks from its own step.
    assert out["pred_logits"].shape == (2, cq, K + 1)
    assert out["pred_masks"].shape == (2, cq, 3, hf, wf)
    assert torch.equal(out["pred_masks"][:, :, 1], out["steps"][1]["pred_masks"][-1, :, :, 0])

    crit = grattvis_criterion(K, num_points=256)
    losses = crit(out, batch.targets)
    assert set(losses) == set(crit.weight_dict)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    model.zero_grad()
    sum(crit.weight_dict[k] * v for k, v in losses.items()).backward()
    assert model.vita_module.prop_instance.weight.grad is not None
    assert model.vita_module.vita_mask_features.weight.grad.abs().sum() > 0


def test_propagation_gradient_reaches_the_first_step(model):
    model.train()
    out = model(clip_batch(b=1, t=3))
    first = out["steps"][0]["prop_query"]
    (grad,) = torch.autograd.grad(out["steps"][-1]["pred_logits"].sum(), first)
    assert grad.abs().sum() > 0


def test_memory_is_written_once_per_step_and_read_by_the_next():
    m = tiny_model(use_mem=True).train()
    out = m(clip_batch(b=1, t=3))
    (grad,) = torch.autograd.grad(
        out["steps"][-1]["pred_logits"].sum(), m.vita_module.pre_memory_embed_k.weight
    )
    assert grad.abs().sum() > 0


def test_frames_not_a_multiple_of_the_window_is_a_clear_error():
    m = tiny_model(window=2).train()
    with pytest.raises(ValueError, match="LEN_CLIP_WINDOW"):
        m(clip_batch(b=1, t=3))


# ---------------------------------------------------------------------------------------- online API
def test_preprocess_normalises_then_pads_with_zero(model):
    frames = torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8)
    images, size = model.preprocess(frames)
    assert size == (50, 70) and images.shape == (2, 3, 64, 96) and images.dtype == torch.float32
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    torch.testing.assert_close(images[:, :, :50, :70], (frames.float() - mean) / std)
    assert images[:, :, 50:].abs().sum() == 0 and images[:, :, :, 70:].abs().sum() == 0


def test_init_state_is_query_feat_and_an_empty_memory(model):
    state = model.init_state(2)
    assert isinstance(state, OnlineState) and state.num_frames == 0 and len(state.memory) == 0
    assert state.query.shape == (model.num_queries, 2, 64)
    assert torch.equal(state.query[:, 1], model.vita_module.query_feat.weight)


def test_online_steps_shapes_and_equal_the_whole_clip_eval_forward(model):
    model.eval()
    batch = clip_batch(b=2, t=3, seed=1)
    with torch.no_grad():
        whole = model(batch)
        state = model.init_state(2)
        for t in range(3):
            out, state = model.online_step(batch.frames[:, t], state)
            assert out["pred_logits"].shape == (2, model.num_queries, K + 1)
            assert out["pred_mask_embed"].shape == (2, model.num_queries, 32)
            assert out["mask_features"].shape == (2, 32, H // 4, W // 4)
            assert out["gates"].shape == (2, model.num_queries)
            assert set(out["gates"].unique().tolist()) <= {0.0, 1.0}
            torch.testing.assert_close(out["pred_logits"], whole["steps"][t]["pred_logits"][0])
            masks = torch.einsum("bqc,bchw->bqhw", out["pred_mask_embed"], out["mask_features"])
            torch.testing.assert_close(masks, whole["pred_masks"][:, :, t])
    assert state.num_frames == 3 and whole["num_layers_copies"] == 1


def test_online_gates_are_deterministic_and_none_without_gated_prop(model):
    model.eval()
    x = clip_batch(b=1, t=1).frames[:, 0]
    with torch.no_grad():
        a, _ = model.online_step(x, model.init_state(1))
        b, _ = model.online_step(x, model.init_state(1))
        assert torch.equal(a["gates"], b["gates"])
        m = tiny_model(gated_prop=False).eval()
        out, _ = m.online_step(x, m.init_state(1))
    assert out["gates"] is None


def test_online_step_refuses_training_mode_and_a_mismatched_state():
    m = tiny_model().train()
    x = clip_batch(b=1, t=1).frames[:, 0]
    with pytest.raises(RuntimeError, match="eval"):
        m.online_step(x, m.init_state(1))
    m.eval()
    with pytest.raises(ValueError, match="state holds 2"):
        m.online_step(x, m.init_state(2))


# ---------------------------------------------------------------------------------------- builder
def _tiny_cfg(*opts: str):
    return load_config("quickstart/grattvis_tiny.yaml", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(K), *opts])


def test_builder_maps_the_config_and_the_official_spelling_builds_the_same_method():
    from vidseg.models import build_model

    bundle = build_model(_tiny_cfg("MODEL.META_ARCHITECTURE", "Grattvis"))
    m = bundle.model
    assert isinstance(m, GRAttVIS) and m.freeze_detector and m.num_classes == K
    head = m.vita_module
    assert (head.hidden_dim, head.num_queries, head.num_layers, head.enc_layers) == (64, 10, 3, 1)
    assert head.gated_prop and not head.use_mem and head.window == 1
    assert m.sem_seg_head.predictor.num_frame_query_layers == 3  # MODEL.VITA.LAST_LAYER_NUM
    w = bundle.criterion.weight_dict
    assert (w["loss_genvis_ce"], w["loss_genvis_mask"], w["loss_genvis_dice"], w["loss_genvis_sim"]) == (
        2.0, 5.0, 5.0, 0.5,
    )  # fmt: skip
    assert {"loss_genvis_ce_0", "loss_genvis_dice_1"} <= set(w) and "loss_genvis_ce_2" not in w
    assert "loss_genvis_gate" not in w  # GATE_WEIGHT 0, as every shipped config
    gated = build_model(_tiny_cfg("MODEL.GENVIS.GATE_WEIGHT", "1.0")).criterion.weight_dict
    assert gated["loss_genvis_gate"] == 1.0 and gated["loss_genvis_gate_1"] == 1.0


def test_param_groups_train_only_the_head_with_the_adamw_rule():
    from vidseg.models import build_model

    bundle = build_model(_tiny_cfg("SOLVER.BASE_LR", "0.001"))
    groups = {g["name"]: g for g in bundle.param_groups(bundle.model)}
    params = [p for g in groups.values() for p in g["params"]]
    assert len(params) == len(list(bundle.model.vita_module.parameters()))  # frozen detector left out
    assert not any(n.startswith("backbone") for n in groups)
    head = bundle.model.vita_module
    by_id = {id(p): g for g in groups.values() for p in g["params"]}
    assert by_id[id(head.decoder_norm.weight)]["weight_decay"] == 0.0  # norms
    assert by_id[id(head.query_feat.weight)]["weight_decay"] == 0.0  # embeddings
    assert by_id[id(head.class_embed.weight)]["weight_decay"] == 0.05
    assert all(g["lr"] == 0.001 for g in groups.values())
    # Unfrozen, the backbone joins at BACKBONE_MULTIPLIER 0.1 times the LR.
    free = build_model(_tiny_cfg("SOLVER.BASE_LR", "0.001", "MODEL.VITA.FREEZE_DETECTOR", "False"))
    lrs = {g["name"]: g["lr"] for g in free.param_groups(free.model)}
    assert lrs["backbone"] == pytest.approx(1e-4) and lrs["head"] == 0.001


def test_builder_rejects_a_head_width_other_than_the_detector_s():
    from vidseg.models import build_model

    with pytest.raises(ValueError, match="MODEL.VITA.HIDDEN_DIM 32 must equal MODEL.MASK_FORMER.HIDDEN_DIM"):
        build_model(_tiny_cfg("MODEL.VITA.HIDDEN_DIM", "32"))


def test_without_deep_supervision_there_are_no_aux_outputs_nor_aux_losses():
    from vidseg.models import build_model

    bundle = build_model(_tiny_cfg("MODEL.VITA.DEEP_SUPERVISION", "False"))
    batch = clip_batch(b=1, t=3)
    out = bundle.model.train()(batch)
    assert all(s["aux_outputs"] == [] for s in out["steps"])
    losses = bundle.criterion(out, batch.targets)
    assert not any(k.endswith(("_0", "_1")) for k in losses) and "loss_genvis_sim" in losses


def test_online_steps_with_memory_grow_it_by_one_entry_per_frame_and_match_the_eval_forward():
    m = tiny_model(use_mem=True).eval()
    batch = clip_batch(b=1, t=3, seed=2)
    with torch.no_grad():
        whole = m(batch)
        state = m.init_state(1)
        for t in range(3):
            out, state = m.online_step(batch.frames[:, t], state)
            assert len(state.memory) == t + 1
            torch.testing.assert_close(out["pred_logits"], whole["steps"][t]["pred_logits"][0])
