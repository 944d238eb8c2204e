"""Each paper setup through the real pipeline on the fixture version of a published benchmark: ``zssbir reproduce
<setup>-<benchmark>`` is one ``dvc exp run`` that prepares, validates, trains, embeds and evaluates the benchmark
with the paper's architecture, input size and losses (configs/profiles.yaml), then prints the table.

The fixtures (tests/benchmark_fixtures.py) are the real layouts with 8×8 images of a few classes, so one more
file is laid over each profile: the data gate's sizes and counts for such images, one short epoch of pairs of pairs
on two threads, and weights that need no download (random, or for DSN's teacher a local file of random weights —
the local-file path). Nothing else of the paper profile changes: ViT-B/16 and SE-ResNet-50 at 224 px, ViT-B-32
CLIP, the relation network over 7×7 anchors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from benchmark_fixtures import make_quickdraw_tree, make_sketchy_tree, make_tuberlin_tree
from helpers import commit, make_pipeline_project, run_command

pytestmark = pytest.mark.slow

# (setup, benchmark): every setup once, every benchmark once
CASES = [("zse", "sketchy25"), ("dsn", "tuberlin30"), ("clip_prompt", "quickdraw30"), ("clip_prompt_fg", "sketchy21")]
SHORT_RUN = {"epochs": 1, "batch_size": 2}


def _fixture_overlay(teacher: Path) -> dict:
    return {
        "train": {"runtime": {"num_threads": 2, "workers": 0, "cache": "memory", "checkpoint_every": 50}},
        "prepare": {"sketchy21": {"root": "data/raw/Sketchy21"}},
        "validate": {"min_side": 8, "min_images_per_category": {"train": 1, "test_seen": 1, "test_unseen": 1}},
        "restyle": {"styles": []},
        "pretrain_clip": {"train": {"batch_size": 2}},
        "evaluate": {"explain_queries": 1, "grid_queries": 2},
        "dsn": {"train": SHORT_RUN, "model": {"pretrained": str(teacher)}},
        "zse": {"train": SHORT_RUN, "model": {"pretrained": None}},
        "clip_prompt": {"train": {**SHORT_RUN, "sketches_per_category": 2},
                        "model": {"pretrained": None, "shuffle_pairs": 2}},
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(project, overlay): the pipeline project with the four fixture benchmarks under data/raw, committed."""
    import timm
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("paper") / "project"
    root.mkdir()
    make_pipeline_project(root)
    make_sketchy_tree(root / "data/raw/Sketchy", 25, "zse", photos_per_class=1)
    make_sketchy_tree(root / "data/raw/Sketchy21", 21, "zse", photos_per_class=1)
    make_tuberlin_tree(root / "data/raw/TUBerlin", sketches_per_class=2, photos_per_class=1)
    make_quickdraw_tree(root / "data/raw/QuickDraw", sketches_per_class=2, photos_per_class=1)
    teacher = root.parent / "legacy_seresnet50_random.safetensors"  # the classifier included: the KD teacher's head
    save_file(timm.create_model("legacy_seresnet50", pretrained=False).state_dict(), str(teacher))
    overlay = root.parent / "fixture.yaml"
    overlay.write_text(yaml.safe_dump(_fixture_overlay(teacher), sort_keys=False))
    for name in ("Sketchy", "Sketchy21", "TUBerlin", "QuickDraw"):  # as the README: the user's folders under DVC
        run_command(["dvc", "add", f"data/raw/{name}"], root)
    commit(root, "fixture benchmarks")
    return root, overlay


@pytest.mark.parametrize(("setup", "benchmark"), CASES)
def test_paper_profile_runs_end_to_end(project: tuple[Path, Path], setup: str, benchmark: str) -> None:
    root, overlay = project
    params_before = (root / "params.yaml").read_bytes()
    result = run_command(["python", "-m", "flows.cli", "reproduce", f"{setup}-{benchmark}", "--profile", str(overlay)],
                         root, timeout=900, env={"HF_HUB_OFFLINE": "1"})
    model = {"clip_prompt_fg": "clip_prompt"}.get(setup, setup)
    assert f"Zero-shot retrieval on {benchmark}" in result.stdout  # the summary table of the benchmark
    assert (root / "params.yaml").read_bytes() == params_before  # restored; the experiment keeps the values
    metrics = json.loads((root / f"artifacts/eval/{benchmark}/{model}/metrics.json").read_text())
    assert metrics["zero_shot"]["n_classes"] == 2 and metrics["zero_shot"]["map_all/sklearn/query"] > 0
    config = json.loads((root / f"artifacts/checkpoints/{model}/config.json").read_text())["config"]
    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], root).stdout)
    experiments = [e for commit_ in shown for e in (commit_.get("experiments") or [])]
    names = {run["name"] for e in experiments for run in e.get("revs", [])}
    assert any(name.startswith(f"{setup}-{benchmark}-") for name in names)
    if setup == "zse":
        assert (config["backbone"], config["image_size"], config["width"]) == ("timm:vit_base_patch16_224", 224, 768)
        assert {"relation_all", "reranked"} <= set(metrics)  # Ret, RN over every pair, RN re-ranking
    elif setup == "dsn":
        assert (config["backbone"], config["modality_conditioning"]) == ("timm:legacy_seresnet50", True)
        assert config["loss_weights"]["knowledge"] == 1.0
    else:
        assert config["clip"] == "open_clip:ViT-B-32"
        assert config["shared_prompts"] is (setup == "clip_prompt_fg")
    from stages.report import summary_rows

    row = next(row for row in summary_rows(benchmark, root) if row["model"] == model)
    assert any(key.startswith("paper ") and "[" in value for key, value in row.items())  # the paper's columns
    if benchmark.startswith("sketchy"):  # instance links: fine-grained on the paired photos only
        assert metrics["zero_shot"]["fg/n_gallery"] == 2
