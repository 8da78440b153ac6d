"""GRAtt-VIS online inference gives the official video results on the same head and detector outputs.

Issue 16. The fixture holds per-frame detector outputs (frame queries, stride-4 features) and what the
official ``grattvis/grattvis_model.py:Grattvis.inference`` returned with the head of ``gratt_head.pt``
(USE_MEM True, GATED_PROP True, one frame per step): the top-k scores (max over frames of the class
probability x the mean foreground probability), the labels and the masks at the original size (regenerate
with ``scripts/official_parity/gratt_inference.py``). vidseg runs :class:`GRAttVISHead` step by step and
folds each frame into ``OnlineVideoState``, then selects like ``GRAttVISInference``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidseg.models.grattvis import inference
from vidseg.models.grattvis.vis_head import GRAttVISHead
from vidseg.structures.masks import decode_segmentation

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official_parity"


@pytest.fixture(scope="module")
def official() -> dict:
    return torch.load(FIXTURES / "gratt_inference.pt", weights_only=True)


def _head() -> GRAttVISHead:
    data = torch.load(FIXTURES / "gratt_head.pt", weights_only=True)
    d = data["dims"]
    head = GRAttVISHead(
        num_classes=d["K"], hidden_dim=d["C"], num_frame_queries=d["fQ"], num_queries=d["cQ"],
        nheads=d["heads"], dim_feedforward=d["ffn"], enc_layers=d["enc"], dec_layers=d["dec"],
        mask_dim=d["mask_dim"], sim_embed=True, gated_prop=True, use_mem=True, window=1, conv_dim=d["C"],
    )  # fmt: skip
    head.load_state_dict(data["weights"], strict=True)
    return head.eval()


def test_video_results_match_the_official_inference(official: dict) -> None:
    head = _head()
    acc = inference.OnlineVideoState(tuple(official["orig"]))
    memory, prop = head.new_memory(), head.initial_query(1)
    with torch.no_grad():
        for fq, mf in zip(official["frame_queries"], official["mask_features"], strict=True):
            out = head.step(fq, prop, memory)
            prop = out["prop_query"]
            acc.add_frame(
                out["pred_logits"][-1, 0],
                out["pred_mask_embed"][-1, 0],
                head.mask_features(mf)[0],
                tuple(official["padded"]),
                tuple(official["image"]),
            )
    sel = inference.GRAttVISInference(head.num_classes, official["top_k"]).select(acc)
    # the official topk(sorted=False) order, on the same device: the same order
    assert sel.labels == official["pred_labels"]
    assert sel.scores == pytest.approx(official["pred_scores"], abs=1e-5)
    h0, w0 = official["orig"]
    for j, q in enumerate(sel.queries):
        ours = np.stack([decode_segmentation(acc.rle(t, q), h0, w0) for t in range(acc.num_frames)])
        theirs = official["pred_masks"][j].numpy()
        assert ours.shape == theirs.shape
        assert (ours != theirs).sum() == 0, f"track {j}: {(ours != theirs).sum()} pixels differ"
