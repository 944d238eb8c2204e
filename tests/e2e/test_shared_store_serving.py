"""From one checkout to another through the shared model store, with the real commands: ``zssbir push-champion``
in checkout A (its own BentoML home), ``zssbir pull-champion --build --serve`` in checkout B (another home, no
model, no bundle), which imports exactly A's champion, builds its Bento and serves it; B answers a search with A's
model and gallery."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import REPO_ROOT, run_command
from serving_support import PROTOCOL, free_port, wait_ready

from stages.model_store import ENCODER_MODELS, Registry


CODE = ("params.yaml", "bentofile.yaml", "requirements.lock", "serving", "models", "sbir")  # what a Bento build reads


def checkout(root: Path, bundle: Path | None = None) -> Path:
    """A working folder as a checkout has it: the code a Bento is built from, and the serving bundle where the
    index stage puts it."""
    root.mkdir(parents=True)
    for name in CODE:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    if bundle is not None:
        (root / "artifacts" / "serving").mkdir(parents=True)
        shutil.copytree(bundle, root / "artifacts" / "serving" / "bundle")
    return root


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_checkout_pulls_and_serves_the_first_ones_champion(serving_bundle: tuple[Path, Path],
                                                                     tiny_openmoji: Path, tmp_path: Path) -> None:
    home_a, bundle_a = serving_bundle
    store, zssbir = tmp_path / "team-store", str(Path(sys.executable).with_name("zssbir"))
    first, second = checkout(tmp_path / "a", bundle_a), checkout(tmp_path / "b")
    scope = ["--store", str(store), "--dataset", "openmoji_zs", "--metric", PROTOCOL]
    pushed = run_command([zssbir, "push-champion", *scope], cwd=first, env={**os.environ, "BENTOML_HOME": str(home_a)})
    assert "serving bundle pushed" in pushed.stdout, pushed.stdout
    version = Registry(home_a).champion("openmoji_zs", PROTOCOL)["version"]

    port, log = free_port(), tmp_path / "b-serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([zssbir, "pull-champion", *scope, "--build", "--serve", "--port", str(port)], cwd=second,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME",
                                                                                        "ZSSBIR_BUNDLE")})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, log)
        with urllib.request.urlopen(f"{url}/info", timeout=30) as response:
            info = json.load(response)
        assert info["model"]["version"] == version and info["gallery_size"] > 0
        sketch = next((tiny_openmoji / "images" / "sketch").rglob("*.png")).read_bytes()
        boundary = "zssbirtest"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"sketch\"; filename=\"s.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + sketch + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{url}/search", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            found = json.load(response)
        assert found["model"]["version"] == version and len(found["results"]) == 12
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    home_b = Registry(second / ".bentoml")  # the project-local home of checkout B
    assert home_b.champion("openmoji_zs", PROTOCOL)["version"] == version
    for domain in ENCODER_MODELS:
        assert files(home_b.model_path(domain, version)) == files(Registry(home_a).model_path(domain, version))
    assert files(second / "artifacts" / "serving" / "bundle") == files(bundle_a)
    built = json.loads((second / "artifacts" / "serving" / "bento.json").read_text())
    assert built["models"] == Registry(home_a).champion("openmoji_zs", PROTOCOL)["models"]
