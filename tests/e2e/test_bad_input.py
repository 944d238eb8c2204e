"""Bad and unusual input against the real server: valid-but-unusual images are answered (200), bad requests are
refused with a 4xx and ``{"error": message}`` naming the field or the limit, nothing is ever a 5xx, and the server
answers a good search after each of them. A second server with small limits (``ZSSBIR_MAX_*``) gets the oversized
bodies, with and without a Content-Length."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

SMALL_MAX_BYTES = 200_000
SMALL_LIMITS = {"ZSSBIR_MAX_BYTES": str(SMALL_MAX_BYTES), "ZSSBIR_MAX_SIDE": "100", "ZSSBIR_MAX_K": "5"}


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@cache
def drawing() -> Image.Image:
    """An asymmetric black-on-white drawing (an L and a dot), so rotations change its embedding."""
    image = Image.new("RGB", (96, 64), "white")
    image.paste((0, 0, 0), (10, 8, 18, 56))
    image.paste((0, 0, 0), (10, 48, 60, 56))
    image.paste((0, 0, 0), (70, 10, 84, 24))
    return image


def noise(size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    return encode(drawing(), "JPEG", exif=exif, quality=95)


def animated(fmt: str) -> bytes:
    frames = [drawing(), drawing().rotate(180), Image.new("RGB", (96, 64), "black")]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)


def a_dot() -> bytes:
    """A tap on the pad: 9 dark pixels on a 256² page (below the blank threshold, sbir.ink.BLANK_INK_FRACTION)."""
    image = Image.new("L", (256, 256), 255)
    image.paste(0, (100, 100, 103, 103))
    return encode(image)


def transparent() -> bytes:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (10, 10, 50, 20))
    return encode(image)


UNUSUAL_IMAGES: dict[str, Callable[[], bytes]] = {
    "cmyk-jpeg": lambda: encode(drawing().convert("CMYK"), "JPEG"),
    "palette-png": lambda: encode(drawing().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)),
    "16-bit-grey-png": lambda: encode(Image.fromarray(np.asarray(drawing().convert("L")).astype(np.uint16) * 257)),
    "rgba-transparent-png": transparent,
    "la-png": lambda: encode(drawing().convert("LA")),
    "grey-png": lambda: encode(drawing().convert("L")),
    "1-bit-png": lambda: encode(drawing().convert("1")),
    "exif-rotated-jpeg": exif_rotated,
    "animated-gif": lambda: animated("GIF"),
    "animated-png": lambda: animated("PNG"),
    "webp": lambda: encode(drawing(), "WEBP"),
    "bmp": lambda: encode(drawing(), "BMP"),
    "tiff": lambda: encode(drawing(), "TIFF", compression="tiff_lzw"),
    "small-30x20": lambda: encode(drawing().resize((30, 20))),
    "thin-100x3": lambda: encode(drawing().resize((100, 3))),
    "cmyk-tiff": lambda: encode(drawing().convert("CMYK"), "TIFF"),
    "float-tiff": lambda: encode(drawing().convert("F"), "TIFF"),
}


@dataclass(frozen=True)
class Bad:
    """A refused request: ``path`` with httpx ``request`` kwargs, the expected status(es), words the answer names."""

    request: Callable[[], dict[str, Any]]
    status: tuple[int, ...]
    mentions: tuple[str, ...] = ()
    path: str = "/search"
    method: str = "POST"


def sketch(data: bytes | Callable[[], bytes], **fields: Any) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        content = data() if callable(data) else data
        return {"files": {"sketch": ("sketch.png", content, "image/png")},
                "data": {key: str(value) for key, value in fields.items()}}
    return build


def good_png() -> bytes:
    return encode(drawing())


def truncated(fmt: str) -> Callable[[], bytes]:
    def build() -> bytes:
        data = encode(noise(), fmt)
        return data[: len(data) // 2]
    return build


BAD: dict[str, Bad] = {
    "not-an-image": Bad(sketch(b"this is not an image at all"), (400,), ("sketch", "not an image")),
    "html-as-image": Bad(sketch(b"<html><body>hi</body></html>"), (400,), ("sketch",)),
    "truncated-png": Bad(sketch(truncated("PNG")), (400,), ("sketch", "truncated")),
    "truncated-jpeg": Bad(sketch(truncated("JPEG")), (400,), ("sketch", "truncated")),
    "png-header-only": Bad(sketch(lambda: good_png()[:40]), (400,), ("sketch",)),
    "decompression-bomb": Bad(sketch(lambda: encode(Image.new("1", (20000, 20000)))), (413,),
                              ("sketch", "decompression bomb")),
    "beyond-the-side-limit": Bad(sketch(lambda: encode(Image.new("1", (13000, 8)))), (413,),
                                 ("sketch", "13000×8", "12000")),
    "beyond-the-pixel-limit": Bad(sketch(lambda: encode(Image.new("1", (7000, 7000)))), (413,),
                                  ("sketch", "7000×7000", "40000000")),
    "declared-huge-dimensions": Bad(sketch(png_declaring(12000, 12000)), (413,), ("sketch",)),
    "zero-width": Bad(sketch(png_declaring(0, 16)), (400,), ("sketch",)),
    "zero-size": Bad(sketch(png_declaring(0, 0)), (400,), ("sketch",)),
    "empty-file": Bad(sketch(b""), (400,), ("sketch", "empty")),
    "json-body": Bad(lambda: {"json": {"sketch": "abc", "k": 3}}, (400,), ("sketch",)),
    "text-plain": Bad(lambda: {"content": b"draw me a cat", "headers": {"content-type": "text/plain"}}, (400,),
                      ("json",)),
    "form-without-file": Bad(lambda: {"data": {"k": "3"}}, (400,), ("sketch", "required")),
    "file-under-wrong-name": Bad(lambda: {"files": {"image": ("s.png", good_png(), "image/png")}}, (400,),
                                 ("image", "sketch")),
    "sketch-as-text": Bad(lambda: {"data": {"sketch": "http://127.0.0.1:1/x.png"}}, (400,), ("sketch", "file")),
    "k-as-file": Bad(lambda: {"files": {"sketch": ("s.png", good_png()), "k": ("k", b"\xff\xfe\x00")}},
                     (400,), ("k",)),
    "category-as-file": Bad(lambda: {"files": {"sketch": ("s.png", good_png()), "category": ("c", b"\x89PNG")}},
                            (400,), ("category",)),
    "multipart-without-boundary": Bad(lambda: {"content": b"--x\r\n",
                                               "headers": {"content-type": "multipart/form-data"}}, (400,),
                                      ("boundary",)),
    "broken-multipart": Bad(lambda: {"content": b"--x\r\nContent-Disposition: form-data; name=\"sketch\"\r\n\r\nab",
                                     "headers": {"content-type": "multipart/form-data; boundary=x"}}, (400,),
                            ("sketch",)),
    "pickle-body": Bad(lambda: {"content": b"\x80\x04K\x01.",
                                "headers": {"content-type": "application/vnd.bentoml+pickle"}}, (415,),
                       ("pickle",)),
    "blank-white": Bad(sketch(lambda: encode(Image.new("RGB", (400, 300), "white"))), (422,),
                       ("sketch", "empty")),
    "blank-transparent": Bad(sketch(lambda: encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))), (422,),
                             ("sketch", "empty")),
    "blank-one-colour-1x1": Bad(sketch(lambda: encode(Image.new("RGB", (1, 1)))), (422,), ("sketch", "empty")),
    "blank-black-100x1": Bad(sketch(lambda: encode(Image.new("L", (100, 1)))), (422,), ("sketch", "empty")),
    "near-blank-a-dot": Bad(sketch(a_dot), (422,), ("sketch", "empty")),
    "k-zero": Bad(sketch(good_png, k=0), (422,), ("k", ">= 1")),
    "k-negative": Bad(sketch(good_png, k=-1), (422,), ("k", ">= 1")),
    "k-not-a-number": Bad(sketch(good_png, k="abc"), (400,), ("k", "integer")),
    "k-fractional": Bad(sketch(good_png, k="2.5"), (400,), ("k",)),
    "k-above-max-k": Bad(sketch(good_png, k=1001), (422,), ("k", "limit of 1000")),
    "k-huge": Bad(sketch(good_png, k=10**40), (422,), ("k", "limit")),
    "unknown-category": Bad(sketch(good_png, category="dragons"), (422,), ("category", "dragons", "known")),
    "explain-photo-id-unknown": Bad(sketch(good_png, photo_id=10_000), (404, 422), ("explain",), "/explain"),
    "explain-photo-id-negative": Bad(sketch(good_png, photo_id=-5), (404, 422), ("explain",), "/explain"),
    "explain-photo-id-not-a-number": Bad(sketch(good_png, photo_id="seven"), (400,), ("photo_id",), "/explain"),
    "explain-without-photo-id": Bad(sketch(good_png), (400,), ("photo_id", "required"), "/explain"),
    "explain-bad-image": Bad(sketch(b"nope", photo_id=1), (400,), ("sketch",), "/explain"),
    "synthesize-empty": Bad(sketch(b""), (400,), ("sketch", "empty"), "/synthesize"),
    "encode-one-bad-image": Bad(lambda: {"files": [("images", ("a.png", good_png())), ("images", ("b.png", b"x"))]},
                                (400,), ("images[1]",), "/encode_sketch"),
    "encode-without-images": Bad(lambda: {"data": {"k": "1"}}, (400,), ("images",), "/encode_photo"),
    "encode-text-images": Bad(lambda: {"data": {"images": "abc"}}, (400,), ("images",), "/encode_sketch"),
    "get-on-post-route": Bad(lambda: {}, (405,), ("not allowed",), "/search", "GET"),
    "unknown-route": Bad(lambda: {"files": {"sketch": ("s.png", b"x")}}, (404,), ("not found",), "/nowhere"),
    "unknown-thumbnail": Bad(lambda: {}, (404,), ("not in the gallery",), "/gallery/9999.png", "GET"),
}


def message_of(response: httpx.Response) -> tuple[str, str]:
    """(the ``error`` field, everything the answer says, lower case) of a JSON error answer."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    document = response.json()
    assert isinstance(document, dict) and isinstance(document.get("error"), str), document
    return document["error"], json.dumps(document, ensure_ascii=False).lower()


@pytest.fixture(scope="module")
def http(service_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service_url, timeout=60) as http:
        yield http


def assert_good_search(http: httpx.Client) -> None:
    response = http.post("/search", files={"sketch": ("s.png", encode(drawing()), "image/png")}, data={"k": "3"})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 3


@pytest.mark.parametrize("name", list(UNUSUAL_IMAGES))
def test_unusual_but_valid_images_are_searched(http: httpx.Client, name: str):
    response = http.post("/search", files={"sketch": ("upload", UNUSUAL_IMAGES[name](), "application/octet-stream")},
                         data={"k": "4"})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 4
    encoded = http.post("/encode_sketch", files=[("images", ("upload", UNUSUAL_IMAGES[name]()))])
    assert encoded.status_code == 200 and len(encoded.json()) == 1
    assert_good_search(http)


def embed(http: httpx.Client, *images: bytes) -> np.ndarray:
    response = http.post("/encode_sketch", files=[("images", (f"{i}", data)) for i, data in enumerate(images)])
    assert response.status_code == 200, response.text
    return np.asarray(response.json())


def test_exif_orientation_is_applied(http: httpx.Client):
    """The EXIF-rotated JPEG is encoded like the upright picture, not like the stored (unrotated) pixels."""
    upright = drawing().transpose(Image.Transpose.ROTATE_270)  # what orientation 6 displays
    rotated, displayed, stored = embed(http, exif_rotated(), encode(upright, "JPEG", quality=95),
                                       encode(drawing(), "JPEG", quality=95))
    assert rotated @ displayed > 0.95
    assert rotated @ displayed > rotated @ stored + 0.05


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_animated_images_use_their_first_frame(http: httpx.Client, fmt: str):
    first, = embed(http, encode(drawing(), fmt))
    whole, = embed(http, animated(fmt))
    assert first @ whole > 0.98


@pytest.mark.parametrize("name", list(BAD))
def test_bad_requests_are_refused_with_a_message(http: httpx.Client, name: str):
    case = BAD[name]
    response = http.request(case.method, case.path, **case.request())
    assert response.status_code in case.status, f"{response.status_code}: {response.text[:500]}"
    error, said = message_of(response)
    assert error.strip()
    for word in case.mentions:
        assert word.lower() in said, f"{word!r} not in {said[:500]}"
    assert_good_search(http)


def test_the_server_is_still_alive(http: httpx.Client):
    assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
    assert_good_search(http)


@pytest.fixture(scope="module")
def small_server(serving_bundle: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second server whose limits are small: 200 kB bodies, 100 px sides, k ≤ 5."""
    from serving_support import bentoml_server

    home, bundle = serving_bundle
    log = tmp_path_factory.mktemp("small_service") / "service.log"
    with bentoml_server("serving.service:SketchSearch", home, log, {"ZSSBIR_BUNDLE": str(bundle), **SMALL_LIMITS}) \
            as (url, process), httpx.Client(base_url=url, timeout=60) as http:
        yield http, process, log


def multipart(payload: bytes, **fields: str) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://service/search", files={"sketch": ("big.png", payload, "image/png")},
                            data=fields)
    return request.read(), request.headers["content-type"]


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start: start + size]


def test_small_limits_are_reported(small_server: Any):
    http, _, _ = small_server
    assert http.get("/info").json()["limits"] == {"max_bytes": SMALL_MAX_BYTES, "max_pixels": 40_000_000,
                                                  "max_side": 100, "max_k": 5}


def test_declared_oversized_body_is_refused_before_reading(small_server: Any):
    http, _, _ = small_server
    body, content_type = multipart(np.random.default_rng(0).bytes(1_000_000))
    response = http.post("/search", content=body, headers={"content-type": content_type})
    assert response.status_code == 413
    error, _ = message_of(response)
    assert "exceeds the limit" in error and str(len(body)) in error
    assert_good_search(http)


def test_oversized_file_within_the_body_allowance_is_refused(small_server: Any):
    http, _, _ = small_server
    response = http.post("/search", files={"sketch": ("big.png", b"\0" * (SMALL_MAX_BYTES + 10_000))})
    assert response.status_code == 413
    error, _ = message_of(response)
    assert error.startswith("sketch:") and f"limit of {SMALL_MAX_BYTES} bytes" in error
    assert_good_search(http)


def test_chunked_oversized_body_is_refused(small_server: Any):
    """No Content-Length (a generator body goes chunked): refused with a 4xx all the same."""
    http, _, _ = small_server
    body, content_type = multipart(np.random.default_rng(1).bytes(1_000_000))
    response = http.post("/search", content=chunks(body), headers={"content-type": content_type})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413  # the whole body is read, the file then weighed
    assert f"limit of {SMALL_MAX_BYTES} bytes" in message_of(response)[0]
    garbage = http.post("/search", content=chunks(b"\xff" * 1_000_000), headers={"content-type": content_type})
    assert 400 <= garbage.status_code < 500
    assert_good_search(http)


def test_small_side_and_k_limits_are_enforced(small_server: Any):
    http, _, _ = small_server
    wide = http.post("/search", files={"sketch": ("w.png", encode(Image.new("L", (101, 10))))})
    assert wide.status_code == 413 and "101×10" in message_of(wide)[0]
    many = http.post("/search", files={"sketch": ("s.png", encode(drawing().resize((80, 50))))}, data={"k": "6"})
    assert many.status_code == 422 and "limit of 5" in message_of(many)[0]
    assert_good_search(http)


def test_small_server_survived_without_server_errors(small_server: Any):
    http, process, log = small_server
    assert process.poll() is None
    assert http.get("/livez").status_code == 200
    assert "status=5" not in log.read_text(errors="replace")


def test_a_bad_image_fails_only_its_own_request_in_a_batch(service_url: str) -> None:
    """Adaptive batching merges concurrent encode requests; a bad one is refused before it joins the batch."""
    from concurrent.futures import ThreadPoolExecutor

    def post(data: bytes) -> int:
        files = [("images", ("x.png", data, "image/png"))]
        return httpx.post(f"{service_url}/encode_sketch", files=files, timeout=60).status_code

    bodies = [good_png()] * 12 + [b"not an image"] * 4
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(post, bodies))
    assert statuses[:12] == [200] * 12 and statuses[12:] == [400] * 4


def test_a_refused_request_is_logged_in_one_line(small_server: Any):
    http, _, log = small_server
    marker = f"k: {97} exceeds"
    response = http.post("/search", files={"sketch": ("s.png", good_png())}, data={"k": "97"})
    assert response.status_code == 422 and marker in response.json()["error"]
    deadline = time.monotonic() + 10
    while marker not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in log.read_text(errors="replace").splitlines() if marker in line]
    assert len(lines) == 1 and "refused POST /search: 422 k: 97 exceeds" in lines[0], lines
    assert "Traceback" not in log.read_text(errors="replace")
