"""End-to-end fixtures: Prefect's test harness (a temporary server and database, once per session) and one
pipeline project shared by the flow and schedule tests (each restores what it changes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_pipeline_project


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def flow_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed pipeline project (sized down through params), not yet reproduced."""
    return make_pipeline_project(tmp_path_factory.mktemp("flow_project"))
