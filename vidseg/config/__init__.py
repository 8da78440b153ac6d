"""Configuration: common defaults, ``_BASE_`` chains and ``KEY VALUE`` overrides; it knows no method.

Method keys come from an extender passed in (``vidseg.models.add_method_config``);
``vidseg.models.load_config`` and ``vidseg.models.get_cfg`` pass it.
"""

from vidseg.config.config import (
    CfgNode,
    ConfigError,
    config_from_dict,
    config_to_dict,
    get_cfg,
    load_config,
    merge_overrides,
    register_alias,
    resolve_config_path,
)

__all__ = [
    "CfgNode",
    "ConfigError",
    "config_from_dict",
    "config_to_dict",
    "get_cfg",
    "load_config",
    "merge_overrides",
    "register_alias",
    "resolve_config_path",
]
