"""Building and serving a real serving bundle for tests: a registered model in a temporary BentoML store, a
gallery index of the tiny OpenMoji-ZS photos, and ``bentoml serve`` on 127.0.0.1 in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import REPO_ROOT, config, params_section

PROTOCOL = "zero_shot/map_all/sklearn/query"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_bundle(root: Path, photos: Path, model: str = "baseline_hog", kind: str = "exact") -> tuple[Path, Path]:
    """(BENTOML_HOME, bundle dir): ``model`` (a baseline, no training needed) registered as champion, and the
    photos under ``photos`` (category = parent folder) indexed with it."""
    from models.checkpoint import save_baseline
    from models.registry import create_model
    from stages.index import IndexParams, build_bundle
    from stages.model_store import Registry

    home, folder, bundle = root / "bentoml", root / "models" / model, root / "bundle"
    folder.mkdir(parents=True)
    if model == "dsn":  # an untrained small DSN: retrieves nothing useful, but has the explain capability
        from models.checkpoint import save_method
        from models.dsn import DSN, DSNConfig

        method = DSN(config(DSNConfig, "dsn.model", image_size=32, pretrained=None, embedding_dim=32, projection_dim=16))
        save_method(folder, method, method.build(4, load_pretrained=False).eval(), {"train_categories": list("abcd")})
    elif model == "zse":  # an untrained small ZSE-SBIR: explains, re-scores and synthesises
        from models.checkpoint import save_method
        from models.zse import ZSE, ZSEConfig

        method = ZSE(config(ZSEConfig, "zse.model", image_size=32, pretrained=None, width=32, depth=1, heads=2,
                            cross_heads=2, cross_ff=32, relation_width=16))
        save_method(folder, method, method.build(4, load_pretrained=False).eval(), {"train_categories": list("abcd")})
    else:
        save_baseline(folder, model, params_section(model), create_model(model, params_section(model)))
    registry = Registry(home)
    registry.register(folder, method=model, dataset="openmoji_zs", protocol=PROTOCOL, score=0.5,
                      metrics={}, params={}, git="test")
    build_bundle(registry, "openmoji_zs", PROTOCOL, config(IndexParams, "index", folder=str(photos), workers=0, kind=kind), bundle,
                 progress=False)
    return home, bundle


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def bentoml_server(target: str, home: Path, log: Path, env: dict[str, str] | None = None,
                   cwd: Path = REPO_ROOT) -> Iterator[tuple[str, subprocess.Popen]]:
    """``bentoml serve <target>`` on a free port of 127.0.0.1 until the block ends (SIGTERM, then SIGKILL)."""
    port = free_port()
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    full_env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True",
                "ZSSBIR_TORCH_THREADS": "1", **(env or {})}
    with open(log, "wb") as handle:
        process = subprocess.Popen([bentoml, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=handle, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
