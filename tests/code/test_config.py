import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from sbir.config import ConfigError, Params, PositiveInt, Fraction, build
from sbir.env import OFFLINE_DEFAULTS, apply_offline_defaults


@dataclass
class Demo:
    size: int
    name: str = "x"


def test_section_and_build(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("stage:\n  demo:\n    size: 3\n")
    params = Params.load(tmp_path / "p.yaml")
    assert params.read(Demo, "stage.demo") == Demo(size=3)
    assert params.value("stage.demo.size", int) == 3


def test_profiles_are_overlays_read_through_the_same_loader(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("stage:\n  demo: {size: 3, name: a}\nother: {size: 1}\n")
    (tmp_path / "paper.yaml").write_text("stage:\n  demo: {size: 5}\n")
    (tmp_path / "gpu.yaml").write_text("stage:\n  demo: {name: b}\n")
    params = Params.load(tmp_path / "p.yaml", [tmp_path / "paper.yaml", tmp_path / "gpu.yaml"])
    assert params.read(Demo, "stage.demo") == Demo(size=5, name="b") and params.read(Demo, "other") == Demo(size=1)
    (tmp_path / "bad.yaml").write_text("stage:\n  demo: {size: -1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: stage.demo.size: -1 is not allowed; expected a value > 0"):
        Params.load(tmp_path / "p.yaml", [tmp_path / "bad.yaml"]).read(Checked, "stage.demo")


@dataclass
class Checked:
    size: PositiveInt
    name: str
    share: Fraction | None = None


def test_values_are_checked_for_sense() -> None:
    assert build(Checked, {"size": 2, "name": "x", "share": 1}, "s") == Checked(2, "x", 1.0)
    for values, message in [({"size": 0, "name": "x"}, r"s.size: 0 is not allowed; expected a value > 0"),
                            ({"size": 1, "name": "x", "share": 1.5}, r"s.share: 1.5 is not allowed; expected a value in \[0, 1\]"),
                            ({"size": 1.5, "name": "x"}, r"s.size: expected int, got 1.5")]:
        with pytest.raises(ConfigError, match=message):
            build(Checked, values, "s")


def test_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("stage:\n  demo: 5\n")
    params = Params.load(tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match="missing section 'stage.other'"):
        params.section("stage.other")
    with pytest.raises(ConfigError, match="'stage.demo' must be a mapping"):
        params.section("stage.demo")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\]"):
        build(Demo, {"size": 1, "colour": "red"}, "stage.demo")
    with pytest.raises(ConfigError, match="stage.demo"):
        build(Demo, {}, "stage.demo")
    with pytest.raises(ConfigError, match="params file not found"):
        Params.load(tmp_path / "absent.yaml")


def test_repository_params_parse() -> None:
    params = Params.load(Path(__file__).resolve().parents[2] / "params.yaml")
    assert {"prepare", "validate"} <= set(params.values)


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


def _config_classes() -> dict[str, object]:
    """Every typed section of params.yaml → the class (or typed constructor) that reads it."""
    from flows.cli import RunParams
    from models.clip.prompt import ClipPromptConfig
    from models.dsn import DSNConfig
    from models.engine import TrainConfig, TrainSection
    from models.registry import lookup
    from models.zse import ZSEConfig
    from sbir.datasets.base import _REGISTRY as DATASETS
    from models.embed import EmbedParams
    from stages.evaluate import EvaluateParams
    from stages.index import IndexParams
    from stages.pretrain_clip import PretrainClipParams
    from stages.register import RegisterParams
    from stages.restyle import RestyleParams
    from stages.validate import ValidateParams

    classes: dict[str, object] = {
        "run": RunParams, "train": TrainSection, "validate": ValidateParams, "restyle": RestyleParams,
        "embed": EmbedParams, "evaluate": EvaluateParams, "register": RegisterParams, "index": IndexParams,
        "pretrain_clip": PretrainClipParams, "dsn.model": DSNConfig, "zse.model": ZSEConfig,
        "clip_prompt.model": ClipPromptConfig, "prepare.openmoji_zs": DATASETS["openmoji_zs"],
        "prepare.twemoji": DATASETS["twemoji"]}
    for method in ("dsn", "zse", "clip_prompt"):
        classes[f"{method}.train"] = TrainConfig
    for name in ("baseline_random", "baseline_imagenet", "baseline_hog"):
        classes[name] = lookup(name, "baseline")
    return classes


def test_params_yaml_is_the_only_home_of_every_value() -> None:
    """Every typed section builds from params.yaml, which lists every field; the classes hold no default for
    any of them (types and checks only), so a value cannot live in two places."""
    params = Params.load(Path(__file__).resolve().parents[2] / "params.yaml")
    for key, target in _config_classes().items():
        params.read(target, key)  # every key known, every value of the right type and sense
        if dataclasses.is_dataclass(target):
            declared = {f.name: f for f in dataclasses.fields(target)}
            defaults = [name for name, f in declared.items() if name in params.section(key) and
                        (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)]
        else:
            declared = inspect.signature(target).parameters
            defaults = [name for name, p in declared.items() if name in params.section(key) and
                        p.default is not inspect.Parameter.empty]
        assert set(params.section(key)) <= set(declared), key
        assert not defaults, f"{key}: {defaults} have a default in the code as well as a value in params.yaml"


def test_nonsense_values_are_refused_naming_key_value_and_what_is_allowed() -> None:
    from models.dsn import DSNConfig
    from models.engine import TrainConfig

    params = Params.load(Path(__file__).resolve().parents[2] / "params.yaml")
    cases = [("dsn.train", {"epochs": -3}, "dsn.train.epochs: -3 is not allowed; expected a value > 0"),
             ("dsn.train", {"lr": 0}, "dsn.train.lr: 0 is not allowed; expected a value > 0"),
             ("dsn.model", {"style_augment": 1.5}, r"dsn.model.style_augment: 1.5 is not allowed; expected a value in \[0, 1\]"),
             ("dsn.model", {"pool": "mean"}, r"dsn.model.pool: expected one of \['avg', 'flatten'\], got 'mean'"),
             ("dsn.model", {"loss_weights": {"memory": -1}}, "dsn.model.loss_weights.memory: -1 is not allowed")]
    for key, change, message in cases:
        target = TrainConfig if key.endswith("train") else DSNConfig
        with pytest.raises(ConfigError, match=message):
            params.replaced(key, change).read(target, key)


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
    # one stage builds every artwork set (and one validates them): the sets its command names, where paths say
    built = stages["prepare_artwork"]["cmd"].split("--dataset ")[1:]
    built = [name.strip() for name in built]
    assert stages["validate_artwork"]["cmd"].split("--dataset ")[1:] == stages["prepare_artwork"]["cmd"].split(
        "--dataset ")[1:]
    assert stages["prepare_artwork"]["outs"] == [str(paths.prepared_dir(name)) for name in built]
    assert [next(iter(e)) for e in stages["validate_artwork"]["outs"]] == [str(paths.validation_report(n))
                                                                          for n in built]
    assert {f"prepare.{name}" for name in built} == set(stages["prepare_artwork"]["params"])
    # the artwork sets every model is evaluated on, trained on or indexed are built by it and deps where used
    params = Params.load(Path(__file__).resolve().parents[2] / "params.yaml")
    evaluate = params.section("evaluate")
    galleries = evaluate["cross_galleries"] + evaluate["cross_sketches"]
    assert set(galleries) | set(params.section("train")["styles"]) | set(params.section("index")["styles"]) <= set(built)
    for stage in ("embed", "evaluate"):
        assert {str(paths.prepared_dir(g)) for g in galleries} <= set(stages[stage]["do"]["deps"])
    assert {str(paths.prepared_dir(g)) for g in params.section("train")["styles"]} <= set(stages["train"]["do"]["deps"])
    assert {str(paths.prepared_dir(g)) for g in params.section("index")["styles"]} <= set(stages["index"]["deps"])
    assert {next(iter(e)) if isinstance(e, dict) else e for e in stages["register"]["outs"]} == {
        str(paths.register_report("${evaluate.dataset}"))}
    assert [next(iter(e)) if isinstance(e, dict) else e for e in stages["index"]["outs"]] == [
        str(paths.serving_bundle())]
    assert [next(iter(e)) for e in stages["package"]["outs"]] == [str(paths.bento_record())]
    assert [next(iter(e)) if isinstance(e, dict) else e for e in stages["pretrain_clip"]["outs"]] == [
        str(paths.pretrained_clip_dir("${train.dataset}")), str(paths.pretrain_log_dir("${train.dataset}"))]
    models = next(entry["models"] for entry in pipeline["vars"] if "models" in entry)
    assert set(models) == {"dsn", "clip_prompt", "zse", "baseline_random", "baseline_imagenet", "baseline_hog"}
    root = Path(__file__).resolve().parents[2]
    for name, entry in models.items():  # every model's code exists; `needs` is code or a pipeline output
        assert (root / entry["code"]).exists(), name
        produced = {next(iter(e)) if isinstance(e, dict) else e for s in stages.values()
                    for e in s.get("outs", []) + s.get("do", {}).get("outs", [])}
        assert (root / entry["needs"]).exists() or any(str(out).startswith(entry["needs"]) for out in produced), name
    assert set(Params.load(root / "params.yaml").section("run")["models"]) <= set(models)


def test_published_configs_are_valid_sections_of_the_methods() -> None:
    """configs/published.yaml (the published sizes, for a GPU with user-supplied weights), laid over params.yaml
    as a profile, type-checks as the methods' params sections: the paper's architectures and input sizes."""
    from stages.train import method_settings

    root = Path(__file__).resolve().parents[2]
    params = Params.load(root / "params.yaml", [root / "configs/published.yaml"])
    zse, zse_train = method_settings(params, "zse")
    assert zse.config.backbone == "timm:vit_base_patch16_224" and zse.config.image_size == 224
    assert (zse.config.pretrained, zse.config.width, zse.config.cross_heads, zse.config.cross_ff,
            zse.config.relation_width) == ("sam_in1k", 768, 8, 1024, 512)
    assert zse.config.loss_weights == {"triplet": 2.0, "relation": 4.0, "instance": 0.0}
    assert (zse_train.lr, zse_train.weight_decay, zse_train.lr_final_factor) == (1e-5, 1e-2, 1.0)
    dsn, dsn_train = method_settings(params, "dsn")
    assert dsn.config.backbone == "timm:legacy_seresnet50" and dsn.config.embedding_dim == 512
    assert dsn.config.loss_weights == {"classification": 1.0, "knowledge": 1.0, "contrastive": 0.1, "memory": 1.0,
                                       "instance": 0.0}
    assert (dsn.config.memory_size, dsn.config.contrastive_views, dsn.config.memory_gradient) == (10, 2, True)
    assert (dsn_train.lr, dsn_train.weight_decay, dsn_train.lr_final_factor, dsn_train.epochs) == (1e-4, 5e-4,
                                                                                                  1e-3, 20)
    clip, _ = method_settings(params, "clip_prompt")
    assert clip.config.clip == "open_clip:ViT-B-32" and clip.config.pretrained == "openai"
    assert not clip.config.deep and not clip.config.shared_prompts  # the release's shallow prompts, one per domain
    assert {term for term, weight in clip.config.loss_weights.items() if weight} == {"triplet", "classification"}
    fine = Params.load(root / "params.yaml", [root / "configs/published.yaml",
                                              root / "configs/published_fine_grained.yaml"])
    clip_fg, _ = method_settings(fine, "clip_prompt")
    assert clip_fg.config.shared_prompts and clip_fg.config.clip == "open_clip:ViT-B-32"
    assert {term for term, weight in clip_fg.config.loss_weights.items() if weight} == {
        "classification", "instance", "shuffle", "relative"}


def test_benchmark_profiles_point_every_stage_at_a_known_benchmark() -> None:
    """configs/benchmarks/<name>.yaml, laid over params.yaml and a paper profile, trains, evaluates and indexes one
    published benchmark, with no gallery that belongs to the embedded default."""
    from stages.evaluate import EvaluateParams

    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "configs/benchmarks").glob("*.yaml"))
    assert {file.stem for file in files} == {"sketchy21", "sketchy25", "tuberlin30", "quickdraw30"}
    for file in files:
        params = Params.load(root / "params.yaml", [root / "configs/published.yaml", file])
        assert params.value("train.dataset", str) == params.value("index.dataset", str) == file.stem
        evaluate = params.read(EvaluateParams, "evaluate")
        assert evaluate.dataset == file.stem and evaluate.cross_galleries == evaluate.cross_sketches == []
        assert file.stem in params.section("prepare")  # where its files are read from
