"""The image model on a video: per-frame detections become one-frame tracks of a VideoResult."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.data.video_dataset import video_item_from_source
from vidseg.models import build_model, load_config
from vidseg.models.devis.inference import ImageInference
from vidseg.models.devis.postprocess import ImagePostProcessor
from vidseg.structures.results import VideoResult


def test_image_inference_on_a_video_gives_one_frame_tracks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for t in range(3):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(tmp_path / f"{t:05d}.jpg")
    cfg = load_config(
        "configs/quickstart/deformable_mask_head_tiny.yaml", ["MODEL.NUM_CLASSES", "3", "TEST.NUM_OUT", "4"]
    )
    bundle = build_model(cfg)
    video = video_item_from_source(str(tmp_path), min_size=64, max_size=96, video_id=7)
    result = bundle.inference(bundle.model, video)
    assert isinstance(result, VideoResult) and result.video_id == 7
    assert (result.height, result.width) == (70, 90)
    assert len(result.tracks) == 3 * 4  # NUM_OUT detections on each of the 3 frames
    for i, track in enumerate(result.tracks):
        present = [t for t, m in enumerate(track.masks) if m is not None]
        assert present == [i // 4]  # frame-major, one frame each
        assert track.masks[present[0]]["size"] == [70, 90]
        assert 0 <= track.label < 3
        box = track.boxes[present[0]]  # the predicted box, xywh in original pixels, on the same frame only
        assert [b for b in track.boxes if b is not None] == [box]
        assert box[2] >= 0 and box[3] >= 0 and -1 <= box[0] <= 91 and -1 <= box[1] <= 71


def test_box_only_model_gives_tracks_with_boxes_and_no_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(tmp_path / "00000.jpg")
    cfg = load_config(
        "configs/quickstart/deformable_mask_head_tiny.yaml",
        ["MODEL.NUM_CLASSES", "3", "TEST.NUM_OUT", "4", "MODEL.MASK_ON", "False"],
    )
    bundle = build_model(cfg)
    result = bundle.inference(bundle.model, video_item_from_source(str(tmp_path), 64, 96, video_id=3))
    assert len(result.tracks) == 4
    assert all(t.masks == [None] and t.boxes[0] is not None for t in result.tracks)


class _BoxesPastTheFrame(torch.nn.Module):
    """Stands in for the image model: two detections, the first extending past the frame on three sides."""

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        logits = torch.tensor([[[4.0, -9.0], [2.0, -9.0]]])
        boxes = torch.tensor([[[0.95, 0.5, 0.3, 1.4], [0.5, 0.5, 0.2, 0.2]]])
        return {"pred_logits": logits, "pred_boxes": boxes}


def test_video_boxes_are_clamped_while_coco_boxes_are_not(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((70, 90, 3), dtype=np.uint8)).save(tmp_path / "00000.jpg")
    video = video_item_from_source(str(tmp_path), min_size=64, max_size=96, video_id=1)
    inference = ImageInference(ImagePostProcessor(num_out=2))
    result = inference(_BoxesPastTheFrame(), video)
    x, y, w, h = result.tracks[0].boxes[0]
    # cx .95 w .3 -> x 0.8..1.1 of 90 px; cy .5 h 1.4 -> -0.2..1.2 of 70 px: clamped, as DeVIS does
    assert x == pytest.approx(72.0) and y == 0.0 and x + w == 90.0 and y + h == 70.0
    assert result.tracks[1].boxes[0] == pytest.approx([36.0, 28.0, 18.0, 14.0])  # inside: unchanged
    (coco,) = ImagePostProcessor(num_out=2)(_BoxesPastTheFrame()(None), orig_sizes=[(70, 90)])
    torch.testing.assert_close(coco["boxes"][0], torch.tensor([72.0, -14.0, 99.0, 84.0]))  # COCO: unclamped
