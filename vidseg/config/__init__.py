"""Configuration: common defaults, method extenders, ``_BASE_`` chains and ``KEY VALUE`` overrides."""

from vidseg.config.config import (
    CfgNode,
    ConfigError,
    config_from_dict,
    config_to_dict,
    get_cfg,
    known_meta_architectures,
    load_config,
    merge_overrides,
    register_config_extender,
    resolve_config_path,
)

__all__ = [
    "CfgNode",
    "ConfigError",
    "config_from_dict",
    "config_to_dict",
    "get_cfg",
    "known_meta_architectures",
    "load_config",
    "merge_overrides",
    "register_config_extender",
    "resolve_config_path",
]
