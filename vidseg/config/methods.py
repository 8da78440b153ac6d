"""Explicit imports of every method's config module; each registers its keys (``register_config_extender``).

Add one line here when a method lands (no import hooks, no globbing).
"""

from vidseg.models.deformable_detr import config as _ddetr  # noqa: F401,E402  (DeformableDETRSegm)
from vidseg.models.toy import config as _toy  # noqa: F401,E402  (ToyVIS: MODEL.TOY.*)
