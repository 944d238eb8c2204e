"""The model store and champion ledger: registered encoders in the BentoML model store, champions in a ledger.

Layout under ``BENTOML_HOME`` (project-local ``.bentoml/`` by default, ``sbir.paths.BENTOML_HOME``):

- ``models/zssbir-sketch/<version>/`` and ``models/zssbir-photo/<version>/``: the registered sketch and photo
  encoders, BentoML models whose folder holds the model's checkpoint (format v1) and whose labels and metadata
  say what it is (method, dataset, protocol, metrics, params, git revision, data fingerprint). ``<version>`` is
  a hash of the checkpoint's files and the dataset, so registering the same model twice is a no-op.
- ``zssbir-registry.json`` (the ledger): every registration, the champion lineage per (dataset, protocol) —
  a stack: promotion pushes, rollback pops — and the history of decisions (who replaced whom, when, by how much).

Why a ledger and not a label: BentoML writes a model's labels once, at save; flipping a "champion" label on
two models can never be atomic. The ledger is replaced atomically (``sbir.io``), under a lock, after both
models are in the store, so a registration killed at any point leaves the champion unchanged. BentoML's own
save copies into the store in place; models are therefore built in ``staging/`` and renamed into the store
(atomic on one file system), so the store never holds half a model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbir.io import atomic_write_json, atomic_write_text
from sbir.errors import StoreError

ENCODER_MODELS = {"sketch": "zssbir-sketch", "photo": "zssbir-photo"}
LEDGER_FILE = "zssbir-registry.json"
LEDGER_FORMAT = 1
FAULT_ENV = "ZSSBIR_REGISTER_FAULT"  # tests: a point name at which registration kills itself (SIGKILL)
FAULT_POINTS = ("staging", "staged", "stored_sketch", "stored_photo", "ledger_written")


def store_safe(value: Any) -> Any:
    """Metadata as BentoML's model store takes it: basic types only, so a null (e.g. ``pretrained: null`` in a
    method's params) is stored as the string "null"; the ledger keeps the values as they are."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return {str(key): store_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [store_safe(item) for item in value]
    return value


class RegistryError(StoreError):
    """A registry operation that cannot be done: says what is missing and what exists."""


@dataclass(frozen=True)
class Decision:
    """The outcome of one registration: registered (always), promoted or not, and why."""

    version: str
    method: str
    dataset: str
    protocol: str
    score: float
    promoted: bool
    reason: str
    previous: str | None = None
    previous_score: float | None = None
    already_registered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def git_revision(cwd: str | Path = ".") -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    try:
        revision = git("rev-parse", "HEAD")
        return revision + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def content_version(checkpoint: Path, dataset: str) -> str:
    """The registration's version: a hash of the checkpoint folder's files and the dataset it is judged on."""
    digest = hashlib.sha256(dataset.encode())
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        digest.update(path.relative_to(checkpoint).as_posix().encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _score(record: dict[str, Any], protocol: str) -> float:
    """A registration's score under ``protocol`` (older ledger entries hold only the first one's)."""
    return record.get("evaluations", {}).get(protocol, record["score"])


def champion_key(dataset: str, protocol: str) -> str:
    return f"{dataset}|{protocol}"


def empty_ledger() -> dict[str, Any]:
    return {"format": LEDGER_FORMAT, "registrations": {}, "champions": {}, "history": []}


def parse_ledger(data: bytes, where: str) -> dict[str, Any]:
    """A ledger document from its bytes, or a ``RegistryError`` naming ``where`` it came from."""
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RegistryError(f"{where}: not valid JSON ({error})") from error
    if not isinstance(document, dict) or document.get("format") != LEDGER_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise RegistryError(f"{where}: ledger format {found!r} is not supported (supported: {LEDGER_FORMAT})")
    return document


def record_registration(ledger: dict[str, Any], record: dict[str, Any], margin: float) -> Decision:
    """Add a registration ``record`` to ``ledger`` (kept if its version is known: a model is judged per protocol,
    so only its score under ``record["protocol"]`` is updated) and gate it: the one rule of every ledger, the
    project's and the shared store's (``stages.shared_store``)."""
    version, protocol = record["version"], record["protocol"]
    known = ledger["registrations"].get(version)
    if known is None:
        ledger["registrations"][version] = record
    elif record.get("store") and not known.get("store"):
        known["store"] = record["store"]
    ledger["registrations"][version].setdefault("evaluations", {})[protocol] = record["score"]
    return gate(ledger, version, margin, protocol, already=known is not None)


def gate(ledger: dict[str, Any], version: str, margin: float, protocol: str, already: bool) -> Decision:
    """Promote ``version`` if it beats its (dataset, protocol) champion by more than ``margin`` and was not
    rolled back by hand; log the decision."""
    record = ledger["registrations"][version]
    score = record["evaluations"][protocol]
    key = champion_key(record["dataset"], protocol)
    lineage = ledger["champions"].setdefault(key, [])
    current = lineage[-1] if lineage else None
    base = {"version": version, "method": record["method"], "dataset": record["dataset"],
            "protocol": protocol, "score": score, "already_registered": already}
    if current == version:
        return Decision(**base, promoted=False, reason="already the champion", previous=current,
                        previous_score=score)
    previous_score = _score(ledger["registrations"][current], protocol) if current else None
    if version in ledger.get("rolled_back", {}).get(key, []):
        promoted, reason = False, f"rolled back by hand earlier; `zssbir promote {version}` restores it"
    elif current is None:
        promoted, reason = True, "no champion yet"
    else:
        delta = score - previous_score
        promoted = delta > margin
        reason = f"{protocol} {score:.4f} vs champion {previous_score:.4f} ({delta:+.4f}; needs > {margin:+.4f})"
    if promoted:
        lineage.append(version)
    ledger["history"].append({"at": _now(), "event": "promoted" if promoted else "not_promoted", "key": key,
                              "version": version, "previous": current, "score": score,
                              "previous_score": previous_score, "reason": reason})
    return Decision(**base, promoted=promoted, reason=reason, previous=current, previous_score=previous_score)


class Registry:
    """The registry rooted at one BentoML home; every read-modify-write of the ledger holds its lock."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home).absolute()
        self.models_dir = self.home / "models"
        self.staging_dir = self.home / "staging"
        self.ledger_path = self.home / LEDGER_FILE

    # -- ledger ---------------------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".registry.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ledger(self) -> dict[str, Any]:
        if not self.ledger_path.is_file():
            return empty_ledger()
        return parse_ledger(self.ledger_path.read_bytes(), str(self.ledger_path))

    def _write(self, ledger: dict[str, Any]) -> None:
        atomic_write_json(self.ledger_path, ledger)

    # -- store ----------------------------------------------------------------------------------------------
    def _store(self, root: Path):  # -> bentoml ModelStore (imported late: BentoML is slow to import)
        from bentoml._internal.models.model import ModelStore

        root.mkdir(parents=True, exist_ok=True)
        return ModelStore(str(root))

    def model_path(self, domain: str, version: str) -> Path:
        return self.models_dir / ENCODER_MODELS[domain] / version

    def _store_encoder(self, domain: str, version: str, checkpoint: Path, labels: dict[str, str],
                       metadata: dict[str, Any]) -> None:
        """One encoder into the store: built in staging, then renamed into place (or adopted if already there)."""
        import bentoml

        target = self.model_path(domain, version)
        if (target / "model.yaml").is_file():
            return  # a previous, interrupted registration stored it completely
        staging = self.staging_dir / f"{os.getpid()}-{domain}"
        shutil.rmtree(staging, ignore_errors=True)
        name = ENCODER_MODELS[domain]
        with bentoml.models.create(f"{name}:{version}", labels={**labels, "domain": domain}, metadata=metadata,
                                   _model_store=self._store(staging)) as model:
            shutil.copytree(checkpoint, model.path_of("checkpoint"))
            atomic_write_json(Path(model.path_of("encoder.json")), {"domain": domain})
            _fault("staging")
        _fault("staged")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / name / version, target)
        atomic_write_text(target.parent / "latest", version)
        shutil.rmtree(staging, ignore_errors=True)

    def export_encoder(self, domain: str, version: str, folder: Path) -> Path:
        """The stored encoder as one ``.bentomodel`` file in ``folder`` (BentoML's export)."""
        import bentoml

        name = ENCODER_MODELS[domain]
        if not (self.model_path(domain, version) / "model.yaml").is_file():
            raise RegistryError(f"{name}:{version} is not in the model store {self.models_dir}")
        return Path(bentoml.models.export_model(f"{name}:{version}", str(folder / f"{name}-{version}.bentomodel"),
                                                _model_store=self._store(self.models_dir)))

    def import_encoder(self, domain: str, version: str, exported: Path) -> Path:
        """An exported encoder (``export_encoder``) into the store, through staging like a registration; a model
        already stored is kept. Returns its folder."""
        import bentoml

        target, name = self.model_path(domain, version), ENCODER_MODELS[domain]
        with self._locked():
            if (target / "model.yaml").is_file():  # checked under the lock: two pulls at once import it once
                return target
            staging = self.staging_dir / f"{os.getpid()}-import-{domain}"
            shutil.rmtree(staging, ignore_errors=True)
            model = bentoml.models.import_model(str(exported), _model_store=self._store(staging))
            if str(model.tag) != f"{name}:{version}":
                raise RegistryError(f"{exported}: holds {model.tag}, expected {name}:{version}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging / name / version, target)
            atomic_write_text(target.parent / "latest", version)
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def adopt(self, record: dict[str, Any], reason: str) -> None:
        """Make another ledger's registration (a shared store's champion) this ledger's champion of its (dataset,
        protocol); its encoders must be in the store already (``import_encoder``)."""
        missing = [d for d in ENCODER_MODELS if not (self.model_path(d, record["version"]) / "model.yaml").is_file()]
        if missing:
            raise RegistryError(f"{record['version']}: encoders {missing} are not in {self.models_dir}; import them "
                                "first")
        with self._locked():
            ledger = self.ledger()
            ledger["registrations"].setdefault(record["version"], record)
            key = champion_key(record["dataset"], record["protocol"])
            lineage = ledger["champions"].setdefault(key, [])
            previous = lineage[-1] if lineage else None
            if previous != record["version"]:
                lineage.append(record["version"])
                ledger["history"].append({"at": _now(), "event": "adopted", "key": key, "version": record["version"],
                                          "previous": previous, "score": record["score"], "reason": reason})
                self._write(ledger)

    def _clean_staging(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    # -- registration ---------------------------------------------------------------------------------------
    def register(self, checkpoint: str | Path, *, method: str, dataset: str, protocol: str, score: float,
                 metrics: dict[str, Any], params: dict[str, Any], margin: float = 0.0,
                 data_fingerprint: str = "", git: str | None = None,
                 lineage: dict[str, Any] | None = None) -> Decision:
        """Register a model's encoders (idempotent) and promote it if it beats the champion by more than ``margin``.
        ``git``: the revision it was trained from (default: the checkout's); ``lineage``: what it was made from
        (``stages.lineage.lineage``: its train stage's dvc.lock record and the commit of that record)."""
        checkpoint = Path(checkpoint)
        if not (checkpoint / "config.json").is_file():
            raise RegistryError(f"{checkpoint}: not a model folder (no config.json); run its train stage first")
        version = content_version(checkpoint, dataset)
        record = {"version": version, "method": method, "dataset": dataset, "protocol": protocol, "score": score,
                  "metrics": metrics, "params": params, "git_revision": git or git_revision(),
                  "data_fingerprint": data_fingerprint, "lineage": lineage, "registered_at": _now(),
                  "models": {domain: f"{name}:{version}" for domain, name in ENCODER_MODELS.items()}}
        labels = {"method": method, "dataset": dataset, "project": "zssbir"}
        with self._locked():
            self._clean_staging()
            ledger = self.ledger()
            metadata = store_safe({key: record[key] for key in ("method", "dataset", "protocol", "score", "metrics",
                                                                "params", "git_revision", "data_fingerprint",
                                                                "registered_at")})
            for domain in ENCODER_MODELS:
                self._store_encoder(domain, version, checkpoint, labels, metadata)
                _fault(f"stored_{domain}")
            self._clean_staging()
            decision = record_registration(ledger, record, margin)
            self._write(ledger)
            _fault("ledger_written")
        return decision

    # -- champions ------------------------------------------------------------------------------------------
    def champion(self, dataset: str, protocol: str) -> dict[str, Any] | None:
        """The champion's registration record, or None when nothing was promoted for (dataset, protocol)."""
        ledger = self.ledger()
        lineage = ledger["champions"].get(champion_key(dataset, protocol), [])
        return ledger["registrations"][lineage[-1]] if lineage else None

    def promote(self, version: str, reason: str = "promoted by hand") -> dict[str, Any]:
        """Make a registered version the champion of its (dataset, protocol), whatever its score."""
        with self._locked():
            ledger = self.ledger()
            record = self._record(ledger, version)
            version = record["version"]
            key = champion_key(record["dataset"], record["protocol"])
            lineage = ledger["champions"].setdefault(key, [])
            previous = lineage[-1] if lineage else None
            if version in ledger.get("rolled_back", {}).get(key, []):
                ledger["rolled_back"][key].remove(version)
            if previous != version:
                lineage.append(version)
                ledger["history"].append({"at": _now(), "event": "promoted", "key": key, "version": version,
                                          "previous": previous, "score": record["score"], "reason": reason})
                self._write(ledger)
            return record

    def rollback(self, dataset: str, protocol: str, to: str | None = None) -> dict[str, Any]:
        """Restore the previous champion (or ``to``, an earlier champion of the same lineage)."""
        key = champion_key(dataset, protocol)
        with self._locked():
            ledger = self.ledger()
            lineage = ledger["champions"].get(key, [])
            if len(lineage) < 2:
                raise RegistryError(f"no earlier champion of {dataset} / {protocol} to roll back to "
                                    f"(champions so far: {lineage or 'none'})")
            target = self._record(ledger, to)["version"] if to else lineage[-2]
            if target not in lineage[:-1]:
                raise RegistryError(f"{target} was never a champion of {dataset} / {protocol} before the current "
                                    f"one; earlier champions: {lineage[:-1]}")
            replaced = lineage[-1]
            rolled_back = ledger.setdefault("rolled_back", {}).setdefault(key, [])
            rolled_back += [v for v in lineage[lineage.index(target) + 1:] if v not in rolled_back]
            del lineage[lineage.index(target) + 1:]
            ledger["history"].append({"at": _now(), "event": "rollback", "key": key, "version": target,
                                      "previous": replaced, "score": _score(ledger["registrations"][target], protocol),
                                      "reason": "rolled back by hand"})
            self._write(ledger)
            return ledger["registrations"][target]

    @staticmethod
    def _record(ledger: dict[str, Any], version: str) -> dict[str, Any]:
        matches = [v for v in ledger["registrations"] if v.startswith(version)] if version else []
        if len(matches) != 1:
            raise RegistryError(f"registered version {version!r} {'is ambiguous' if matches else 'not found'}; "
                                f"registered: {sorted(ledger['registrations'])}")
        return ledger["registrations"][matches[0]]

    # -- inspection -----------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Inconsistencies: ledger entries whose models are missing or incomplete (an empty list = consistent).

        Models in the store without a ledger entry are not errors: a killed registration leaves them, and the
        next registration of the same model adopts them."""
        problems = []
        for version, record in self.ledger()["registrations"].items():
            for domain in ENCODER_MODELS:
                if not (self.model_path(domain, version) / "model.yaml").is_file():
                    problems.append(f"{record['method']} {version}: {ENCODER_MODELS[domain]} is missing from "
                                    f"{self.models_dir}")
        for name in ENCODER_MODELS.values():
            folder = self.models_dir / name
            for entry in folder.iterdir() if folder.is_dir() else ():
                if entry.is_dir() and not (entry / "model.yaml").is_file():
                    problems.append(f"{entry}: a model folder without model.yaml (half-written)")
        return problems

    def stored_models(self) -> list[str]:
        """Tags of the encoders in the store, through BentoML's own listing (fails if the store is corrupt)."""
        return sorted(str(model.tag) for model in self._store(self.models_dir).list())
