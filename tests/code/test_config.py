from dataclasses import dataclass
from pathlib import Path

import pytest

from sbir.config import ConfigError, build, load_params, section
from sbir.env import OFFLINE_DEFAULTS, apply_offline_defaults


@dataclass
class Demo:
    size: int
    name: str = "x"


def test_section_and_build(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("stage:\n  demo:\n    size: 3\n")
    params = load_params(tmp_path / "p.yaml")
    assert build(Demo, section(params, "stage", "demo"), "stage.demo") == Demo(size=3)


def test_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("stage:\n  demo: 5\n")
    params = load_params(tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match="missing section 'stage.other'"):
        section(params, "stage", "other")
    with pytest.raises(ConfigError, match="'stage.demo' must be a mapping"):
        section(params, "stage", "demo")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\]"):
        build(Demo, {"size": 1, "colour": "red"}, "stage.demo")
    with pytest.raises(ConfigError, match="stage.demo"):
        build(Demo, {}, "stage.demo")
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")


def test_repository_params_parse() -> None:
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert {"prepare", "validate"} <= set(params)


def test_offline_defaults_respect_user_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in OFFLINE_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    applied = apply_offline_defaults()
    assert applied["DO_NOT_TRACK"] == "0"
    assert applied["DVC_NO_ANALYTICS"] == "1" and applied["BENTOML_DO_NOT_TRACK"] == "True"
    assert applied["HF_HUB_OFFLINE"] == "1"
