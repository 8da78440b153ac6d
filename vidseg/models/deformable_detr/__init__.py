"""Deformable DETR with iterative box refinement and DeVIS's image model ``DeformableDETRSegm`` (stage 1).

Modules: ``config`` (keys), ``transformer`` (encoder/decoder), ``detr`` (``DeformableDETR``), ``segm``
(``DeformableDETRSegm``), ``targets`` (ClipBatch -> per-image targets), ``param_groups``, ``build`` (registers
``DeformableDETRSegm``). Nothing is imported here, so reading the config keys does not import torch.
"""
