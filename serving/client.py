"""A small typed client of the sketch search service (``serving.service``) over httpx.

    with SketchSearchClient("http://127.0.0.1:3000") as client:
        hits = client.search("sketch.png", k=5, category="animal-mammal").results

An image is a path, bytes (sent as they are) or a PIL image (sent as PNG). A refused request raises
``ServiceError`` with the HTTP status and the server's message.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Union

import httpx
import numpy as np
from PIL import Image

ImageInput = Union[str, PathLike, bytes, Image.Image]


class ServiceError(Exception):
    """The service answered with an error status; ``message`` is its ``error`` field (or the body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class SearchHit:
    rank: int
    id: int
    score: float
    category: str
    instance_id: str
    label: str
    image_url: str
    style: str = ""


@dataclass(frozen=True)
class SearchResponse:
    results: tuple[SearchHit, ...]
    k: int
    gallery_size: int
    model: dict[str, Any]
    elapsed_ms: float


@dataclass(frozen=True)
class Explanation:
    score: float
    photo_id: int
    method: str
    picture: str  # a PNG data URL
    matches: tuple[dict[str, Any], ...]


def image_bytes(image: ImageInput) -> bytes:
    """The bytes to upload: a file's contents, bytes as given, a PIL image PNG-encoded."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return Path(image).read_bytes()


class SketchSearchClient:
    """The service's APIs as methods; a context manager that closes its HTTP connections."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> SketchSearchClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            try:
                document = response.json()
                message = (document.get("error") or str(document)) if isinstance(document, dict) else str(document)
            except ValueError:
                message = response.text or response.reason_phrase
            raise ServiceError(response.status_code, message)
        return response

    def _post(self, api: str, images: dict[str, ImageInput] | list[ImageInput], **fields: Any) -> Any:
        name = "images" if isinstance(images, list) else None
        files = ([(name, (f"image{i}.png", image_bytes(image), "application/octet-stream"))
                  for i, image in enumerate(images)] if name else
                 [(key, (f"{key}.png", image_bytes(image), "application/octet-stream"))
                  for key, image in images.items()])
        data = {key: str(value) for key, value in fields.items() if value is not None}
        return self._call("POST", f"/{api}", files=files, data=data).json()

    def search(self, image: ImageInput, k: int = 12, category: str | None = None,
               style: str | None = None) -> SearchResponse:
        document = self._post("search", {"sketch": image}, k=k, category=category, style=style)
        return SearchResponse(tuple(SearchHit(**hit) for hit in document["results"]), document["k"],
                              document["gallery_size"], document["model"], document["elapsed_ms"])

    def explain(self, image: ImageInput, photo_id: int) -> Explanation:
        document = self._post("explain", {"sketch": image}, photo_id=photo_id)
        return Explanation(document["score"], document["photo_id"], document["method"], document["picture"],
                           tuple(document.get("matches", ())))

    def _encode(self, api: str, images: list[ImageInput]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, 0), dtype=np.float32)
        return np.atleast_2d(np.asarray(self._post(api, list(images)), dtype=np.float32))

    def encode_sketches(self, images: list[ImageInput]) -> np.ndarray:
        """One L2-normalised embedding row per sketch."""
        return self._encode("encode_sketch", images)

    def encode_photos(self, images: list[ImageInput]) -> np.ndarray:
        """One L2-normalised embedding row per photo."""
        return self._encode("encode_photo", images)

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info").json()

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def thumbnail(self, photo_id: int) -> bytes:
        return self._call("GET", f"/gallery/{photo_id}.png").content
