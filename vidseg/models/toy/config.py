"""Config keys of the toy VIS model (``MODEL.META_ARCHITECTURE: ToyVIS``), defined once here."""

from vidseg.config import CfgNode as CN


def add_toy_config(cfg: CN) -> None:
    """Add ``MODEL.TOY.*`` to ``cfg`` in place."""
    cfg.MODEL.TOY = CN()
    cfg.MODEL.TOY.NUM_CLASSES = 0  # 0: the number of classes of DATASETS.TRAIN[0] (dataset metadata)
    cfg.MODEL.TOY.NUM_QUERIES = 8  # learned clip queries; each predicts one instance over the whole clip
    cfg.MODEL.TOY.HIDDEN_DIM = 32  # query / feature width
    cfg.MODEL.TOY.DEC_LAYERS = 2  # query cross-attention layers (aux losses on all but the last)
    cfg.MODEL.TOY.CLASS_WEIGHT = 2.0
    cfg.MODEL.TOY.MASK_WEIGHT = 5.0  # sigmoid BCE
    cfg.MODEL.TOY.DICE_WEIGHT = 5.0
    cfg.MODEL.TOY.EOS_COEF = 0.1  # class weight of "no object"
    cfg.MODEL.TOY.TOPK = 10  # tracks kept per video at inference
    cfg.MODEL.TOY.MASK_THRESHOLD = 0.5
