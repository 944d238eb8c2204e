"""Sketch encodings of concurrent requests, merged into batches: ``/search`` and ``/synthesize`` encode through
BentoML's own adaptive dispatcher (``CorkDispatcher``, the one behind its batchable APIs), so eight clients
searching at once cost one forward pass of eight sketches, not eight of one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from PIL import Image

from serving.guards import RequestError


def _at_capacity() -> np.ndarray:
    raise RequestError("the server is at capacity (the sketch would wait more than its latency budget); retry", 429)


class EncodeBatcher:
    """``await batcher(pictures)``: their embeddings, encoded in one batch with whatever other requests are
    waiting (at most ``max_batch_size`` pictures; a request predicted to wait over ``max_latency_ms`` is refused
    with a 429). One batch runs at a time, in a worker thread, off the event loop."""

    def __init__(self, encode: Callable[[list[Image.Image]], np.ndarray], max_latency_ms: int,
                 max_batch_size: int = 64) -> None:
        self.encode = encode
        self._dispatch = CorkDispatcher(max_latency_ms, max_batch_size, fallback=_at_capacity,
                                        get_batch_size=len, batch_dim=(0, 0))(self._run)

    async def _run(self, requests: Sequence[list[Image.Image]]) -> list[np.ndarray]:
        pictures = [picture for request in requests for picture in request]
        vectors = await anyio.to_thread.run_sync(self.encode, pictures)
        bounds = np.cumsum([0, *(len(request) for request in requests)])
        return [vectors[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]

    async def __call__(self, pictures: list[Image.Image]) -> np.ndarray:
        return await self._dispatch(pictures)
