"""``package`` builds the Bento offline from a registered champion and a serving bundle; the built Bento
serves on 127.0.0.1 from any folder (its code, models, index and page travel inside it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, group_alive
from serving_support import bentoml_server, free_port, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packaged(serving_bundle: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """(BENTOML_HOME, the project, its bento.json): ``package`` run in a project holding the serving bundle."""
    home, bundle = serving_bundle
    project = tmp_path_factory.mktemp("packaged") / "project"
    for name in ("serving", "models", "sbir"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("bentofile.yaml", "requirements.lock", "params.yaml"):
        shutil.copy(REPO_ROOT / name, project / name)
    shutil.copytree(bundle, project / "artifacts/serving/bundle")
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": f"{project}{os.pathsep}{REPO_ROOT}"}
    built = subprocess.run([sys.executable, "-m", "stages.package"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return home, project, json.loads((project / "artifacts/serving/bento.json").read_text())


def test_built_bento_serves_search_and_the_page(packaged: tuple[Path, Path, dict], tmp_path: Path,
                                                tiny_openmoji: Path) -> None:
    home, _, record = packaged
    assert record["tag"].startswith("zssbir:") and record["gallery_size"] == 174
    assert record["models"]["sketch"].startswith("zssbir-sketch:")
    name, version = record["tag"].split(":")
    shipped = home / "bentos" / name / version / "src"  # whichever method is champion, its code travels along
    missing = [str(module.relative_to(REPO_ROOT)) for module in (REPO_ROOT / "models").rglob("*.py")
               if "__pycache__" not in module.parts and not (shipped / module.relative_to(REPO_ROOT)).is_file()]
    assert not missing, f"the Bento lacks {missing}"
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


def test_sigterm_to_zssbir_serve_stops_the_server(packaged: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """What a supervisor or container runtime does: SIGTERM to `zssbir serve` alone leaves no process behind and
    frees the port."""
    home, project, _ = packaged
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), "ZSSBIR_TORCH_THREADS": "1"}
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([str(Path(sys.executable).with_name("zssbir")), "serve", "--port", str(port)],
                                  cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, tmp_path / "serve.log")
        server.send_signal(signal.SIGTERM)  # to zssbir alone, not to its process group
        server.wait(timeout=60)
        deadline = time.monotonic() + 30
        while group_alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_alive(server.pid), "a process of `zssbir serve` outlived it"
        with socket.socket() as probe:  # a new server can listen on the port again (as servers do, reusing an
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # address whose closed connections linger)
            probe.bind(("127.0.0.1", port))
            probe.listen()
    finally:
        if group_alive(server.pid):
            os.killpg(server.pid, signal.SIGKILL)


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
