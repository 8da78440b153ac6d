"""Official checkpoint files, written by the same calls the official code makes.

- DeVIS ``main.py``: a real AdamW over its 5 name-matched parameter groups, a real ``MultiStepLR`` stepped
  once per epoch, a frozen yacs ``CfgNode``, and ``torch.save(..., _use_new_zipfile_serialization=False)``
  (``misc.py`` ``save_on_master``) of ``model / optimizer / lr_scheduler / epoch / cfg / vis_win_names /
  best_val_stats``.
- Deformable DETR ``main.py``: its 3 parameter groups, AdamW, ``StepLR(optimizer, args.lr_drop)``, and
  ``model / optimizer / lr_scheduler / epoch / args`` with ``args`` an ``argparse.Namespace``.
- detectron2 (VITA, GenVIS, GRAtt-VIS: Mask2Former's trainer on detectron2 0.6): fvcore's
  ``Checkpointer.save`` writes ``model``, one entry per checkpointable (``DefaultTrainer`` registers only
  ``trainer``, whose state is ``iteration``, the ``LRScheduler`` hook's scheduler state and ``_trainer`` with
  the optimizer and AMP grad scaler) and the ``iteration`` kwarg of ``PeriodicCheckpointer``; older
  detectron2 trainers registered ``optimizer`` and ``scheduler`` instead. Mask2Former's optimizer has one
  parameter group per parameter.
- detectron2 ImageNet ``.pkl``: detectron2's ``convert-torchvision-to-d2`` renaming, values
  ``.detach().numpy()``, ``pickle.dump({"model", "__author__": "torchvision", "matching_heuristics": True})``.
- torchvision ``resnet50``: ``torch.save(model.state_dict())`` (the 2017 legacy file without
  ``num_batches_tracked``, or a newer zip file with it).
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch
from conftest import TIE, module_tree, random_state_dict
from torch import nn
from yacs.config import CfgNode

# DeVIS src/config.py defaults for the name lists of the parameter groups (spec devis.md §3.6).
BACKBONE_NAMES = ["backbone.0"]
LR_LINEAR_PROJ_NAMES = ["self_attn.sampling_offsets", "cross_attn.sampling_offsets", "reference_points"]
LR_MASK_HEAD_NAMES = ["bbox_attention", "mask_head"]
LR_TEMPORAL_LINEAR_PROJ_NAMES = ["temporal_sampling_offsets"]


def match_name_keywords(name: str, keywords: list[str]) -> bool:
    return any(k in name for k in keywords)


def _filled(model: nn.Module, seed: int, init: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Random numbers, or ``init`` (a real model's weights, e.g. for files whose outputs are compared)."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(random_state_dict(shapes, seed=seed) if init is None else init)
    return model


def _one_step(optimizer: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.randn(p.shape, generator=g)
    optimizer.step()
    optimizer.zero_grad()


def devis_cfg(video: bool, *, shift_class_neuron: bool = False, steps: tuple[int, ...] = (2,)) -> CfgNode:
    """The DeVIS yacs config as ``main.py`` holds it: defaults merged with a config file, then frozen."""
    cfg = CfgNode(new_allowed=True)
    cfg.SEED = 42
    cfg.OUTPUT_DIR = "output/devis"
    cfg.MODEL = CfgNode(new_allowed=True)
    cfg.MODEL.WEIGHTS = "weights/r50_deformable_detr_plus_iterative_bbox_refinement-checkpoint.pth"
    cfg.MODEL.SHIFT_CLASS_NEURON = shift_class_neuron
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.NUM_QUERIES = 60 if video else 300
    cfg.SOLVER = CfgNode(new_allowed=True)
    cfg.SOLVER.BASE_LR = 1e-4 if video else 2e-5
    cfg.SOLVER.LR_BACKBONE = 1e-5
    cfg.SOLVER.BACKBONE_NAMES = list(BACKBONE_NAMES) if video else ["backbone.0", "input_proj"]
    cfg.SOLVER.LR_LINEAR_PROJ_NAMES = list(LR_LINEAR_PROJ_NAMES)
    cfg.SOLVER.LR_LINEAR_PROJ_MULT = 0.1
    cfg.SOLVER.LR_MASK_HEAD_NAMES = list(LR_MASK_HEAD_NAMES)
    cfg.SOLVER.LR_MASK_HEAD_MULT = 1.0 if video else 10.0
    cfg.SOLVER.STEPS = list(steps)
    cfg.SOLVER.EPOCHS = max(steps) + 1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.FROZEN_PARAMS = [] if video else ["class_embed"]
    cfg.SOLVER.DEVIS = CfgNode(new_allowed=True)
    cfg.SOLVER.DEVIS.LR_TEMPORAL_LINEAR_PROJ_NAMES = list(LR_TEMPORAL_LINEAR_PROJ_NAMES)
    cfg.SOLVER.DEVIS.LR_TEMPORAL_LINEAR_PROJ_MULT = 0.1
    cfg.DATASETS = CfgNode(new_allowed=True)
    cfg.DATASETS.TYPE = "vis" if video else "coco"
    cfg.freeze()
    return cfg


def devis_param_dicts(model: nn.Module, cfg: CfgNode) -> list[dict]:
    """The 5 parameter groups of DeVIS ``main.py``, by name substring."""
    s = cfg.SOLVER
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rest = (
        s.BACKBONE_NAMES
        + s.LR_LINEAR_PROJ_NAMES
        + s.LR_MASK_HEAD_NAMES
        + s.DEVIS.LR_TEMPORAL_LINEAR_PROJ_NAMES
    )
    return [
        {"params": [p for n, p in named if not match_name_keywords(n, rest)], "lr": s.BASE_LR},
        {"params": [p for n, p in named if match_name_keywords(n, s.BACKBONE_NAMES)], "lr": s.LR_BACKBONE},
        {
            "params": [p for n, p in named if match_name_keywords(n, s.LR_LINEAR_PROJ_NAMES)],
            "lr": s.BASE_LR * s.LR_LINEAR_PROJ_MULT,
        },
        {
            "params": [p for n, p in named if match_name_keywords(n, s.LR_MASK_HEAD_NAMES)],
            "lr": s.BASE_LR * s.LR_MASK_HEAD_MULT,
        },
        {
            "params": [p for n, p in named if match_name_keywords(n, s.DEVIS.LR_TEMPORAL_LINEAR_PROJ_NAMES)],
            "lr": s.BASE_LR * s.DEVIS.LR_TEMPORAL_LINEAR_PROJ_MULT,
        },
    ]


def write_devis_checkpoint(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    *,
    video: bool,
    seed: int = 0,
    epochs: int = 3,
    init: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Train ``epochs`` epochs of one step each and save as DeVIS ``main.py`` does. Returns the model.

    ``init``: start from these weights (under the names of ``shapes``) instead of random numbers."""
    cfg = devis_cfg(video, steps=(2,))
    model = _filled(module_tree(shapes, TIE), seed, init)
    for n, p in model.named_parameters():
        if match_name_keywords(n, cfg.SOLVER.FROZEN_PARAMS):
            p.requires_grad_(False)
    param_dicts = devis_param_dicts(model, cfg)
    optimizer = torch.optim.AdamW(param_dicts, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.SOLVER.STEPS)
    best_val_stats = None
    vis_win_names = {
        "train": {"iter_metrics": "train_iter_win", "epoch_metrics": None},
        "val": {"epoch_metrics": "val_epoch_win", "epoch_eval": "val_eval_win"},
    }
    for epoch in range(1, epochs + 1):
        _one_step(optimizer, seed + epoch)  # train_one_epoch
        lr_scheduler.step()
        if not video:  # COCO: bbox and mask AP/AP50/AP75 from coco_eval stats.tolist()
            val_stats = [0.1 * epoch, 0.2, 0.15, 0.09 * epoch, 0.18, 0.12]
            best_val_stats = (
                val_stats
                if best_val_stats is None
                else [max(a, b) for a, b in zip(best_val_stats, val_stats)]
            )
        if epoch < epochs:
            continue  # main.py saves after every epoch into the same checkpoint.pth; the last one is kept
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "epoch": epoch,
            "cfg": cfg,
            "vis_win_names": vis_win_names,
            "best_val_stats": best_val_stats,
        }
        torch.save(state, path, _use_new_zipfile_serialization=False)
    return model


def ddetr_args() -> argparse.Namespace:
    """The ``args`` of Deformable DETR ``main.py`` (r50 + iterative box refinement), as argparse made them."""
    return argparse.Namespace(
        lr=2e-4,
        lr_backbone_names=["backbone.0"],
        lr_backbone=2e-5,
        lr_linear_proj_names=["reference_points", "sampling_offsets"],
        lr_linear_proj_mult=0.1,
        batch_size=2,
        weight_decay=1e-4,
        epochs=50,
        lr_drop=40,
        lr_drop_epochs=None,
        clip_max_norm=0.1,
        sgd=False,
        with_box_refine=True,
        two_stage=False,
        frozen_weights=None,
        backbone="resnet50",
        num_feature_levels=4,
        num_queries=300,
        masks=False,
        dataset_file="coco",
        coco_path="./data/coco",
        output_dir="exps/r50_deformable_detr_plus_iterative_bbox_refinement",
        device="cuda",
        seed=42,
        resume="",
        start_epoch=0,
        eval=False,
        num_workers=2,
        distributed=True,
        world_size=8,
        rank=0,
        gpu=0,
        dist_url="env://",
        dist_backend="nccl",
    )


def write_deformable_detr_checkpoint(
    path: Path, shapes: dict[str, tuple[int, ...]], *, legacy: bool = False, seed: int = 1, epochs: int = 2
) -> nn.Module:
    """Deformable DETR ``main.py``: 3 parameter groups, AdamW, StepLR, ``torch.save`` per epoch."""
    args = ddetr_args()
    model = _filled(module_tree(shapes, {"transformer.decoder.bbox_embed": "bbox_embed"}), seed)
    named = list(model.named_parameters())
    other = args.lr_backbone_names + args.lr_linear_proj_names
    param_dicts = [
        {"params": [p for n, p in named if not match_name_keywords(n, other)], "lr": args.lr},
        {
            "params": [p for n, p in named if match_name_keywords(n, args.lr_backbone_names)],
            "lr": args.lr_backbone,
        },
        {
            "params": [p for n, p in named if match_name_keywords(n, args.lr_linear_proj_names)],
            "lr": args.lr * args.lr_linear_proj_mult,
        },
    ]
    optimizer = torch.optim.AdamW(param_dicts, lr=args.lr, weight_decay=args.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop)
    for epoch in range(args.start_epoch, args.start_epoch + epochs):
        _one_step(optimizer, seed + epoch)
        lr_scheduler.step()
        if epoch < args.start_epoch + epochs - 1:
            continue  # saved after every epoch into checkpoint.pth; the last one is kept
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "epoch": epoch,
            "args": args,
        }
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return model


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """detectron2's scheduler: base lr times a stateless multiplier; its state is base_lrs and last_epoch."""

    def __init__(self, optimizer, max_iter: int, last_iter: int = -1) -> None:
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> list[float]:
        return [lr * (0.1 if self.last_epoch >= 0.9 * self._max_iter else 1.0) for lr in self.base_lrs]


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """An old detectron2 scheduler: ``state_dict`` is the whole ``__dict__`` but the optimizer."""

    def __init__(self, optimizer, milestones: list[int], gamma: float = 0.1, warmup_iters: int = 10) -> None:
        self.milestones, self.gamma = milestones, gamma
        self.warmup_factor, self.warmup_iters, self.warmup_method = 1.0, warmup_iters, "linear"
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        drops = sum(self.last_epoch >= m for m in self.milestones)
        return [lr * self.gamma**drops for lr in self.base_lrs]


GRATT_ONLY = ("vita_module.prop_instance.",)
MEMORY_KEYS = tuple(
    f"vita_module.{name}.{leaf}"
    for name in ("pre_memory_embed_k", "pre_memory_embed_v", "pre_query_embed_k", "pre_query_embed_v")
    for leaf in ("weight", "bias")
)


def detectron2_shapes(gratt_shapes: dict[str, tuple[int, ...]], method: str) -> dict[str, tuple[int, ...]]:
    """VITA / GenVIS / GRAtt-VIS names: GRAtt's file has ``prop_instance``; GenVIS always has the memory."""
    shapes = dict(gratt_shapes)
    if method != "grattvis":
        shapes = {k: s for k, s in shapes.items() if not k.startswith(GRATT_ONLY)}
    if method == "genvis":
        hidden = gratt_shapes["vita_module.query_feat.weight"][1]
        shapes.update({k: (hidden, hidden) if k.endswith("weight") else (hidden,) for k in MEMORY_KEYS})
    return shapes


def _detectron2_buffer(name: str) -> bool:
    # FrozenBatchNorm2d keeps weight, bias and statistics as buffers; the criteria's empty_weight is a buffer.
    return name.endswith("empty_weight") or (name.startswith("backbone.") and ".norm." in name)


def mask2former_param_groups(
    model: nn.Module, base_lr: float = 1e-4, weight_decay: float = 0.05
) -> list[dict]:
    """Mask2Former ``build_optimizer``: one group per parameter; backbone lr x0.1; no decay for norms."""
    groups = []
    memo = set()
    for module_name, module in model.named_modules():
        for _, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in memo:
                continue
            memo.add(value)
            hyper = {"lr": base_lr, "weight_decay": weight_decay}
            if "backbone" in module_name:
                hyper["lr"] = base_lr * 0.1
            if "norm" in module_name:
                hyper["weight_decay"] = 0.0
            groups.append({"params": [value], **hyper})
    return groups


def write_detectron2_checkpoint(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    *,
    seed: int = 2,
    iterations: int = 2,
    freeze_detector: bool = True,
    old_trainer: bool = False,
    init: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Train ``iterations`` steps (AMP scaler, per-iteration scheduler) and save as detectron2 does.

    ``init``: start from these weights (under the names of ``shapes``) instead of random numbers."""
    model = _filled(module_tree(shapes, is_buffer=_detectron2_buffer), seed, init)
    if freeze_detector:  # GRAtt-VIS FREEZE_DETECTOR: only the VIS head trains
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("vita_module."))
    optimizer = torch.optim.AdamW(mask2former_param_groups(model), lr=1e-4)
    scheduler = (
        WarmupMultiStepLR(optimizer, [1]) if old_trainer else LRMultiplier(optimizer, max_iter=iterations)
    )
    grad_scaler = torch.amp.GradScaler("cpu")
    iteration = -1
    for iteration in range(iterations):
        _one_step(optimizer, seed + iteration)
        scheduler.step()  # the LRScheduler hook's after_step
    data = {"model": model.state_dict()}
    if old_trainer:  # DetectionCheckpointer(model, dir, optimizer=optimizer, scheduler=scheduler)
        data["optimizer"] = optimizer.state_dict()
        data["scheduler"] = scheduler.state_dict()
    else:  # DetectionCheckpointer(model, dir, trainer=weakref.proxy(self)): DefaultTrainer.state_dict()
        data["trainer"] = {
            "iteration": iteration,
            "hooks": {"LRScheduler": scheduler.state_dict()},
            "_trainer": {
                "iteration": iteration,
                "optimizer": optimizer.state_dict(),
                "grad_scaler": grad_scaler.state_dict(),
            },
        }
    data["iteration"] = iteration  # PeriodicCheckpointer.step(iteration) -> save(name, iteration=...)
    with open(path, "wb") as f:  # fvcore opens the file through its PathManager, then torch.save(data, f)
        torch.save(data, f)
    return model


def resnet50_shapes(coco_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """torchvision ``resnet50().state_dict()`` names and shapes (without ``num_batches_tracked``)."""
    body = "def_detr.backbone.0.body."
    shapes = {k[len(body) :]: s for k, s in coco_shapes.items() if k.startswith(body)}
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 2048), (1000,)
    return shapes


def torchvision_resnet50_state_dict(
    coco_shapes: dict[str, tuple[int, ...]], *, num_batches_tracked: bool, seed: int = 3
) -> dict[str, torch.Tensor]:
    sd = random_state_dict(resnet50_shapes(coco_shapes), seed=seed)
    out = {}
    for k, v in sd.items():
        out[k] = v
        if num_batches_tracked and k.endswith("running_var"):  # BatchNorm2d since torch 0.4.1
            out[k.replace("running_var", "num_batches_tracked")] = torch.tensor(5005, dtype=torch.long)
    return out


def write_torchvision_resnet50(path: Path, state_dict: dict[str, torch.Tensor], *, legacy: bool) -> None:
    """``torch.save(model.state_dict(), path)``; the 2017 hub file is a legacy (non-zip) pickle."""
    torch.save(dict(state_dict), path, _use_new_zipfile_serialization=not legacy)


def write_detectron2_imagenet_pkl(path: Path, torchvision_state_dict: dict[str, torch.Tensor]) -> dict:
    """detectron2's ``tools/convert-torchvision-to-d2.py`` on a torchvision ResNet. Returns the new names."""
    obj = dict(torchvision_state_dict)
    newmodel = {}
    for k in list(obj.keys()):
        old_k = k
        if "layer" not in k:
            k = "stem." + k
        k = re.sub(r"layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", k)
        k = re.sub(r"bn(\d)", r"conv\1.norm", k)
        k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        newmodel[k] = obj.pop(old_k).detach().numpy()
    res = {"model": newmodel, "__author__": "torchvision", "matching_heuristics": True}
    with open(path, "wb") as f:
        pickle.dump(res, f)
    return {k: i for i, k in enumerate(newmodel)}
