"""The Bento: the champion's sketch and photo encoders, the gallery index and the sketch pad, over HTTP.

APIs (POST, multipart or JSON; OpenAPI at ``/docs``): ``encode_sketch`` / ``encode_photo`` (batchable, adaptive
batching), ``search``, ``explain``, ``synthesize``; GET ``/info``, ``/gallery/<id>.png`` and the sketch pad at
``/ui/``; BentoML's ``/livez``, ``/readyz`` and ``/metrics``. Bad input gets a 4xx with ``{"error": message}``.

The encoders are ``BentoModel`` class attributes (so ``bentoml build`` packs them); their tags and the gallery
come from the serving bundle (``ZSSBIR_BUNDLE``, default ``artifacts/serving/bundle``, written by the ``index``
stage and shipped inside the Bento). Settings (threads, batching latency, upload limits): ``serving.settings``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import bentoml
import numpy as np
from PIL import Image
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from sbir.bundle_layout import meta_path, read_meta
from serving.guards import RequestGuard, install_form_checks, refuse
from serving.schemas import Category, Explanation, ImageUpload, K, PhotoId, SearchResponse, Style, Synthesis
from serving.settings import API_THREADS, BUNDLE, MAX_LATENCY_MS, TORCH_THREADS, upload_limits
from serving.uploads import BadUpload, Upload, check_has_ink, check_k, decode_image

STATIC = Path(__file__).with_name("static")
T = TypeVar("T")


def _bundle_meta() -> dict[str, Any]:
    meta_file = meta_path(BUNDLE)
    if not meta_file.is_file():
        raise RuntimeError(f"no serving bundle at {BUNDLE} ({meta_file.name} missing): run the index stage "
                           "(`dvc repro index`) or set ZSSBIR_BUNDLE")
    return read_meta(BUNDLE)


install_form_checks()  # this module is BentoML's entry point: configuring its form parsing is its job
MODELS = _bundle_meta()["champion"]["models"]
ImageFile = ImageUpload  # any content type: the bytes are sniffed by Pillow (serving.uploads)
web = FastAPI(title="zssbir sketch pad and gallery")
web.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")


@bentoml.asgi_app(web, path="/")
@bentoml.service(name="zssbir", traffic={"timeout": 60}, workers=1, threads=API_THREADS)
class SketchSearch:
    """Zero-shot sketch-based image retrieval: draw a sketch, get the matching gallery photos."""

    sketch_encoder = bentoml.models.BentoModel(MODELS["sketch"])
    photo_encoder = bentoml.models.BentoModel(MODELS["photo"])

    def __init__(self) -> None:
        import torch

        from serving.batching import EncodeBatcher
        from serving.bundle import SearchBundle

        # each batcher encodes one batch at a time, with TORCH_THREADS threads (default: half the cores)
        torch.set_num_threads(TORCH_THREADS)
        self.limits = upload_limits()
        self.bundle = SearchBundle(BUNDLE, self.sketch_encoder.path, self.photo_encoder.path,
                                   self.limits)
        batches = bentoml.metrics.Histogram(name="zssbir_sketch_batch_requests", buckets=(1, 2, 4, 8, 16, 32, 64),
                                            documentation="requests per sketch-encoding batch of /search, /synthesize")
        self.sketches = EncodeBatcher(lambda pictures: self.bundle.encode(pictures, "sketch"), MAX_LATENCY_MS,
                                      observe=batches.observe)
        self.work = anyio.CapacityLimiter(API_THREADS)  # decoding, ranking, explaining: API_THREADS at once

    def _decode(self, upload: Upload, field: str) -> Image.Image:
        try:
            if len(upload.data) > self.limits.max_bytes:
                raise BadUpload(f"{field}: {len(upload.data)} bytes exceeds the limit of {self.limits.max_bytes} "
                                "bytes", 413)
            return upload.picture or decode_image(upload.data, self.limits, field)
        except BadUpload as error:
            raise refuse(error) from None

    async def _off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a worker thread (at most API_THREADS at once); a refusal as its 4xx."""
        try:
            return await anyio.to_thread.run_sync(work, *args, limiter=self.work)
        except BadUpload as error:
            raise refuse(error) from None

    def _sketch(self, upload: Upload, check: Callable[[], Any]) -> Image.Image:
        """The decoded sketch, after ``check`` (the request's other refusals) and the blank-sketch check, in the
        order a client meets them: the file, the request, the ink."""
        picture = self._decode(upload, "sketch")
        check()
        return check_has_ink(picture)

    def _encode(self, images: list[Upload], domain: str) -> np.ndarray:
        pictures = [self._decode(upload, f"images[{i}]") for i, upload in enumerate(images)]
        return self.bundle.encode(pictures, domain)

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=MAX_LATENCY_MS)
    def encode_sketch(self, images: list[ImageFile]) -> np.ndarray:
        """L2-normalised sketch embeddings, one row per image (adaptive batching across requests)."""
        return self._encode(images, "sketch")

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=MAX_LATENCY_MS)
    def encode_photo(self, images: list[ImageFile]) -> np.ndarray:
        """L2-normalised photo embeddings, one row per image (adaptive batching across requests)."""
        return self._encode(images, "photo")

    @bentoml.api
    async def search(self, sketch: ImageFile, k: K = 12, category: Category = None,
                     style: Style = None) -> SearchResponse:
        """The top-k gallery photos for a sketch: id, score, category, instance id, label, style and image URL
        (optionally of one category and/or one photo style). The
        sketch is encoded in one batch with concurrent requests' sketches (``serving.batching``)."""
        started = time.perf_counter()
        picture = await self._off_loop(self._sketch, sketch, lambda: check_k(k, self.limits))
        query = await self.sketches([picture])
        return SearchResponse.model_validate(await self._off_loop(self.bundle.rank, query, k, category, started,
                                                                       style))

    @bentoml.api
    async def explain(self, sketch: ImageFile, photo_id: PhotoId) -> Explanation:
        """The patch correspondences a sketch–photo match relies on, and their picture (PNG data URL); a 422
        where the served model has no explain capability."""
        picture = await self._off_loop(self._decode, sketch, "sketch")
        return Explanation.model_validate(await self._off_loop(self.bundle.explain, picture, photo_id))

    @bentoml.api
    async def synthesize(self, sketch: ImageFile) -> Synthesis:
        """A photo-like picture for the sketch from gallery patches; a 422 where the model cannot synthesize."""
        picture = await self._off_loop(self._sketch, sketch, self.bundle.can_synthesize)
        query = await self.sketches([picture])
        return Synthesis.model_validate(await self._off_loop(self.bundle.synthesize, picture, 8, query))

    @web.get("/info")
    def info(self) -> dict[str, Any]:
        """The served model, the gallery, the index (and its measured recall), capabilities and limits."""
        return self.bundle.info()

    @web.get("/gallery/{photo_id}.png")
    def thumbnail(self, photo_id: int) -> FileResponse:
        if not 0 <= photo_id < self.bundle.size:
            raise HTTPException(404, f"photo {photo_id} is not in the gallery (0 … {self.bundle.size - 1})")
        return FileResponse(self.bundle.thumbnail_path(photo_id), media_type="image/png")

    @web.get("/")
    def home(self) -> RedirectResponse:
        return RedirectResponse("/ui/")


SketchSearch.add_asgi_middleware(RequestGuard, image_bytes=upload_limits().max_bytes)
