"""The real dvc.yaml, run by real DVC in a scratch copy of the project, with a local-folder remote.

The module's project is reproduced once by its fixture; each test restores what it changes, so the tests pass
in any order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

from sbir.manifest import read_manifest

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC project holding this repository's pipeline, sized down through params only."""
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    for package in ("sbir", "models", "stages"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare"]["openmoji_zs"].update(max_items_per_category=2, sketches_per_item=2, image_size=64)
    params["validate"]["min_images_per_category"] = {"train": 1, "test_seen": 1, "test_unseen": 2}
    params["train"]["runtime"].update(num_threads=1)
    params["dsn"]["train"].update(epochs=1, batch_size=8)
    params["dsn"]["model"].update(image_size=32, embedding_dim=32, projection_dim=16, memory_size=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    shutil.copy(REPO_ROOT / ".dvc/config", root / ".dvc/config")  # the project's default remote, as cloned
    _commit(root, "pipeline")  # as a clone has: DVCLive and `dvc exp` need a commit
    first = _run(["dvc", "repro"], root)
    (root / ".first-repro.log").write_text(first.stdout + first.stderr)
    _commit(root, "lock")
    return root


def _changed(project: Path) -> set[str]:
    """Stages `dvc status` would re-run."""
    status = json.loads(_run(["dvc", "status", "--json"], project).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def _commit(root: Path, message: str) -> None:
    _run(["git", "add", "-A"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", message], root)


def test_repro_runs_every_stage_of_every_model(project: Path) -> None:
    log = (project / ".first-repro.log").read_text()
    assert "epoch 1/1" in log and "ETA" in log  # training progress shows during `dvc repro`
    manifest = read_manifest(project / "data/prepared/openmoji_zs")
    assert manifest.frame["category"].nunique() == 87
    report = yaml.safe_load((project / "data/reports/validation/openmoji_zs.json").read_text())
    assert report["success"] and report["images"] == len(manifest.frame)
    metrics = {name: yaml.safe_load((project / f"artifacts/eval/openmoji_zs/{name}/metrics.json").read_text())
               for name in ("baseline_random", "baseline_imagenet", "baseline_hog", "dsn")}
    assert metrics["dsn"]["model"]["name"] == "dsn"
    styles = set(yaml.safe_load((project / "params.yaml").read_text())["restyle"]["styles"])
    assert set(metrics["dsn"]["style_shift"]) == set(metrics["baseline_hog"]["style_shift"]) == styles
    assert (project / "artifacts/checkpoints/dsn/model.safetensors").is_file()
    for name in metrics:
        config = json.loads((project / f"artifacts/checkpoints/{name}/config.json").read_text())
        assert config["schema_version"] == 1 and config["method"] == name
        assert (project / f"artifacts/embeddings/openmoji_zs/{name}/vectors.npy").is_file()
    assert metrics["baseline_hog"]["zero_shot"]["n_classes"] == 17
    shown = _run(["dvc", "metrics", "show", "--json"], project).stdout
    assert "baseline_hog" in shown and "map_all/sklearn/query" in shown
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project).stdout
    # a second repro is a cache hit: nothing re-runs
    assert "didn't change, skipping" in _run(["dvc", "repro"], project).stdout


def test_push_pull_round_trip(project: Path) -> None:
    before = read_manifest(project / "data/prepared/openmoji_zs").frame
    _run(["dvc", "push"], project)
    assert any((project / ".dvc-storage").rglob("*")), "the default remote is the in-repo .dvc-storage folder"
    shutil.rmtree(project / "data/prepared")
    shutil.rmtree(project / ".dvc/cache")
    _run(["dvc", "pull"], project)
    after = read_manifest(project / "data/prepared/openmoji_zs")
    assert after.frame.equals(before)
    assert all(after.resolve(p).is_file() for p in after.frame["path"])
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project).stdout


def test_corrupt_image_stops_the_pipeline_at_validate(project: Path) -> None:
    manifest = read_manifest(project / "data/prepared/openmoji_zs")
    victim = manifest.frame["path"].iloc[5]
    target = manifest.resolve(victim)
    target.unlink()  # DVC links cache files into the workspace: replace, never edit in place
    target.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    try:
        result = _run(["dvc", "repro", "--single-item", "validate@openmoji_zs"], project, check=False)
        assert result.returncode != 0
        assert "files: decode" in result.stderr and victim in result.stderr
    finally:
        target.unlink()
        _run(["dvc", "checkout", "--force", "data/prepared/openmoji_zs"], project)
        _run(["dvc", "repro", "--single-item", "validate@openmoji_zs"], project)
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project).stdout


def test_experiment_with_a_changed_parameter(project: Path) -> None:
    _run(["dvc", "exp", "run", "-S", "dsn.train.lr=0.005", "--name", "lr5"], project)
    shown = _run(["dvc", "exp", "show", "--json"], project).stdout
    assert "lr5" in shown and "0.005" in shown
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], project).stdout  # the workspace is kept


def test_only_what_a_change_touches_re_runs(project: Path) -> None:
    params_file, dsn_module = project / "params.yaml", project / "models/dsn.py"
    params_text, dsn_text = params_file.read_text(), dsn_module.read_text()
    try:
        params = yaml.safe_load(params_text)
        params["train"]["runtime"].update(checkpoint_every=7, num_threads=2, workers=0)
        params["embed"].update(batch_size=5)
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        assert _changed(project) == set()  # how runs are carried out never re-trains or re-embeds
        dsn_module.write_text(dsn_text + "\n# an edit\n")
        assert _changed(project) == {"train@dsn", "embed@dsn"}  # not the baselines, nor their evaluation
        params["baseline_hog"]["pixels_per_cell"] = 16
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        assert _changed(project) == {"train@dsn", "embed@dsn", "train@baseline_hog"}
    finally:
        params_file.write_text(params_text)
        dsn_module.write_text(dsn_text)
    assert _changed(project) == set()
