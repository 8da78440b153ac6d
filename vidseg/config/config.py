"""yacs configuration: ``_BASE_`` inheritance, ``KEY VALUE`` overrides, unknown keys rejected.

A config file is read as a chain: the file's ``_BASE_`` (a path relative to the file, recursively) is merged
first, then the file itself, then the command-line ``KEY VALUE`` pairs. Before merging, the method named by
``MODEL.META_ARCHITECTURE`` (from the raw chain and the overrides) extends the common defaults with its
own keys, so method keys are defined once, in the method's config module.
"""

from __future__ import annotations

import ast
import copy
import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode as _YacsNode

__all__ = [
    "CfgNode",
    "ConfigError",
    "get_cfg",
    "load_config",
    "register_alias",
    "resolve_config_path",
    "PACKAGE_CONFIG_DIR",
]

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
BASE_KEY = "_BASE_"


class ConfigError(ValueError):
    """A configuration problem that names the key and the file it came from."""


class CfgNode(_YacsNode):
    """yacs CfgNode whose errors name the offending key, its source and the closest valid keys."""

    def dump(self, **kwargs: Any) -> str:  # noqa: D401 - yacs signature
        return super().dump(**{"sort_keys": False, **kwargs})


# ------------------------------------------------------------------------------------------- defaults
# ``extend(cfg, meta_architecture)`` adds a method's keys; ``vidseg.models.add_method_config`` is the one the
# package uses. The config layer knows no method: every function that needs method keys takes it as argument.
Extender = Callable[[CfgNode, str], None]


def get_cfg(meta_architecture: str | None = None, extend: Extender | None = None) -> CfgNode:
    """The common defaults, extended with the keys of ``meta_architecture`` by ``extend`` when given.

    Raises:
        ConfigError: a method is named but no extender is given, or the extender does not know it.
    """
    from vidseg.config.defaults import _C

    cfg = _C.clone()
    if meta_architecture:
        if extend is None:
            raise ConfigError(
                f"MODEL.META_ARCHITECTURE {meta_architecture!r}: no method extender given "
                "(use vidseg.models.load_config / get_cfg, which know the methods)"
            )
        cfg.MODEL.META_ARCHITECTURE = meta_architecture
        try:
            extend(cfg, meta_architecture)
        except KeyError as e:
            raise ConfigError(str(e.args[0]) if e.args else str(e)) from None
    return cfg


# --------------------------------------------------------------------------------------- file loading
def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config path as given, else relative to the package's shipped ``configs/`` folder."""
    p = Path(path)
    if p.is_file():
        return p.resolve()
    for prefix in ("", "configs"):
        rel = Path(*p.parts[1:]) if prefix and p.parts and p.parts[0] == prefix else p
        cand = PACKAGE_CONFIG_DIR / rel
        if cand.is_file():
            return cand.resolve()
    raise ConfigError(f"config file not found: {path}")


def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _load_chain(path: Path, _stack: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """[(file, mapping)] from the deepest ``_BASE_`` to ``path``; detects cycles."""
    path = path.resolve()
    if path in _stack:
        cycle = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"_BASE_ cycle: {cycle}")
    data = _read_yaml(path)
    base = data.pop(BASE_KEY, None)
    chain: list[tuple[Path, dict]] = []
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        for b in bases:
            bpath = Path(b)
            if not bpath.is_absolute():
                bpath = path.parent / bpath
            if not bpath.is_file():
                raise ConfigError(f"{path}: _BASE_ file not found: {b} (looked for {bpath})")
            chain.extend(_load_chain(bpath, (*_stack, path)))
    chain.append((path, data))
    return chain


def _flatten(d: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _all_keys(cfg: _YacsNode, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, _YacsNode):
            out.extend(_all_keys(v, key + "."))
    return out


def _type_name(v: Any) -> str:
    return type(v).__name__


def _coerce(key: str, old: Any, new: Any, source: str) -> Any:
    """Value ``new`` for ``key`` typed like the default ``old``; int -> float and tuple <-> list allowed."""
    if isinstance(old, _YacsNode):
        raise ConfigError(
            f"{source}: {key} is a section; give one of its keys (e.g. {key}.{next(iter(old), '')})"
        )
    if old is None or new is None:
        return new
    if isinstance(new, str) and not isinstance(old, (str, bool)):
        # yacs / detectron2 read a yaml string as a Python literal: the official ``TRAIN: ("a", "b")``,
        # ``STEPS: (100000,)`` and ``BASE_LR: 5e-5`` (a string to YAML 1.1).
        new = _parse_value(new)
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        if isinstance(new, str) and new.lower() in ("true", "false"):
            return new.lower() == "true"
        raise ConfigError(f"{source}: {key} expects bool, got {_type_name(new)} {new!r}")
    if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
        return float(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return type(old)(new)
    if isinstance(old, str) and isinstance(new, str):
        return new
    if type(old) is type(new):
        return new
    raise ConfigError(f"{source}: {key} expects {_type_name(old)}, got {_type_name(new)} {new!r}")


def _suggest(key: str, cfg: _YacsNode) -> str:
    keys = _all_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:3]
    return f"; did you mean {', '.join(close)}?" if close else ""


# ------------------------------------------------------------------------------------------------ aliases
# A method may declare another project's spelling of a vidseg key (GRAtt-VIS: the official
# ``INPUT.SAMPLING_FRAME_NUM`` for ``INPUT.NUM_FRAMES``). official key -> (vidseg key, convert);
# ``convert(value, cfg)`` gives the vidseg value, or None for "leave it". Merging either spelling sets both,
# in source order, so the last one given wins; setting the vidseg key directly resets the official one to None
# ("not given").
AliasConvert = Callable[[Any, _YacsNode], Any]
_ALIASES: dict[str, tuple[str, AliasConvert | None]] = {}
_ALIAS_OF: dict[str, str] = {}  # vidseg key -> the official key that mirrors it one to one (reset on a set)


def register_alias(
    official: str, target: str, convert: AliasConvert | None = None, *, mirror: bool = True
) -> None:
    """Declare ``official`` (a key the method adds, default None) as another spelling of ``target``.

    ``mirror``: ``official`` holds the same value as ``target`` (reset to None when ``target`` is set
    directly); False for a key that only sometimes decides it (``CLIP_GRADIENTS.ENABLED False`` means no
    clipping). Idempotent.
    """
    _ALIASES[official] = (target, convert)
    if mirror:
        _ALIAS_OF[target] = official


def _has(cfg: _YacsNode, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, _YacsNode) or part not in node:
            return False
        node = node[part]
    return True


def _apply_alias(cfg: _YacsNode, key: str, source: str) -> None:
    if key in _ALIASES:
        target, convert = _ALIASES[key]
        value = _get(cfg, key)
        if value is not None and convert is not None:
            value = convert(value, cfg)
        if value is not None and _has(cfg, target):
            _set(cfg, target, value, f"{source} ({key})", alias=False)
    elif key in _ALIAS_OF and _has(cfg, _ALIAS_OF[key]):
        _set(cfg, _ALIAS_OF[key], None, source, alias=False)


def _set(cfg: _YacsNode, key: str, value: Any, source: str, alias: bool = True) -> None:
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], _YacsNode):
            raise ConfigError(f"{source}: unknown config key {key!r}{_suggest(key, cfg)}")
        node = node[part]
    leaf = parts[-1]
    if leaf not in node:
        raise ConfigError(f"{source}: unknown config key {key!r}{_suggest(key, cfg)}")
    node[leaf] = _coerce(key, node[leaf], value, source)
    if alias and (_ALIASES or _ALIAS_OF):
        _apply_alias(cfg, key, source)


def _get(cfg: _YacsNode, key: str) -> Any:
    """The value at dotted ``key``, or None when the key does not exist (``_set`` then says so)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, _YacsNode) or part not in node:
            return None
        node = node[part]
    return node


def _parse_value(text: Any) -> Any:
    """A command-line value as a Python literal when it is one (``0.1``, ``[1,2]``, ``True``), else str."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def _to_yacs_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _to_yacs_value(x) for k, x in v.items()}
    return v


def merge_mapping(cfg: CfgNode, data: dict, source: str) -> None:
    """Merge a nested mapping into ``cfg``, rejecting unknown keys and wrong types."""
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    for key, value in _flatten(data):
        _set(cfg, key, _to_yacs_value(value), source)
    if was_frozen:
        cfg.freeze()


def merge_overrides(cfg: CfgNode, opts: Sequence[str], source: str = "command line") -> None:
    """Merge ``["KEY", "VALUE", ...]`` pairs."""
    if len(opts) % 2:
        raise ConfigError(f"{source}: overrides must be KEY VALUE pairs, got an odd count: {list(opts)}")
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    for key, value in zip(opts[0::2], opts[1::2]):
        parsed = _parse_value(value)
        if value == "none" and isinstance(_get(cfg, key), str):
            # A string key given lower-case "none" (VITA's ``INPUT.RANDOM_FLIP none``) means that word;
            # ``None`` stays Python's None.
            parsed = value
        _set(cfg, key, parsed, source)
    if was_frozen:
        cfg.freeze()


def _find_meta_arch(chain: list[tuple[Path, dict]], opts: Sequence[str]) -> str | None:
    meta = None
    for _, data in chain:
        model = data.get("MODEL")
        if isinstance(model, dict) and "META_ARCHITECTURE" in model:
            meta = model["META_ARCHITECTURE"]
    for k, v in zip(opts[0::2], opts[1::2]):
        if k == "MODEL.META_ARCHITECTURE":
            meta = v
    return meta


def load_config(
    config_file: str | os.PathLike | None = None,
    opts: Sequence[str] = (),
    freeze: bool = True,
    extend: Extender | None = None,
) -> CfgNode:
    """Resolve ``config_file`` (with its ``_BASE_`` chain) and ``opts`` into a frozen config.

    The method named by ``MODEL.META_ARCHITECTURE`` (in the chain or in ``opts``) gets its keys from
    ``extend`` before the files are merged.

    Raises:
        ConfigError: unknown key (named with its file and the closest valid keys), wrong type, missing file,
            ``_BASE_`` cycle.
    """
    chain: list[tuple[Path, dict]] = []
    if config_file:
        chain = _load_chain(resolve_config_path(config_file))
    opts = list(opts)
    cfg = get_cfg(_find_meta_arch(chain, opts), extend)
    for path, data in chain:
        merge_mapping(cfg, data, str(path))
    merge_overrides(cfg, opts)
    if freeze:
        cfg.freeze()
    return cfg


def config_to_dict(cfg: _YacsNode) -> dict:
    """Plain nested dict (for JSON, checkpoints and safe pickling)."""
    out = {}
    for k, v in cfg.items():
        out[k] = config_to_dict(v) if isinstance(v, _YacsNode) else copy.deepcopy(v)
    return out


def config_from_dict(data: dict, extend: Extender | None = None) -> CfgNode:
    """A config from a plain dict as written by :func:`config_to_dict` (e.g. from a checkpoint)."""
    meta = data.get("MODEL", {}).get("META_ARCHITECTURE")
    cfg = get_cfg(meta or None, extend)
    merge_mapping(cfg, data, "checkpoint config")
    return cfg
