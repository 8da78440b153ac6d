"""GRAtt-VIS (Hannan et al. 2023): online VIS with gated residual attention, built on VITA and GenVIS.

A GRAtt-VIS model *has* a per-frame Mask2Former (``vidseg.models.mask2former``, frozen by default) and a VIS
head; nothing here inherits from another paper's class. Where each part goes:

- ``gate.py``: the GRAtt block: the gate logits, the Gumbel-sigmoid gate (straight-through in training,
  ``logit >= 0`` at test), the gated residual and the gate-driven self-attention bias.
- ``memory.py``: the query memory carried from clip to clip (GenVIS's ``USE_MEM``).
- ``uvla.py``: GenVIS's unified video label assignment.
- ``vis_head.py``: input projection, object encoder, the decoder layers with the GRAtt block, the heads.
- ``criterion.py``: the video losses (CE, mask BCE / dice on sampled points, similarity).
- ``model.py``: detector + head, training over clips of a video.
- ``inference.py``: online inference, frame by frame, with the memory.
- ``config.py`` / ``build.py``: keys (chaining to ``add_mask2former_config``) and builders.
"""
