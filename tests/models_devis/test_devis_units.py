"""DeVIS video-model parts: the temporal attention wiring, clip targets, the clip matching the model and the
criterion share, the aux-loss weighting of the final configs, parameter groups, position encodings."""

import math

import pytest
import torch

import vidseg.ops.msda_modules as msda_modules
from vidseg.models import load_config
from vidseg.models.deformable_detr.transformer import DeformableTransformerDecoderLayer
from vidseg.models.devis.build import build_criterion, build_devis, build_temporal_attention
from vidseg.models.devis.clip_targets import INVALID_BOX_SIZE, clip_targets, fill_invalid_boxes
from vidseg.models.devis.position import LearnedTemporalPositionEmbedding, SineSpatioTemporalPositionEmbedding
from vidseg.structures.clip_batch import ClipBatch, ClipTargets

T, NQ, C = 3, 4, 64
SHAPES = torch.tensor([[8, 8], [4, 4]])
START = torch.tensor([0, 64])


def _tiny_cfg(*opts):
    base = ["MODEL.HIDDEN_DIM", str(C), "MODEL.NUM_FEATURE_LEVELS", "2", "MODEL.DEVIS.NUM_FRAMES", str(T)]
    return load_config("quickstart/devis_tiny.yaml", base + ["INPUT.NUM_FRAMES", str(T), *opts])


def _decoder_layer(cfg) -> DeformableTransformerDecoderLayer:
    _, dec = build_temporal_attention(cfg)
    return DeformableTransformerDecoderLayer(dec, C, 32, 0.0, 8, clip_queries=True).eval()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tgt = torch.randn(1, T * NQ, C, generator=g)
    pos = torch.randn(1, T * NQ, C, generator=g)
    # A distinct box per (frame, slot): centres on a grid, sizes 0.1-0.3.
    boxes = torch.rand(1, T * NQ, 4, generator=g) * torch.tensor([0.6, 0.6, 0.2, 0.2]) + torch.tensor(
        [0.2, 0.2, 0.1, 0.1]
    )
    refs = boxes[:, :, None].expand(1, T * NQ, 2, 4).contiguous()
    memory = torch.randn(T, 80, C, generator=g)
    return tgt, pos, refs, memory


def test_a_slot_samples_the_same_slot_box_in_the_other_frames(monkeypatch):
    seen = {}
    original = msda_modules.temporal_ms_deform_attn

    def spy(value, shapes, start, cur, a_cur, tmp, a_tmp, frames, impl="auto"):
        seen.update(cur=cur, tmp=tmp, frames=frames)
        return original(value, shapes, start, cur, a_cur, tmp, a_tmp, frames, impl=impl)

    monkeypatch.setattr(msda_modules, "temporal_ms_deform_attn", spy)
    layer = _decoder_layer(_tiny_cfg())
    attn = layer.cross_attn
    with torch.no_grad():  # zero offsets: every point sits at its reference box centre
        for lin in (attn.sampling_offsets, attn.temporal_sampling_offsets):
            lin.weight.zero_()
            lin.bias.zero_()
    tgt, pos, refs, memory = _inputs()
    layer(tgt, pos, refs, memory, SHAPES, START, None)
    box = refs[0, :, 0].view(T, NQ, 4)
    frames = seen["frames"]
    assert frames.tolist() == [[1, 2], [0, 2], [0, 1]]
    tmp = seen["tmp"]  # [T, Nq, M, W, L, Kt, 2]
    for t in range(T):
        for i in range(NQ):
            for j, u in enumerate(frames[t].tolist()):
                # slot i of frame t samples frame u around slot i's box in frame u
                assert torch.allclose(tmp[t, i, :, j], box[u, i, :2].expand_as(tmp[t, i, :, j]))
            assert torch.allclose(seen["cur"][t, i], box[t, i, :2].expand_as(seen["cur"][t, i]))
    # Not instance-aware: around its own box in every other frame.
    monkeypatch.setattr(msda_modules, "temporal_ms_deform_attn", spy)
    layer = _decoder_layer(_tiny_cfg("MODEL.DEVIS.DEFORMABLE_ATTENTION.INSTANCE_AWARE_ATTENTION", "False"))
    with torch.no_grad():
        layer.cross_attn.temporal_sampling_offsets.weight.zero_()
        layer.cross_attn.temporal_sampling_offsets.bias.zero_()
    layer(tgt, pos, refs, memory, SHAPES, START, None)
    assert torch.allclose(seen["tmp"][1, 2, :, 0], box[1, 2, :2].expand_as(seen["tmp"][1, 2, :, 0]))


def _frame_outputs(layer, memory):
    tgt, pos, refs, _ = _inputs()
    with torch.no_grad():
        return layer(tgt, pos, refs, memory, SHAPES, START, None).view(T, NQ, C)


@pytest.mark.parametrize(
    "opts",
    [
        ("MODEL.DEVIS.DEFORMABLE_ATTENTION.DEC_N_POINTS_TEMPORAL_FRAME", "0"),
        ("MODEL.DEVIS.DEFORMABLE_ATTENTION.DISABLE_TEMPORAL_CONNECTIONS", "True"),
    ],
)
def test_k_temp_zero_samples_the_current_frame_only(opts):
    layer = _decoder_layer(_tiny_cfg(*opts))
    assert not any("temporal" in n for n, _ in layer.named_parameters())
    _, _, _, memory = _inputs()
    other = memory.clone()
    other[2] += 5.0  # change frame 2 only
    a, b = _frame_outputs(layer, memory), _frame_outputs(layer, other)
    assert torch.equal(a[:2], b[:2]) and not torch.allclose(a[2], b[2])
    # ... whereas with temporal points frame 0 sees frame 2.
    temporal = _decoder_layer(_tiny_cfg())
    a, b = _frame_outputs(temporal, memory), _frame_outputs(temporal, other)
    assert not torch.allclose(a[0], b[0])


def test_encoder_k_temp_zero_is_per_frame_and_window_reflects():
    enc, _ = build_temporal_attention(
        _tiny_cfg("MODEL.DEVIS.DEFORMABLE_ATTENTION.ENC_N_POINTS_TEMPORAL_FRAME", "0")
    )
    assert type(enc).__name__ == "MSDeformAttn"
    cfg = _tiny_cfg(
        "MODEL.DEVIS.DEFORMABLE_ATTENTION.ENC_CONNECT_ALL_FRAMES",
        "False",
        "MODEL.DEVIS.DEFORMABLE_ATTENTION.ENC_TEMPORAL_WINDOW",
        "2",
    )
    enc, _ = build_temporal_attention(cfg)
    assert enc.n_temporal_frames == 2 and enc.temporal_sampling_offsets.out_features == 8 * 2 * 2 * 2 * 2


def test_clip_targets_fill_invalid_frames_with_the_nearest_valid_box():
    boxes = torch.tensor(
        [[[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], [0, 0, 0, 0], [0.5, 0.6, 0.1, 0.1], [0, 0, 0, 0]]]
    )
    valid = torch.tensor([[True, False, False, True, False]])
    filled = fill_invalid_boxes(boxes, valid)
    assert filled[0, 1].tolist() == pytest.approx([0.1, 0.2, INVALID_BOX_SIZE, INVALID_BOX_SIZE])
    # frame 2 is at distance 2 from frame 0 and 1 from frame 3
    assert filled[0, 2].tolist() == pytest.approx([0.5, 0.6, INVALID_BOX_SIZE, INVALID_BOX_SIZE])
    assert filled[0, 4].tolist() == pytest.approx([0.5, 0.6, INVALID_BOX_SIZE, INVALID_BOX_SIZE])
    assert torch.equal(filled[0, [0, 3]], boxes[0, [0, 3]])
    tie = fill_invalid_boxes(
        torch.tensor([[[0.1, 0.1, 0.2, 0.2], [0, 0, 0, 0], [0.9, 0.9, 0.2, 0.2]]]),
        torch.tensor([[True, False, True]]),
    )
    assert tie[0, 1, :2].tolist() == pytest.approx([0.1, 0.1])  # a tie goes to the earlier frame

    masks = torch.zeros(2, 5, 6, 6, dtype=torch.bool)
    masks[0, 0, :2, :2] = masks[0, 3, 3:, 3:] = True
    masks[1, :, 1:4, 1:4] = True
    t = ClipTargets(
        labels=torch.tensor([2, 1]),
        ids=torch.tensor([7, 8]),
        masks=masks,
        boxes=torch.cat([boxes, torch.full((1, 5, 4), 0.5)]),
        valid=torch.cat([valid, torch.ones(1, 5, dtype=torch.bool)]),
        iscrowd=torch.tensor([False, True]),
    )
    d = clip_targets(t)
    assert d["labels"].tolist() == [2] * 5  # the crowd instance is dropped; every frame has the label
    assert d["valid"].tolist() == valid[0].tolist()
    assert d["boxes"][2].tolist() == pytest.approx([0.5, 0.6, INVALID_BOX_SIZE, INVALID_BOX_SIZE])
    assert d["masks"].shape == (5, 6, 6) and not d["masks"][[1, 2, 4]].any() and d["masks"][3].any()


def _tiny_bundle():
    torch.manual_seed(0)
    cfg = load_config("quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "3"])
    return cfg, build_devis(cfg)


def test_the_model_masks_exactly_the_matched_trajectories_in_criterion_order():
    cfg, bundle = _tiny_bundle()
    model = bundle.model.train()
    h = w = 64
    masks = torch.zeros(2, T, h, w, dtype=torch.bool)
    masks[0, :, 5:20, 5:20] = True
    masks[1, :2, 30:50, 30:60] = True  # invisible in the last frame
    from vidseg.structures.box_ops import box_xyxy_to_cxcywh, masks_to_boxes

    boxes = box_xyxy_to_cxcywh(masks_to_boxes(masks.flatten(0, 1))).view(2, T, 4) / w
    valid = masks.flatten(2).any(-1)
    boxes = boxes * valid[..., None]
    tgt = ClipTargets(
        labels=torch.tensor([0, 2]), ids=torch.tensor([1, 2]), masks=masks, boxes=boxes, valid=valid
    )
    batch = ClipBatch(
        frames=torch.randn(1, T, 3, h, w), pad_mask=torch.zeros(1, T, h, w, dtype=torch.bool), targets=[tgt]
    )
    out = model(batch)
    nq = cfg.MODEL.NUM_QUERIES // T
    for layer in (out, out["aux_outputs"][0]):
        (pred_idx, tgt_idx, v) = layer["indices"][0]
        assert pred_idx.shape == (2 * T,) and layer["pred_masks"].shape == (1, 2 * T, h // 4, w // 4)
        slots = pred_idx.view(2, T) % nq
        assert (slots == slots[:, :1]).all()  # one trajectory = the same slot in every frame
        assert (pred_idx.view(2, T) // nq == torch.arange(T)).all()
        assert tgt_idx.view(2, T)[:, 0].sort().values.tolist() == [0, T]
        inst = tgt_idx.view(2, T)[:, 0] // T
        assert v.view(2, T).tolist() == valid[inst].tolist()
    losses = bundle.criterion(out, batch.targets)
    assert {"loss_ce", "loss_bbox", "loss_mask", "loss_dice", "loss_mask_0", "loss_ce_0"} <= set(losses)
    assert all(torch.isfinite(losses[k]) for k in bundle.criterion.weight_dict)


def test_final_config_aux_weighting_and_param_groups():
    cfg = load_config("devis/YT-19/devis_R_50_YT-19.yaml")
    weights = build_criterion(cfg, 40).weight_dict
    expect = {"loss_ce": 1.0, "loss_bbox": 2.5, "loss_giou": 1.0, "loss_mask": 1.0, "loss_dice": 1.0}
    for i, coef in enumerate([1, 2, 3, 4, 5]):
        expect.update(
            {f"loss_ce_{i}": 2 * coef / 30, f"loss_bbox_{i}": 5 * coef / 30, f"loss_giou_{i}": 2 * coef / 30}
        )
    expect.update({"loss_mask_2": 1.0, "loss_dice_2": 1.0})
    assert weights == pytest.approx(expect)
    # Without weighting every layer has the base weights.
    off = build_criterion(
        load_config("devis/YT-19/devis_R_50_YT-19.yaml", ["MODEL.LOSS.AUX_LOSS_WEIGHTING", "False"]), 40
    )
    assert off.weight_dict["loss_ce_0"] == off.weight_dict["loss_ce"] == 2.0

    _, bundle = _tiny_bundle()
    groups = {g["name"]: g for g in bundle.param_groups(bundle.model)}
    names = {id(p): n for n, p in bundle.model.named_parameters()}
    lr = 4e-4
    assert groups["backbone"]["lr"] == pytest.approx(2e-4)
    assert groups["linear_proj"]["lr"] == groups["temporal_linear_proj"]["lr"] == pytest.approx(0.1 * lr)
    assert groups["mask_head"]["lr"] == pytest.approx(5 * lr)  # LR_MASK_HEAD_MULT 5 in the tiny config
    tmp = [names[id(p)] for p in groups["temporal_linear_proj"]["params"]]
    assert tmp and all("temporal_sampling_offsets" in n for n in tmp)
    lin = [names[id(p)] for p in groups["linear_proj"]["params"]]
    assert any("reference_points" in n for n in lin) and not any("temporal" in n for n in lin)
    base = [names[id(p)] for p in groups["base"]["params"]]
    assert any("temporal_embed" in n for n in base) and any("temporal_attention_weights" in n for n in base)


def test_temporal_position_encodings_reach_every_frame():
    mask = torch.zeros(3, 5, 7, dtype=torch.bool)
    learned = LearnedTemporalPositionEmbedding(16, 3)
    pos = learned(mask)
    assert pos.shape == (3, 16, 5, 7)
    assert torch.allclose(
        pos[1] - pos[0],
        (learned.temporal_embed[1] - learned.temporal_embed[0])[:, None, None].expand(16, 5, 7),
    )
    with pytest.raises(ValueError, match="MODEL.DEVIS.NUM_FRAMES"):
        learned(torch.zeros(4, 5, 7, dtype=torch.bool))
    sine = SineSpatioTemporalPositionEmbedding(32)(mask)
    assert sine.shape == (3, 32, 5, 7) and not torch.allclose(sine[0], sine[2])
    assert torch.equal(sine[:, 30:], torch.zeros_like(sine[:, 30:]))  # 3 x 10 channels, then zeros
    assert math.isclose(float(sine[0, 0, 0, 0]), math.sin(2 * math.pi / 3), rel_tol=1e-5)


def test_the_sine_temporal_encoding_builds_a_model_without_temporal_embed():
    cfg = load_config(
        "quickstart/devis_tiny.yaml", ["MODEL.NUM_CLASSES", "2", "MODEL.DEVIS.TEMPORAL_EMBEDDING", "sine"]
    )
    model = build_devis(cfg).model.eval()
    assert not any("temporal_embed" in k for k in model.state_dict())
    with torch.no_grad():
        out = model(torch.randn(T, 3, 64, 64))
    assert out["pred_logits"].shape == (1, 18, 2) and out["pred_masks"][0].shape[1:] == (T, 16, 16)


def test_decoder_self_attention_spans_the_queries_of_all_frames():
    # Even without temporal connections the query self-attention joins the frames (devis.md §2.7).
    layer = _decoder_layer(_tiny_cfg("MODEL.DEVIS.DEFORMABLE_ATTENTION.DISABLE_TEMPORAL_CONNECTIONS", "True"))
    tgt, pos, refs, memory = _inputs()
    other = tgt.clone()
    other[0, 2 * NQ + 1] += 3.0  # slot 1 of frame 2
    with torch.no_grad():
        a = layer(tgt, pos, refs, memory, SHAPES, START, None).view(T, NQ, C)
        b = layer(other, pos, refs, memory, SHAPES, START, None).view(T, NQ, C)
    assert not torch.allclose(a[0], b[0])


@pytest.mark.parametrize(
    "config",
    [
        "devis/ablations/devis_ablation0_deformable_vistr.yaml",
        "devis/ablations/devis_ablation1_deformable_vistr_wo_temp_conn.yaml",
    ],
)
def test_deformable_vistr_ablations_train_and_infer_on_36_frames(config):
    """The Table-1 Deformable VisTR rows at a CPU size (ResNet-18, hidden 128, 1+1 layers, 64x64): T = 36,
    one /32 level, the 3-d conv head; forward, losses and backward, then the per-clip top-k masks."""
    small = ["MODEL.BACKBONE", "resnet18", "MODEL.HIDDEN_DIM", "128", "MODEL.DIM_FEEDFORWARD", "128"]
    small += ["MODEL.TRANSFORMER.ENCODER_LAYERS", "1", "MODEL.TRANSFORMER.DECODER_LAYERS", "1"]
    small += ["MODEL.NUM_CLASSES", "2", "MODEL.WEIGHTS", "", "MODEL.DEFORM_ATTN_IMPL", "torch"]
    torch.manual_seed(0)
    cfg = load_config(config, small)
    bundle = build_devis(cfg)
    model = bundle.model.train()
    assert model.conv_head_3d is not None and model.num_frames == 36
    t, h, w = 36, 64, 64
    masks = torch.zeros(1, t, h, w, dtype=torch.bool)
    masks[0, :30, 10:30, 10:30] = True  # gone in the last 6 frames
    valid = masks.flatten(2).any(-1)
    boxes = torch.tensor([20 / w, 20 / h, 20 / w, 20 / h]).expand(1, t, 4) * valid[..., None]
    tgt = ClipTargets(labels=torch.tensor([1]), ids=torch.tensor([1]), masks=masks, boxes=boxes, valid=valid)
    batch = ClipBatch(
        frames=torch.randn(1, t, 3, h, w), pad_mask=torch.zeros(1, t, h, w, dtype=torch.bool), targets=[tgt]
    )
    out = model(batch)
    assert out["pred_logits"].shape == (1, 360, 2) and out["pred_masks"].shape == (1, t, 16, 16)
    losses = bundle.criterion(out, batch.targets)
    assert "loss_mask" in losses and not any(k.startswith("loss_mask_") for k in losses)  # MASK_AUX_LOSS []
    total = sum(
        bundle.criterion.weight_dict[k] * v for k, v in losses.items() if k in bundle.criterion.weight_dict
    )
    total.backward()
    assert model.conv_head_3d[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        ev = model.eval()(batch)
    assert ev["pred_masks"][0].shape == (10, t, 16, 16)  # TEST.NUM_OUT 10 trajectories
