"""``build(cfg)`` of the image stage: maps the config to constructor kwargs; registered as
``DeformableDETRSegm``.

Nothing below reads the config except the ``build_*`` functions; modules receive plain arguments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vidseg.backbones import build_backbone
from vidseg.layers import PositionEmbeddingSine
from vidseg.models.criterion import build_criterion
from vidseg.models.deformable_detr.detr import DeformableDETR, Joiner
from vidseg.models.deformable_detr.param_groups import deformable_detr_param_groups, freeze_by_name
from vidseg.models.deformable_detr.segm import DeformableDETRSegm
from vidseg.models.deformable_detr.targets import ImageCriterion
from vidseg.models.deformable_detr.transformer import DeformableTransformer
from vidseg.models.mask_head import build_mask_head
from vidseg.models.matcher import build_matcher
from vidseg.models.postprocess import ImagePostProcessor
from vidseg.models.registry import ModelBundle, register_method
from vidseg.structures.clip_batch import ClipBatch
from vidseg.structures.results import Track, VideoResult

__all__ = [
    "build",
    "build_deformable_detr",
    "build_deformable_detr_segm",
    "build_param_groups",
    "num_classes_from_cfg",
    "ImageInference",
]


def num_classes_from_cfg(cfg: Any) -> int:
    """``MODEL.NUM_CLASSES``, or when 0 the class count of the first train/test dataset's metadata."""
    if cfg.MODEL.NUM_CLASSES > 0:
        return int(cfg.MODEL.NUM_CLASSES)
    if cfg.MODEL.CLASS_NAMES:  # a run's config.yaml: no annotation file needed
        return len(cfg.MODEL.CLASS_NAMES)
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names:
        raise ValueError("MODEL.NUM_CLASSES is 0 and DATASETS.TRAIN/TEST are empty: set one of them")
    from vidseg.data.catalog import get_dataset_metadata

    meta = get_dataset_metadata(names[0], cfg)
    if not meta.classes:
        raise ValueError(f"MODEL.NUM_CLASSES is 0 and the metadata of {names[0]!r} lists no classes")
    return meta.num_classes


def build_deformable_detr(cfg: Any, num_classes: int) -> DeformableDETR:
    """Backbone joiner + transformer + heads from ``MODEL.*``."""
    m = cfg.MODEL
    if not m.WITH_BBX_REFINE and m.BBX_GRADIENT_PROP:
        raise ValueError("MODEL.BBX_GRADIENT_PROP True needs MODEL.WITH_BBX_REFINE True")
    if m.WITH_BBX_REFINE and m.WITH_REF_POINT_REFINE:
        raise ValueError(
            "MODEL.WITH_BBX_REFINE and MODEL.WITH_REF_POINT_REFINE are both True: they are exclusive, "
            "select one of the two"
        )
    backbone = build_backbone(
        m.BACKBONE,
        train_backbone=float(cfg.SOLVER.LR_BACKBONE) > 0,
        dilation=bool(m.BACKBONE_DILATION),
        pretrained=m.BACKBONE_PRETRAINED,
    )
    joiner = Joiner(backbone, PositionEmbeddingSine(m.HIDDEN_DIM // 2, normalize=True))
    t = m.TRANSFORMER
    # Note: the official builder swaps ENC_N_POINTS/DEC_N_POINTS (harmless at 4/4); here each key means
    # itself.
    transformer = DeformableTransformer(
        d_model=m.HIDDEN_DIM,
        nhead=t.N_HEADS,
        num_encoder_layers=t.ENCODER_LAYERS,
        num_decoder_layers=t.DECODER_LAYERS,
        dim_feedforward=m.DIM_FEEDFORWARD,
        dropout=m.DROPOUT,
        num_feature_levels=m.NUM_FEATURE_LEVELS,
        enc_n_points=t.ENC_N_POINTS,
        dec_n_points=t.DEC_N_POINTS,
        with_gradient=m.BBX_GRADIENT_PROP,
        attn_impl=m.DEFORM_ATTN_IMPL,
    )
    return DeformableDETR(
        joiner,
        transformer,
        num_classes=num_classes,
        num_queries=m.NUM_QUERIES,
        num_feature_levels=m.NUM_FEATURE_LEVELS,
        aux_loss=m.LOSS.AUX_LOSS,
        with_box_refine=m.WITH_BBX_REFINE,
        with_ref_point_refine=m.WITH_REF_POINT_REFINE,
        bbox_gradient_prop=m.BBX_GRADIENT_PROP,
    )


def build_deformable_detr_segm(
    cfg: Any, num_classes: int, matcher: nn.Module | None = None
) -> DeformableDETRSegm:
    """The image model (``MODEL.MASK_ON False`` gives a detection-only model without mask modules)."""
    def_detr = build_deformable_detr(cfg, num_classes)
    bbox_attention = mask_head = None
    if cfg.MODEL.MASK_ON:
        bbox_attention, mask_head = build_mask_head(cfg, def_detr.backbone.out_channels)
    return DeformableDETRSegm(
        def_detr,
        bbox_attention,
        mask_head,
        matcher if matcher is not None else build_matcher(cfg),
        mask_aux_loss=[int(i) for i in cfg.MODEL.LOSS.MASK_AUX_LOSS],
        att_resolutions=list(cfg.MODEL.MASK_HEAD.UPSAMPLING_RESOLUTIONS),
        used_features=[tuple(x) for x in cfg.MODEL.MASK_HEAD.USED_FEATURES],
        num_out=cfg.TEST.NUM_OUT,
    )


def build_param_groups(cfg: Any):
    """``fn(model) -> groups`` from ``SOLVER.{BASE_LR, LR_BACKBONE, *_NAMES, *_MULT, WEIGHT_DECAY}``."""
    s = cfg.SOLVER

    def fn(model: nn.Module) -> list[dict]:
        return deformable_detr_param_groups(
            model,
            base_lr=float(s.BASE_LR),
            weight_decay=float(s.WEIGHT_DECAY),
            backbone_lr=float(s.LR_BACKBONE),
            backbone_names=list(s.BACKBONE_NAMES),
            linear_proj_names=list(s.LR_LINEAR_PROJ_NAMES),
            linear_proj_mult=float(s.LR_LINEAR_PROJ_MULT),
            mask_head_names=list(s.LR_MASK_HEAD_NAMES),
            mask_head_mult=float(s.LR_MASK_HEAD_MULT),
        )

    return fn


class ImageInference:
    """``inference(model, batch) -> list[dict]``: COCO-style instances per image of a T=1 ``ClipBatch``.

    Each result is ``{"scores" [k], "labels" [k], "boxes" [k,4] absolute xyxy, "masks" [k,H0,W0] bool}`` at
    the
    original size (``meta["orig_size"]``), via :class:`vidseg.models.postprocess.ImagePostProcessor`.
    """

    def __init__(self, postprocessor: ImagePostProcessor):
        self.postprocessor = postprocessor

    @torch.no_grad()
    def __call__(self, model: nn.Module, batch: Any) -> Any:
        """A T=1 ``ClipBatch`` -> per-image instance dicts; a ``VideoItem`` -> ``VideoResult``.

        On a video the image model has no tracker: every detection of frame t becomes a one-frame track
        (its segmentation is None on every other frame), so the YouTube-VIS metric and the renderer can still
        read its output through the same interface as the video methods.
        """
        if not isinstance(batch, ClipBatch):
            return self._video(model, batch)
        return self._images(model, batch)

    def _video(self, model: nn.Module, video: Any) -> VideoResult:
        from vidseg.data.masks import encode_rle

        n = video.length() if callable(getattr(video, "length", None)) else len(video.frames)
        h, w = video.image_size
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32  # pad to the backbone's stride, as the collate does
        result = VideoResult(
            video_id=int(video.video_id), height=int(video.orig_size[0]), width=int(video.orig_size[1])
        )
        device = next(model.parameters()).device
        for t in range(n):
            frame = video.frames[t]
            frames = frame.new_zeros((1, 1, 3, ph, pw))
            frames[0, 0, :, :h, :w] = frame
            pad = torch.ones((1, 1, ph, pw), dtype=torch.bool)
            pad[0, 0, :h, :w] = False
            meta = [{"orig_size": tuple(video.orig_size), "image_size": (h, w)}]
            (inst,) = self._images(model, ClipBatch(frames=frames, pad_mask=pad, meta=meta).to(device))
            # Boxes go along as xywh so COCO bbox AP scores the predicted boxes, not the masks' tight boxes;
            # a box-only model (MODEL.MASK_ON False) gives tracks without masks.
            xyxy = inst["boxes"].float().cpu()
            xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1).tolist()
            inst_masks = inst.get("masks")
            for j, (score, label) in enumerate(zip(inst["scores"].tolist(), inst["labels"].tolist())):
                masks: list = [None] * n
                if inst_masks is not None:
                    masks[t] = encode_rle(inst_masks[j].cpu().numpy())
                scores: list = [None] * n
                scores[t] = float(score)
                boxes: list = [None] * n
                boxes[t] = xywh[j]
                result.tracks.append(
                    Track(score=float(score), label=int(label), masks=masks, frame_scores=scores, boxes=boxes)
                )
        return result

    def _images(self, model: nn.Module, batch: ClipBatch) -> list[dict]:
        was_training = model.training
        model.eval()
        try:
            outputs = model(batch)
        finally:
            model.train(was_training)
        padded = tuple(batch.frames.shape[-2:])
        orig = [m.get("orig_size", padded) for m in batch.meta] if batch.meta else [padded] * batch.batch_size
        sizes = [m.get("image_size", padded) for m in batch.meta] if batch.meta else None
        return self.postprocessor(outputs, orig, sizes, padded)


@register_method("DeformableDETRSegm")
def build(cfg: Any) -> ModelBundle:
    """Model, criterion (taking ``ClipTargets``), image inference and DeVIS's parameter groups."""
    k = num_classes_from_cfg(cfg)
    matcher = build_matcher(cfg)
    model = build_deformable_detr_segm(cfg, k, matcher)
    freeze_by_name(model, list(cfg.SOLVER.FROZEN_PARAMS))
    criterion = ImageCriterion(build_criterion(cfg, k, matcher))
    inference = ImageInference(ImagePostProcessor(num_out=cfg.TEST.NUM_OUT))
    return ModelBundle(model, criterion, inference, param_groups=build_param_groups(cfg))
