"""The GRAtt-VIS (GenVIS) video losses, per step and summed over the steps of a clip sequence (spec §4.5).

``criterion(outputs, targets)`` reads the model's training outputs::

    {"steps": [step_c for c in range(T // W)],  # one dict per clip of W frames, see below
     "frame_outputs": [{"pred_logits" [B*T, fQ, K+1], "pred_masks" [B*T, fQ, h, w]}] * L,  # oldest first
                      # (optional "indices": that layer's per-frame matching, reused instead of re-matching)
     "num_layers_copies": L, "window": W}

where each ``step_c`` has ``"pred_logits"`` ``[L, B, cQ, K+1]``, ``"pred_masks"`` ``[L, B, cQ, W, h, w]``,
``"pred_cq_embed"`` ``[L, B, cQ, C]``, ``"pred_fq_embed"`` ``[L, B, W, fQ, C]``, ``"aux_outputs"`` (D-1 dicts
with ``pred_logits`` / ``pred_masks`` / ``pred_cq_embed``) and ``"soft_gates"`` (D tensors ``[L*B, cQ]``, the
last for the final layer). Batch item ``n = l*B + b`` is layer copy l of video b. The targets are the data
pipeline's ``list[ClipTargets]`` (split by :func:`.targets.split_sequence_targets`).

Per step and per output layer (final, then aux i with the suffix ``_i``), after the
:class:`.uvla.UnifiedVideoLabelAssignment` of that layer's own chain:

- ``loss_genvis_ce``: CE over all ``L*B*cQ`` queries, class weights ``(1, .., 1, eos_coef)``, PyTorch's
  weighted mean; the target is the label for queries matched to a target valid in the step, "no object"
  otherwise.
- ``loss_genvis_mask`` / ``loss_genvis_dice``: the valid matched pairs, each frame of the clip sampled apart
  (``[M*W, 1, h, w]``, importance sampling: ``oversample_ratio`` x the points, the ``importance_sample_ratio``
  most uncertain kept, the rest uniform), values concatenated over the W frames; BCE mean and +1-smoothed dice
  per instance, summed over instances, divided by ``num_masks``.
- ``loss_genvis_sim`` (final layer only, VITA's ``loss_fg_sim``): the similarity embeddings of the frame
  queries matched per frame (Mask2Former matching of each of the L detector layers) and of the clip queries
  matched to valid targets; BCE-with-logits of every pairwise dot product within one item, target 1 for the
  same instance, averaged over those pairs.
- ``loss_genvis_gate`` (only when ``gate_weight > 0``): BCE-with-logits of the soft gates, target 1 for
  queries matched to valid targets.

``num_masks`` is the number of targets valid in the step times L, averaged over ranks, at least 1. Every key
is summed over the steps (the official code logs ``<key>_clip{c}``; the total is the same).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.grattvis.targets import SequenceTargets, StepTargets, split_sequence_targets
from vidseg.models.grattvis.uvla import AssignmentState, ItemIndices, UnifiedVideoLabelAssignment
from vidseg.models.mask2former.matcher import MaskHungarianMatcher
from vidseg.models.set_prediction.criterion import mean_object_count
from vidseg.models.set_prediction.losses import dice_loss, sigmoid_ce_loss
from vidseg.models.set_prediction.matched_losses import CELabelLoss
from vidseg.models.set_prediction.point_sampling import point_sample, uncertain_point_coords
from vidseg.structures.clip_batch import ClipTargets

__all__ = ["grattvis_weight_dict", "GRAttVISCriterion", "grattvis_criterion"]

LOSS_KEYS = ("loss_genvis_ce", "loss_genvis_mask", "loss_genvis_dice")


def grattvis_weight_dict(
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    sim_weight: float = 0.5,
    gate_weight: float = 0.0,
    num_aux: int = 2,
) -> dict[str, float]:
    """The weight of every key the criterion returns, and of no other.

    ``loss_genvis_{ce,mask,dice}`` (and ``loss_genvis_gate`` when ``gate_weight > 0``) for the final layer
    and with the suffix ``_{i}`` for the aux layers ``i < num_aux``; ``loss_genvis_sim`` for the final layer
    only, when ``sim_weight > 0``.
    """
    base = {"loss_genvis_ce": class_weight, "loss_genvis_mask": mask_weight, "loss_genvis_dice": dice_weight}
    if gate_weight > 0:
        base["loss_genvis_gate"] = gate_weight
    out = dict(base)
    if sim_weight > 0:
        out["loss_genvis_sim"] = sim_weight
    for i in range(num_aux):
        out.update({f"{k}_{i}": v for k, v in base.items()})
    return out


def _valid_pairs(indices: Sequence[ItemIndices], targets: Sequence[StepTargets], device) -> tuple:
    """``(item [M], query [M], target [M])`` of the matched pairs whose target is valid in the step."""
    videos = len(targets)
    items, queries, tgts = [], [], []
    for n, (q, g) in enumerate(indices):
        keep = targets[n % videos].valid.cpu()[g]
        items.append(torch.full_like(q[keep], n))
        queries.append(q[keep])
        tgts.append(g[keep])
    if not items:
        e = torch.empty(0, dtype=torch.int64, device=device)
        return e, e, e
    return tuple(torch.cat(x).to(device) for x in (items, queries, tgts))


class GRAttVISCriterion(nn.Module):
    """Unweighted GRAtt-VIS losses of a clip sequence (module docstring); ``weight_dict`` has their weights.

    Args:
        num_classes: K (the logits have K+1 columns, the last "no object").
        uvla: the clip-query assignment (:class:`.uvla.UnifiedVideoLabelAssignment`).
        frame_matcher: the per-frame matcher of the detector outputs for the similarity loss
            (``vidseg.models.mask2former.matcher.MaskHungarianMatcher``); unused when ``sim_weight`` is 0.
        class_weight / mask_weight / dice_weight / sim_weight / gate_weight: the loss weights
            (``MODEL.MASK_FORMER.*_WEIGHT``, ``MODEL.VITA.SIM_WEIGHT``, ``MODEL.GENVIS.GATE_WEIGHT``). The
            sim and gate terms are not computed at weight 0 (the official code skips sim too, but computes
            the gate loss with ``GATED_PROP`` and multiplies it by its weight, 0 in every shipped config).
        eos_coef: the "no object" class weight (``MODEL.VITA.NO_OBJECT_WEIGHT``, 0.1).
        num_points / oversample_ratio / importance_sample_ratio: the point sampling of the mask losses
            (``MODEL.MASK_FORMER.TRAIN_NUM_POINTS``, ``OVERSAMPLE_RATIO``, ``IMPORTANCE_SAMPLE_RATIO``).
        num_aux: aux decoder layers (``MODEL.VITA.DEC_LAYERS - 1`` with deep supervision, else 0).
        sim_use_clip: include the clip queries in the similarity loss (``MODEL.VITA.SIM_USE_CLIP``).
    """

    def __init__(
        self,
        num_classes: int,
        uvla: UnifiedVideoLabelAssignment,
        frame_matcher: nn.Module | None = None,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        sim_weight: float = 0.5,
        gate_weight: float = 0.0,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        num_aux: int = 2,
        sim_use_clip: bool = True,
    ) -> None:
        super().__init__()
        if sim_weight > 0 and frame_matcher is None:
            raise ValueError("GRAttVISCriterion: the similarity loss (sim_weight > 0) needs a frame_matcher")
        self.num_classes = num_classes
        self.uvla = uvla
        self.frame_matcher = frame_matcher
        self.labels = CELabelLoss(num_classes, eos_coef)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.num_aux = num_aux
        self.sim_use_clip = sim_use_clip
        self.use_sim = sim_weight > 0
        self.use_gate = gate_weight > 0
        self.weight_dict = grattvis_weight_dict(
            class_weight, mask_weight, dice_weight, sim_weight, gate_weight, num_aux
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_points={self.num_points}, num_aux={self.num_aux}, "
            f"sim={self.use_sim}, gate={self.use_gate}"
        )

    # ---- the terms of one layer of one step ---------------------------------------------------------------
    def loss_labels(self, out: Mapping, targets: Sequence[StepTargets], pairs: tuple) -> torch.Tensor:
        """``loss_genvis_ce`` of one layer (``pred_logits`` ``[L, B, cQ, K+1]``)."""
        logits = out["pred_logits"].flatten(0, 1)  # [L*B, cQ, K+1], item n = l*B + b
        items, queries, tgts = pairs
        videos = len(targets)
        per_item = [
            (queries[items == n].cpu(), torch.arange(int((items == n).sum()))) for n in range(logits.shape[0])
        ]
        labels = [
            {"labels": targets[n % videos].labels.to(logits.device)[tgts[items == n]]}
            for n in range(logits.shape[0])
        ]
        return self.labels({"pred_logits": logits}, labels, per_item, 1.0)["loss_ce"]

    def loss_masks(
        self, out: Mapping, targets: Sequence[StepTargets], pairs: tuple, num_masks: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss_genvis_mask`` and ``loss_genvis_dice`` of one layer (``pred_masks [L, B, cQ, W, h, w]``)."""
        pred = out["pred_masks"]
        items, queries, tgts = pairs
        if items.numel() == 0:
            zero = pred.sum() * 0.0  # keeps the graph connected (DDP) while contributing nothing
            return zero, zero
        videos, window = pred.shape[1], pred.shape[3]
        src = pred.flatten(0, 1)[items, queries]  # [M, W, h, w]
        tgt = torch.cat(  # [M, W, H, W]: the pairs are grouped by item, in item order
            [
                targets[n % videos].masks.to(pred.device)[tgts[items == n]]
                for n in torch.unique(items).tolist()
            ]
        ).to(src.dtype)
        count = src.shape[0]
        src, tgt = src.flatten(0, 1)[:, None], tgt.flatten(0, 1)[:, None]
        with torch.no_grad():
            coords = uncertain_point_coords(
                src, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            tgt_points = point_sample(tgt, coords).squeeze(1)
        src_points = point_sample(src, coords).squeeze(1)
        src_points = src_points.reshape(count, window * self.num_points)
        tgt_points = tgt_points.reshape(count, window * self.num_points)
        return sigmoid_ce_loss(src_points, tgt_points, num_masks), dice_loss(
            src_points, tgt_points, num_masks
        )

    def loss_gate(self, soft_gates: torch.Tensor, pairs: tuple) -> torch.Tensor:
        """``loss_genvis_gate`` of one layer: ``soft_gates [L*B, cQ]``, target 1 at valid matched pairs."""
        items, queries, _ = pairs
        target = torch.zeros_like(soft_gates, dtype=torch.float32)
        target[items, queries] = 1.0
        # Official quirk (spec §11.6): the soft gates are already sigmoid outputs, and the loss still applies
        # BCE *with logits* to them (a second sigmoid). Reproduced as is.
        return F.binary_cross_entropy_with_logits(soft_gates.float(), target)

    def loss_sim(
        self,
        step: Mapping,
        targets: Sequence[StepTargets],
        pairs: tuple,
        frame_pairs: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """``loss_genvis_sim`` of the final layer (VITA's ``loss_fg_sim``).

        Args:
            step: reads ``"pred_fq_embed"`` ``[L, B, W, fQ, C]`` and ``"pred_cq_embed"`` ``[L, B, cQ, C]``.
            pairs: the valid matched clip pairs ``(item, query, target)``.
            frame_pairs: per detector layer l, ``(video, frame_in_clip, frame_query, instance)``, each
                ``[F]``: the frame queries matched in this step's frames.
        """
        fq = step["pred_fq_embed"]
        videos = fq.shape[1]
        embeds, groups, insts = [], [], []
        for l, pairs_l in enumerate(frame_pairs):
            b, w, q, inst = (x.to(fq.device) for x in pairs_l)
            embeds.append(fq[l, b, w, q])
            groups.append(l * videos + b)
            insts.append(inst)
        if self.sim_use_clip:
            items, queries, tgts = pairs
            cq = step["pred_cq_embed"].flatten(0, 1)
            embeds.append(cq[items, queries])
            groups.append(items)
            insts.append(tgts)
        emb = torch.cat(embeds)
        group = torch.cat(groups).to(emb.device)
        inst = torch.cat(insts).to(emb.device)
        logits = emb @ emb.t()
        # VITA labels each embedding with its id + 1000 x item; comparing (item, instance) pairs is the same
        # without a bound on the ids.
        same_item = group[:, None] == group[None]
        target = (same_item & (inst[:, None] == inst[None])).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        same = same_item.to(logits.dtype)
        return (loss * same).sum() / (same.sum() + 1e-6)

    # ---- the sequence -------------------------------------------------------------------------------------
    def frame_matching(self, outputs: Mapping, seq: SequenceTargets) -> list[list[tuple]]:
        """The per-frame matching of each detector layer: ``[L][B*T]`` pairs ``(query, frame_target)``; a
        ``frame_outputs`` entry with ``"indices"`` (matched by :mod:`.joint_criterion`) is reused."""
        frame_outputs = outputs.get("frame_outputs")
        if not frame_outputs:
            raise KeyError(
                "GRAttVISCriterion: the similarity loss needs outputs['frame_outputs'] (one per layer)"
            )
        result = []
        for i, fo in enumerate(frame_outputs):
            if fo["pred_logits"].shape[0] != len(seq.frames):
                raise ValueError(
                    f"GRAttVISCriterion: frame_outputs[{i}] has {fo['pred_logits'].shape[0]} frames, "
                    f"the targets {len(seq.frames)} (B*T)"
                )
            # A layer the detector criterion already matched hands its matching on (the official fg_indices).
            result.append(fo["indices"] if "indices" in fo else self.frame_matcher(fo, seq.frames))
        return result

    def step_frame_pairs(
        self, matching: list[list[tuple]], seq: SequenceTargets, c: int, videos: int
    ) -> list:
        """The matched frame queries of step c, per layer (see :meth:`loss_sim`)."""
        frames_per_video = seq.num_steps * seq.window
        out = []
        for per_frame in matching:
            b_all, w_all, q_all, i_all = [], [], [], []
            for b in range(videos):
                for w in range(seq.window):
                    f = b * frames_per_video + c * seq.window + w
                    q, g = per_frame[f]
                    b_all.append(torch.full_like(q, b))
                    w_all.append(torch.full_like(q, w))
                    q_all.append(q)
                    i_all.append(seq.frames[f]["inst"].cpu()[g])
            out.append(tuple(torch.cat(x) for x in (b_all, w_all, q_all, i_all)))
        return out

    def forward(self, outputs: Mapping, targets: Sequence[ClipTargets]) -> dict[str, torch.Tensor]:
        """Unweighted losses summed over the steps (keys of :func:`grattvis_weight_dict`)."""
        for key in ("steps", "num_layers_copies", "window"):
            if key not in outputs:
                raise KeyError(f"GRAttVISCriterion: outputs has no {key!r} (keys: {sorted(outputs)})")
        steps, copies = outputs["steps"], int(outputs["num_layers_copies"])
        seq = split_sequence_targets(targets, int(outputs["window"]))
        if len(steps) != seq.num_steps:
            raise ValueError(
                f"GRAttVISCriterion: {len(steps)} steps in the outputs, {seq.num_steps} clips in the targets"
            )
        videos = len(targets)
        matching = self.frame_matching(outputs, seq) if self.use_sim else None
        states: list[AssignmentState | None] = [None] * (1 + self.num_aux)
        losses: dict[str, torch.Tensor] = {}

        def add(key: str, value: torch.Tensor) -> None:
            losses[key] = losses[key] + value if key in losses else value

        for c, step in enumerate(steps):
            step_targets = seq.steps[c]
            if step["pred_logits"].shape[:2] != (copies, videos):
                raise ValueError(
                    f"GRAttVISCriterion: step {c} pred_logits {tuple(step['pred_logits'].shape)} is not "
                    f"[L={copies}, B={videos}, cQ, K+1]"
                )
            aux = list(step.get("aux_outputs") or [])
            if len(aux) != self.num_aux:
                raise ValueError(
                    f"GRAttVISCriterion: step {c} has {len(aux)} aux outputs, the criterion expects "
                    f"{self.num_aux}"
                )
            device = step["pred_logits"].device
            num_masks = mean_object_count(sum(int(t.valid.sum()) for t in step_targets) * copies, device)
            soft_gates = step.get("soft_gates") if self.use_gate else None
            if self.use_gate and (not soft_gates or len(soft_gates) != self.num_aux + 1):
                raise KeyError(
                    f"GRAttVISCriterion: the gate loss needs step['soft_gates'] with {self.num_aux + 1} "
                    "tensors (MODEL.GENVIS.GATED_PROP on), or MODEL.GENVIS.GATE_WEIGHT 0"
                )
            for j, layer in enumerate([step, *aux]):
                suffix = "" if j == 0 else f"_{j - 1}"
                indices, states[j] = self.uvla.assign(layer, step_targets, states[j])
                pairs = _valid_pairs(indices, step_targets, device)
                add("loss_genvis_ce" + suffix, self.loss_labels(layer, step_targets, pairs))
                mask, dice = self.loss_masks(layer, step_targets, pairs, num_masks)
                add("loss_genvis_mask" + suffix, mask)
                add("loss_genvis_dice" + suffix, dice)
                if self.use_gate:
                    gate = soft_gates[-1] if j == 0 else soft_gates[j - 1]
                    add("loss_genvis_gate" + suffix, self.loss_gate(gate, pairs))
                if j == 0 and self.use_sim:
                    frame_pairs = self.step_frame_pairs(matching, seq, c, videos)
                    add("loss_genvis_sim", self.loss_sim(step, step_targets, pairs, frame_pairs))
        return losses


def grattvis_criterion(
    num_classes: int,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    sim_weight: float = 0.5,
    gate_weight: float = 0.0,
    eos_coef: float = 0.1,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    num_aux: int = 2,
    sim_use_clip: bool = True,
) -> GRAttVISCriterion:
    """The criterion with its two matchers, as the official code builds them: the UVLA and the per-frame
    Mask2Former matcher both use the class / mask / dice weights as costs and ``num_points`` points.

    A builder maps ``MODEL.MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT``, ``TRAIN_NUM_POINTS``,
    ``OVERSAMPLE_RATIO``, ``IMPORTANCE_SAMPLE_RATIO``, ``MODEL.VITA.{SIM_WEIGHT, NO_OBJECT_WEIGHT,
    SIM_USE_CLIP}``, ``DEC_LAYERS - 1`` (``num_aux``, 0 without ``DEEP_SUPERVISION``) and
    ``MODEL.GENVIS.GATE_WEIGHT`` (the official code adds the gate loss only with ``GATED_PROP``: pass 0 when
    it is off).
    """
    costs = {"cost_class": class_weight, "cost_mask": mask_weight, "cost_dice": dice_weight}
    return GRAttVISCriterion(
        num_classes,
        UnifiedVideoLabelAssignment(**costs, num_points=num_points),
        MaskHungarianMatcher(**costs, num_points=num_points) if sim_weight > 0 else None,
        class_weight=class_weight,
        mask_weight=mask_weight,
        dice_weight=dice_weight,
        sim_weight=sim_weight,
        gate_weight=gate_weight,
        eos_coef=eos_coef,
        num_points=num_points,
        oversample_ratio=oversample_ratio,
        importance_sample_ratio=importance_sample_ratio,
        num_aux=num_aux,
        sim_use_clip=sim_use_clip,
    )
