"""The shared model store (stages.shared_store) on a local folder and on a real S3-compatible server (moto, in
server mode on 127.0.0.1): publish from one BentoML home, pull into another (byte-identical models), the team gate,
concurrent publishers from separate processes leaving one consistent ledger, corruption and bad stores refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from stages.model_store import ENCODER_MODELS, Registry
from stages.shared_store import (SharedStore, SharedStoreError, dvc_remote, publish, publish_bundle, pull_champion,
                                 shared_champion)

PROTOCOL = "zero_shot/map_all/sklearn/query"
DATASET = "openmoji_zs"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[dict[str, str]]:
    """A moto S3 server for this module: the environment that points the AWS SDK (and s3fs) at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    server.stop()


@pytest.fixture(params=["folder", "s3"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict]:
    """(store URL, environment it needs): a local folder, or a fresh bucket on the moto server."""
    if request.param == "folder":
        return str(tmp_path / "store"), {}
    env = request.getfixturevalue("s3_endpoint")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import boto3

    bucket = f"zssbir-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/team", env


def model_folder(root: Path, name: str, seed: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"schema_version": 1, "method": name, "seed": seed}))
    (folder / "model.safetensors").write_bytes(os.urandom(64) + bytes([seed % 256]) * 8192)
    return folder


def register(registry: Registry, folder: Path, score: float) -> str:
    return registry.register(folder, method=folder.name, dataset=DATASET, protocol=PROTOCOL, score=score,
                             metrics={}, params={}, git="abc").version


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_champion_published_from_one_home_is_pulled_into_another_byte_identical(store_env, tmp_path: Path) -> None:
    url, _ = store_env
    first, second = Registry(tmp_path / "a" / "bentoml"), Registry(tmp_path / "b" / "bentoml")
    version = register(first, model_folder(tmp_path / "a", "dsn", 1), 0.5)
    decision = publish(first, SharedStore(url), version, PROTOCOL, 0.0)
    assert decision.promoted and decision.reason == "no champion yet"
    bundle = tmp_path / "a" / "bundle"
    (bundle / "nested").mkdir(parents=True)
    (bundle / "first.json").write_text(json.dumps({"champion": {"version": version}}))
    (bundle / "nested" / "0.png").write_bytes(b"\x89PNG fake")
    publish_bundle(SharedStore(url), bundle, version)

    pulled = pull_champion(SharedStore(url), second, DATASET, PROTOCOL, tmp_path / "b" / "bundle")
    assert pulled["version"] == version and pulled["generation"] == 2
    assert second.champion(DATASET, PROTOCOL)["version"] == version
    assert second.ledger()["history"][-1]["event"] == "adopted"
    for domain in ENCODER_MODELS:
        ours, theirs = files(first.model_path(domain, version)), files(second.model_path(domain, version))
        assert ours == theirs and "checkpoint/model.safetensors" in theirs
    assert files(tmp_path / "b" / "bundle") == files(bundle)
    assert sorted(second.stored_models()) == sorted(first.stored_models())  # BentoML lists what was imported
    assert second.check() == []


def test_the_shared_gate_judges_against_the_team_champion(store_env, tmp_path: Path) -> None:
    url, _ = store_env
    first, second = Registry(tmp_path / "a"), Registry(tmp_path / "b")
    strong = register(first, model_folder(tmp_path / "a", "dsn", 1), 0.6)
    weak = register(second, model_folder(tmp_path / "b", "zse", 2), 0.4)  # champion of its own home
    assert second.champion(DATASET, PROTOCOL)["version"] == weak
    publish(first, SharedStore(url), strong, PROTOCOL, 0.0)
    decision = publish(second, SharedStore(url), weak, PROTOCOL, 0.0)
    assert not decision.promoted and decision.previous == strong
    assert shared_champion(SharedStore(url), DATASET, PROTOCOL)[1]["version"] == strong
    pull_champion(SharedStore(url), second, DATASET, PROTOCOL)
    assert second.champion(DATASET, PROTOCOL)["version"] == strong  # the team's, adopted over its own


PUBLISHER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from stages.model_store import Registry
    from stages.shared_store import SharedStore, publish
    home, url, barrier = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    registry = Registry(home)
    versions = [record["version"] for record in registry.ledger()["registrations"].values()]
    (barrier / home.name).touch()
    while not (barrier / "go").exists():  # every publisher starts at once, imports done
        time.sleep(0.01)
    for version in versions:
        publish(registry, SharedStore(url), version, "zero_shot/map_all/sklearn/query", 0.0)
""")


def test_concurrent_publishers_leave_one_consistent_ledger(store_env, tmp_path: Path) -> None:
    url, env = store_env
    homes, scores = [], {}
    for writer in range(3):
        registry = Registry(tmp_path / f"home{writer}")
        for i in range(3):
            score = 0.1 + 0.05 * (writer * 3 + i)
            scores[register(registry, model_folder(tmp_path / f"m{writer}", f"model{i}", writer * 3 + i), score)] = score
        homes.append(registry.home)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [subprocess.Popen([sys.executable, "-c", PUBLISHER, str(home), url, str(barrier)], cwd=REPO_ROOT,
                                  env={**os.environ, **env}, stderr=subprocess.PIPE, text=True) for home in homes]
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < len(homes) and time.monotonic() < deadline:
        assert all(process.poll() is None for process in processes), "a publisher died before the start"
        time.sleep(0.05)
    (barrier / "go").touch()
    for process in processes:
        assert process.wait(timeout=180) == 0, process.stderr.read()
    store = SharedStore(url)
    generation, ledger = store.ledger()
    assert generation == 9 and set(ledger["registrations"]) == set(scores)  # no change lost, none twice
    documents = [json.loads(store.fs.cat_file(store._path("ledger", f"{g:08d}.json"))) for g in range(1, 10)]
    for g, document in enumerate(documents, start=1):  # each generation is its predecessor plus one change
        assert len(document["registrations"]) == g and len(document["history"]) == g
        assert documents[g - 2]["history"] == document["history"][:-1] if g > 1 else True
    best = max(scores, key=scores.get)
    assert shared_champion(store, DATASET, PROTOCOL)[1]["version"] == best
    champions = ledger["champions"][f"{DATASET}|{PROTOCOL}"]
    assert [scores[v] for v in champions] == sorted(scores[v] for v in champions)  # each promotion beat the last


def test_a_corrupt_model_in_the_store_is_refused_on_pull(tmp_path: Path) -> None:
    first, second = Registry(tmp_path / "a"), Registry(tmp_path / "b")
    url = str(tmp_path / "store")
    version = register(first, model_folder(tmp_path, "dsn", 1), 0.5)
    publish(first, SharedStore(url), version, PROTOCOL, 0.0)
    stored = next((tmp_path / "store" / "models" / "zssbir-sketch").rglob("*.bentomodel"))
    stored.write_bytes(stored.read_bytes()[:-10])
    with pytest.raises(SharedStoreError, match="sha256"):
        pull_champion(SharedStore(url), second, DATASET, PROTOCOL)
    assert second.champion(DATASET, PROTOCOL) is None


def test_bad_stores_are_refused_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SharedStoreError, match="atomic create-if-absent"):
        SharedStore("memory://team")
    with pytest.raises(SharedStoreError, match="no champion of openmoji_zs"):
        shared_champion(SharedStore(str(tmp_path / "empty")), DATASET, PROTOCOL)
    with pytest.raises(SharedStoreError, match="not in the shared ledger"):
        publish_bundle(SharedStore(str(tmp_path / "empty")), tmp_path, "0123456789abcdef")


def test_a_dvc_remote_names_the_store(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvc" / "config").write_text('[core]\n    remote = team\n[\'remote "team"\']\n    url = ../models\n'
                                             '[\'remote "s3"\']\n    url = s3://bucket/zssbir\n'
                                             '    endpointurl = http://127.0.0.1:9000\n    region = eu-west-1\n')
    assert dvc_remote("team", tmp_path) == (str(tmp_path / "models"), {})
    assert dvc_remote("s3", tmp_path) == ("s3://bucket/zssbir", {"client_kwargs": {
        "endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}})
    store = SharedStore("dvc://team", repo=tmp_path)
    assert store.root == str(tmp_path / "models") and store.generation() == 0
    with pytest.raises(SharedStoreError, match="no DVC remote of that name"):
        SharedStore("dvc://nope", repo=tmp_path)


def test_a_writer_that_loses_the_race_re_reads_and_re_applies_its_change(store_env) -> None:
    """Deterministic compare-and-swap: another writer lands a generation while this one computes its change."""
    url, _ = store_env
    mine, theirs, calls = SharedStore(url), SharedStore(url), []

    def change(ledger: dict) -> int:
        calls.append(len(ledger["history"]))
        if len(calls) == 1:  # the first attempt is overtaken
            theirs.update(lambda other: other["history"].append({"event": "theirs"}))
        ledger["history"].append({"event": "mine"})
        return len(calls)

    assert mine.update(change) == 2 and calls == [0, 1]
    generation, ledger = mine.ledger()
    assert generation == 2 and [e["event"] for e in ledger["history"]] == ["theirs", "mine"]


def test_a_pull_for_serving_takes_the_newest_champion_with_a_bundle_and_changes_nothing_when_none_has(
        tmp_path: Path) -> None:
    url, team, here = str(tmp_path / "store"), Registry(tmp_path / "team"), Registry(tmp_path / "here")
    first = register(team, model_folder(tmp_path, "dsn", 1), 0.5)
    publish(team, SharedStore(url), first, PROTOCOL, 0.0)
    with pytest.raises(SharedStoreError, match="no champion of openmoji_zs .* has a serving bundle yet"):
        pull_champion(SharedStore(url), here, DATASET, PROTOCOL, tmp_path / "bundle")
    assert here.champion(DATASET, PROTOCOL) is None and not (tmp_path / "bundle").exists()  # nothing changed

    bundle = tmp_path / "built"
    bundle.mkdir()
    (bundle / "first.json").write_text("{}")
    publish_bundle(SharedStore(url), bundle, first)
    second = register(team, model_folder(tmp_path, "zse", 2), 0.7)  # the new champion: no bundle published yet
    assert publish(team, SharedStore(url), second, PROTOCOL, 0.0).promoted
    pulled = pull_champion(SharedStore(url), here, DATASET, PROTOCOL, tmp_path / "bundle")
    assert (pulled["version"], pulled["current_champion"]) == (first, second)
    assert files(tmp_path / "bundle") == files(bundle) and here.champion(DATASET, PROTOCOL)["version"] == first
    assert pull_champion(SharedStore(url), here, DATASET, PROTOCOL)["version"] == second  # no bundle asked


def test_a_no_op_change_writes_no_generation(tmp_path: Path) -> None:
    registry, store = Registry(tmp_path / "home"), SharedStore(str(tmp_path / "store"))
    version = register(registry, model_folder(tmp_path, "dsn", 1), 0.5)
    publish(registry, store, version, PROTOCOL, 0.0)
    assert publish(registry, store, version, PROTOCOL, 0.0).reason == "already the champion"
    assert store.generation() == 1
    assert not [p for p in (tmp_path / "store").rglob("*.part")]  # no temporary files left behind
