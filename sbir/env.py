"""Offline and no-telemetry defaults for every tool in the stack.

The project runs without network access and never phones home. These are defaults: a user's explicit
environment wins (``os.environ.setdefault``).
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS: dict[str, str] = {
    # model hubs: fail fast on a tag that needs a download instead of retrying for ~45 s
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # DVC
    "DVC_NO_ANALYTICS": "1",
    # Prefect
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # BentoML
    "BENTOML_DO_NOT_TRACK": "True",
    # Great Expectations
    "GX_ANALYTICS_ENABLED": "false",
}


def apply_offline_defaults() -> dict[str, str]:
    """Set every offline/telemetry default that the caller's environment does not already set."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in OFFLINE_DEFAULTS}


def allow_hub_downloads() -> str:
    """Let timm/open_clip tags download (``HF_HUB_OFFLINE=0``) unless the caller's environment says otherwise:
    for commands whose settings name hub weights (``zssbir reproduce``), which the embedded default never does."""
    return os.environ.setdefault("HF_HUB_OFFLINE", "0")


def project_homes(root: str | Path = ".") -> dict[str, str]:
    """Project-local homes of the BentoML model store and the Prefect database for the project at ``root``."""
    from sbir import paths

    root = Path(root).absolute()
    return {"BENTOML_HOME": str(root / paths.BENTOML_HOME), "PREFECT_HOME": str(root / paths.PREFECT_HOME)}


def apply_project_defaults(root: str | Path = ".") -> dict[str, str]:
    """Set the project-local homes (``project_homes``) where the caller's environment does not set them."""
    homes = project_homes(root)
    for key, value in homes.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in homes}
