"""Config system: _BASE_ inheritance, KEY VALUE overrides, errors naming key, file and closest keys."""

from pathlib import Path

import pytest

from vidseg.config import ConfigError, get_cfg, load_config, merge_overrides
from vidseg.config.config import config_from_dict, config_to_dict


def _write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_base_chain_is_recursive_and_relative(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "Base.yaml", "SOLVER:\n  BASE_LR: 0.5\n  EPOCHS: 3\nSEED: 1\n")
    _write(tmp_path / "a" / "b" / "Mid.yaml", "_BASE_: ../Base.yaml\nSOLVER:\n  EPOCHS: 7\n")
    leaf = _write(tmp_path / "a" / "b" / "c" / "Leaf.yaml", "_BASE_: ../Mid.yaml\nSEED: 9\n")
    cfg = load_config(leaf)
    assert cfg.SOLVER.BASE_LR == 0.5  # from the deepest base
    assert cfg.SOLVER.EPOCHS == 7  # the middle file wins over its base
    assert cfg.SEED == 9  # the leaf wins over everything
    assert cfg.is_frozen()


def test_overrides_win_over_files_and_are_typed(tmp_path: Path) -> None:
    leaf = _write(tmp_path / "x.yaml", "SOLVER:\n  BASE_LR: 0.1\n")
    cfg = load_config(leaf, ["SOLVER.BASE_LR", "0.0002", "VISDOM_ON", "False", "SOLVER.STEPS", "[3, 7]"])
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.0002)
    assert cfg.VISDOM_ON is False
    assert tuple(cfg.SOLVER.STEPS) == (3, 7)


def test_int_is_accepted_for_float_keys() -> None:
    cfg = get_cfg()
    merge_overrides(cfg, ["SOLVER.BASE_LR", "1"])
    assert isinstance(cfg.SOLVER.BASE_LR, float) and cfg.SOLVER.BASE_LR == 1.0


def test_unknown_key_in_file_names_key_file_and_suggestion(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", "SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    assert "SOLVER.BASE_LRR" in msg and str(bad) in msg and "SOLVER.BASE_LR" in msg


def test_unknown_key_in_base_names_the_base_file(tmp_path: Path) -> None:
    base = _write(tmp_path / "Base.yaml", "TEST:\n  EVAL_PERIODD: 2\n")
    leaf = _write(tmp_path / "leaf.yaml", "_BASE_: Base.yaml\n")
    with pytest.raises(ConfigError, match="Base.yaml.*TEST.EVAL_PERIODD.*TEST.EVAL_PERIOD"):
        load_config(leaf)
    assert base.read_text() == "TEST:\n  EVAL_PERIODD: 2\n"  # the loader never rewrites a user's file


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match="command line.*'MODEL.WEIGHT'.*MODEL.WEIGHTS"):
        load_config(None, ["MODEL.WEIGHT", "x.pth"])


def test_wrong_type_names_expected_type() -> None:
    with pytest.raises(ConfigError, match="SOLVER.EPOCHS expects int, got str"):
        load_config(None, ["SOLVER.EPOCHS", "many"])
    with pytest.raises(ConfigError, match="VISDOM_ON expects bool"):
        load_config(None, ["VISDOM_ON", "3"])


def test_odd_override_count() -> None:
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["SOLVER.BASE_LR"])


def test_base_cycle_detected(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_and_missing_file(tmp_path: Path) -> None:
    leaf = _write(tmp_path / "leaf.yaml", "_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(leaf)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    bad = _write(tmp_path / "broken.yaml", "SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*invalid YAML"):
        load_config(bad)


def test_section_cannot_be_set_to_a_value() -> None:
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["SOLVER", "1"])


def test_method_extender_adds_keys_only_for_its_method(tmp_path: Path) -> None:
    def _add(cfg, name) -> None:  # noqa: ANN001
        from vidseg.config import CfgNode

        if name != "_TestMethod":
            raise KeyError(f"unknown method {name!r}")
        cfg.MODEL.TESTMETHOD = CfgNode()
        cfg.MODEL.TESTMETHOD.DEPTH = 3

    leaf = _write(
        tmp_path / "m.yaml", "MODEL:\n  META_ARCHITECTURE: _TestMethod\n  TESTMETHOD:\n    DEPTH: 5\n"
    )
    cfg = load_config(leaf, ["MODEL.TESTMETHOD.DEPTH", "6"], extend=_add)
    assert cfg.MODEL.TESTMETHOD.DEPTH == 6
    with pytest.raises(ConfigError, match="MODEL.TESTMETHOD.DEPTH"):
        load_config(None, ["MODEL.TESTMETHOD.DEPTH", "6"], extend=_add)  # common defaults do not have it
    with pytest.raises(ConfigError, match="no method extender"):
        load_config(leaf)  # the config layer knows no method by itself
    # the meta architecture can also come from an override
    cfg2 = load_config(
        None, ["MODEL.META_ARCHITECTURE", "_TestMethod", "MODEL.TESTMETHOD.DEPTH", "1"], extend=_add
    )
    assert cfg2.MODEL.TESTMETHOD.DEPTH == 1
    # round trip through a plain dict (what checkpoints store)
    assert config_from_dict(config_to_dict(cfg), _add).MODEL.TESTMETHOD.DEPTH == 6


def test_unknown_method_is_an_error() -> None:
    from vidseg.models import load_config as load_method_config

    with pytest.raises(ConfigError, match="unknown method 'NoSuchNet'"):
        load_method_config(None, ["MODEL.META_ARCHITECTURE", "NoSuchNet"])


def test_dump_reloads_identically(tmp_path: Path) -> None:
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.003", "OUTPUT_DIR", "/tmp/x"])
    path = _write(tmp_path / "dumped.yaml", cfg.dump())
    assert load_config(path) == cfg


def test_cli_config_command_prints_resolved_config(capsys: pytest.CaptureFixture) -> None:
    from vidseg.cli import main

    assert main(["config", "SOLVER.BASE_LR", "0.25"]) == 0
    assert "BASE_LR: 0.25" in capsys.readouterr().out


def test_none_given_to_a_string_key_is_the_word() -> None:
    # VITA's configs and users type ``INPUT.RANDOM_FLIP none``: for a string key that is the word, not null.
    cfg = load_config(None, ["INPUT.RANDOM_FLIP", "none", "MODEL.WEIGHTS", "None"])
    assert cfg.INPUT.RANDOM_FLIP == "none"
    assert cfg.MODEL.WEIGHTS is None  # ``None`` is still Python's None
