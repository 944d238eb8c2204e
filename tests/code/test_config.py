import inspect
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import pytest
import yaml

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


@dataclass
class Inner:
    rate: float = 0.1
    names: list[str] | None = None


@dataclass
class Outer:
    count: int = 1
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    weights: dict[str, float] = field(default_factory=dict)


def test_values_are_type_checked_and_name_the_key() -> None:
    built = build(Outer, {"count": 3, "inner": {"rate": 1, "names": ["x"]}, "weights": {"a": 2}}, "s")
    assert built == Outer(count=3, inner=Inner(rate=1.0, names=["x"]), weights={"a": 2.0})
    assert isinstance(built.inner.rate, float)
    # YAML 1.1 reads 1e-4 (no dot) as a string: converted on purpose for float fields
    assert build(Outer, yaml.safe_load("inner: {rate: 1e-4}"), "s").inner.rate == 1e-4
    cases = {"count: '3'": r"s.count: expected int, got '3' \(str\)", "count: true": "s.count: expected int",
             "flag: 1": "s.flag: expected bool", "mode: c": r"s.mode: expected one of \['a', 'b'\]",
             "inner: {rate: fast}": "s.inner.rate: expected float", "inner: {names: [1]}": r"s.inner.names",
             "inner: 3": "s.inner: expected Inner", "weights: {a: x}": "s.weights.a: expected float",
             "inner: {colour: 1}": r"s.inner: unknown key\(s\) \['colour'\]"}
    for text, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            build(Outer, yaml.safe_load(text), "s")


def test_typed_callables_are_checked_like_dataclasses() -> None:
    def factory(size: int = 3, name: str | None = None) -> tuple[int, str | None]:
        return size, name

    assert build(factory, {"size": 5}, "f") == (5, None)
    with pytest.raises(ConfigError, match="f.size: expected int"):
        build(factory, {"size": 2.5}, "f")


def test_committed_params_are_the_code_defaults() -> None:
    """One source of defaults: every section of params.yaml equals its dataclass's defaults, key for key."""
    from models.dsn import DSNConfig
    from models.engine import RuntimeConfig, TrainConfig
    from models.registry import baseline_factory
    from stages.embed import EmbedParams
    from stages.evaluate import EvaluateParams
    from stages.index import IndexParams
    from stages.register import RegisterParams
    from stages.restyle import RestyleParams
    from stages.train import TrainSection

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert build(TrainSection, params["train"], "train") == TrainSection()
    assert set(params["train"]["runtime"]) == {f.name for f in fields(RuntimeConfig)}
    assert build(TrainConfig, params["dsn"]["train"], "dsn.train") == TrainConfig()
    assert set(params["dsn"]["train"]) == {f.name for f in fields(TrainConfig)}
    assert build(DSNConfig, params["dsn"]["model"], "dsn.model") == DSNConfig()
    assert set(params["dsn"]["model"]) == {f.name for f in fields(DSNConfig)}
    assert build(EmbedParams, params["embed"], "embed") == EmbedParams()
    assert build(EvaluateParams, params["evaluate"], "evaluate") == EvaluateParams()
    assert build(RestyleParams, params["restyle"], "restyle") == RestyleParams()
    assert set(params["evaluate"]) == {f.name for f in fields(EvaluateParams)}
    assert build(RegisterParams, params["register"], "register") == RegisterParams()
    assert set(params["register"]) == {f.name for f in fields(RegisterParams)}
    assert build(IndexParams, params["index"], "index") == IndexParams()
    assert set(params["index"]) == {f.name for f in fields(IndexParams)}
    from models.clip.prompt import ClipPromptConfig
    from stages.pretrain_clip import PretrainClipParams

    assert build(ClipPromptConfig, params["clip_prompt"]["model"], "clip_prompt.model") == ClipPromptConfig()
    assert set(params["clip_prompt"]["model"]) == {f.name for f in fields(ClipPromptConfig)}
    assert build(PretrainClipParams, params["pretrain_clip"], "pretrain_clip") == PretrainClipParams()
    for name in ("baseline_random", "baseline_imagenet", "baseline_hog"):
        signature = inspect.signature(baseline_factory(name))
        defaults = {key: p.default for key, p in signature.parameters.items()}
        assert params[name] == {key: defaults[key] for key in params[name]}
        assert set(params[name]) == set(defaults), f"params.yaml {name} lists every argument"


def test_stage_paths_match_dvc_yaml() -> None:
    """Output paths are given once in sbir.paths; dvc.yaml spells the same ones."""
    from sbir import paths

    pipeline = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())
    stages = pipeline["stages"]

    def outs(stage: str, model: str = "m", dataset: str = "d") -> set[str]:
        listed = stages[stage]["do"]
        names = set()
        for key in ("outs", "metrics", "plots"):
            for entry in listed.get(key, []):
                names.add(next(iter(entry)) if isinstance(entry, dict) else entry)
        return {n.replace("${key}", model).replace("${item}", model).replace("${evaluate.dataset}", dataset)
                for n in names}

    assert outs("train") == {str(paths.checkpoint_dir("m")), str(paths.train_log_dir("m"))}
    assert outs("embed") == {str(paths.embeddings_dir("d", "m"))}
    assert {str(Path(p).parent) for p in outs("evaluate")} == {str(paths.eval_dir("d", "m"))}
    assert outs("prepare") == {str(paths.prepared_dir("m"))}
    assert outs("validate") == {str(paths.validation_report("m"))}
    assert outs("restyle") == {str(paths.styles_dir("m"))}
    assert outs("prepare_gallery") == {str(paths.prepared_dir("m"))}
    assert outs("validate_gallery") == {str(paths.validation_report("m"))}
    # the galleries every model is evaluated on are deps of embed and evaluate, and prepared by the pipeline
    galleries = load_params(Path(__file__).resolve().parents[2] / "params.yaml")["evaluate"]["cross_galleries"]
    assert set(galleries) <= set(pipeline["vars"][0]["galleries"])
    for stage in ("embed", "evaluate"):
        assert {str(paths.prepared_dir(g)) for g in galleries} <= set(stages[stage]["do"]["deps"])
    assert {next(iter(e)) if isinstance(e, dict) else e for e in stages["register"]["outs"]} == {
        str(paths.register_report("${evaluate.dataset}"))}
    assert [next(iter(e)) if isinstance(e, dict) else e for e in stages["index"]["outs"]] == [
        str(paths.serving_bundle())]
    assert [next(iter(e)) for e in stages["package"]["outs"]] == [str(paths.bento_record())]
    assert [next(iter(e)) if isinstance(e, dict) else e for e in stages["pretrain_clip"]["outs"]] == [
        str(paths.pretrained_clip_dir("${train.dataset}")), str(paths.pretrain_log_dir("${train.dataset}"))]
    models = pipeline["vars"][1]["models"]
    assert set(models) == {"dsn", "clip_prompt", "zse", "baseline_random", "baseline_imagenet", "baseline_hog"}
    root = Path(__file__).resolve().parents[2]
    for name, entry in models.items():  # every model's code exists; `needs` is code or a pipeline output
        assert (root / entry["code"]).exists(), name
        produced = {next(iter(e)) if isinstance(e, dict) else e for s in stages.values()
                    for e in s.get("outs", []) + s.get("do", {}).get("outs", [])}
        assert (root / entry["needs"]).exists() or any(str(out).startswith(entry["needs"]) for out in produced), name
    assert set(load_params(root / "params.yaml")["run"]["models"]) <= set(models)


def test_published_configs_are_valid_sections_of_the_methods() -> None:
    """configs/published.yaml (the published sizes, for a GPU with user-supplied weights) type-checks as the
    methods' params sections: the paper's architectures and input sizes."""
    from stages.train import method_settings

    root = Path(__file__).resolve().parents[2]
    params = load_params(root / "configs/published.yaml")
    zse, _ = method_settings(params, "zse", "configs/published.yaml")
    assert zse.config.backbone == "timm:vit_base_patch16_224" and zse.config.image_size == 224
    clip, _ = method_settings(params, "clip_prompt", "configs/published.yaml")
    assert clip.config.clip == "open_clip:ViT-B-32" and clip.config.pretrained == "openai"
