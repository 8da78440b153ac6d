"""DeVIS test-time preprocessing against the official rule, with sizes worked out by hand.

Official code (acaelles97/DeVIS): ``src/datasets/vis.py:make_val_vis_transforms`` resizes every val frame
with ``vis_transforms.py:VISRandomClipResize([360], max_size=640)`` ->
``coco_transforms.py:get_size_with_aspect_ratio`` (no padding for VIS) and PIL bilinear (torchvision
``F.resize`` on PIL frames); frames come from ``vis.py:VISValDataset`` via PIL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.data.transforms import resize_clip, resize_image, shortest_edge_size
from vidseg.data.video_dataset import VideoFrames
from vidseg.data.video_io import load_image
from vidseg.models.devis.postprocess import upsample_masks


@pytest.mark.parametrize(
    ("hw", "size", "max_size", "expected"),
    [
        # Already fits: short side 360 and 640/360*360 = 640 is not above the cap -> untouched.
        ((360, 640), 360, 640, (360, 640)),
        # 1280/720*360 = 640, not above 640 -> short side 360, long int(360*1280/720) = 640.
        ((720, 1280), 360, 640, (360, 640)),
        # 854/480*360 = 640.5 > 640 -> size round(640*480/854) = round(359.72) = 360; long int(640.5) = 640.
        ((480, 854), 360, 640, (360, 640)),
        # 2*360 = 720 > 640 -> size round(640*500/1000) = 320 -> (320, 640).
        ((500, 1000), 360, 640, (320, 640)),
        # Portrait upscale: 1.5*360 = 540 <= 640 -> width 360, height int(360*300/200) = 540.
        ((300, 200), 360, 640, (540, 360)),
        # The cap lowers the size to round(640*200/640) = 200, which is the short side already -> untouched.
        ((200, 640), 360, 640, (200, 640)),
        # size round(640*361/1000) = round(231.04) = 231; long int(231*1000/361) = int(639.89) = 639 (floor).
        ((361, 1000), 360, 640, (231, 639)),
    ],
)
def test_official_resize_rule_by_hand(hw, size, max_size, expected):
    assert shortest_edge_size(hw[0], hw[1], size, max_size) == expected


def test_frame_that_fits_is_left_untouched():
    # PIL's resize to the image's own size is a copy, so the official pipeline leaves such a frame bit-exact.
    frames = torch.rand(2, 3, 360, 640) * 255
    size = shortest_edge_size(360, 640, 360, 640)
    out, _ = resize_clip(frames, None, size)
    assert torch.equal(out, frames)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA"])
def test_frames_read_as_rgb_with_pil(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"frame_{mode}.png"
    img.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGB")))


def test_masks_upsampled_bilinearly_before_the_threshold():
    # Official src/models/tracker.py:Tracker.process_masks: bilinear (align_corners False) logits -> original
    # size, sigmoid, then encode_mask's ``> 0.5``. VIS has no padding, so padded size == resized size.
    # Logits [-3, 1] at width 2 -> width 4: source x = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 ->
    # -3, -2, 0, 1 (edges clamped). sigmoid(0) = 0.5 is not > 0.5, so only the last pixel is on; thresholding
    # first and then upsampling would give [F, F, T, T].
    logits = torch.tensor([[[-3.0, 1.0]]])  # [N=1, h=1, w=2]
    prob = upsample_masks(logits, (1, 2), (1, 2), (1, 4), threshold=None)
    torch.testing.assert_close(prob[0, 0], torch.tensor([-3.0, -2.0, 0.0, 1.0]).sigmoid())
    mask = upsample_masks(logits, (1, 2), (1, 2), (1, 4), threshold=0.5)
    assert mask[0, 0].tolist() == [False, False, False, True]


def test_frames_resized_with_pil_bilinear_by_hand():
    # Official vis_transforms.py:resize_clip -> torchvision F.resize on a PIL frame = PIL BILINEAR, which when
    # shrinking by 2 is a triangle filter of support 2: output 0 (centre 1.0 in source pixels) weighs pixels
    # 0, 1, 2 by 0.75, 0.75, 0.25 -> (7.5 + 15 + 7.5) / 1.75 = 17.14 -> uint8 17; output 1 (centre 3.0) weighs
    # pixels 1, 2, 3 by 0.25, 0.75, 0.75 -> (5 + 22.5 + 30) / 1.75 = 32.86 -> 33.
    row = np.array([10, 20, 30, 40], dtype=np.uint8)
    img = np.repeat(row[None, :, None], 3, axis=2)  # [1, 4, 3]
    out = resize_image(img, (1, 2))
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [17, 33]
    # the float (antialiased) tensor resize gives the same filter without the uint8 rounding
    flt, _ = resize_clip(torch.from_numpy(img).permute(2, 0, 1)[None].float(), None, (1, 2))
    torch.testing.assert_close(flt[0, 0, 0], torch.tensor([30 / 1.75, 57.5 / 1.75]))
    assert resize_image(img, (1, 4)) is img  # a frame that fits is not touched


def test_inference_frames_are_the_official_val_pipeline():
    # make_val_vis_transforms: PIL resize -> ToTensor (/255) -> Normalize(ImageNet mean/std in 0..1).
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)
    frame = np.asarray(Image.fromarray(small).resize((200, 113), Image.BICUBIC))  # a smooth 113x200 frame
    size = shortest_edge_size(113, 200, 90, 160)
    assert size == (90, 159)  # 200/113*90 = 159.29 <= 160 -> long side int(159.29)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    frames = VideoFrames([frame, frame[::-1].copy()], size, [m * 255 for m in mean], [s * 255 for s in std])
    got = frames.get([0, 1])
    for k, src in enumerate([frame, frame[::-1]]):
        pil = np.asarray(Image.fromarray(np.ascontiguousarray(src)).resize((159, 90), Image.BILINEAR))
        ref = torch.from_numpy(pil.copy()).permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]
        ref = ref / torch.tensor(std)[:, None, None]
        torch.testing.assert_close(got[k], ref, rtol=0, atol=1e-5)
