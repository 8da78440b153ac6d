"""Image post-processing: top-k over queries x classes, absolute boxes, masks at the original size, COCO."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from vidseg.models.devis.postprocess import (
    ImagePostProcessor,
    instances_to_coco,
    topk_queries,
    upsample_masks,
)


def _outputs():
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 2, 1] = 3.0  # best: query 2, class 1
    logits[0, 0, 0] = 1.0  # second: query 0, class 0
    logits[0, 2, 0] = 0.0  # third: query 2 again, class 0
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1], [0.9, 0.5, 0.4, 1.2]]])
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_topk_over_queries_and_classes():
    top = topk_queries(**{k: v for k, v in _outputs().items()}, k=3)
    assert top["query_idx"].tolist() == [[2, 0, 2]]
    assert top["labels"].tolist() == [[1, 0, 0]]
    torch.testing.assert_close(top["scores"], torch.sigmoid(torch.tensor([[3.0, 1.0, 0.0]])))
    torch.testing.assert_close(top["boxes"][0, 1], torch.tensor([0.5, 0.5, 0.5, 0.5]))


def test_boxes_absolute_xyxy_in_original_size_unclamped_by_default():
    post = ImagePostProcessor(num_out=2)
    (res,) = post(_outputs(), orig_sizes=[(100, 200)])
    assert res["labels"].tolist() == [1, 0]
    # query 2: cx .9 w .4 -> x .7..1.1 -> 140..220; cy .5 h 1.2 -> -.1..1.1 -> -10..110 (past the image)
    torch.testing.assert_close(res["boxes"][0], torch.tensor([140.0, -10.0, 220.0, 110.0]))
    torch.testing.assert_close(res["boxes"][1], torch.tensor([50.0, 25.0, 150.0, 75.0]))
    (res,) = ImagePostProcessor(num_out=1, clamp_boxes=True)(_outputs(), orig_sizes=[(100, 200)])
    torch.testing.assert_close(res["boxes"][0], torch.tensor([140.0, 0.0, 200.0, 100.0]))


def _official_boxes(boxes_cxcywh: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """DeVIS ``process_boxes``: cxcywh -> xyxy, times an int64 ``(w, h, w, h)``; nothing else."""
    cx, cy, bw, bh = boxes_cxcywh.unbind(-1)
    xyxy = torch.stack([cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh], dim=-1)
    return xyxy * torch.tensor([w, h, w, h])  # int64 scale, as the official target_sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coco_boxes_are_the_official_formula_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 5, generator=g, dtype=dtype)
    # centres near the border and large sizes: many boxes leave the image
    boxes = torch.rand(2, 30, 4, generator=g, dtype=dtype) * torch.tensor([1.0, 1.0, 0.9, 0.9], dtype=dtype)
    sizes = [(480, 640), (333, 500)]
    results = ImagePostProcessor(num_out=20)({"pred_logits": logits, "pred_boxes": boxes}, sizes)
    top = topk_queries(logits, boxes, 20)
    outside = 0
    for res, (h, w), b in zip(results, sizes, top["boxes"]):
        expected = _official_boxes(b, h, w)
        assert res["boxes"].dtype == dtype and res["scores"].dtype == dtype
        assert torch.equal(res["boxes"], expected)
        past = (expected[:, :2] < 0).any(1) | (expected[:, 2] > w) | (expected[:, 3] > h)
        outside += int(past.sum())
    assert outside > 5  # the comparison covered boxes that extend past the image


def test_float64_outputs_stay_float64():
    outputs = {k: v.double() for k, v in _outputs().items()}
    lg = _quarter_logits().double()
    lg[0, 0] = 0.3  # a probability that float32 would round
    outputs["pred_masks"] = lg[None, None].repeat(1, 3, 1, 1)
    (res,) = ImagePostProcessor(num_out=2, mask_threshold=0.5)(
        outputs, orig_sizes=[(32, 64)], image_sizes=[(16, 32)]
    )
    assert res["boxes"].dtype == torch.float64 and res["scores"].dtype == torch.float64
    probs = upsample_masks(lg[None], (32, 32), (16, 32), (32, 64), threshold=None)
    assert probs.dtype == torch.float64
    ref = torch.nn.functional.interpolate(lg[None, None], size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.equal(probs[0], ref[0, 0, :32, :64].sigmoid())


def _quarter_logits():
    # The input is padded to 32x32 and holds a 16x32 image on top; mask logits at /4 are 8x8.
    # Columns 0..3 (the left half) are foreground in every row, padding rows included.
    lg = torch.full((8, 8), -10.0)
    lg[:, :4] = 10.0
    return lg


def test_masks_upsampled_to_the_original_size():
    m = upsample_masks(_quarter_logits()[None], padded_size=(32, 32), image_size=(16, 32), orig_size=(32, 64))
    assert m.shape == (1, 32, 64) and m.dtype == torch.bool
    expected = torch.zeros(32, 64, dtype=torch.bool)
    expected[:, :32] = True  # /4 column boundary 4.0 -> original x = 4 * 8 = 32
    assert torch.equal(m[0], expected)
    probs = upsample_masks(_quarter_logits()[None], (32, 32), (16, 32), (32, 64), threshold=None)
    assert probs.dtype == torch.float32 and 0.0 <= probs.min() and probs.max() <= 1.0  # the logits' dtype


def test_padding_is_cropped_before_resizing():
    lg = torch.full((8, 8), 10.0)  # rows 0..2 foreground, row 3 background, rows 4..7 padding (garbage +10)
    lg[3] = -10.0
    m = upsample_masks(lg[None], padded_size=(32, 32), image_size=(16, 32), orig_size=(32, 64))[0]
    # /4 row boundary 3.0 -> original y = 3 * 8 = 24; the padding rows never reach the original image
    assert m[:24].all() and not m[24:].any()


def test_masks_through_the_postprocessor_topk_aligned_and_all_queries():
    outputs = _outputs()
    all_masks = torch.full((1, 3, 8, 8), -10.0)
    all_masks[0, 2] = _quarter_logits()
    post = ImagePostProcessor(num_out=2)
    # pred_masks for all queries -> gathered by the top-k query indices
    (res,) = post({**outputs, "pred_masks": all_masks}, orig_sizes=[(32, 64)], image_sizes=[(16, 32)])
    assert res["masks"].shape == (2, 32, 64)
    assert res["masks"][0, :, :32].all() and not res["masks"][0, :, 32:].any() and not res["masks"][1].any()
    # pred_masks aligned with a model-computed "topk"
    top = post.select(outputs)
    aligned = all_masks[:, top["query_idx"][0]]
    (res2,) = post(
        {**outputs, "topk": top, "pred_masks": aligned}, orig_sizes=[(32, 64)], image_sizes=[(16, 32)]
    )
    assert torch.equal(res["masks"], res2["masks"])
    with pytest.raises(ValueError, match="not aligned"):
        post({**outputs, "topk": top, "pred_masks": all_masks}, orig_sizes=[(32, 64)])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode under numpy 2
def test_instances_to_coco():
    masks = torch.zeros(2, 4, 5, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    res = {
        "scores": torch.tensor([0.9, 0.2]),
        "labels": torch.tensor([0, 4]),
        "boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 1.0, 1.0]]),
        "masks": masks,
    }
    dets = instances_to_coco(res, image_id=7)
    assert [d["category_id"] for d in dets] == [1, 5]
    assert dets[0]["bbox"] == [2.0, 1.0, 3.0, 2.0] and dets[0]["image_id"] == 7
    assert dets[0]["score"] == pytest.approx(0.9)
    rle = dets[0]["segmentation"]
    assert isinstance(rle["counts"], str) and rle["size"] == [4, 5]
    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), masks[0].numpy())
    assert [d["category_id"] for d in instances_to_coco(res, 7, {0: 10, 4: 20})] == [10, 20]
    with pytest.raises(KeyError, match="no category id"):
        instances_to_coco(res, 7, {0: 10})
