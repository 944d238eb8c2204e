"""The shared model store: champions, their encoders and their serving bundles where other machines reach them.

A training pod registers into its own BentoML home (``stages.model_store``) and publishes here; a serving
deployment, or a colleague's checkout, pulls the champion from here (``pull_champion``). The store is a folder
behind an fsspec URL — a local or mounted folder, ``s3://bucket/prefix`` (AWS or any S3-compatible server; the
endpoint from ``AWS_ENDPOINT_URL``, credentials the AWS way) — or a DVC remote of the project, ``dvc://<name>``
(its URL and S3 settings from DVC's config). Layout under it:

- ``models/<name>/<version>/<sha256>.bentomodel``: an encoder, BentoML's export; content-addressed, so an upload
  never overwrites different bytes, and uploaded under a temporary name then moved into place.
- ``bundles/<version>/<sha256>.tar``: the serving bundle (``index`` stage) built with that version's photo encoder.
- ``ledger/<generation>.json``: the shared ledger, one immutable document per change; the newest is current. A
  change is a compare-and-swap: read generation N, apply the change, create N+1 *only if it does not exist*
  (``O_EXCL`` on a folder, ``If-None-Match: *`` on S3); a writer that loses re-reads and re-applies its change.
  Backends without an atomic create-if-absent are refused rather than trusted.

The shared ledger has the project ledger's format and rules (``stages.model_store.record_registration``): the
gate runs against the team's champion, so two checkouts registering at once leave one consistent ledger.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sbir.errors import StoreError
from sbir.manifest import file_sha256
from stages.model_store import (ENCODER_MODELS, Decision, Registry, champion_key, empty_ledger, parse_ledger,
                                record_registration)

STORE_ENV = "ZSSBIR_MODEL_STORE"  # overrides params.yaml register.store (a deployment's setting)
ATOMIC_CREATE = {"file", "local", "s3", "s3a"}  # fsspec protocols whose exclusive create ("xb") is atomic
GENERATION = re.compile(r"^(\d{8})\.json$")
T = TypeVar("T")


class SharedStoreError(StoreError):
    """The shared store cannot do what was asked: says which store, which object and what to do."""


def dvc_remote(name: str, repo: Path = Path(".")) -> tuple[str, dict[str, Any]]:
    """A DVC remote's URL and the fsspec options its DVC settings mean (S3: endpoint, region, profile, keys)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as project:
        remotes = project.config.get("remote", {})
    if name not in remotes:
        raise SharedStoreError(f"dvc://{name}: no DVC remote of that name in {repo.resolve()}/.dvc/config; "
                               f"remotes: {sorted(remotes) or 'none'} (`dvc remote add {name} <url>`)")
    settings = remotes[name]
    url, options, client = settings["url"], {}, {}
    for dvc_key, key in (("profile", "profile"), ("access_key_id", "key"), ("secret_access_key", "secret")):
        if settings.get(dvc_key):
            options[key] = settings[dvc_key]
    for dvc_key, key in (("endpointurl", "endpoint_url"), ("region", "region_name")):
        if settings.get(dvc_key):
            client[key] = settings[dvc_key]
    if client:
        options["client_kwargs"] = client
    if "://" not in url and not Path(url).is_absolute():  # DVC resolves a relative folder against .dvc/
        url = str((repo / ".dvc" / url).resolve())
    return url, options


def store_url(configured: str | None) -> str | None:
    """The store to use: ``ZSSBIR_MODEL_STORE`` if set, else the configured one (params.yaml register.store);
    None when neither names one (no shared store: the project-local registry only)."""
    return os.environ.get(STORE_ENV) or configured or None


class SharedStore:
    """One shared store; every ledger change is a compare-and-swap (``update``)."""

    def __init__(self, url: str, repo: Path = Path("."), **options: Any) -> None:
        import fsspec

        self.url = url
        if url.startswith("dvc://"):
            url, remote_options = dvc_remote(url.removeprefix("dvc://"), repo)
            options = {**remote_options, **options}
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError) as error:
            raise SharedStoreError(f"model store {self.url}: {error}") from None
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        if not protocols & ATOMIC_CREATE:
            raise SharedStoreError(f"model store {self.url}: its backend ({'/'.join(sorted(protocols))}) has no "
                                   f"atomic create-if-absent, which the shared ledger needs; use a folder or S3")
        self.root = self.root.rstrip("/")
        self.local = bool(protocols & {"file", "local"})

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _folder(self, relative: str) -> None:
        if self.local:  # object stores have no folders (and probing the bucket may need rights a prefix lacks)
            self.fs.makedirs(self._path(relative), exist_ok=True)

    def _create(self, relative: str, data: bytes) -> None:
        """Write ``data`` under ``relative`` only if nothing is there: ``FileExistsError`` otherwise. Readers never
        see it half-written: on a folder it is written aside and hard-linked into place (``link`` fails if the
        name exists); on S3 a conditional PUT (``If-None-Match: *``) is all or nothing."""
        target = self._path(relative)
        if not self.local:
            try:
                self.fs.pipe_file(target, data, mode="create")
            except OSError as error:  # 412/409 of a lost race that s3fs does not map to FileExistsError
                code = getattr(error.__cause__, "response", {}).get("Error", {}).get("Code", "")
                if isinstance(error, FileExistsError) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise FileExistsError(target) from None
                raise
            return
        aside = f"{target}.{uuid.uuid4().hex}.part"
        with open(aside, "wb") as handle:
            handle.write(data)
        try:
            os.link(aside, target)
        finally:
            os.unlink(aside)

    # -- ledger ---------------------------------------------------------------------------------------------
    def generation(self) -> int:
        """The number of the current ledger document (0: no ledger yet)."""
        folder = self._path("ledger")
        self.fs.invalidate_cache(folder)  # listings are cached (s3fs): another machine's write must be seen
        try:
            names = [Path(entry).name for entry in self.fs.ls(folder, detail=False)]
        except FileNotFoundError:
            return 0
        return max((int(match[1]) for name in names if (match := GENERATION.match(name))), default=0)

    def ledger(self) -> tuple[int, dict[str, Any]]:
        """(generation, ledger): the current shared ledger; an empty one at generation 0."""
        generation = self.generation()
        if generation == 0:
            return 0, empty_ledger()
        path = self._path("ledger", f"{generation:08d}.json")
        return generation, parse_ledger(self.fs.cat_file(path), f"{self.url}: {path}")

    def update(self, change: Callable[[dict[str, Any]], T], attempts: int = 100) -> T:
        """Apply ``change`` to the current ledger and write it as the next generation, if nobody wrote that one
        first; otherwise re-read and re-apply (``change`` must be a pure function of the ledger)."""
        for attempt in range(attempts):
            generation, ledger = self.ledger()
            unchanged = json.dumps(ledger, sort_keys=True)
            result = change(ledger)
            if json.dumps(ledger, sort_keys=True) == unchanged:
                return result  # nothing to record (e.g. already the champion): no new generation
            self._folder("ledger")
            try:
                self._create(f"ledger/{generation + 1:08d}.json", json.dumps(ledger, indent=1, sort_keys=True).encode())
                return result
            except FileExistsError:
                time.sleep(random.uniform(0.01, 0.05 * (1 + min(attempt, 10))))  # another writer won: back off
        raise SharedStoreError(f"model store {self.url}: the ledger changed under {attempts} attempts in a row; "
                               "too many writers at once, try again")

    # -- files ----------------------------------------------------------------------------------------------
    def put(self, local: Path, folder: str, suffix: str) -> dict[str, Any]:
        """Upload ``local`` as ``<folder>/<sha256><suffix>`` unless those bytes are there already; its entry."""
        sha, size = file_sha256(local), local.stat().st_size
        relative = f"{folder}/{sha}{suffix}"
        target = self._path(relative)
        self.fs.invalidate_cache(self._path(folder))
        if not (self.fs.exists(target) and self.fs.size(target) == size):
            if not self.local:  # a PUT (or multipart upload) appears whole or not at all
                self.fs.put_file(str(local), target)
            else:  # written aside and renamed: never a half file under the name
                self._folder(folder)
                partial = f"{target}.{uuid.uuid4().hex}.part"
                try:
                    self.fs.put_file(str(local), partial)
                    self.fs.mv(partial, target)
                finally:
                    if self.fs.exists(partial):
                        self.fs.rm_file(partial)
        return {"path": relative, "sha256": sha, "bytes": size}

    def get(self, entry: dict[str, Any], local: Path) -> Path:
        """Download an entry (``put``) to ``local`` and check its bytes against the ledger's sha256."""
        try:
            self.fs.get_file(self._path(entry["path"]), str(local))
        except FileNotFoundError:
            raise SharedStoreError(f"model store {self.url}: {entry['path']} is named by the ledger but missing") from None
        if (found := file_sha256(local)) != entry["sha256"]:
            raise SharedStoreError(f"model store {self.url}: {entry['path']} has sha256 {found}, the ledger says "
                                   f"{entry['sha256']}: the store is corrupt or was changed by hand")
        return local


def publish(registry: Registry, store: SharedStore, version: str, protocol: str, margin: float) -> Decision:
    """A registered version's encoders into the store and its registration into the shared ledger, gated against
    the team's champion of its (dataset, protocol)."""
    record = registry.ledger()["registrations"].get(version)
    if record is None:
        raise SharedStoreError(f"{version} is not registered in {registry.ledger_path}; register it first")
    entries = {}
    with tempfile.TemporaryDirectory(prefix="zssbir-publish-") as scratch:
        for domain, name in ENCODER_MODELS.items():
            exported = registry.export_encoder(domain, version, Path(scratch))
            entries[domain] = store.put(exported, f"models/{name}/{version}", ".bentomodel")
    shared = {**record, "protocol": protocol, "score": record.get("evaluations", {}).get(protocol, record["score"]),
              "store": {"models": entries}}
    return store.update(lambda ledger: record_registration(ledger, json.loads(json.dumps(shared)), margin))


def _tar(folder: Path, archive: Path) -> None:
    """A deterministic tar of ``folder`` (sorted names, no owners, no times): one bundle, one sha256."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644  # not the umask of whoever built it
        return info

    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False, filter=clean)


def publish_bundle(store: SharedStore, bundle: Path, version: str) -> dict[str, Any]:
    """The serving bundle built with ``version``'s photo encoder into the store, named by its registration."""
    with tempfile.TemporaryDirectory(prefix="zssbir-bundle-") as scratch:
        archive = Path(scratch) / "bundle.tar"
        _tar(bundle, archive)
        entry = store.put(archive, f"bundles/{version}", ".tar")

    def attach(ledger: dict[str, Any]) -> None:
        record = ledger["registrations"].get(version)
        if record is None:
            raise SharedStoreError(f"model store {store.url}: {version} is not in the shared ledger; publish its "
                                   "registration first (`zssbir push-champion`)")
        record.setdefault("store", {})["bundle"] = entry

    store.update(attach)
    return entry


def shared_champion(store: SharedStore, dataset: str, protocol: str,
                    with_bundle: bool = False) -> tuple[int, dict[str, Any]]:
    """(generation, registration) of the team's champion of (dataset, protocol); ``with_bundle``: the newest
    champion of its lineage whose serving bundle is published (the current one between its registration and its
    index stage, or if that stage failed, has none yet: a serving pod then serves the one before)."""
    generation, ledger = store.ledger()
    lineage = ledger["champions"].get(champion_key(dataset, protocol), [])
    if not lineage:
        known = sorted(ledger["champions"]) or "none"
        raise SharedStoreError(f"model store {store.url}: no champion of {dataset} / {protocol} (ledger generation "
                               f"{generation}; champions: {known})")
    records = [ledger["registrations"][version] for version in reversed(lineage)]
    if with_bundle:
        records = [record for record in records if "bundle" in record.get("store", {})]
        if not records:
            raise SharedStoreError(f"model store {store.url}: no champion of {dataset} / {protocol} has a serving "
                                   f"bundle yet (current: {lineage[-1]}); its index stage publishes one "
                                   "(`zssbir push-champion` after `dvc repro index`)")
    return generation, records[0]


def pull_champion(store: SharedStore, registry: Registry, dataset: str, protocol: str,
                  bundle: Path | None = None) -> dict[str, Any]:
    """The team's champion into this BentoML home (its encoders, checked against the ledger's sha256, and its
    registration as the local champion) and, when ``bundle`` is given, its serving bundle there: then the newest
    champion that has one (``shared_champion``). Everything is downloaded and checked before anything changes."""
    generation, record = shared_champion(store, dataset, protocol, with_bundle=bundle is not None)
    version, stored = record["version"], record["store"]
    with tempfile.TemporaryDirectory(prefix="zssbir-pull-") as scratch:
        exported = {domain: store.get(stored["models"][domain], Path(scratch) / f"{name}.bentomodel")
                    for domain, name in ENCODER_MODELS.items()}
        archive = store.get(stored["bundle"], Path(scratch) / "bundle.tar") if bundle is not None else None
        for domain, path in exported.items():
            registry.import_encoder(domain, version, path)
        registry.adopt(record, f"pulled from {store.url} (ledger generation {generation})")
        if archive is not None:
            _unpack(archive, bundle)
    current = shared_champion(store, dataset, protocol)[1]["version"]
    return {**record, "generation": generation, "current_champion": current}


def _unpack(archive: Path, bundle: Path) -> None:
    """Extract next to ``bundle`` and swap it in: a reader sees the old bundle or the new, never a mix."""
    bundle.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{bundle.name}-", dir=bundle.parent))
    fresh.chmod(0o755)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(fresh, filter="data")
    except (tarfile.TarError, OSError) as error:
        shutil.rmtree(fresh, ignore_errors=True)
        raise SharedStoreError(f"{archive.name}: the serving bundle could not be unpacked ({error})") from None
    old = bundle.with_name(f".{bundle.name}-old-{uuid.uuid4().hex[:8]}")
    if bundle.exists():
        os.rename(bundle, old)
    os.rename(fresh, bundle)
    shutil.rmtree(old, ignore_errors=True)
