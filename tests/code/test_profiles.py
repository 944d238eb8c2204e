"""Paper profiles as one `dvc exp run` (flows/profiles.py, `zssbir reproduce`): the overrides DVC applies give
exactly the params that ``Params.load`` composes from the profile files, and every profile type-checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

from flows import profiles
from flows.cli import main
from sbir.config import ConfigError, Params


def test_every_setup_and_benchmark_is_a_profile_that_type_checks() -> None:
    names = profiles.profile_names(REPO_ROOT)
    assert len(names) == 16 and "zse-sketchy25" in names and "clip_prompt_fg-quickdraw30" in names
    for name in names:
        run = profiles.paper_run(name, repo=REPO_ROOT)
        profiles.check(run, REPO_ROOT)  # the model's sections and evaluate's, as the stages will read them
        assert run.target == f"evaluate@{run.model}" and run.changes["datasets"][run.dataset]["source"]
    assert profiles.split_profile("clip_prompt_fg-sketchy21", REPO_ROOT) == ("clip_prompt_fg", "sketchy21")
    assert profiles.paper_run("zse-sketchy21", repo=REPO_ROOT).changes["datasets"] == {
        "sketchy21": {"source": "data/raw/Sketchy"}}
    with pytest.raises(ConfigError, match="unknown profile 'zse-sketchy99'; known: dsn-quickdraw30"):
        profiles.split_profile("zse-sketchy99", REPO_ROOT)


@pytest.mark.parametrize("name", ["zse-sketchy25", "dsn-tuberlin30", "clip_prompt_fg-sketchy21"])
def test_dvc_applies_the_overrides_to_exactly_the_composed_params(name: str, tmp_path: Path) -> None:
    """DVC's own override code (what `dvc exp run -S` calls) on a copy of params.yaml."""
    from dvc.utils.hydra import apply_overrides

    run = profiles.paper_run(name, repo=REPO_ROOT)
    copy = tmp_path / "params.yaml"
    shutil.copy(REPO_ROOT / "params.yaml", copy)
    apply_overrides(copy, run.overrides)
    applied = Params.load(copy).values
    expected = profiles.composed(run, REPO_ROOT).values
    assert _as_read(applied, expected) == expected
    setup = profiles.setups(REPO_ROOT)[name.rsplit("-", 1)[0]]
    for file in setup["files"]:  # only the model's section and the shared train section change
        published = yaml.safe_load((REPO_ROOT / file).read_text())
        assert set(run.changes) <= {"train", run.model, "evaluate", "index", "datasets", *published.keys()}
    other = {"dsn", "zse", "clip_prompt"} - {run.model}
    assert all(applied[section] == Params.load(REPO_ROOT / "params.yaml").values[section] for section in other)
    assert "#" in copy.read_text()  # params.yaml keeps its comments


def test_an_extra_file_that_moves_the_raw_folder_moves_what_dvc_tracks(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("prepare:\n  sketchy21:\n    root: /data/Sketchy\nzse:\n  train:\n    epochs: 1\n")
    run = profiles.paper_run("zse-sketchy21", [extra], repo=REPO_ROOT)
    assert run.changes["datasets"] == {"sketchy21": {"source": "/data/Sketchy"}}
    assert run.changes["zse"]["train"]["epochs"] == 1 and run.changes["zse"]["train"]["lr"] == 1e-5


def _as_read(value, like):
    """``value`` as the typed sections read it: DVC writes 1e-05 as YAML 1.1 reads a string, and a float field
    accepts a string that spells a number (sbir.config)."""
    if isinstance(value, dict) and isinstance(like, dict):
        return {key: _as_read(item, like.get(key)) for key, item in value.items()}
    if isinstance(value, str) and isinstance(like, float):
        return float(value)
    return value


def test_values_are_written_in_the_override_grammar(tmp_path: Path) -> None:
    from dvc.utils.hydra import apply_overrides

    assert profiles.hydra_value("timm:vit_base_patch16_224") == "'timm:vit_base_patch16_224'"
    tricky = {"quote": "it's a {} \\ path\\'s end\\", "colon": "a: b", "list": ["x, y", None], "nested": {"k": "v=1"}}
    file = tmp_path / "p.yaml"
    file.write_text("a: 1\n")
    apply_overrides(file, profiles.overrides(tricky, {"a": 1}))
    assert yaml.safe_load(file.read_text()) == {"a": 1, **tricky}
    assert [profiles.hydra_value(v) for v in (None, True, 1e-05, 3, [])] == ["null", "true", "1e-05", "3", "[]"]
    assert profiles.overrides({"a": {"b": 1, "new": {"c": "x"}}, "d": [1, "y"]}, {"a": {"b": 0}, "d": []}) == [
        "a.b=1", "+a.new={c: 'x'}", "d=[1, 'y']"]


def test_reproduce_lists_dry_runs_and_refuses_unknown_profiles(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    for name in ("BENTOML_HOME", "PREFECT_HOME"):  # main() sets the project's homes where unset: kept to this test
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored afterwards
    assert main(["reproduce", "--list"]) == 0
    assert "clip_prompt_fg: model clip_prompt" in capsys.readouterr().out
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "0"  # paper profiles name hub weights: downloads allowed by default
    assert main(["reproduce", "zse-sketchy25", "--dry-run"]) == 0
    command = capsys.readouterr().out
    assert command.startswith("dvc exp run --name zse-sketchy25-") and command.rstrip().endswith("evaluate@zse")
    assert "zse.model.backbone='\"'\"'timm:vit_base_patch16_224'\"'\"''" in command
    assert "'+datasets.sketchy25={source: '\"'\"'data/raw/Sketchy'\"'\"'}'" in command
    assert main(["reproduce", "zse-nowhere"]) == 2
    assert "unknown profile 'zse-nowhere'" in capsys.readouterr().err


def test_a_user_who_asked_for_offline_stays_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from sbir.env import allow_hub_downloads

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert allow_hub_downloads() == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert allow_hub_downloads() == "0"


def test_the_report_picks_each_benchmarks_paper_columns_with_each_papers_preset() -> None:
    from stages.report import paper_columns

    document = {"zero_shot": {"preset/zse/map_all": 0.5, "preset/zse/p_100": 0.25, "preset/sake/map_all": 0.4,
                              "preset/sake/p_100": 0.2, "preset/zse/p_200": 0.125},
                "relation_all": {"preset/zse/map_all": 0.75, "preset/zse/p_100": 0.5}}
    assert paper_columns("sketchy25", "zse", document) == {
        "paper mAP@all / P@100 [preset]": "Ret 0.500 / 0.250, RN 0.750 / 0.500 [zse]"}
    plain = {"zero_shot": document["zero_shot"]}
    assert paper_columns("tuberlin30", "dsn", plain) == {"paper mAP@all / P@100 [preset]": "0.400 / 0.200 [sake]"}
    assert paper_columns("quickdraw30", "baseline_hog", plain) == {
        "paper mAP@all / P@200 [preset]": "0.500 / 0.125 [zse]"}
    assert paper_columns("sketchy21", "clip_prompt", plain) == {
        "paper mAP@200 / P@200 [preset]": "– / – [sem_pcyc_200]"}
    assert paper_columns("openmoji_zs", "zse", document) == {}  # the embedded default has no paper columns
