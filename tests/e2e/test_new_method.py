"""Adding a method is exactly one module under models/, one params.yaml section and one line of dvc.yaml's
``models`` list: a toy method added so to a copy of the session's reproduced project trains, embeds and evaluates
through the real DVC stages (the upstream ones they need are found up to date)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TOY_DVC_ENTRY, TOY_METHOD, TOY_PARAMS, copy_project, run_command

pytestmark = pytest.mark.slow
STAGES = ("train@toy", "embed@toy", "evaluate@toy")


def _changed_files(root: Path) -> set[str]:
    lines = run_command(["git", "status", "--porcelain", "--untracked-files=all"], root).stdout.splitlines()
    return {line[3:] for line in lines}


@pytest.fixture(scope="module")
def toy_project(reproduced_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str], str]:
    """A copy of the session's reproduced project (prepared data, validation and restyled sketches reused) with
    the toy added, reproduced: (project, the files the addition changed, the repro's output)."""
    root = copy_project(reproduced_project, tmp_path_factory.mktemp("toy") / "project", without=(".bentoml",))
    before = _changed_files(root)
    (root / "models/toy.py").write_text(TOY_METHOD)
    with (root / "params.yaml").open("a") as params:
        params.write("\n" + yaml.safe_dump({"toy": TOY_PARAMS}, sort_keys=False))
    pipeline = (root / "dvc.yaml").read_text()
    entry = f"      toy: {{code: {TOY_DVC_ENTRY['code']}, needs: {TOY_DVC_ENTRY['needs']}}}\n"
    assert pipeline.count("  - models:\n") == 1
    (root / "dvc.yaml").write_text(pipeline.replace("  - models:\n", "  - models:\n" + entry))
    added = _changed_files(root) - before
    result = run_command(["dvc", "repro", *STAGES], root)
    return root, added, result.stdout + result.stderr


def test_the_addition_is_one_module_one_section_and_one_line(toy_project: tuple[Path, set[str], str]) -> None:
    root, added, _ = toy_project
    assert added == {"models/toy.py", "params.yaml", "dvc.yaml"}
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    assert next(item["models"] for item in pipeline["vars"] if "models" in item)["toy"] == TOY_DVC_ENTRY


def test_the_toy_trains_embeds_and_evaluates(toy_project: tuple[Path, set[str], str]) -> None:
    root, _, log = toy_project
    for stage in STAGES:
        assert f"Running stage '{stage}'" in log
    config = json.loads((root / "artifacts/checkpoints/toy/config.json").read_text())
    assert (config["kind"], config["method"], config["embedding_dim"]) == ("method", "toy", 16)
    assert config["config"]["width"] == 16 and config["preprocess"]["sketch"]["image_size"] == 32
    assert (root / "artifacts/checkpoints/toy/model.safetensors").is_file()
    summary = json.loads((root / "artifacts/train/toy/summary.json").read_text())
    assert summary["completed"] and summary["steps"] > 0
    embeddings = root / "artifacts/embeddings/openmoji_zs/toy"
    vectors = np.load(embeddings / "vectors.npy")
    assert vectors.shape[1] == 16 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert (embeddings / "rows.parquet").is_file()
    metrics = json.loads((root / "artifacts/eval/openmoji_zs/toy/metrics.json").read_text())
    assert metrics["model"]["name"] == "toy"
    assert 0 <= metrics["zero_shot"]["map_all/sklearn/query"] <= 1
    assert "Data and pipelines are up to date" in run_command(["dvc", "status", *STAGES], root).stdout
