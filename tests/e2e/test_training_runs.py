"""Training as users run it: a real SIGKILL mid-epoch then resume, and torchrun with 2 gloo processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TRAIN = {"dataset": "openmoji_zs", "method": "dsn", "epochs": 2, "batch_size": 8, "lr": 0.002, "seed": 0,
         "num_threads": 1, "checkpoint_every": 3, "amp": True,
         "model": {"image_size": 32, "embedding_dim": 32, "projection_dim": 16, "memory_size": 4}}


def _workspace(root: Path, prepared: Path, **overrides) -> Path:
    root.mkdir(parents=True)
    (root / "data/prepared").mkdir(parents=True)
    (root / "data/prepared/openmoji_zs").symlink_to(prepared)
    (root / "params.yaml").write_text(yaml.safe_dump({"train": {**TRAIN, **overrides}}))
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _train(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.train", "--no-progress", *extra], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)


def _weights(cwd: Path) -> dict[str, torch.Tensor]:
    return load_file(str(cwd / "artifacts/checkpoints/dsn/model.safetensors"))


def test_killed_run_resumes_to_the_same_weights(tiny_openmoji: Path, tmp_path: Path) -> None:
    reference = _workspace(tmp_path / "reference", tiny_openmoji)
    assert _train(reference).returncode == 0
    victim = _workspace(tmp_path / "victim", tiny_openmoji)
    state = victim / "artifacts/train_state/openmoji_zs/state.pt"
    process = subprocess.Popen([sys.executable, "-m", "stages.train", "--no-progress"], cwd=victim, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not state.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)  # no clean-up: only the atomically written state survives
    process.wait()
    saved_step = torch.load(state, weights_only=False)["global_step"]
    assert 0 < saved_step and not (victim / "artifacts/checkpoints/dsn").exists()
    resumed = _train(victim)
    assert resumed.returncode == 0, resumed.stderr
    assert not state.exists()  # removed once training completed
    expected, got = _weights(reference), _weights(victim)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_torchrun_two_gloo_processes(tiny_openmoji: Path, tmp_path: Path) -> None:
    workspace = _workspace(tmp_path / "ddp", tiny_openmoji, epochs=1)
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "stages.train",
                             "--no-progress"], cwd=workspace, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = yaml.safe_load((workspace / "artifacts/train/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] > 0
    weights = _weights(workspace)
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
