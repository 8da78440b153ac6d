"""VITA / GenVIS / GRAtt-VIS checkpoints: what a file holds, and how a GRAtt-VIS model must be built for it.

The three methods share every ``vita_module.*`` name (grattvis.md §7) except two extras:

- ``vita_module.prop_instance.*``: the GRAtt gate (``MODEL.GENVIS.GATED_PROP``); VITA and GenVIS files have
  none.
- ``vita_module.pre_{memory,query}_embed_{k,v}.*``: GenVIS's memory (``MODEL.GENVIS.USE_MEM``); every GenVIS
  file has them, GRAtt files only when trained with memory (not the OVIS R50 model), VITA files never.

Memory on or off changes which parameters exist, so the model must be built the way the file was trained:
:func:`grattvis_weights_plan` reads the file's keys and the file wins over the config, with one warning line
naming the file and ``MODEL.GENVIS.USE_MEM``. A VITA file initialises a GRAtt-VIS training run (the official
recipe): the gate and the memory start from their default initialisation, and the notes say so. The same
notes reach :func:`vidseg.checkpoints.load_weights`' report through :func:`grattvis_load_notes`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from vidseg.checkpoints.formats import extract_state_dict
from vidseg.checkpoints.safe_load import safe_read

__all__ = [
    "GATE_PREFIX",
    "MEMORY_PREFIXES",
    "GrattvisCheckpointInfo",
    "grattvis_checkpoint_report",
    "grattvis_load_notes",
    "grattvis_weights_plan",
]

HEAD = "vita_module."
GATE_PREFIX = HEAD + "prop_instance."
MEMORY_PREFIXES = tuple(f"{HEAD}pre_{kind}_embed_{kv}." for kind in ("memory", "query") for kv in ("k", "v"))
_CLASS_EMBED = HEAD + "class_embed.weight"
_DETECTOR_CLASS_EMBED = "sem_seg_head.predictor.class_embed.weight"
_OLD_QUERY = "sem_seg_head.predictor.static_query."


@dataclass
class GrattvisCheckpointInfo:
    """What a detectron2-style VIS checkpoint holds.

    Attributes:
        path: the file.
        method: ``"grattvis"`` (has ``prop_instance``), ``"genvis"`` (memory, no gate), ``"vita"`` (a VIS head
            with neither), ``"detector"`` (a Mask2Former without ``vita_module``) or ``"none"`` (neither).
        has_head: any ``vita_module.*`` tensor.
        use_mem: the four memory linears are there (``pre_memory_embed_k/v``, ``pre_query_embed_k/v``).
        gated_prop: ``vita_module.prop_instance.*`` is there.
        num_classes: K from ``vita_module.class_embed`` ([K+1, C]), else from the detector's class head;
            None when neither exists.
        old_query_names: the detector's content queries under the old ``static_query`` name (renamed to
            ``query_feat`` on load).
        iteration: the training iteration recorded by detectron2 (top-level ``iteration``), or None.
        num_tensors: tensors in the file's ``model`` entry.
        other_entries: the file's top-level entries besides the weights (``trainer``, ``iteration``, ...).
    """

    path: str
    method: str
    has_head: bool
    use_mem: bool
    gated_prop: bool
    num_classes: int | None
    old_query_names: bool
    iteration: int | None
    num_tensors: int
    other_entries: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. ``vita_r50_ovis.pth: vita checkpoint (709 tensors), memory off, no gate, K=25``."""
        parts = [f"{self.method} checkpoint ({self.num_tensors} tensors)"]
        if self.has_head:
            parts.append("memory on" if self.use_mem else "memory off")
            parts.append("gate (prop_instance)" if self.gated_prop else "no gate")
        if self.num_classes is not None:
            parts.append(f"K={self.num_classes}")
        if self.old_query_names:
            parts.append("old static_query names")
        if self.iteration is not None:
            parts.append(f"iteration {self.iteration}")
        return f"{self.path}: " + ", ".join(parts)


def _info_from_keys(path: str, shapes: dict[str, tuple[int, ...]], meta: dict) -> GrattvisCheckpointInfo:
    keys = list(shapes)
    has_head = any(k.startswith(HEAD) for k in keys)
    use_mem = all(any(k.startswith(p) for k in keys) for p in MEMORY_PREFIXES)
    gated = any(k.startswith(GATE_PREFIX) for k in keys)
    if not has_head:
        method = "detector" if any(k.startswith("sem_seg_head.") for k in keys) else "none"
    else:
        method = "grattvis" if gated else ("genvis" if use_mem else "vita")
    cls = shapes.get(_CLASS_EMBED) or shapes.get(_DETECTOR_CLASS_EMBED)
    iteration = meta.get("iteration")
    return GrattvisCheckpointInfo(
        path=path,
        method=method,
        has_head=has_head,
        use_mem=use_mem,
        gated_prop=gated,
        num_classes=int(cls[0]) - 1 if cls else None,
        old_query_names=any(k.startswith(_OLD_QUERY) for k in keys),
        iteration=int(iteration) if isinstance(iteration, int) else None,
        num_tensors=len(keys),
        other_entries=list(meta),
    )


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> tuple[dict[str, tuple[int, ...]], dict]:
    # Keyed by mtime and size: a report and a plan of the same file (the builder's) read it once.
    sd, meta = extract_state_dict(safe_read(path), path)
    return {k: tuple(v.shape) for k, v in sd.items()}, meta


def grattvis_checkpoint_report(path: str | os.PathLike) -> GrattvisCheckpointInfo:
    """Read ``path`` safely (any format :func:`vidseg.checkpoints.load_weights` takes) and say what it holds.

    Raises:
        FileNotFoundError / CheckpointError: the file is missing or unreadable (the message names it).
    """
    path = os.fspath(path)
    st = os.stat(path) if os.path.isfile(path) else None
    if st is None:
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    shapes, meta = _read(path, st.st_mtime_ns, st.st_size)
    return _info_from_keys(path, shapes, meta)


def grattvis_weights_plan(
    weights_path: str, use_mem: bool, gated_prop: bool = True, num_classes: int | None = None
) -> tuple[bool, list[str]]:
    """How to build a GRAtt-VIS model that will load ``weights_path`` (``MODEL.WEIGHTS``).

    Args:
        weights_path: the checkpoint; "" means none (the config is used as is).
        use_mem: ``MODEL.GENVIS.USE_MEM`` of the config.
        gated_prop: ``MODEL.GENVIS.GATED_PROP`` of the config.
        num_classes: the K the model is built with, to report a class head that will not load.
    Returns:
        ``(use_mem, notes)``: ``use_mem`` is the file's when it has a VIS head (the file wins), else the
        config's; ``notes`` are one line each, to be logged as warnings: the config/file disagreement
        (naming the file and ``MODEL.GENVIS.USE_MEM``), the parts that start fresh (a VITA file's gate and
        memory), a gate the config does not build, a class-count mismatch. A missing or unreadable file gives
        the config's value and one note (loading the weights reports the error).
    """
    if not weights_path:
        return bool(use_mem), []
    try:
        info = grattvis_checkpoint_report(weights_path)
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError
        return bool(use_mem), [
            f"MODEL.WEIGHTS {weights_path}: cannot read it to check MODEL.GENVIS.USE_MEM ({e})"
        ]
    notes: list[str] = []
    if not info.has_head:
        what = "a detector without a VIS head" if info.method == "detector" else "no vita_module weights"
        notes.append(
            f"MODEL.WEIGHTS {weights_path}: {what}; the VIS head (vita_module) starts fresh, "
            f"MODEL.GENVIS.USE_MEM {bool(use_mem)} from the config"
        )
        plan = bool(use_mem)
    elif info.method == "vita":
        # The official GRAtt recipe: VITA's dataset-specific model, with the GRAtt-only parts at default init.
        fresh = ["vita_module.prop_instance"] if gated_prop else []
        if use_mem:
            fresh.append("the memory (vita_module.pre_{memory,query}_embed_{k,v})")
        plan = bool(use_mem)
        if fresh:
            notes.append(
                f"MODEL.WEIGHTS {weights_path}: a VITA checkpoint (no prop_instance, no memory): "
                f"{' and '.join(fresh)} start{'s' if len(fresh) == 1 else ''} fresh (default init); "
                "everything else is loaded"
            )
    else:
        plan = info.use_mem
        if bool(use_mem) != info.use_mem:
            notes.append(
                f"MODEL.WEIGHTS {weights_path}: the checkpoint was trained with memory "
                f"{'on' if info.use_mem else 'off'} (vita_module.pre_memory_embed_* "
                f"{'present' if info.use_mem else 'absent'}) but MODEL.GENVIS.USE_MEM is {bool(use_mem)}: "
                f"building with MODEL.GENVIS.USE_MEM {info.use_mem}, as the checkpoint"
            )
        if gated_prop and not info.gated_prop:
            notes.append(
                f"MODEL.WEIGHTS {weights_path}: a GenVIS checkpoint (no vita_module.prop_instance): "
                "the GRAtt gate starts fresh (default init)"
            )
        elif info.gated_prop and not gated_prop:
            notes.append(
                f"MODEL.WEIGHTS {weights_path}: has the GRAtt gate (vita_module.prop_instance) but "
                "MODEL.GENVIS.GATED_PROP is False: the gate is not built and its weights are left out"
            )
    if num_classes is not None and info.num_classes is not None and info.num_classes != num_classes:
        notes.append(
            f"MODEL.WEIGHTS {weights_path}: class heads for K={info.num_classes} classes, the model has "
            f"K={num_classes} (MODEL.SEM_SEG_HEAD.NUM_CLASSES): the class_embed layers start fresh"
        )
    return plan, notes


def grattvis_load_notes(model_keys: Iterable[str], file_keys: Iterable[str]) -> list[str]:
    """Notes for :func:`vidseg.checkpoints.load_weights`' report when a GRAtt-VIS-style model (one with
    ``vita_module.*`` parameters) loads a file: which GRAtt parts the file did not have (they keep their
    initialisation: the official non-strict load does the same). Empty for other models."""
    model_keys = list(model_keys)
    if not any(k.startswith(HEAD) for k in model_keys):
        return []
    file_keys = set(file_keys)
    has_head = any(k.startswith(HEAD) for k in file_keys)
    if not has_head:
        return ["GRAtt-VIS: the file has no VIS head (vita_module): it starts fresh"]
    gated = any(k.startswith(GATE_PREFIX) for k in file_keys)
    memory = any(k.startswith(MEMORY_PREFIXES) for k in file_keys)
    kind = "GRAtt-VIS" if gated else ("GenVIS" if memory else "VITA")
    notes = []
    for label, prefixes in (("the gate", (GATE_PREFIX,)), ("the memory", MEMORY_PREFIXES)):
        in_model = [k for k in model_keys if k.startswith(prefixes)]
        if in_model and not any(k in file_keys for k in in_model):
            notes.append(
                f"GRAtt-VIS: {label} ({', '.join(sorted({k.rsplit('.', 1)[0] for k in in_model}))}) "
                f"is not in this {kind} file: default init"
            )
    return notes
