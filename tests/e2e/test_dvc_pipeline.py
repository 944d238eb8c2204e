"""The real dvc.yaml, run by real DVC in a scratch copy of the project, with a local-folder remote.

The module works on one copy of the session's reproduced project (e2e conftest: reproduced once per session);
each test restores what it changes, so the tests pass in any order."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import copy_project, run_command

from sbir.manifest import read_manifest
from stages.model_store import Registry
from stages.shared_store import SharedStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(reproduced_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's project: this repository's pipeline, sized down through params only, reproduced
    (the output of its first `dvc repro` in ``.first-repro.log``) and committed."""
    return copy_project(reproduced_project, tmp_path_factory.mktemp("project") / "project")


def _changed(project: Path) -> set[str]:
    """Stages `dvc status` would re-run."""
    status = json.loads(run_command(["dvc", "status", "--json"], project).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def test_repro_runs_every_stage_of_every_model(project: Path) -> None:
    log = (project / ".first-repro.log").read_text()
    assert "epoch 1/1" in log and "ETA" in log  # training progress shows during `dvc repro`
    manifest = read_manifest(project / "data/prepared/openmoji_zs")
    assert manifest.frame["category"].nunique() == 87
    report = yaml.safe_load((project / "data/reports/validation/openmoji_zs.json").read_text())
    assert report["success"] and report["images"] == len(manifest.frame)
    metrics = {name: yaml.safe_load((project / f"artifacts/eval/openmoji_zs/{name}/metrics.json").read_text())
               for name in ("baseline_random", "baseline_imagenet", "baseline_hog", "dsn", "clip_prompt", "zse")}
    assert metrics["dsn"]["model"]["name"] == "dsn"
    # the three methods from the same weights: category-level, fine-grained, cross-dataset; and explained
    for method in ("dsn", "clip_prompt", "zse"):
        document = metrics[method]
        assert {"map_all/sklearn/query", "fg/acc@1/gallery"} <= set(document["zero_shot"])
        assert "map_all/sklearn/query" in document["cross_gallery"]["twemoji"]
        sheets = project / f"artifacts/eval/openmoji_zs/{method}/explanations"
        assert sorted(document["explanations"]["sheets"]) == sorted(p.name for p in sheets.glob("*.png"))
        assert document["explanations"]["sheets"] and {n[:4] for n in document["explanations"]["sheets"]} <= {"hit_", "miss"}
    assert "reranked" in metrics["zse"] and "reranked" not in metrics["dsn"]  # the relation network re-scores
    assert (project / "artifacts/clip/openmoji_zs/model.safetensors").is_file()  # pretrain_clip, then frozen
    params = yaml.safe_load((project / "params.yaml").read_text())
    styles = set(params["restyle"]["styles"]) | set(params["evaluate"]["cross_sketches"])  # redrawn + artists'
    assert set(metrics["dsn"]["style_shift"]) == set(metrics["baseline_hog"]["style_shift"]) == styles
    assert set(metrics["dsn"]["cross_gallery"]) == set(params["evaluate"]["cross_galleries"])
    assert set(metrics["dsn"]["mixed_gallery"]["photos_per_style"]) == {"own", *params["evaluate"]["cross_galleries"]}
    trained = json.loads((project / "artifacts/checkpoints/dsn/config.json").read_text())
    assert trained["styles"] == params["train"]["styles"]  # the default trains on the artwork styles
    assert (project / "artifacts/checkpoints/dsn/model.safetensors").is_file()
    for name in metrics:
        config = json.loads((project / f"artifacts/checkpoints/{name}/config.json").read_text())
        assert config["schema_version"] == 2 and config["method"] == name
        assert (project / f"artifacts/embeddings/openmoji_zs/{name}/vectors.npy").is_file()
    assert metrics["baseline_hog"]["zero_shot"]["n_classes"] == 17
    shown = run_command(["dvc", "metrics", "show", "--json"], project).stdout
    assert "baseline_hog" in shown and "map_all/sklearn/query" in shown
    assert "Data and pipelines are up to date" in run_command(["dvc", "status"], project).stdout
    # a second repro is a cache hit: nothing re-runs
    assert "didn't change, skipping" in run_command(["dvc", "repro"], project).stdout


# JSON keys that carry a run's wall time or circumstances, not its result: never in a cached (DVC-cached) output,
# which must reproduce byte for byte; they belong in uncached outs (cache: false) or DVCLive.
RUN_KEY = re.compile(r"(^|_)(seconds|secs|time|times|timestamp|date|datetime|elapsed|duration|wall|host|hostname|"
                     r"user|pid|started|finished|created)(_|$)", re.IGNORECASE)
ISO_DATE = re.compile(rb"\b20\d\d-[01]\d-[0-3]\d[T ][0-2]\d:")


def _json_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(map(str, value)) | {k for v in value.values() for k in _json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _json_keys(v)}
    return set()


def test_cached_outputs_hold_no_timings_dates_or_machine_paths(project: Path) -> None:
    """What DVC caches must be a function of the stage's deps and params: no wall times, dates or absolute paths
    of the machine that ran it (those would make every re-run differ, and leak into the shared cache)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        cached = sorted({str(out.def_path) for stage in repo.index.stages for out in stage.outs if out.use_cache})
    assert "artifacts/clip/openmoji_zs" in cached
    machine_paths = {str(project).encode(), str(project.resolve()).encode(), str(Path.home()).encode() + b"/"}
    problems = []
    for out in cached:
        root = project / out
        for file in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            name, data = file.relative_to(project).as_posix(), file.read_bytes()
            problems += [f"{name}: absolute path {p.decode()}" for p in machine_paths if p in data]
            if file.suffix in (".json", ".md", ".csv", ".txt", ".yaml") and ISO_DATE.search(data):
                problems.append(f"{name}: a date-time {ISO_DATE.search(data).group().decode()}")
            if file.suffix == ".json":
                problems += [f"{name}: run key {key!r}" for key in sorted(_json_keys(json.loads(data)))
                             if RUN_KEY.search(key)]
    assert not problems, "cached outputs that cannot reproduce:\n" + "\n".join(problems)


def test_push_pull_round_trip(project: Path) -> None:
    before = read_manifest(project / "data/prepared/openmoji_zs").frame
    run_command(["dvc", "push"], project)
    assert any((project / ".dvc-storage").rglob("*")), "the default remote is the in-repo .dvc-storage folder"
    shutil.rmtree(project / "data/prepared")
    shutil.rmtree(project / ".dvc/cache")
    run_command(["dvc", "pull"], project)
    after = read_manifest(project / "data/prepared/openmoji_zs")
    assert after.frame.equals(before)
    assert all(after.resolve(p).is_file() for p in after.frame["path"])
    assert "Data and pipelines are up to date" in run_command(["dvc", "status"], project).stdout


def test_corrupt_image_stops_the_pipeline_at_validate(project: Path) -> None:
    manifest = read_manifest(project / "data/prepared/openmoji_zs")
    victim = manifest.frame["path"].iloc[5]
    target = manifest.resolve(victim)
    target.unlink()  # DVC links cache files into the workspace: replace, never edit in place
    target.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    try:
        result = run_command(["dvc", "repro", "--single-item", "validate@openmoji_zs"], project, check=False)
        assert result.returncode != 0
        assert "files: decode" in result.stderr and victim in result.stderr
    finally:
        target.unlink()
        run_command(["dvc", "checkout", "--force", "data/prepared/openmoji_zs"], project)
        run_command(["dvc", "repro", "--single-item", "validate@openmoji_zs"], project)
    assert "Data and pipelines are up to date" in run_command(["dvc", "status"], project).stdout


def _experiment(shown: list[dict], name: str) -> dict:
    """The data (params, metrics) of the experiment ``name`` in `dvc exp show --json`."""
    found = [rev["data"] for commit in shown for experiment in commit.get("experiments") or []
             for rev in experiment["revs"] if rev["name"] == name]
    assert len(found) == 1, f"dvc exp show lists {len(found)} experiments named {name!r}"
    return found[0]


def test_experiment_with_a_changed_parameter(project: Path) -> None:
    """`dvc exp run -S` runs what the change reaches, records it as a named experiment that `dvc exp show` lists
    with the new value, and keeps its results in the workspace. The parameter is register.margin, which re-runs
    register and then index only (a model's parameter would re-train, re-embed and re-evaluate that model too)."""
    result = run_command(["dvc", "exp", "run", "-S", "register.margin=0.25", "--name", "margin25"], project)
    ran = result.stdout + result.stderr
    assert "Running stage 'register'" in ran and "Running stage 'train@" not in ran
    shown = json.loads(run_command(["dvc", "exp", "show", "--json"], project).stdout)
    assert _experiment(shown, "margin25")["params"]["params.yaml"]["data"]["register"]["margin"] == 0.25
    assert "Data and pipelines are up to date" in run_command(["dvc", "status"], project).stdout  # the workspace is kept


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
        # not the baselines, nor their evaluation; the serving bundle and the Bento ship the models' code
        dsn_stages = {"train@dsn", "embed@dsn", "evaluate@dsn"}  # evaluate explains with the model's code
        assert _changed(project) == dsn_stages | {"index", "package"}
        params["baseline_hog"]["pixels_per_cell"] = 16
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        assert _changed(project) == dsn_stages | {"index", "package", "train@baseline_hog"}
    finally:
        params_file.write_text(params_text)
        dsn_module.write_text(dsn_text)
    assert _changed(project) == set()


def test_the_quick_path_never_registers_a_method_whose_code_changed(reproduced_project: Path, tmp_path: Path) -> None:
    """After every model was evaluated (`make compare`), the best method's code changes and `make run` (which
    re-runs only params.yaml run.models) goes on a fresh machine's model store: that method's evaluation is stale
    against dvc.lock, so it is neither registered nor promoted; the champion carries its lineage."""
    project = copy_project(reproduced_project, tmp_path / "project", without=(".bentoml",))
    best = json.loads((project / "artifacts/register/openmoji_zs.json").read_text())["decision"]["method"]
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    others = {dep["path"] for name, stage in stages.items() if name.startswith("train@") and name != f"train@{best}"
              for dep in stage["deps"]}
    own_code = next(dep["path"] for dep in stages[f"train@{best}"]["deps"]  # its module, or its package folder
                    if dep["path"].startswith("models/") and dep["path"] not in others)
    edited = project / own_code if own_code.endswith(".py") else sorted((project / own_code).glob("*.py"))[-1]
    edited.write_text(edited.read_text() + "\n# changed after make compare\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["run"]["models"] = ["baseline_hog"]
    params["register"]["margin"] += 0.001  # the register stage runs again
    params["register"]["store"] = str(tmp_path / "team-store")  # and publishes to a shared store, index too
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    shown = run_command(["zssbir", "run"], project, env={"BENTOML_HOME": str(project / ".bentoml")})
    report = json.loads((project / "artifacts/register/openmoji_zs.json").read_text())
    assert best in report["stale"] and any(own_code in reason for reason in report["stale"][best])
    assert best not in report["candidates"] and report["decision"]["method"] != best
    ledger = Registry(project / ".bentoml").ledger()
    assert {record["method"] for record in ledger["registrations"].values()} == {report["decision"]["method"]}
    champion = ledger["registrations"][report["decision"]["version"]]
    head = run_command(["git", "rev-parse", "HEAD"], project).stdout.strip()  # the commit that recorded dvc.lock
    assert champion["lineage"]["train_stage"] == f"train@{champion['method']}"
    assert champion["lineage"]["committed_in"] == champion["git_revision"] == head
    assert champion["lineage"]["deps"] == {dep["path"]: dep["md5"]
                                           for dep in stages[f"train@{champion['method']}"]["deps"]}
    generation, shared = SharedStore(str(tmp_path / "team-store")).ledger()
    team = shared["registrations"][shared["champions"][f"openmoji_zs|{report['settings']['metric']}"][-1]]
    assert team["version"] == report["champion"] == champion["version"] and generation == 2  # models, then bundle
    assert set(team["store"]) == {"models", "bundle"} and report["shared_store"]["decision"]["promoted"]
    # what a user sees: no DVC hints, the table whole
    assert "git add" not in shown.stdout and "…" not in shown.stdout and "baseline_imagenet" in shown.stdout
