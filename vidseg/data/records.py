"""What a reader produces: one :class:`VideoRecord` per video, and the dataset's :class:`DatasetMetadata`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class InstanceRecord:
    """One annotated object track of a video (one entry of the JSON ``annotations``).

    Attributes:
        id: annotation ``id`` (the track id; unique and non-zero in well-formed GT).
        category_id: the dataset's category id (as in the JSON).
        label: contiguous class label 0..K-1 (see :class:`DatasetMetadata`).
        segmentations: per frame, the raw encoding (compressed/uncompressed RLE, polygons), None if absent.
        bboxes: per frame ``[x, y, w, h]`` in pixels or None (may be None for the whole list).
        areas: per frame pixel area or None (the official GT's size measure; may be None for the whole list).
        iscrowd: crowd annotation (ignored by the metric, dropped from training targets by DeVIS).
    """

    id: int
    category_id: int
    label: int
    segmentations: list[Any]
    bboxes: list[list[float] | None] | None = None
    areas: list[float | None] | None = None
    iscrowd: bool = False


@dataclass
class VideoRecord:
    """A video before clip sampling.

    Attributes:
        video_id: the JSON video ``id``.
        file_names: absolute frame paths, in order (``len == length``).
        height, width: original frame size in pixels.
        instances: annotated tracks (empty for unannotated splits).
        name: a readable name (the frame folder), for messages.
        source: the JSON file it came from, for messages.
    """

    video_id: int
    file_names: list[str]
    height: int
    width: int
    instances: list[InstanceRecord] = field(default_factory=list)
    name: str = ""
    source: str = ""

    @property
    def length(self) -> int:
        return len(self.file_names)

    def describe(self) -> str:
        """``"<id> (<name>)"`` for error messages."""
        return f"{self.video_id} ({self.name})" if self.name else str(self.video_id)


# The metrics a dataset's metadata can name (``DatasetMetadata.evaluator_type``).
EVALUATOR_TYPES = ("ytvis", "ovis", "ytvis2022", "coco")


@dataclass
class DatasetMetadata:
    """Class names and the map between dataset category ids and contiguous labels (0..K-1, by ascending id).

    Attributes:
        name: catalog name ("" when loaded directly).
        classes: class names, index = contiguous label.
        category_ids: dataset category id of each label (ascending).
        json_file, image_root: where the data lives.
        evaluator_type: the metric that scores the dataset, one of :data:`EVALUATOR_TYPES`: "ytvis"
            (YouTube-VIS 2019/2021), "ovis" (OVIS rules), "ytvis2022" (YouTube-VIS 2022) or "coco" (COCO
            bbox + segm AP); ``vidseg.evaluation.build.build_evaluator`` builds its evaluator.
        has_annotations: False for splits without GT (official YT-VIS/OVIS val).
        coco_target: for a COCO set read into a video dataset's label space (``coco2ytvis2019_val`` ...),
            that label space (``"ytvis_2019"``, ``"ytvis_2021"``, ``"ovis"``); its category ids then differ
            from the JSON's, so the COCO ground truth is built from the records.
    """

    name: str
    classes: list[str]
    category_ids: list[int]
    json_file: str = ""
    image_root: str = ""
    evaluator_type: str = "ytvis"
    has_annotations: bool = True
    coco_target: str | None = None

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.category_ids):
            raise ValueError(f"{len(self.classes)} class names for {len(self.category_ids)} category ids")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"duplicate category ids: {self.category_ids}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label_to_category_id(self) -> list[int]:
        """``label_to_category_id[label] == category_id`` (what results JSONs need)."""
        return list(self.category_ids)

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.category_ids)}
