"""What the service serves, without the web layer: the champion's encoders, the gallery index and its metadata.

``SearchBundle`` answers searches (top-k via ``sbir.index``; a category filter ranks that category's photos with
the same top-k), explanations and syntheses where the model has the capability, and describes itself. The
BentoML service (``serving.service``) is a thin HTTP layer over it; tests and benchmarks use it directly.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.checkpoint import load_model
from models.interface import MatchExplainer, PatchSynthesizer, RetrievalModel
from sbir import bundle_layout
from sbir.categories import normalize_category
from sbir.explanations import draw_explanation
from sbir.index import RetrievalIndex, top_k
from serving.schemas import SearchHit
from serving.uploads import BadUpload, UploadLimits, check_has_ink, check_k


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class SearchBundle:
    """The champion's sketch and photo encoders plus the gallery bundle written by the ``index`` stage."""

    def __init__(self, bundle_dir: str | Path, sketch_model_dir: str | Path, photo_model_dir: str | Path,
                 limits: UploadLimits | None = None) -> None:
        self.dir = Path(bundle_dir)
        self.meta = bundle_layout.read_meta(self.dir)
        self.sketch_model: RetrievalModel = load_model(Path(sketch_model_dir) / "checkpoint")
        self.photo_model: RetrievalModel = load_model(Path(photo_model_dir) / "checkpoint")
        self.index: RetrievalIndex = bundle_layout.read_index(self.dir)
        self.gallery = bundle_layout.read_gallery(self.dir).set_index("id", drop=False)
        self.limits = limits or UploadLimits()
        if "style" not in self.gallery:  # a bundle from before photo styles: one style, its dataset's
            self.gallery["style"] = str(self.meta["champion"].get("dataset", ""))
        self._normalised = self.gallery["category"].map(normalize_category).to_numpy()
        self._styles = self.gallery["style"].astype(str).to_numpy()
        # each photo's fields as plain strings, looked up by id: pandas' .loc cost ~50 µs a hit
        self._entries = dict(zip(self.gallery["id"].tolist(), self.gallery[["category", "instance_id", "label", "style"]]
                                 .astype(str).to_dict("records"), strict=True))
        self._vectors: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.index.size

    @property
    def capabilities(self) -> list[str]:
        return sorted(self.sketch_model.capabilities | ({"search"}))

    def info(self) -> dict[str, Any]:
        champion = self.meta["champion"]
        return {"model": {key: champion[key] for key in ("method", "version", "dataset", "protocol", "score")},
                "embedding_dim": self.meta["embedding_dim"], "gallery_size": self.size,
                "gallery": self.meta["gallery"]["source"], "index": self.meta["index"],
                "categories": self.meta["gallery"]["categories"],
                "styles": sorted(set(self._styles.tolist())), "capabilities": self.capabilities,
                "limits": self.limits.to_dict()}

    def encode(self, images: list[Image.Image], domain: str) -> np.ndarray:
        model = self.sketch_model if domain == "sketch" else self.photo_model
        return model.encode(images, domain)

    def _filtered_rows(self, category: str | None, style: str | None) -> np.ndarray:
        """Gallery rows of one category and/or one photo style; a 422 naming the known values otherwise."""
        keep = np.ones(self.size, dtype=bool)
        for field, value, column, known in (
                ("category", category, self._normalised, self.meta["gallery"]["categories"]),
                ("style", style, self._styles, sorted(set(self._styles.tolist())))):
            if value:
                wanted = normalize_category(value) if field == "category" else value
                match = column == wanted
                if not match.any():
                    raise BadUpload(f"{field}: {value!r} is not a {field} of the gallery; known: "
                                    f"{', '.join(known[:20])}{' …' if len(known) > 20 else ''}", 422)
                keep &= match
        return np.flatnonzero(keep)

    def _gallery_vectors(self) -> np.ndarray:
        if self._vectors is None:  # only a filter needs them: rebuilt from the index once
            self._vectors = self.index.vectors()
        return self._vectors

    def search(self, sketch: Image.Image, k: int = 12, category: str | None = None,
               style: str | None = None) -> dict[str, Any]:
        """The sketch's top-k gallery photos (optionally of one category and/or photo style), best first."""
        started = time.perf_counter()
        k = check_k(k, self.limits)
        check_has_ink(sketch)
        return self.rank(self.encode([sketch], "sketch"), k, category, started, style)

    def rank(self, query: np.ndarray, k: int, category: str | None = None,
             started: float | None = None, style: str | None = None) -> dict[str, Any]:
        """The top-k gallery photos of an encoded sketch (``query``: one row), as ``search`` answers them; the
        service encodes in batches across requests (``serving.batching``) and ranks here."""
        started = time.perf_counter() if started is None else started
        k = check_k(k, self.limits)
        if category or style:
            rows = self._filtered_rows(category, style)
            scores, local = top_k(query, self._gallery_vectors()[rows], k)
            ids = rows[local[0]]
        else:
            scores, found = self.index.search(query, k)
            ids = found[0][found[0] >= 0]
        hits = [self.hit(rank, int(row), float(score)) for rank, (row, score)
                in enumerate(zip(ids, scores[0][: len(ids)], strict=True), start=1)]
        return {"results": [hit.model_dump() for hit in hits], "k": k, "gallery_size": self.size,
                "model": {"method": self.meta["champion"]["method"], "version": self.meta["champion"]["version"]},
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)}

    def hit(self, rank: int, row: int, score: float) -> SearchHit:
        return SearchHit(rank=rank, id=row, score=score, **self._entries[row], image_url=f"/gallery/{row}.png")

    def photo(self, photo_id: int) -> Image.Image:
        """The gallery photo's thumbnail (the bundle keeps thumbnails, not the originals)."""
        if isinstance(photo_id, bool) or not isinstance(photo_id, int) or not 0 <= photo_id < self.size:
            raise BadUpload(f"photo_id: {photo_id!r} is not a gallery id (0 … {self.size - 1})", 404)
        with Image.open(self.thumbnail_path(photo_id)) as image:
            return image.convert("RGB")

    def thumbnail_path(self, photo_id: int) -> Path:
        return bundle_layout.thumbnail_path(self.dir, photo_id)

    def explain(self, sketch: Image.Image, photo_id: int, top: int = 10) -> dict[str, Any]:
        """Patch correspondences of a sketch and a gallery photo, drawn, where the model can explain."""
        model = self.sketch_model
        if not isinstance(model, MatchExplainer):
            raise BadUpload(f"the served model ({self.meta['champion']['method']}) has no explain capability; "
                            f"its capabilities: {', '.join(self.capabilities)}", 422)
        check_has_ink(sketch)
        photo = self.photo(photo_id)
        explanation = model.explain(sketch, photo, top=top)
        # drawn over what the encoders saw (ink-normalised, padded square), so patches line up with the grid
        picture = draw_explanation(self._model_view(sketch, "sketch"), self._model_view(photo, "photo"), explanation)
        return {**explanation.to_dict(), "photo_id": photo_id, "method": self.meta["champion"]["method"],
                "picture": png_data_url(picture)}

    def _model_view(self, image: Image.Image, domain: str) -> Image.Image:
        return Image.fromarray(self.sketch_model.preprocess(domain).load(image).permute(1, 2, 0).numpy())

    def can_synthesize(self) -> None:
        """A 422 where the served model cannot synthesize."""
        if not isinstance(self.sketch_model, PatchSynthesizer):
            raise BadUpload(f"the served model ({self.meta['champion']['method']}) cannot synthesize; "
                            f"its capabilities: {', '.join(self.capabilities)}", 422)

    def synthesize(self, sketch: Image.Image, photos: int = 8, query: np.ndarray | None = None) -> dict[str, Any]:
        """A photo-like picture for the sketch, assembled from the patches of its top gallery photos (patch
        replacement), where the model supports it; ``photo_ids`` are the photos the patches came from.
        ``query``: the sketch's embedding where the caller encoded it already (batched, in the service)."""
        self.can_synthesize()
        model = self.sketch_model
        check_has_ink(sketch)
        query = self.encode([sketch], "sketch") if query is None else query
        _, found = self.index.search(query, max(1, min(photos, self.size)))
        ids = [int(row) for row in found[0] if row >= 0]
        if not ids:
            raise BadUpload("the gallery has no photos to synthesize from", 422)
        synthesis = model.synthesize(sketch, [self.photo(row) for row in ids])
        return {"picture": png_data_url(synthesis.image), "method": self.meta["champion"]["method"],
                "photo_ids": ids, **synthesis.to_dict()}
