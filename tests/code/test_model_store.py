"""The model registry on a real BentoML model store in a temporary BENTOML_HOME: gating, history, rollback,
idempotence, and registrations killed (SIGKILL) at every point leaving the store consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from stages.model_store import ENCODER_MODELS, FAULT_ENV, FAULT_POINTS, Registry, RegistryError, content_version

PROTOCOL = "zero_shot/map_all/sklearn/query"


def model_folder(root: Path, name: str, seed: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"schema_version": 1, "method": name, "seed": seed}))
    (folder / "model.safetensors").write_bytes(bytes([seed % 256]) * 4096)
    return folder


def register(registry: Registry, folder: Path, score: float, margin: float = 0.0):
    return registry.register(folder, method=folder.name, dataset="openmoji_zs", protocol=PROTOCOL, score=score,
                             metrics={"zero_shot": {"map_all/sklearn/query": score}}, params={"seed": 1},
                             margin=margin, data_fingerprint="fp", git="abc123")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "bentoml")


def test_first_model_becomes_champion_with_labels_and_metadata(registry: Registry, tmp_path: Path) -> None:
    import bentoml
    from bentoml._internal.models.model import ModelStore

    decision = register(registry, model_folder(tmp_path, "dsn", 1), 0.5)
    assert decision.promoted and decision.reason == "no champion yet"
    assert registry.champion("openmoji_zs", PROTOCOL)["version"] == decision.version
    store = ModelStore(str(registry.models_dir))
    for domain, name in ENCODER_MODELS.items():
        model = bentoml.models.get(f"{name}:{decision.version}", _model_store=store)
        assert model.info.labels == {"method": "dsn", "dataset": "openmoji_zs", "project": "zssbir", "domain": domain}
        meta = model.info.metadata
        assert (meta["protocol"], meta["score"], meta["git_revision"], meta["data_fingerprint"]) == (
            PROTOCOL, 0.5, "abc123", "fp")
        assert Path(model.path_of("checkpoint/model.safetensors")).read_bytes() == bytes([1]) * 4096
    assert registry.check() == []


def test_worse_challenger_is_registered_not_promoted(registry: Registry, tmp_path: Path) -> None:
    champion = register(registry, model_folder(tmp_path, "dsn", 1), 0.5)
    worse = register(registry, model_folder(tmp_path, "clip", 2), 0.4)
    tie = register(registry, model_folder(tmp_path, "zse", 3), 0.5)
    assert not worse.promoted and "0.4000 vs champion 0.5000" in worse.reason and worse.previous == champion.version
    assert not tie.promoted  # must beat, not equal
    assert registry.champion("openmoji_zs", PROTOCOL)["version"] == champion.version
    assert set(registry.ledger()["registrations"]) == {champion.version, worse.version, tie.version}
    assert registry.stored_models() == sorted(f"{name}:{d.version}" for name in ENCODER_MODELS.values()
                                              for d in (champion, worse, tie))
    events = [(e["event"], e["version"]) for e in registry.ledger()["history"]]
    assert events == [("promoted", champion.version), ("not_promoted", worse.version), ("not_promoted", tie.version)]


def test_margin_and_promotion_history(registry: Registry, tmp_path: Path) -> None:
    first = register(registry, model_folder(tmp_path, "a", 1), 0.50)
    slightly = register(registry, model_folder(tmp_path, "b", 2), 0.505, margin=0.01)
    clearly = register(registry, model_folder(tmp_path, "c", 3), 0.55, margin=0.01)
    assert not slightly.promoted and clearly.promoted
    last = registry.ledger()["history"][-1]
    assert (last["previous"], last["version"]) == (first.version, clearly.version)
    assert last["score"] - last["previous_score"] == pytest.approx(0.05)


def test_registering_twice_is_a_no_op(registry: Registry, tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "dsn", 1)
    first, again = register(registry, folder, 0.5), register(registry, folder, 0.5)
    assert again.version == first.version and again.already_registered and not again.promoted
    assert again.reason == "already the champion"
    assert len(registry.stored_models()) == 2 and len(registry.ledger()["history"]) == 1
    assert content_version(folder, "openmoji_zs") != content_version(folder, "other_dataset")


def test_rollback_and_promote_by_hand(registry: Registry, tmp_path: Path) -> None:
    a = register(registry, model_folder(tmp_path, "a", 1), 0.4)
    b = register(registry, model_folder(tmp_path, "b", 2), 0.5)
    c = register(registry, model_folder(tmp_path, "c", 3), 0.6)
    assert registry.rollback("openmoji_zs", PROTOCOL)["version"] == b.version
    assert registry.rollback("openmoji_zs", PROTOCOL)["version"] == a.version
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("openmoji_zs", PROTOCOL)
    registry.promote(c.version[:6])  # a unique prefix names a version
    with pytest.raises(RegistryError, match="was never a champion"):
        registry.rollback("openmoji_zs", PROTOCOL, to=b.version)
    assert registry.rollback("openmoji_zs", PROTOCOL, to=a.version)["version"] == a.version
    with pytest.raises(RegistryError, match="not found"):
        registry.promote("ffffffff")
    assert [e["event"] for e in registry.ledger()["history"]][-3:] == ["rollback", "promoted", "rollback"]


KILLED_REGISTRATION = textwrap.dedent("""
    import sys
    from pathlib import Path
    from stages.model_store import Registry
    Registry(sys.argv[1]).register(Path(sys.argv[2]), method="challenger", dataset="openmoji_zs",
                                   protocol="{protocol}", score=0.9, metrics={{}}, params={{}}, git="x")
""").format(protocol=PROTOCOL)


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_registration_killed_at_any_point_leaves_the_store_consistent(registry: Registry, tmp_path: Path,
                                                                        point: str) -> None:
    champion = register(registry, model_folder(tmp_path, "dsn", 1), 0.5)
    challenger = model_folder(tmp_path, "challenger", 7)
    env = {**os.environ, FAULT_ENV: point, "PYTHONPATH": str(REPO_ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILLED_REGISTRATION, str(registry.home), str(challenger)],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert registry.check() == []
    assert len(registry.stored_models()) in (2, 3, 4)  # BentoML still lists the store
    expected = champion.version if point != "ledger_written" else content_version(challenger, "openmoji_zs")
    assert registry.champion("openmoji_zs", PROTOCOL)["version"] == expected
    # the next registration completes what the killed one started
    decision = register(registry, challenger, 0.9)
    assert registry.champion("openmoji_zs", PROTOCOL)["version"] == decision.version
    assert registry.check() == [] and not registry.staging_dir.exists()
    assert len(registry.stored_models()) == 4


def test_a_rolled_back_champion_is_not_promoted_again_by_the_gate(registry: Registry, tmp_path: Path) -> None:
    first = register(registry, model_folder(tmp_path, "a", 1), 0.4)
    better = model_folder(tmp_path, "b", 2)
    assert register(registry, better, 0.6).promoted
    registry.rollback("openmoji_zs", PROTOCOL)
    again = register(registry, better, 0.6)  # the next pipeline run registers the same model
    assert not again.promoted and "rolled back by hand" in again.reason
    assert registry.champion("openmoji_zs", PROTOCOL)["version"] == first.version
    registry.promote(again.version)  # only a person restores it
    assert registry.champion("openmoji_zs", PROTOCOL)["version"] == again.version
    registry.rollback("openmoji_zs", PROTOCOL)
    registry.promote(again.version)
    assert register(registry, better, 0.6).reason == "already the champion"


def test_a_new_protocol_is_gated_under_its_own_champion(registry: Registry, tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "a", 1)
    register(registry, folder, 0.5)
    other = registry.register(folder, method="a", dataset="openmoji_zs", protocol="zero_shot/p_100/k/query",
                              score=0.2, metrics={}, params={}, git="g")
    assert other.promoted and other.protocol == "zero_shot/p_100/k/query" and other.score == 0.2
    assert registry.champion("openmoji_zs", "zero_shot/p_100/k/query")["version"] == other.version
    assert registry.ledger()["registrations"][other.version]["evaluations"] == {PROTOCOL: 0.5,
                                                                               "zero_shot/p_100/k/query": 0.2}


def test_params_with_nulls_are_stored_and_the_ledger_keeps_them(registry: Registry, tmp_path: Path) -> None:
    """A method's params may hold nulls (CLIP prompt learning: ``pretrained: null``): BentoML's metadata takes
    basic types only, so the store gets "null" while the ledger keeps the real value."""
    import bentoml
    from bentoml._internal.models.model import ModelStore

    decision = registry.register(model_folder(tmp_path, "clip_prompt", 3), method="clip_prompt", dataset="openmoji_zs",
                                 protocol=PROTOCOL, score=0.4, metrics={"zero_shot": {"fg": None}},
                                 params={"model": {"pretrained": None, "prompts": 3}}, data_fingerprint="fp",
                                 git="abc123")
    assert decision.promoted
    model = bentoml.models.get(f"{ENCODER_MODELS['sketch']}:{decision.version}",
                               _model_store=ModelStore(str(registry.models_dir)))
    assert model.info.metadata["params"] == {"model": {"pretrained": "null", "prompts": 3}}
    assert registry.ledger()["registrations"][decision.version]["params"]["model"]["pretrained"] is None
