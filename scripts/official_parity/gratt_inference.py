"""Official GRAtt-VIS video inference (scoring, top-k, masks) on the head of ``gratt_head.pt`` (issue 16).

Runs the official ``grattvis/grattvis_model.py:Grattvis.inference`` (its source, extracted from the file and
executed unchanged) on a stand-in ``self``: the detector (``backbone`` + ``sem_seg_head``) returns prepared
per-frame frame queries ``[L, 1, fQ, C]`` and stride-4 features ``[1, CONVS_DIM, H/4, W/4]``;
``vita_module`` is the official ``GRAttVIS`` (USE_MEM True, GATED_PROP True, LEN_CLIP_WINDOW 1) with the
weights stored in ``tests/fixtures/official_parity/gratt_head.pt``. detectron2's ``ImageList.from_tensors``
(zero padding to SIZE_DIVISIBILITY at the bottom and right) and ``retry_if_cuda_oom`` (a plain call) are
written out. Saves inputs and the official ``pred_scores``, ``pred_labels`` and ``pred_masks`` to
``tests/fixtures/official_parity/gratt_inference.pt``.

Usage (needs the official mirror, never committed; run ``gratt_head.py`` first if its fixture changed):
``PYTHONPATH=. python scripts/official_parity/gratt_inference.py``
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gratt_head  # noqa: E402
from _official import (  # noqa: E402
    FIXTURES,
    extract,
    official_definition,
    save_fixture,
    shim_detectron2,
    stub_packages,
)

REPO = gratt_head.REPO
# frames, resized image (h, w) inside the 32-padded input, original (H0, W0), TEST.DETECTIONS_PER_IMAGE
NUM_FRAMES, IMAGE, ORIG, TOP_K, COPIES = 5, (40, 54), (60, 81), 10, 3
SIZE_DIVISIBILITY = 32


class ImageList:
    """detectron2's ``ImageList.from_tensors`` for equal-size frames: zero padding to the divisibility."""

    def __init__(self, tensor: torch.Tensor, image_sizes: list[tuple[int, int]]):
        self.tensor, self.image_sizes = tensor, image_sizes

    @classmethod
    def from_tensors(cls, tensors: list[torch.Tensor], size_divisibility: int = 0) -> ImageList:
        h = max(t.shape[-2] for t in tensors)
        w = max(t.shape[-1] for t in tensors)
        if size_divisibility > 1:
            h, w = (math.ceil(s / size_divisibility) * size_divisibility for s in (h, w))
        out = tensors[0].new_zeros(len(tensors), tensors[0].shape[0], h, w)
        for i, t in enumerate(tensors):
            out[i, :, : t.shape[-2], : t.shape[-1]] = t
        return cls(out, [tuple(t.shape[-2:]) for t in tensors])


def official_inference(root: Path):
    """``Grattvis.inference`` from the official file, as a plain function of (self, batched_inputs)."""
    namespace = {
        "math": math,
        "torch": torch,
        "F": F,
        "ImageList": ImageList,
        "retry_if_cuda_oom": lambda f: f,
    }
    return official_definition(root / "grattvis" / "grattvis_model.py", "inference", namespace, "Grattvis")


def main() -> None:
    root, commit = extract(REPO)
    shim_detectron2()
    stub_packages(
        root, "vita", "vita.modeling", "vita.modeling.transformer_decoder", "grattvis", "grattvis.modeling"
    )
    from grattvis.modeling.grattvis import GRAttVIS  # noqa: PLC0415 (the official code, from the temp copy)

    head_fixture = torch.load(FIXTURES / "gratt_head.pt", weights_only=True)
    d = head_fixture["dims"]
    head = GRAttVIS(gratt_head.official_cfg(True, 1, 0))
    wanted = head.state_dict().keys()
    head.load_state_dict({k: v for k, v in head_fixture["weights"].items() if k in wanted}, strict=True)
    head.eval()

    g = torch.Generator().manual_seed(3)
    padded = tuple(math.ceil(s / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY for s in IMAGE)
    frame_queries = [torch.randn(COPIES, 1, d["fQ"], d["C"], generator=g) for _ in range(NUM_FRAMES)]
    # larger than N(0, 1) so that the masks have foreground and background
    mask_features = [
        3 * torch.randn(1, d["C"], padded[0] // 4, padded[1] // 4, generator=g) for _ in frame_queries
    ]
    calls = iter(range(NUM_FRAMES))

    class Detector:
        """``backbone`` + ``sem_seg_head``: the prepared outputs of the next frame."""

        num_classes = d["K"]

        def __call__(self, features):
            if features is not None:  # sem_seg_head(features): the backbone returned None
                raise AssertionError("unexpected backbone output")
            i = next(calls)
            return None, frame_queries[i], mask_features[i]

    detector = Detector()
    fake = types.SimpleNamespace(
        device=torch.device("cpu"), pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1),
        size_divisibility=SIZE_DIVISIBILITY, backbone=lambda x: None, sem_seg_head=detector, vita_module=head,
        len_clip_window=1, num_queries=d["cQ"], test_topk_per_image=TOP_K,
    )  # fmt: skip
    batched = {
        "image": [torch.zeros(3, *IMAGE) for _ in range(NUM_FRAMES)],
        "height": ORIG[0],
        "width": ORIG[1],
    }
    with torch.no_grad():
        res = official_inference(root)(fake, batched)
    data = {
        "frame_queries": frame_queries,
        "mask_features": mask_features,
        "padded": padded, "image": IMAGE, "orig": ORIG, "top_k": TOP_K,
        "pred_scores": res["pred_scores"], "pred_labels": res["pred_labels"],
        "pred_masks": res["pred_masks"].clone(),  # bool [k, T, H0, W0]
    }  # fmt: skip
    print(f"{len(res['pred_scores'])} tracks, scores {[round(s, 3) for s in res['pred_scores']]}")
    print(f"mask pixels per track {res['pred_masks'].flatten(1).sum(1).tolist()}")
    save_fixture("gratt_inference.pt", data, commit, REPO)


if __name__ == "__main__":
    main()
