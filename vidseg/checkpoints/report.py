"""The result of loading weights into a model."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded.

    Attributes:
        missing: model keys the checkpoint did not provide (they keep their initialisation).
        unexpected: checkpoint keys (after name mapping) the model has no place for.
        converted_from: detected format (``vidseg``, ``devis_video``, ``devis_maskhead``, ``deformable_detr``,
            ``state_dict``, ``torchvision_resnet``, ``swin_imagenet``), plus ``+devis_stage2`` when the COCO
            weights were adapted to a video model.
        mismatched: keys present on both sides with different shapes (skipped).
        dropped: checkpoint keys removed on purpose (classifier heads, recomputed buffers).
        notes: other remarks (e.g. duplicated box-head copies that disagreed).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    converted_from: str = ""
    mismatched: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.summary()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, max_names: int = 10) -> str:
        def names(xs: list[str]) -> str:
            more = f" ... (+{len(xs) - max_names})" if len(xs) > max_names else ""
            return ", ".join(xs[:max_names]) + more

        parts = [f"format={self.converted_from}"]
        for label, xs in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if xs:
                parts.append(f"{len(xs)} {label}: {names(xs)}")
        if self.notes:
            parts.append("; ".join(self.notes))
        return "; ".join(parts)
