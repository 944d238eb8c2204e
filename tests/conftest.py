"""Shared fixtures: tiny datasets built in temporary folders (hermetic, offline)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# One thread per process for torch, OpenMP and BLAS unless the caller sets it: the tests' models are tiny, and
# where the cores are busy (a shared machine, a CI runner) a second thread per process only waits on the first (a
# sized-down evaluate stage: 6 s on one thread, 11 to 33 s on two under load). Set before numpy and torch load;
# every subprocess (DVC stages, flows, servers) inherits it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import shared_build  # noqa: E402
from helpers import make_image_dataset, params_section  # noqa: E402

from sbir.env import apply_offline_defaults  # noqa: E402

apply_offline_defaults()


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Two seen categories and one unseen one, 3 photos + 3 sketches each, all valid."""
    return make_image_dataset(tmp_path / "tiny", {"apple": "train", "boat": "train", "cat": "test_unseen"})


@pytest.fixture(scope="session")
def tiny_openmoji(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenMoji-ZS with at most 2 emoji per category (all 87 categories), prepared once per session."""
    from sbir.datasets import create

    out = tmp_path_factory.mktemp("openmoji") / "openmoji_zs"
    create("openmoji_zs", **params_section("prepare.openmoji_zs", max_items_per_category=2, sketches_per_item=2, image_size=64,
           workers=min(2, os.cpu_count() or 1))).prepare(out, progress=False)
    return out


TESTS = Path(__file__).resolve().parent
SERVING_FIXTURES = ("serving_bundle", "service_url")
# files without module fixtures whose slow tests may run side by side, on both workers
TEST_BY_TEST = {"tests/e2e/test_schedule.py"}
WORKER_NICENESS = 5  # xdist workers yield the cores to the shared build: every dependent test waits for it


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` (``make test``), refined: a test file runs on one worker (its module fixtures are built
    once), every file that uses the session's real server goes to the same worker (one server, not two), and the
    tests of ``TEST_BY_TEST`` go one by one.
    (``--dist loadgroup`` would say it with marks, but pytest-xdist 3.8 cannot group under pytest 9.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    serving = {path.relative_to(TESTS.parent).as_posix() for path in TESTS.rglob("test_*.py")
               if any(name in path.read_text() for name in SERVING_FIXTURES)}

    class FilesAndServer(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module in TEST_BY_TEST:
                return nodeid
            return "serving" if module in serving else module

    return FilesAndServer(config, log)


EARLY_BUILDS = pytest.StashKey[list]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """In pytest-xdist's controller, start the shared builds before the workers even collect (some 20 s sooner)
    where the run plainly includes the tests that need them: the whole suite or its e2e folder (or a file that
    uses them), slow tests not deselected. Otherwise the first worker that collects such a test starts them."""
    config = session.config
    if os.environ.get("PYTEST_XDIST_WORKER") or not config.getoption("numprocesses", None):
        return
    if config.option.markexpr or config.option.keyword:
        return
    wanted = {TESTS, TESTS / "e2e"} | {path for path in (TESTS / "e2e").glob("test_*.py")
                                          if any(fixture in path.read_text() for fixture in shared_build.BUILDS)}
    arguments = [Path(argument) for argument in config.args]
    if arguments and all("::" not in str(argument) and argument.resolve() in wanted for argument in arguments):
        root = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]  # the workers' shared root
        config.stash[EARLY_BUILDS] = shared_build.start_builds(root, list(shared_build.BUILDS))


def pytest_sessionfinish(session: pytest.Session) -> None:
    shared_build.stop(session.config.stash.get(EARLY_BUILDS, []))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files whose tests need a shared build run last (the others keep the workers busy while it is built),
    the one with the most tests first; and their pytest-timeout covers the wait for the build."""
    waiting = Counter(item.nodeid.split("::")[0] for item in items if shared_build.needs_a_build(item))
    items.sort(key=lambda item: (item.nodeid.split("::")[0] in waiting, -waiting[item.nodeid.split("::")[0]]))
    for item in items:
        if shared_build.needs_a_build(item):
            item.add_marker(pytest.mark.timeout(shared_build.WAIT_SECONDS + 600))


@pytest.fixture(scope="session", autouse=True)
def _shared_builds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Starts, in the background, the expensive builds this run's tests need, once for all xdist workers."""
    items = request.session.items
    started = shared_build.start_needed(items, tmp_path_factory)
    if os.environ.get("PYTEST_XDIST_WORKER") and any(shared_build.needs_a_build(item) for item in items):
        os.nice(WORKER_NICENESS)  # the build (started above, by this worker or another) goes first on the cores
    yield
    shared_build.finish(started)
