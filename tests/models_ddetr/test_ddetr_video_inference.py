"""The image model on a video: per-frame detections become one-frame tracks of a VideoResult."""

from pathlib import Path

import numpy as np
from PIL import Image

from vidseg.data.video_dataset import video_item_from_source
from vidseg.models import build_model, load_config
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
