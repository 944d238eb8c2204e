"""End-to-end fixtures: Prefect's test harness (a temporary server and database, once per module) and the
sized-down pipeline reproduced once per session, which the DVC, flow, schedule and new-method tests start from
(each on its own copy, so DVC re-runs only what that test changes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import shared_build
from shared_build import REPRODUCED


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness for one module. Prefect 3.8.8's log and event workers register threading-exit
    callbacks that a process forked later (a DataLoader worker of another test) also runs at its exit, and dies
    of (exit code 1); they are dropped once the harness is gone."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
    threading._threading_atexits[:] = [callback for callback in threading._threading_atexits  # type: ignore
                                       if not _owner_module(callback).startswith("prefect")]


def _owner_module(callback: object) -> str:
    target = getattr(callback, "func", callback)
    return type(getattr(target, "__self__", None)).__module__


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC project holding this repository's pipeline, sized down through params only, reproduced once
    for the whole run (`dvc repro`: every stage of every model; its output in ``.first-repro.log``) and committed
    with its dvc.lock; started in the background when the run begins (``build_reproduced``, ``shared_build``).
    No test changes it: each works on a copy (``helpers.copy_project``)."""
    return shared_build.wait(shared_build.shared_root(tmp_path_factory) / REPRODUCED) / "project"


@pytest.fixture(scope="session")
def serving_bundle(tiny_openmoji: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(BENTOML_HOME, bundle): HOG registered as champion, the tiny OpenMoji-ZS photos indexed with it."""
    from serving_support import make_bundle

    return make_bundle(tmp_path_factory.mktemp("serving"), tiny_openmoji / "images" / "photo")


@pytest.fixture(scope="session")
def service_url(serving_bundle: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service (``bentoml serve serving.service:SketchSearch``) on 127.0.0.1, for the session."""
    from serving_support import bentoml_server

    home, bundle = serving_bundle
    log = tmp_path_factory.mktemp("service") / "service.log"
    with bentoml_server("serving.service:SketchSearch", home, log, {"ZSSBIR_BUNDLE": str(bundle)}) as (url, _):
        yield url
