"""The service's batching and capacity answers, without a server: ``EncodeBatcher`` merges concurrent requests
into batches and gives each exactly its own embeddings, encodes a lone request at once, refuses with a 429 a
request that waited past the budget, passes a failure to every request of its batch; ``RequestGuard`` turns a
request shed for capacity (BentoML's 503 "overloaded") into a 429 with ``Retry-After``."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from PIL import Image

from serving.batching import EncodeBatcher
from serving.guards import RETRY_AFTER_S, RequestGuard


def test_concurrent_requests_get_their_own_rows_from_merged_batches() -> None:
    batches: list[int] = []
    requests_per_batch: list[int] = []

    def encode(pictures: list[Image.Image]) -> np.ndarray:
        batches.append(len(pictures))
        return np.array([[picture.getpixel((0, 0))[0], picture.width] for picture in pictures], dtype=np.float32)

    async def main() -> list[np.ndarray]:
        batcher = EncodeBatcher(encode, max_latency_ms=60_000, observe=requests_per_batch.append)
        requests = [[Image.new("RGB", (size, 1), (10 * request + i, 0, 0)) for i, size in enumerate(range(1, n + 1))]
                    for request, n in enumerate([1, 3, 2, 1, 4, 1, 2, 5])]
        return requests, await asyncio.gather(*(batcher(pictures) for pictures in requests))

    requests, answers = asyncio.run(main())
    for request, (pictures, rows) in enumerate(zip(requests, answers, strict=True)):
        assert rows.tolist() == [[10 * request + i, i + 1] for i in range(len(pictures))]
    assert batches == [sum(len(pictures) for pictures in requests)]  # all waiting when the first batch formed
    assert requests_per_batch == [len(requests)]


def test_a_lone_request_goes_at_once_and_late_ones_past_the_budget_get_a_429() -> None:
    import threading
    import time

    from serving.guards import RequestError

    started, batches = threading.Event(), []

    def slow_encode(pictures: list[Image.Image]) -> np.ndarray:
        batches.append(len(pictures))
        started.set()
        time.sleep(0.3)  # every request that arrives meanwhile waits at least this long
        return np.zeros((len(pictures), 2), dtype=np.float32)

    async def main() -> list:
        batcher = EncodeBatcher(slow_encode, max_latency_ms=50)
        first = asyncio.ensure_future(batcher([Image.new("RGB", (1, 1))]))
        while not started.is_set():
            await asyncio.sleep(0.001)
        late = [asyncio.ensure_future(batcher([Image.new("RGB", (1, 1))])) for _ in range(3)]
        return await asyncio.gather(first, *late, return_exceptions=True)

    first, *late = asyncio.run(main())
    assert first.shape == (1, 2) and batches == [1]  # encoded alone, without waiting for company
    assert all(isinstance(error, RequestError) and error.error_code == 429 for error in late)

    def broken(pictures: list[Image.Image]) -> np.ndarray:
        raise RuntimeError("encoder failed")

    async def failing() -> list:
        batcher = EncodeBatcher(broken, max_latency_ms=60_000)
        return await asyncio.gather(*(batcher([Image.new("RGB", (1, 1))]) for _ in range(3)), return_exceptions=True)

    assert [str(error) for error in asyncio.run(failing())] == ["encoder failed"] * 3


def _respond(status: int, body: dict):
    async def app(scope, receive, send) -> None:
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
    return app


def _call(app, method: str) -> tuple[int, dict, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "headers": [(b"content-length", b"0")], "path": "/search"}
    asyncio.run(RequestGuard(app, image_bytes=1000)(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_request_shed_for_capacity_is_a_429_with_retry_after() -> None:
    status, headers, body = _call(_respond(503, {"error": "process is overloaded"}), "POST")
    assert status == 429 and headers["retry-after"] == str(RETRY_AFTER_S) and "at capacity" in body["error"]
    status, headers, body = _call(_respond(429, [{"error": "the server is at capacity"}]), "POST")
    assert status == 429 and headers["retry-after"] == str(RETRY_AFTER_S) and body == {"error": "the server is at capacity"}
    status, headers, _ = _call(_respond(503, {"status": "not ready"}), "GET")  # /readyz keeps its 503
    assert status == 503 and "retry-after" not in headers


def test_a_cancelled_request_neither_breaks_nor_delays_the_others() -> None:
    import threading
    import time

    started, batches = threading.Event(), []

    def slow_encode(pictures: list[Image.Image]) -> np.ndarray:
        batches.append(len(pictures))
        started.set()
        time.sleep(0.1)
        return np.arange(len(pictures), dtype=np.float32)[:, None]

    async def main() -> list:
        batcher = EncodeBatcher(slow_encode, max_latency_ms=60_000)
        first = asyncio.ensure_future(batcher([Image.new("RGB", (1, 1))]))
        while not started.is_set():
            await asyncio.sleep(0.001)
        gone, kept = (asyncio.ensure_future(batcher([Image.new("RGB", (1, 1))] * n)) for n in (2, 3))
        await asyncio.sleep(0)
        gone.cancel()  # its client went away while it waited
        return await asyncio.gather(first, kept)

    first, kept = asyncio.run(main())
    assert first.tolist() == [[0.0]] and kept.tolist() == [[0.0], [1.0], [2.0]] and batches == [1, 3]
