"""The result of loading weights into a model (or converting a file): what was mapped, shifted, left out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_INDEX = re.compile(r"(?<=[.a-z])\d+(?=\.|$)")


def group_names(names: list[str]) -> list[str]:
    """Tensor names folded over their layer indices: ``layer*.*.bn*.num_batches_tracked (x20)``.

    Every name is covered (a pattern stands for all the names it folds); patterns keep first-seen order.
    """
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for n in names:
        pattern = _INDEX.sub("*", n)
        counts[pattern] = counts.get(pattern, 0) + 1
        first.setdefault(pattern, n)
    return [f"{p} (x{c})" if c > 1 else first[p] for p, c in counts.items()]


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded.

    Attributes:
        missing: model keys the checkpoint did not provide (they keep their initialisation).
        unexpected: checkpoint keys (after name mapping) the model has no place for.
        converted_from: detected format (one of :data:`vidseg.checkpoints.FORMATS`), plus ``+devis_stage2``
            when the COCO weights were adapted to a video model.
        mismatched: keys present on both sides with different shapes (skipped).
        dropped: checkpoint keys removed on purpose (classifier heads, recomputed buffers).
        notes: other remarks (e.g. duplicated box-head copies that disagreed, a shift that was not applied).
        mapped: model keys that received a tensor from the file.
        renamed: ``{file key: model key}`` for the mapped tensors whose name changed.
        shifted: keys whose ``class_embed`` rows were rotated (``SHIFT_CLASS_NEURON``).
        not_weights: top-level entries of the file that are not weights and were not used (``optimizer``,
            ``lr_scheduler``, ``trainer``, ``cfg``, ...).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    converted_from: str = ""
    mismatched: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    shifted: list[str] = field(default_factory=list)
    not_weights: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.summary()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def left_out(self) -> list[str]:
        """File keys that did not reach the model: unexpected, shape-mismatched or dropped on purpose."""
        return self.unexpected + self.mismatched + self.dropped

    def summary(self, max_names: int = 10) -> str:
        """One line: ``format=...; mapped N tensors (M renamed, e.g. a -> b); shifted ...; left out ...``."""

        def names(xs: list[str]) -> str:
            more = f" ... (+{len(xs) - max_names})" if len(xs) > max_names else ""
            return ", ".join(xs[:max_names]) + more

        parts = [f"format={self.converted_from}"]
        mapped = f"mapped {len(self.mapped)} tensors"
        if self.renamed:
            old, new = next(iter(self.renamed.items()))
            mapped += f" ({len(self.renamed)} renamed, e.g. {old} -> {new})"
        parts.append(mapped)
        if self.shifted:
            parts.append(f"class rows shifted in {len(self.shifted)}: {names(self.shifted)}")
        left_out = len(self.left_out)
        parts.append(f"left out {left_out}" if left_out else "nothing left out")
        for label, xs in (
            ("dropped", self.dropped),
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if xs:
                parts.append(f"{len(xs)} {label}: {names(xs)}")
        if self.not_weights:
            parts.append(f"not weights, not used: {names(self.not_weights)}")
        if self.notes:
            parts.append("; ".join(self.notes))
        return "; ".join(parts)

    def details(self) -> list[str]:
        """One line per way a tensor did not arrive, every name included (folded by :func:`group_names`),
        saying why; then the unused top-level entries and the notes."""
        lines = []
        for label, xs in (
            ("dropped on purpose (classifier heads, recomputed buffers)", self.dropped),
            ("left out: no place for them in the model", self.unexpected),
            ("left out: same name, other shape (the model keeps its own)", self.mismatched),
            ("missing: the model's tensors the file does not hold", self.missing),
        ):
            if xs:
                lines.append(f"{label} ({len(xs)}): " + ", ".join(group_names(xs)))
        if self.not_weights:
            lines.append("not weights, not used: " + ", ".join(self.not_weights))
        lines += [f"note: {n}" for n in self.notes]
        return lines
