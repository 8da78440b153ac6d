"""``GRAttVIS``: a per-frame Mask2Former (frozen by default) *has-a* GRAtt-VIS head; training over the steps
of a clip, and the online one-frame API the inference object drives (grattvis.md §3.6, §5).

The model registers the detector's two parts and the head directly, under the official names, so a
detectron2 file of VITA, GenVIS or GRAtt-VIS loads unchanged (``backbone.*`` through
:mod:`vidseg.checkpoints.detectron2`, ``sem_seg_head.*``, ``vita_module.*``; §7):

- ``backbone``: the detector's backbone (``res2..res5``);
- ``sem_seg_head``: :class:`~vidseg.models.mask2former.model.MaskFormerHead` (pixel decoder + decoder);
- ``vita_module``: :class:`~vidseg.models.grattvis.vis_head.GRAttVISHead`.

Training (``model(batch)``) runs the detector on all B*T frames, then T/W head steps, each starting from the
previous step's query (not detached: backpropagation runs through every step) and, with ``use_mem``, reading
the memory the earlier steps wrote. The output is what :class:`.criterion.GRAttVISCriterion` reads, plus,
when the detector trains, its own outputs for :class:`.joint_criterion.GRAttVISJointCriterion`.

Online inference (:meth:`GRAttVIS.init_state`, :meth:`GRAttVIS.online_step`, :meth:`GRAttVIS.preprocess`)
runs one frame per call and keeps only the propagated query and the memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidseg.models.grattvis.memory import QueryMemory
from vidseg.models.grattvis.vis_head import GRAttVISHead
from vidseg.models.mask2former.model import Mask2Former
from vidseg.structures.clip_batch import ClipBatch

__all__ = ["GRAttVIS", "OnlineState"]


@dataclass
class OnlineState:
    """What one video carries from frame to frame in online inference.

    Attributes:
        query: ``[cQ, B, C]``: the propagated query (``vita_module.initial_query(B)`` before the first frame,
            then the previous step's un-normalised last-layer output).
        memory: the head's memory of this video (``vita_module.new_memory()``; empty without ``use_mem``).
        num_frames: frames seen so far.
    """

    query: Tensor
    memory: QueryMemory
    num_frames: int = 0


class GRAttVIS(nn.Module):
    """Mask2Former detector + GRAtt-VIS head (module docstring).

    Args:
        detector: the per-frame :class:`~vidseg.models.mask2former.model.Mask2Former`; its ``backbone`` and
            ``sem_seg_head`` become this model's submodules (the detector object itself is not registered:
            its keys would appear twice).
        vita_module: the VIS head.
        freeze_detector: the official ``MODEL.VITA.FREEZE_DETECTOR``: the detector's parameters get
            ``requires_grad False``, it runs without autograd, and ``train()`` keeps it in eval mode. False:
            the detector trains, through the frame queries the head reads and through its own per-frame
            losses on ``"detector_outputs"`` (:class:`.joint_criterion.GRAttVISJointCriterion`).
        deep_supervision: ``MODEL.VITA.DEEP_SUPERVISION``: the steps keep their ``aux_outputs`` (the decoder
            layers before the last) for the aux losses; False empties them.
        pixel_mean / pixel_std: RGB 0-255 normalisation of :meth:`preprocess` (``MODEL.PIXEL_MEAN/STD``).
        size_divisibility: :meth:`preprocess` pads to a multiple of it (32).

    Training forward: ``model(batch: ClipBatch)`` with ``batch.frames [B, T, 3, H, W]`` (normalised, padded;
    T a multiple of the head's window W) returns::

        {"steps": [T // W dicts: vita_module.step(...) plus "pred_masks" [L, B, cQ, W, H/4, W/4] on the
                   step and on each of its "aux_outputs"],
         "frame_outputs": [L dicts {"pred_logits" [B*T, fQ, K+1], "pred_masks" [B*T, fQ, H/4, W/4]}]
                          (the detector's last L layers, oldest first: the sim loss's per-frame matching),
         "num_layers_copies": L,  # detector layers whose frame queries the head sees (3 training, 1 eval)
         "window": W,
         "pred_logits": [B, cQ, K+1],       # the last step's final layer, last detector-layer copy
         "pred_masks": [B, cQ, T, H/4, W/4],  # every frame's masks from its own step, last copy
         "detector_outputs": {"pred_logits" [B*T, fQ, K+1], "pred_masks" [B*T, fQ, H/4, W/4],
                              "aux_outputs": [D-1 dicts of the same keys, oldest first]}}
                             # only when the detector trains: the per-frame Mask2Former losses read it

    In eval mode the same call runs the steps with L = 1 and deterministic gates.
    """

    def __init__(
        self,
        detector: Mask2Former,
        vita_module: GRAttVISHead,
        freeze_detector: bool = True,
        deep_supervision: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.sem_seg_head = detector.sem_seg_head
        self.vita_module = vita_module
        # A plain attribute, not a submodule: the parts above are already registered under the official names.
        object.__setattr__(self, "_detector", detector)
        self.freeze_detector = freeze_detector
        self.deep_supervision = deep_supervision
        self.size_divisibility = int(size_divisibility)
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(
                f"GRAttVIS: MODEL.PIXEL_MEAN / PIXEL_STD need 3 values, got {pixel_mean} {pixel_std}"
            )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        if freeze_detector:
            for p in self.detector_parameters():
                p.requires_grad_(False)
            self.backbone.eval()
            self.sem_seg_head.eval()

    # ------------------------------------------------------------------ the detector
    @property
    def detector(self) -> Mask2Former:
        """The per-frame Mask2Former (sharing ``backbone`` and ``sem_seg_head`` with this model)."""
        return self._detector

    @property
    def num_classes(self) -> int:
        """K (the class heads have K + 1 outputs)."""
        return self.vita_module.num_classes

    @property
    def num_queries(self) -> int:
        """cQ, the video queries."""
        return self.vita_module.num_queries

    def detector_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of ``backbone`` and ``sem_seg_head``."""
        yield from self.backbone.parameters()
        yield from self.sem_seg_head.parameters()

    def train(self, mode: bool = True) -> GRAttVIS:
        """As ``nn.Module.train``, but a frozen detector stays in eval mode."""
        super().train(mode)
        if self.freeze_detector:
            self.backbone.eval()
            self.sem_seg_head.eval()
        return self

    @contextmanager
    def _frame_query_layers(self) -> Iterator[None]:
        # The decoder keeps the frame queries of its last LAST_LAYER_NUM layers only while its own module is
        # in training mode (1 in eval). A frozen detector runs in eval (no dropout) but the head still trains
        # on the L copies, as officially (the official detector stays in train mode; with dropout 0 and
        # frozen BN that is the same): raise the decoder's own flag, and none of its children's, for the call.
        predictor = self.sem_seg_head.predictor
        was = predictor.training
        predictor.training = self.training
        try:
            yield
        finally:
            predictor.training = was

    def detect(self, images: Tensor) -> dict:
        """The detector on ``images [N, 3, H, W]`` (normalised, padded): the dict of
        :class:`~vidseg.models.mask2former.model.Mask2Former` (``frame_queries [L, N, fQ, C]`` with L = the
        decoder's ``num_frame_query_layers`` in training, 1 in eval; ``clip_mask_features [N, C, H/4, W/4]``,
        ``pred_logits``, ``pred_masks``, ``aux_outputs``). No autograd when the detector is frozen."""
        grad = torch.no_grad() if self.freeze_detector else nullcontext()
        with grad, self._frame_query_layers():
            return self.sem_seg_head(self.backbone(images))

    # ------------------------------------------------------------------ training (and whole-clip eval)
    def forward(self, batch: ClipBatch | Tensor) -> dict:
        """Run the detector and every head step on a clip batch; see the class docstring for the outputs."""
        frames = batch.frames if isinstance(batch, ClipBatch) else batch
        if frames.dim() != 5:
            raise ValueError(
                f"GRAttVIS: expected frames [B, T, 3, H, W] or a ClipBatch, got {tuple(frames.shape)}"
            )
        b, t = frames.shape[:2]
        w = self.vita_module.window if self.training else 1
        if t % w:
            raise ValueError(
                f"GRAttVIS: {t} frames per clip is not a multiple of MODEL.GENVIS.LEN_CLIP_WINDOW {w} "
                "(set INPUT.SAMPLING_FRAME_NUM / INPUT.NUM_FRAMES to a multiple of it)"
            )
        det = self.detect(frames.flatten(0, 1))
        fq = det["frame_queries"]  # [L, B*T, fQ, C]
        num_l, _, nfq, c = fq.shape
        fq = fq.reshape(num_l, b, t, nfq, c)
        mask_features = self.vita_module.mask_features(det["clip_mask_features"])
        mask_features = mask_features.reshape(b, t, *mask_features.shape[-3:])  # [B, T, C_m, h, w]

        query = self.vita_module.initial_query(num_l * b)
        memory = self.vita_module.new_memory()
        steps = []
        for s in range(t // w):
            clip = slice(s * w, (s + 1) * w)
            out = self.vita_module.step(fq[:, :, clip].flatten(1, 2), query, memory)
            if not self.deep_supervision:
                out["aux_outputs"] = []
            feats = mask_features[:, clip]
            for layer in (out, *out["aux_outputs"]):
                layer["pred_masks"] = torch.einsum("lbqc,btchw->lbqthw", layer["pred_mask_embed"], feats)
            query = out["prop_query"]  # not detached: backpropagation through all the steps
            steps.append(out)

        keys = ("pred_logits", "pred_masks")
        layers = [{k: o[k] for k in keys} for o in (*det["aux_outputs"], det)]  # oldest first
        result = {
            "steps": steps,
            "frame_outputs": layers[-num_l:],
            "num_layers_copies": num_l,
            "window": w,
            "pred_logits": steps[-1]["pred_logits"][-1],
            "pred_masks": torch.cat([s["pred_masks"][-1] for s in steps], dim=2),
        }
        if not self.freeze_detector:
            # What the per-frame Mask2Former losses read (.joint_criterion); a frozen detector gets none.
            result["detector_outputs"] = {**layers[-1], "aux_outputs": layers[:-1]}
        return result

    # ------------------------------------------------------------------ online inference
    def preprocess(self, frames: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Frames ``[T, 3, H, W]`` RGB on the 0-255 scale (uint8 or float) -> (``[T, 3, H', W']`` normalised
        with ``pixel_mean / pixel_std`` and zero-padded at the bottom / right to a multiple of
        ``size_divisibility``, on the model's device; ``(H, W)`` the unpadded size).

        The padding comes after the normalisation, so it is 0 in normalised space (detectron2's
        ``ImageList``), as the official model does it.
        """
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"GRAttVIS.preprocess: expected frames [T, 3, H, W], got {tuple(frames.shape)}")
        h, w = int(frames.shape[-2]), int(frames.shape[-1])
        x = (frames.to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
        d = self.size_divisibility
        ph, pw = (-h) % d if d > 1 else 0, (-w) % d if d > 1 else 0
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return x, (h, w)

    def init_state(self, batch_size: int = 1) -> OnlineState:
        """The state before a video's first frame: ``query_feat`` as ``[cQ, B, C]`` and an empty memory."""
        return OnlineState(self.vita_module.initial_query(batch_size), self.vita_module.new_memory(), 0)

    def online_step(self, images: Tensor, state: OnlineState) -> tuple[dict, OnlineState]:
        """One frame of B videos: detector, one head step (W = 1, L = 1, deterministic gates ``logit >= 0``).

        Call in eval mode (``model.eval()``), typically under ``torch.no_grad()``.

        Args:
            images: ``[B, 3, H, W]`` normalised and padded to a multiple of 32 (:meth:`preprocess`).
            state: from :meth:`init_state` or the previous call; its memory is updated in place.
        Returns:
            ``(out, new_state)`` with ``out``: ``"pred_logits" [B, cQ, K+1]`` and ``"pred_mask_embed"
            [B, cQ, C_m]`` (the last decoder layer), ``"mask_features" [B, C_m, H/4, W/4]`` (the head's
            ``vita_mask_features`` of the detector's raw stride-4 map: masks are ``<embed, features>``),
            ``"gates" [B, cQ]`` (the last decoder layer's hard gates; None without ``gated_prop``).
        Raises:
            RuntimeError: the model is in training mode (the gates would be random).
        """
        if self.training:
            raise RuntimeError("GRAttVIS.online_step: call model.eval() first (test-time gates and L = 1)")
        if images.dim() != 4:
            raise ValueError(f"GRAttVIS.online_step: expected images [B, 3, H, W], got {tuple(images.shape)}")
        b = images.shape[0]
        if state.query.shape[1] != b:
            raise ValueError(
                f"GRAttVIS.online_step: the state holds {state.query.shape[1]} videos, the images {b}"
            )
        det = self.detect(images)
        out = self.vita_module.step(det["frame_queries"], state.query, state.memory)
        gates = out["gates"][-1] if out["gates"] else None
        result = {
            "pred_logits": out["pred_logits"][-1],
            "pred_mask_embed": out["pred_mask_embed"][-1],
            "mask_features": self.vita_module.mask_features(det["clip_mask_features"]),
            "gates": gates,
        }
        return result, OnlineState(out["prop_query"], state.memory, state.num_frames + 1)
