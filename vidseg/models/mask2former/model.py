"""``Mask2Former``: backbone + MSDeformAttn pixel decoder + masked-attention decoder, run on every frame.

Submodule names follow the official detectron2 model so that ``sem_seg_head.*`` keys load unchanged:
``backbone`` (a :class:`vidseg.backbones.Backbone`: its ``body.*`` keys are mapped from detectron2's
``backbone.stem/res*`` by :mod:`vidseg.checkpoints.detectron2`), ``sem_seg_head.pixel_decoder`` and
``sem_seg_head.predictor``.
"""

from __future__ import annotations

from torch import Tensor, nn

from vidseg.models.mask2former.pixel_decoder import MSDeformAttnPixelDecoder
from vidseg.models.mask2former.transformer_decoder import MaskedTransformerDecoder
from vidseg.structures.clip_batch import ClipBatch

__all__ = ["Mask2Former", "MaskFormerHead"]


class MaskFormerHead(nn.Module):
    """``pixel_decoder`` then ``predictor`` (the official ``sem_seg_head``).

    Forward: backbone features ``{name: [N, C, H_f, W_f]}`` -> the predictor's dict (see
    :class:`MaskedTransformerDecoder`) plus ``"mask_features"`` and ``"clip_mask_features"`` of the pixel
    decoder.
    """

    def __init__(self, pixel_decoder: MSDeformAttnPixelDecoder, predictor: MaskedTransformerDecoder) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    def forward(self, features: dict[str, Tensor]) -> dict:
        pix = self.pixel_decoder(features)
        out = self.predictor(pix["multi_scale_features"], pix["mask_features"])
        out["mask_features"] = pix["mask_features"]
        out["clip_mask_features"] = pix["clip_mask_features"]
        return out


class Mask2Former(nn.Module):
    """Per-frame instance segmentation (the detector of VITA, GenVIS and GRAtt-VIS).

    Args:
        backbone: features-only backbone returning ``res2..res5``.
        sem_seg_head: :class:`MaskFormerHead`.

    Forward: ``model(frames [N, 3, H, W])`` (normalised, padded to 32) or ``model(batch: ClipBatch)``, whose
    ``[B, T, 3, H, W]`` frames are run as ``N = B*T`` images, clip-major (frame ``t`` of clip ``b`` is image
    ``b*T + t``). Returns a dict: ``"pred_logits" [N, Q, K+1]``, ``"pred_masks" [N, Q, H/4, W/4]`` (logits),
    ``"aux_outputs"`` (list of dicts with those two keys), ``"frame_queries" [L, N, Q, C]`` (the decoder-norm
    output of the last L layers: 3 in training, 1 in evaluation), ``"mask_features" [N, 256, H/4, W/4]`` and
    ``"clip_mask_features" [N, 256, H/4, W/4]`` (the raw stride-4 map).
    """

    def __init__(self, backbone: nn.Module, sem_seg_head: MaskFormerHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    @property
    def num_classes(self) -> int:
        return self.sem_seg_head.predictor.class_embed.out_features - 1

    def forward(self, frames: Tensor | ClipBatch) -> dict:
        if isinstance(frames, ClipBatch):
            frames = frames.frames.flatten(0, 1)
        if frames.dim() != 4:
            raise ValueError(
                f"Mask2Former: expected frames [N,3,H,W] or a ClipBatch, got {tuple(frames.shape)}"
            )
        return self.sem_seg_head(self.backbone(frames))
