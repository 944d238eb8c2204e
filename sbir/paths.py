"""Where every stage reads and writes, given once (``dvc.yaml`` spells the same paths; a test checks they agree).

All paths are relative to the repository root, where DVC runs the stages.
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
PREPARED_ROOT = Path("data/prepared")
VALIDATION_ROOT = Path("data/reports/validation")
CHECKPOINT_ROOT = Path("artifacts/checkpoints")
TRAIN_ROOT = Path("artifacts/train")
STATE_ROOT = Path("artifacts/train_state")
EMBEDDINGS_ROOT = Path("artifacts/embeddings")
EVAL_ROOT = Path("artifacts/eval")
STYLES_ROOT = Path("data/styles")
REGISTER_ROOT = Path("artifacts/register")
SERVING_ROOT = Path("artifacts/serving")
CLIP_ROOT = Path("artifacts/clip")
# Not pipeline outputs: the model store (registry) and the Prefect database live beside the project.
BENTOML_HOME = Path(".bentoml")
PREFECT_HOME = Path(".prefect")


def prepared_dir(dataset: str) -> Path:
    """Images and ``manifest.parquet`` of a prepared dataset."""
    return PREPARED_ROOT / dataset


def validation_report(dataset: str) -> Path:
    return VALIDATION_ROOT / f"{dataset}.json"


def checkpoint_dir(model: str) -> Path:
    """A model folder (checkpoint format v1): trained methods and baselines alike."""
    return CHECKPOINT_ROOT / model


def train_log_dir(model: str) -> Path:
    """DVCLive log and summary of one model's training run."""
    return TRAIN_ROOT / model


def train_state_dir(model: str, dataset: str) -> Path:
    """Resume state of an unfinished run (removed once training completes)."""
    return STATE_ROOT / model / dataset


def embeddings_dir(dataset: str, model: str) -> Path:
    """Test-set embeddings of one model on one dataset, with their manifest row ids."""
    return EMBEDDINGS_ROOT / dataset / model


def gallery_embeddings_dir(model_embeddings: Path, gallery: str) -> Path:
    """A model's embeddings of a photo-only gallery (``evaluate.cross_galleries``), kept inside the folder of its
    embeddings of the dataset the gallery was built for (``embeddings_dir``), so ``embed`` has one output."""
    return Path(model_embeddings) / "galleries" / gallery


def eval_dir(dataset: str, model: str) -> Path:
    return EVAL_ROOT / dataset / model


def styles_dir(dataset: str) -> Path:
    """The unseen sketches of a dataset redrawn in other styles (style-shift report)."""
    return STYLES_ROOT / dataset


def register_report(dataset: str) -> Path:
    """The last registration decision on a dataset (candidates, version, promoted or not, why)."""
    return REGISTER_ROOT / f"{dataset}.json"


def bento_record() -> Path:
    """The tag of the last Bento ``package`` built."""
    return SERVING_ROOT / "bento.json"


def serving_bundle() -> Path:
    """What the Bento serves besides the encoders: the gallery index, its metadata and thumbnails."""
    return SERVING_ROOT / "bundle"


def pretrained_clip_dir(dataset: str) -> Path:
    """The small CLIP that ``pretrain_clip`` trains on a dataset's train split (prompt learning freezes it)."""
    return CLIP_ROOT / dataset


def pretrain_log_dir(dataset: str) -> Path:
    """The run summary of ``pretrain_clip`` on a dataset (timings: not cached, so the CLIP folder reproduces)."""
    return TRAIN_ROOT / "pretrain_clip" / dataset


def in_repository(path: Path, root: Path | None = None) -> str | None:
    """``path`` relative to the repository (``root``, default the working directory), or None when it lies outside:
    what reports and committed results record, so they hold no machine's absolute paths."""
    root = (root or Path.cwd()).resolve()
    resolved = (path if path.is_absolute() else Path.cwd() / path).resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None
