"""Deformable DETR (Zhu et al. 2021) with iterative box refinement: the detector only.

Modules: ``config`` (the detector's keys, ``add_deformable_detr_config``), ``transformer`` (encoder/decoder;
its layers take their attention modules as arguments, so DeVIS composes a temporal attention into them),
``detr`` (``DeformableDETR``, ``Joiner``), ``build`` (``build_deformable_detr``). It is not a method of its
own: the DeVIS image stage (``vidseg.models.devis``) contains it. Nothing is imported here, so reading the
config keys does not import the model code.
"""
