"""Official VITA/GRAtt-VIS detector head outputs on seed-generated weights and given backbone maps (issue 16).

Builds the official ``sem_seg_head`` of GRAtt-VIS (``mask2former/modeling/meta_arch/mask_former_head.py:
MaskFormerHead`` with ``MSDeformAttnPixelDecoder`` and VITA's ``VitaMultiScaleMaskedTransformerDecoder``)
from the official config chain of ``configs/grattvis/ovis/grattvis_R50_bs8.yaml`` (yacs, with the official
``add_maskformer2_config`` / ``add_vita_config`` / ``add_genvis_config``) plus the test's small sizes, loads
the test's ``generated_weights``, runs it in eval mode on the test's ResNet-50-shaped maps and saves the
outputs (per-layer logits and masks, the frame queries, the stride-4 features) to
``tests/fixtures/official_parity/gratt_detector.pt``.

Shims: detectron2's ``Conv2d`` / ``ShapeSpec`` / ``get_norm`` / ``Registry`` / ``configurable`` and fvcore's
fills (``_official.py``), the CUDA op -> the official ``ms_deform_attn_core_pytorch`` of the same copy.

Usage (needs the official mirror, never committed):
``PYTHONPATH=. python scripts/official_parity/gratt_detector.py``
"""

from __future__ import annotations

import sys
import types
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from yacs.config import CfgNode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "models_grattvis"))
import test_gratt_official_detector_parity as spec  # noqa: E402  (sizes, weights, maps: shared with the test)
from _official import extract, save_fixture, shim_detectron2, stub_packages  # noqa: E402

REPO = "Tanveer81+GRAttVIS"
CORE = "mask2former.modeling.pixel_decoder.ops.functions.ms_deform_attn_func"


class Registry(dict):
    """detectron2's ``Registry``: ``@REG.register()`` on a class, ``REG.get(name)``."""

    def __init__(self, name: str) -> None:
        super().__init__()

    def register(self, obj=None):
        def add(o):
            self[o.__name__] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name):
        return self[name]


class _Node(CfgNode):
    """A yacs node that creates a missing UPPER-case child node on access: stands in for detectron2's
    defaults, which the official ``add_*_config`` functions extend (``cfg.INPUT.CROP.X = ...``)."""

    def __getattr__(self, name):
        if name in self or not name.isupper():
            return super().__getattr__(name)
        self[name] = _Node(new_allowed=True)
        return self[name]


def _shim() -> None:
    shim_detectron2()
    layers = sys.modules["detectron2.layers"]
    layers.ShapeSpec = namedtuple("ShapeSpec", ["channels", "height", "width", "stride"], defaults=[None] * 4)
    layers.get_norm = lambda norm, c: None if not norm else {"GN": lambda: nn.GroupNorm(32, c)}[norm]()
    layers.DeformConv = None
    sys.modules["detectron2.config"].CfgNode = _Node
    modeling = types.ModuleType("detectron2.modeling")
    modeling.SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
    utils = types.ModuleType("detectron2.utils")
    registry = types.ModuleType("detectron2.utils.registry")
    registry.Registry = Registry
    sys.modules["fvcore.nn.weight_init"].c2_msra_fill = lambda m: None
    msda = types.ModuleType("MultiScaleDeformableAttention")
    msda.ms_deform_attn_forward = lambda v, s, lsi, loc, w, step: sys.modules[
        CORE
    ].ms_deform_attn_core_pytorch(v, s, loc, w)
    sys.modules.update({
        "detectron2.modeling": modeling, "detectron2.utils": utils, "detectron2.utils.registry": registry,
        "MultiScaleDeformableAttention": msda,
    })  # fmt: skip


def _merge_chain(cfg: CfgNode, path: Path) -> None:
    """detectron2's ``_BASE_`` chain: the bases first, then the file."""
    data = yaml.safe_load(path.read_text())
    base = data.pop("_BASE_", None)
    if base:
        _merge_chain(cfg, path.parent / base)
    cfg.merge_from_other_cfg(_Node(data))


def official_cfg(root: Path, config: str = spec.OFFICIAL_CONFIG, opts: list = spec.OPTS) -> CfgNode:
    """The official config functions on empty detectron2 nodes, then the official chain and the sizes."""
    from grattvis.config import add_genvis_config  # noqa: PLC0415 (the official code, from the temp copy)
    from mask2former.config import add_maskformer2_config  # noqa: PLC0415
    from vita.config import add_vita_config  # noqa: PLC0415

    cfg = _Node(new_allowed=True)
    add_maskformer2_config(cfg)
    add_vita_config(cfg)
    add_genvis_config(cfg)
    cfg.set_new_allowed(True)
    _merge_chain(cfg, root / config)
    cfg.merge_from_list([x for kv in opts for x in kv])
    return cfg


def main() -> None:
    root, commit = extract(REPO)
    _shim()
    stub_packages(
        root,
        "mask2former", "mask2former.modeling", "mask2former.modeling.pixel_decoder",
        "mask2former.modeling.transformer_decoder", "mask2former.modeling.meta_arch",
        "vita", "vita.modeling", "vita.modeling.transformer_decoder", "grattvis",
    )  # fmt: skip
    import mask2former.modeling.pixel_decoder.msdeformattn  # noqa: F401, PLC0415 (registers the decoder)
    import vita.modeling.transformer_decoder.vita_mask2former_transformer_decoder  # noqa: F401, PLC0415
    from detectron2.layers import ShapeSpec  # noqa: PLC0415
    from mask2former.modeling.meta_arch.mask_former_head import MaskFormerHead  # noqa: PLC0415

    cfg = official_cfg(root)
    shapes = {k: ShapeSpec(channels=c, stride=s) for k, (c, s) in spec.LEVELS.items()}
    head = MaskFormerHead(cfg, shapes)
    sd = head.state_dict()
    weights = spec.generated_weights({f"sem_seg_head.{k}": v for k, v in sd.items()})
    head.load_state_dict({k[len("sem_seg_head.") :]: v for k, v in weights.items()}, strict=True)
    head.eval()
    feats = spec.backbone_features()
    with torch.no_grad():
        out, frame_queries, clip_mask_features = head(feats)
    keys = ("pred_logits", "pred_masks")
    data = {
        "official_keys": {f"sem_seg_head.{k}": list(v.shape) for k, v in sd.items() if v.is_floating_point()},
        "pred_logits": out["pred_logits"],
        "pred_masks": out["pred_masks"],
        "aux_outputs": [{k: a[k] for k in keys} for a in out["aux_outputs"]],
        "frame_queries": frame_queries,
        "clip_mask_features": clip_mask_features,
    }
    print({k: tuple(v.shape) for k, v in data.items() if torch.is_tensor(v)}, len(data["aux_outputs"]))
    data["videos"] = {name: run_video(root, path) for name, path in spec.VIDEO_CONFIGS.items()}
    save_fixture("gratt_detector.pt", data, commit, REPO)


def run_video(root: Path, config: str) -> dict:
    """The official ``Grattvis.inference`` (its source) with the detector head (``MaskFormerHead``) and the
    VIS head (``GRAttVIS``) built from the official ``config`` chain; the backbone returns the maps of the
    frame whose index pixel (0, 0, 0) holds. Masks are stored bit-packed (``np.packbits``)."""
    import gratt_inference  # noqa: PLC0415
    from detectron2.layers import ShapeSpec  # noqa: PLC0415
    from grattvis.modeling.grattvis import GRAttVIS  # noqa: PLC0415
    from mask2former.modeling.meta_arch.mask_former_head import MaskFormerHead  # noqa: PLC0415

    cfg = official_cfg(root, config, spec.OPTS + spec.VIDEO_OPTS)
    shapes = {k: ShapeSpec(channels=c, stride=s) for k, (c, s) in spec.LEVELS.items()}
    parts = nn.ModuleDict({"sem_seg_head": MaskFormerHead(cfg, shapes), "vita_module": GRAttVIS(cfg)})
    template = parts.state_dict()
    parts.load_state_dict(spec.generated_weights(template), strict=True)
    parts.eval()
    feats = spec.backbone_features(seed=2, frames=spec.VIDEO_FRAMES)

    def backbone(images):
        idx = images[:, 0, 0, 0].round().long()
        return {k: v[idx] for k, v in feats.items()}

    class Detector:
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES

        def __call__(self, features):
            return parts["sem_seg_head"](features)

    self = types.SimpleNamespace(
        device=torch.device("cpu"), pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1),
        size_divisibility=cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY, backbone=backbone, sem_seg_head=Detector(),
        vita_module=parts["vita_module"], len_clip_window=cfg.MODEL.GENVIS.LEN_CLIP_WINDOW,
        num_queries=cfg.MODEL.VITA.NUM_OBJECT_QUERIES, test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
    )  # fmt: skip
    images = [torch.full((3, *spec.VIDEO_IMAGE), float(t)) for t in range(spec.VIDEO_FRAMES)]
    batched = {"image": images, "height": spec.VIDEO_ORIG[0], "width": spec.VIDEO_ORIG[1]}
    with torch.no_grad():
        res = gratt_inference.official_inference(root)(self, batched)
    print(f"{config}: USE_MEM {cfg.MODEL.GENVIS.USE_MEM}, scores {[round(s, 3) for s in res['pred_scores']]}")
    print(f"  labels {res['pred_labels']}, mask pixels {res['pred_masks'].flatten(1).sum(1).tolist()}")
    return {
        "use_mem": bool(cfg.MODEL.GENVIS.USE_MEM),
        "official_keys": {k: list(v.shape) for k, v in template.items() if v.is_floating_point()},
        "pred_scores": res["pred_scores"],
        "pred_labels": res["pred_labels"],
        "pred_masks_shape": list(res["pred_masks"].shape),
        "pred_masks_packed": torch.from_numpy(np.packbits(res["pred_masks"].numpy())),
    }


if __name__ == "__main__":
    main()
