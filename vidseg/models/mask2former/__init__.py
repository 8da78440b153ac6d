"""Mask2Former (Cheng et al. 2022) for instance segmentation: the per-frame detector of GRAtt-VIS.

Where each part goes (one file each):

- ``pixel_decoder.py``: the MSDeformAttn pixel decoder (input projections of res3..res5, sine position
  encodings and level embedding, 6 deformable encoder layers over 3 levels, the FPN step to stride 4).
- ``transformer_decoder.py``: the masked-attention decoder (100 queries, 9 layers of masked cross-attention,
  self-attention and FFN cycling over the three levels, prediction heads after every layer).
- ``matcher.py`` and ``criterion.py``: Hungarian matching on softmax class + point-sampled mask costs, and the
  CE / BCE / dice losses on sampled points, built from ``models/set_prediction``.
- ``model.py``: backbone + pixel decoder + decoder; returns frame queries and stride-4 features.
- ``config.py`` / ``build.py``: the detectron2-style keys and the builders.
- ``inference.py``: per-frame instance post-processing and one-frame tracks on videos.
"""

from vidseg.models.mask2former.build import build_mask2former, build_mask2former_bundle
from vidseg.models.mask2former.config import add_mask2former_config
from vidseg.models.mask2former.model import Mask2Former, MaskFormerHead

__all__ = [
    "Mask2Former",
    "MaskFormerHead",
    "add_mask2former_config",
    "build_mask2former",
    "build_mask2former_bundle",
]
