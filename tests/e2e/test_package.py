"""``package`` builds the Bento offline from a registered champion and a serving bundle; the built Bento
serves on 127.0.0.1 from any folder (its code, models, index and page travel inside it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT
from serving_support import bentoml_server

pytestmark = pytest.mark.slow


def test_built_bento_serves_search_and_the_page(serving_bundle: tuple[Path, Path], tmp_path: Path,
                                                tiny_openmoji: Path) -> None:
    home, bundle = serving_bundle
    project = tmp_path / "project"
    for name in ("serving", "models", "sbir"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("bentofile.yaml", "requirements.lock", "params.yaml"):
        shutil.copy(REPO_ROOT / name, project / name)
    shutil.copytree(bundle, project / "artifacts/serving/bundle")
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{project}{os.pathsep}{REPO_ROOT}"}
    built = subprocess.run([sys.executable, "-m", "stages.package"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    record = json.loads((project / "artifacts/serving/bento.json").read_text())
    assert record["tag"].startswith("zssbir:") and record["gallery_size"] == 174
    assert record["models"]["sketch"].startswith("zssbir-sketch:")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with bentoml_server(record["tag"], home, tmp_path / "bento.log", cwd=elsewhere) as (url, _):
        sketch = next((tiny_openmoji / "images" / "sketch").rglob("*.png"))
        boundary = "zssbir-test-boundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sketch\"; filename=\"s.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + sketch.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{url}/search", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert len(answer["results"]) == 12 and answer["gallery_size"] == 174
        with urllib.request.urlopen(f"{url}/ui/", timeout=30) as page:
            assert 'id="pad"' in page.read().decode()
        for path in sorted(probe_paths()):  # the Kubernetes manifests probe routes the built Bento answers
            with urllib.request.urlopen(f"{url}{path}", timeout=30) as probe:
                assert probe.status == 200, path


def probe_paths() -> set[str]:
    found = set()
    for manifest in (REPO_ROOT / "deploy/k8s").glob("*.yaml"):
        for document in yaml.safe_load_all(manifest.read_text()):
            if (document or {}).get("kind") != "Deployment":
                continue
            for container in document["spec"]["template"]["spec"]["containers"]:
                assert 3000 in {port["containerPort"] for port in container["ports"]}, manifest  # BentoML's port
                found |= {container[probe]["httpGet"]["path"] for probe in
                          ("readinessProbe", "livenessProbe", "startupProbe") if probe in container}
    assert found, "no probes found in deploy/k8s"
    return found
