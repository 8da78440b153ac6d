"""Official DeVIS per-clip outputs on generated weights and given backbone features (issue 14).

Builds the official ``DeVIS`` (``src/models/devis_segmentation.py``: Deformable DETR with the DeVIS
transformer, the temporal position encoding, the mask head, the post-processor) from the official config
(``src/config.py`` defaults + ``configs/devis/YT-19/devis_R_50_YT-19.yaml`` + the small sizes of the test's
``OPTS``) the way ``src/models/__init__.py:build_model`` does, except that the ResNet body returns fixed
feature maps. Loads the weights of the test's ``generated_weights`` (official names, the same as vidseg's),
runs one clip per case and saves the outputs to ``tests/fixtures/official_parity/devis_model.pt``.

Shims (nothing of them is on the compared path except as noted): ``MultiScaleDeformableAttention`` (the CUDA
op) -> the official pure-PyTorch ``ms_deform_attn_core_pytorch`` of the same repository; torchvision ->
``deform_conv2d`` from ``vidseg.ops`` (the mask head's modulated deformable conv, torchvision semantics),
``box_area`` and ``interpolate`` written out; visdom / timm -> empty names (imported, unused here).

Usage (needs the official mirror, never committed):
``PYTHONPATH=. python scripts/official_parity/devis_model.py``
"""

from __future__ import annotations

import collections
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "models_devis"))
import test_devis_official_parity as spec  # noqa: E402  (sizes, weights, features: shared with the test)
from _official import AssignmentMargins, extract, official_definition, save_fixture, stub_packages  # noqa: E402

from vidseg.ops import deform_conv2d  # noqa: E402

REPO = "acaelles97+DeVIS"


def _shim_imports() -> None:
    def box_area(boxes):
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
        return F.interpolate(input, size, scale_factor, mode, align_corners)

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.0"
    tv.ops = types.ModuleType("torchvision.ops")
    tv.ops.deform_conv2d = deform_conv2d
    tv.ops.boxes = types.ModuleType("torchvision.ops.boxes")
    tv.ops.boxes.box_area = box_area
    tv.ops.misc = types.ModuleType("torchvision.ops.misc")
    tv.ops.misc.interpolate = interpolate
    tv.models = types.ModuleType("torchvision.models")
    tv.models._utils = types.ModuleType("torchvision.models._utils")
    tv.models._utils.IntermediateLayerGetter = None
    for m in (tv, tv.ops, tv.ops.boxes, tv.ops.misc, tv.models, tv.models._utils):
        sys.modules[m.__name__] = m
    visdom = types.ModuleType("visdom")
    visdom.Visdom = type("Visdom", (), {})
    timm = types.ModuleType("timm")
    timm.models = types.ModuleType("timm.models")
    timm.models.layers = types.ModuleType("timm.models.layers")
    timm.models.layers.DropPath = timm.models.layers.to_2tuple = timm.models.layers.trunc_normal_ = None
    msda = types.ModuleType("MultiScaleDeformableAttention")

    def ms_deform_attn_forward(value, shapes, level_start, locations, weights, im2col_step):
        core = sys.modules["src.models.ops.functions.ms_deform_attn_func"].ms_deform_attn_core_pytorch
        return core(value, shapes, locations, weights)

    msda.ms_deform_attn_forward = ms_deform_attn_forward
    viz = types.ModuleType("src.util.viz_utils")  # the tracker's visualisation (cv2, matplotlib): unused
    for what in ("tracks_independently", "clips_after_processing", "results_merged"):
        setattr(viz, f"visualize_{what}", lambda *a, **k: None)
    sys.modules.update({
        "visdom": visdom, "timm": timm, "timm.models": timm.models, "timm.models.layers": timm.models.layers,
        "MultiScaleDeformableAttention": msda, "src.util.viz_utils": viz,
    })  # fmt: skip


def official_cfg(root: Path, config: str, extra: list | tuple = ()):
    from src.config import get_cfg_defaults  # noqa: PLC0415 (the official code, from the temp copy)

    cfg = get_cfg_defaults()
    cfg.merge_from_file(str(root / config))
    cfg.merge_from_list([x for kv in spec.OPTS + list(extra) for x in kv])
    return cfg


def build_official(
    root: Path, config: str, feats: dict[str, torch.Tensor], per_frame: bool = False, extra: list | tuple = ()
) -> nn.Module:
    """``build_model``'s DeVIS branch with a body that returns ``feats`` (official BackboneBase masks)."""
    from src.models.backbone import BackboneBase, Joiner, build_position_encoding  # noqa: PLC0415
    from src.models.deformable_detr import DeformableDETR  # noqa: PLC0415
    from src.models.devis_ablation_transformer_wo_t_conn import build_devis_ablation_transformer  # noqa: PLC0415
    from src.models.devis_segmentation import DeVIS, DeVISPostProcessor  # noqa: PLC0415
    from src.models.devis_transformer import build_devis_transformer  # noqa: PLC0415

    cfg = official_cfg(root, config, extra)

    class Body(nn.Module):
        def forward(self, x):
            # per_frame: feats has every frame of the video, pixel (0, 0, 0) of a frame is its index
            idx = x[:, 0, 0, 0].round().long() if per_frame else slice(None)
            return collections.OrderedDict((str(i), f[idx]) for i, f in enumerate(feats.values()))

    base = BackboneBase.__new__(BackboneBase)
    nn.Module.__init__(base)
    base.body = Body()
    base.strides = [s for _, s in spec.LEVELS.values()]
    base.num_channels = [c for c, _ in spec.LEVELS.values()]
    backbone = Joiner(base, build_position_encoding(cfg))
    m = cfg.MODEL
    no_temporal = m.DEVIS.DEFORMABLE_ATTENTION.DISABLE_TEMPORAL_CONNECTIONS
    transformer = (build_devis_ablation_transformer if no_temporal else build_devis_transformer)(cfg)
    def_detr = DeformableDETR(
        backbone=backbone, transformer=transformer, num_classes=spec.NUM_CLASSES - 1,
        num_queries=m.NUM_QUERIES, aux_loss=m.LOSS.AUX_LOSS, num_feature_levels=m.NUM_FEATURE_LEVELS,
        with_box_refine=m.WITH_BBX_REFINE, with_ref_point_refine=m.WITH_REF_POINT_REFINE,
        with_gradient=m.BBX_GRADIENT_PROP,
    )  # fmt: skip
    post = DeVISPostProcessor(m.LOSS.FOCAL_LOSS, cfg.TEST.NUM_OUT, cfg.TEST.USE_TOP_K, m.DEVIS.NUM_FRAMES)
    return DeVIS(
        defdetr=def_detr, matcher=None, mask_head_used_features=m.MASK_HEAD.USED_FEATURES,
        att_maps_used_res=m.MASK_HEAD.UPSAMPLING_RESOLUTIONS, use_deformable_conv=m.MASK_HEAD.USE_MDC,
        post_processor=post, mask_aux_loss=m.LOSS.MASK_AUX_LOSS, num_frames=m.DEVIS.NUM_FRAMES,
        add_3d_conv_head=m.MASK_HEAD.DEVIS.CONV_HEAD_3D,
    )  # fmt: skip


def main() -> None:
    root, commit = extract(REPO)
    _shim_imports()
    stub_packages(root, "src", "src.models", "src.util", "src.datasets")
    from src.util.misc import NestedTensor  # noqa: PLC0415

    data: dict = {"cases": {}}
    for name, (config, padded, image, orig, clip_length) in spec.CASES.items():
        model = build_official(root, config, spec.backbone_features(padded))
        sd = model.state_dict()
        weights = spec.generated_weights(sd)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        assert not unexpected and all(not sd[k].is_floating_point() for k in missing), (missing, unexpected)
        model.eval()
        seen: dict = {}
        model.def_detr.register_forward_hook(lambda mod, i, o, seen=seen: seen.update(out=o[0]))
        samples = NestedTensor(torch.zeros(3, 3, *padded), spec.pad_mask(padded, image))
        with torch.no_grad():
            res = model(samples, {"tgt_size": orig, "clip_length": clip_length})
        out, keys = seen["out"], ("pred_logits", "pred_boxes")
        data["cases"][name] = {
            "pred_logits": out["pred_logits"].clone(),
            "pred_boxes": out["pred_boxes"].clone(),
            "aux_outputs": [{k: a[k].clone() for k in keys} for a in out["aux_outputs"]],
            **{k: res[k].clone() for k in ("scores", "labels", "center_points", "boxes", "masks")},
            "inverse_idxs": res["inverse_idxs"].clone(),
            "top_k_idxs": res["top_k_idxs"].clone(),
            "official_keys": {k: list(v.shape) for k, v in sd.items() if v.is_floating_point()},
        }
        print(name, {k: tuple(v.shape) for k, v in data["cases"][name].items() if torch.is_tensor(v)})
    data["videos"] = {name: run_official_video(root, *video) for name, video in spec.VIDEOS.items()}
    save_fixture("devis_model.pt", data, commit, REPO)


def run_official_video(root: Path, n: int, size: tuple[int, int], orig: tuple[int, int]) -> dict:
    """The official ``Tracker`` (``build_tracker``) with the official model over a video of ``n`` frames.

    Its clips come from ``VISValDataset.parse_video_into_clips`` and ``VideoClip`` (src/datasets/vis.py,
    whose imports need cv2: run from their source), with frames that carry their index.
    """
    import src.models.matcher as matcher_mod  # noqa: PLC0415
    import src.models.tracker as tracker_mod  # noqa: PLC0415

    cfg = official_cfg(root, spec.YT19, [*spec.VIDEO_OPTS, ("NUM_WORKERS", 0)])
    feats = spec.backbone_features(size, seed=spec.VIDEO_FEATURE_SEED, frames=n)
    model = build_official(root, spec.YT19, feats, per_frame=True, extra=spec.VIDEO_OPTS)
    missing, unexpected = model.load_state_dict(spec.generated_weights(model.state_dict()), strict=False)
    assert not unexpected and all(not model.state_dict()[k].is_floating_point() for k in missing)
    model.eval()
    ns = {"torch": torch, "os": None, "Image": None}
    vis = root / "src" / "datasets" / "vis.py"
    video_clip = official_definition(vis, "VideoClip", ns)

    class IndexedVideoClip(video_clip):
        def __getitem__(self, item):
            return torch.stack([spec.video_frame(int(f.split("/")[1]), size) for f in self.video_clips[item]])

    ns["VideoClip"] = IndexedVideoClip
    parse = official_definition(vis, "parse_video_into_clips", ns, "VISValDataset")
    t = cfg.MODEL.DEVIS.NUM_FRAMES
    dataset = types.SimpleNamespace(
        max_clip_length=t, overlap_window=t - cfg.TEST.CLIP_TRACKING.STRIDE, cat_names=None,
        annotations={"videos": [{
            "id": 1, "length": n, "file_names": [f"v/{i}" for i in range(n)], "height": orig[0],
            "width": orig[1],
        }]},
    )  # fmt: skip
    (video,) = parse(dataset, None, "")
    build_tracker = official_definition(
        root / "src" / "models" / "__init__.py", "build_tracker",
        {"Tracker": tracker_mod.Tracker, "build_inference_matcher": matcher_mod.build_inference_matcher},
    )  # fmt: skip
    slots: list = []
    model.register_forward_hook(lambda m, i, o: slots.append(o["top_k_idxs"]))
    with AssignmentMargins(matcher_mod) as margins:
        tracks, _ = build_tracker(model, cfg)(video, "cpu", [])
    distinct = all(len(set(s.tolist())) == len(s) for s in slots)
    margin = margins.smallest
    print(
        f"video of {n} frames: {len(video)} clips, {len(tracks)} tracks, distinct {distinct}, margin {margin}"
    )
    return {"tracks": tracks, "distinct_slots": distinct, "assignment_margin": margin}


if __name__ == "__main__":
    main()
