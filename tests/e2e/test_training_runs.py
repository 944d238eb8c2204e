"""Training as users run it: a real SIGKILL after a saved state, then resume; torchrun with 2 gloo processes."""

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
from helpers import write_params
from safetensors.torch import load_file

from sbir.config import overlay

pytestmark = pytest.mark.slow

CHANGES = {"train": {"dataset": "openmoji_zs", "styles": [], "runtime": {"num_threads": 1, "checkpoint_every": 3, "workers": 1,
                                                        "cache": "none"}},
          "dsn": {"train": {"epochs": 2, "batch_size": 8, "lr": 0.002},
                  "model": {"image_size": 32, "embedding_dim": 32, "projection_dim": 16, "memory_size": 4}}}


def _workspace(root: Path, prepared: Path, **overrides) -> Path:
    root.mkdir(parents=True)
    (root / "data/prepared").mkdir(parents=True)
    (root / "data/prepared/openmoji_zs").symlink_to(prepared)
    write_params(root / "params.yaml", overlay(CHANGES, {"dsn": {"train": overrides}}))
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _train(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.train", "--model", "dsn", "--no-progress", *extra], cwd=cwd,
                          env=_env(),
                          capture_output=True, text=True, timeout=600)


def _weights(cwd: Path) -> dict[str, torch.Tensor]:
    return load_file(str(cwd / "artifacts/checkpoints/dsn/model.safetensors"))


def test_killed_run_resumes_to_the_same_weights(tiny_openmoji: Path, tmp_path: Path) -> None:
    reference = _workspace(tmp_path / "reference", tiny_openmoji)
    first = _train(reference)
    assert first.returncode == 0, first.stderr
    assert "epoch 2/2" in first.stderr and "ETA" in first.stderr  # a log line per epoch
    victim = _workspace(tmp_path / "victim", tiny_openmoji)
    state = victim / "artifacts/train_state/dsn/openmoji_zs/state.pt"
    marker = tmp_path / "held"
    # the run holds after its first saved state (a hook, not a timer), and is killed there
    process = subprocess.Popen([sys.executable, "-m", "stages.train", "--model", "dsn", "--no-progress",
                                "--hold-after-checkpoint", str(marker)], cwd=victim, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists() and process.poll() is None, "the run never reached its first saved state"
    finally:
        process.send_signal(signal.SIGKILL)  # no clean-up: only the atomically written state survives
        process.wait()
    saved_step = torch.load(state, weights_only=False)["global_step"]
    assert saved_step == int(marker.read_text()) == 3
    assert not (victim / "artifacts/checkpoints/dsn").exists()
    resumed = _train(victim)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming dsn at step 3" in resumed.stderr
    assert not state.exists()  # removed once training completed
    expected, got = _weights(reference), _weights(victim)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_torchrun_two_gloo_processes(tiny_openmoji: Path, tmp_path: Path) -> None:
    workspace = _workspace(tmp_path / "ddp", tiny_openmoji, epochs=1)
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "stages.train",
                             "--model", "dsn", "--no-progress"], cwd=workspace, env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = yaml.safe_load((workspace / "artifacts/train/dsn/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] > 0
    weights = _weights(workspace)
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
