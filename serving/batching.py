"""Sketch encodings of concurrent requests, merged into batches: ``/search`` and ``/synthesize`` encode through an
``EncodeBatcher``, so eight clients searching at once cost a few forward passes of several sketches, not eight of
one.

Opportunistic batching: an idle batcher encodes a request at once; requests that arrive while a batch runs wait
and go together in the next one. BentoML's ``CorkDispatcher`` (behind its batchable APIs) was tried here first: it
holds a lone request back hoping for company, which cost one client 3-5 ms of /search p50 on 2 cores
(benchmarks/results/serving_http.md), where a search takes 11 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio
import numpy as np
from PIL import Image

from serving.guards import RequestError


class EncodeBatcher:
    """``await batcher(pictures)``: their embeddings, encoded together with whatever other requests are waiting
    (at most ``max_batch_size`` pictures a batch, one batch at a time, in a worker thread). A request that waited
    more than ``max_latency_ms`` for its turn is refused with a 429: the server is at capacity."""

    def __init__(self, encode: Callable[[list[Image.Image]], np.ndarray], max_latency_ms: int,
                 max_batch_size: int = 64, observe: Callable[[int], object] | None = None) -> None:
        self.encode, self.observe = encode, observe  # observe: told each batch's number of requests (a metric)
        self.max_wait, self.max_batch_size = max_latency_ms / 1000, max_batch_size
        self._waiting: list[tuple[list[Image.Image], asyncio.Future, float]] = []
        self._running = False
        self._drainer: asyncio.Task | None = None  # held: the event loop keeps only weak references to tasks

    async def __call__(self, pictures: list[Image.Image]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((pictures, future, time.monotonic()))
        if not self._running:  # the event loop is one thread: no lock needed around the flag
            self._running = True
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _next_batch(self) -> list[tuple[list[Image.Image], asyncio.Future, float]]:
        """The oldest waiting requests, up to ``max_batch_size`` pictures (at least one request); those that
        waited too long are refused instead."""
        batch, size, now = [], 0, time.monotonic()
        while self._waiting and (not batch or size + len(self._waiting[0][0]) <= self.max_batch_size):
            pictures, future, queued = self._waiting.pop(0)
            if future.done():  # its request was cancelled (client gone, timeout): nothing to encode
                continue
            if now - queued > self.max_wait:
                future.set_exception(RequestError(f"the server is at capacity (the sketch waited over "
                                                  f"{self.max_wait:g} s for its turn); retry", 429))
                continue
            batch.append((pictures, future, queued))
            size += len(pictures)
        return batch

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._next_batch()
                if batch:
                    await self._encode(batch)
        finally:
            self._running = False

    async def _encode(self, batch: list[tuple[list[Image.Image], asyncio.Future, float]]) -> None:
        """One batch through the encoder; every request of it answered, with its rows or with the failure."""
        try:
            if self.observe is not None:
                self.observe(len(batch))
            vectors = await anyio.to_thread.run_sync(self.encode, [p for request, _, _ in batch for p in request])
        except BaseException as error:  # noqa: BLE001  (each waiting request gets the failure, not a hang)
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else RuntimeError("cancelled"))
            if not isinstance(error, Exception):
                raise
            return
        start = 0
        for request, future, _ in batch:
            if not future.done():
                future.set_result(vectors[start:start + len(request)])
            start += len(request)
