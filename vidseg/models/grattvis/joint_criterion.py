"""GRAtt-VIS with a detector that trains (``MODEL.VITA.FREEZE_DETECTOR False``): the video losses plus the
per-frame Mask2Former losses of the detector, as the official ``Grattvis.train_model`` adds them.

The official model always runs VITA's Mask2Former ``SetCriterion`` on the detector's full outputs (final layer
and ``aux_outputs``) against the per-frame targets, which gives ``losses, fg_indices``; with
``freeze_detector`` it drops ``losses``, otherwise they join the GenVIS / GRAtt losses, weighted by the
Mask2Former ``weight_dict`` (``loss_ce`` 2, ``loss_mask`` 5, ``loss_dice`` 5, and ``_{i}`` for the aux layers
with ``MODEL.MASK_FORMER.DEEP_SUPERVISION``). ``fg_indices``, the matching of the detector's last L layers,
is what the similarity loss reads. vidseg builds this object only for an unfrozen detector; a frozen one gets
the plain :class:`~vidseg.models.grattvis.criterion.GRAttVISCriterion`, which computes no detector loss.

The detector losses keep the official key names (``loss_ce``, ``loss_mask``, ``loss_dice``, ``loss_ce_0``,
...): none is a ``loss_genvis_*`` name, so the two families share one loss dict, as in the official logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vidseg.models.grattvis.criterion import GRAttVISCriterion
from vidseg.models.grattvis.targets import split_sequence_targets
from vidseg.models.set_prediction.criterion import SetCriterion
from vidseg.structures.clip_batch import ClipTargets

__all__ = ["GRAttVISJointCriterion"]


class GRAttVISJointCriterion(nn.Module):
    """Unweighted video losses + detector losses; ``weight_dict`` merges both criteria's weights.

    Args:
        video: the GRAtt-VIS video criterion (its keys are ``loss_genvis_*``).
        detector: the per-frame Mask2Former :class:`SetCriterion` (``labels`` + ``masks`` terms; its matcher
            should be the video criterion's ``frame_matcher`` kind, the Mask2Former matcher).

    ``forward(outputs, targets)`` reads the model's training outputs (see
    :class:`~vidseg.models.grattvis.model.GRAttVIS`) with ``"detector_outputs"``: ``{"pred_logits" [B*T,
    fQ, K+1], "pred_masks" [B*T, fQ, h, w], "aux_outputs": [D-1 dicts of the same keys, oldest first]}``,
    and ``"frame_outputs"``, the last L of those layers. ``targets`` are the batch's B ``ClipTargets`` of T
    frames; the detector's per-frame targets are :func:`.targets.split_sequence_targets`'s ``frames``
    (video-major ``b*T + t``: the instances visible in the frame, no crowd), the ones the similarity loss
    matches against.

    Each detector layer is matched once; the last L matchings are handed to the video criterion through the
    ``"indices"`` of ``frame_outputs`` (the official ``fg_indices``), so the similarity loss and the detector
    losses see the same per-frame matching.
    """

    def __init__(self, video: GRAttVISCriterion, detector: SetCriterion) -> None:
        super().__init__()
        clash = sorted(set(video.weight_dict) & set(detector.weight_dict))
        if clash:
            raise ValueError(f"GRAttVISJointCriterion: the two criteria both weigh {clash}")
        self.video = video
        self.detector = detector
        self.weight_dict = {**detector.weight_dict, **video.weight_dict}

    def forward(self, outputs: Mapping, targets: Sequence[ClipTargets]) -> dict[str, torch.Tensor]:
        """The detector's losses (official ``loss_ce`` ... keys) and the video criterion's
        (``loss_genvis_*``), unweighted."""
        det = outputs.get("detector_outputs")
        if det is None:
            raise KeyError(
                "GRAttVISJointCriterion: outputs has no 'detector_outputs' (the model's detector is frozen: "
                "build it with MODEL.VITA.FREEZE_DETECTOR False, or use the GRAttVISCriterion alone)"
            )
        if "window" not in outputs:
            raise KeyError(f"GRAttVISJointCriterion: outputs has no 'window' (keys: {sorted(outputs)})")
        frames = split_sequence_targets(targets, int(outputs["window"])).frames
        layers = [*det.get("aux_outputs", []), det]  # oldest first, as frame_outputs
        if len(frames) != det["pred_logits"].shape[0]:
            raise ValueError(
                f"GRAttVISJointCriterion: the detector ran on {det['pred_logits'].shape[0]} frames, the "
                f"targets have {len(frames)} (B*T)"
            )
        # Every layer is matched once, as officially (the matcher draws random points: two matchings of a
        # layer need not agree); without deep supervision the aux matchings still feed the similarity loss.
        matched = [{**layer, "indices": self.detector.matcher(layer, frames)} for layer in layers]
        losses = self.detector({**matched[-1], "aux_outputs": matched[:-1]}, frames)

        num_l = len(outputs.get("frame_outputs") or [])
        if num_l > len(matched):
            raise ValueError(
                f"GRAttVISJointCriterion: {num_l} frame_outputs but the detector has {len(matched)} layers"
            )
        video_outputs = dict(outputs)
        video_outputs["frame_outputs"] = [
            {"pred_logits": m["pred_logits"], "pred_masks": m["pred_masks"], "indices": m["indices"]}
            for m in matched[len(matched) - num_l :]
        ]
        losses.update(self.video(video_outputs, targets))
        return losses
