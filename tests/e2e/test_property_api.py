"""Generated requests against the real server (hypothesis): any endpoint, any body (random bytes, small images of
every mode, damaged images), present, missing or misplaced fields, any k, category and photo id, sent as
multipart, url-encoded or JSON. The server never answers 5xx, every 4xx is ``{"error": message}``, and it stays up."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

pytestmark = pytest.mark.slow

ENDPOINTS = ("search", "explain", "encode_sketch", "synthesize")
FILE_FIELD = {"search": "sketch", "explain": "sketch", "synthesize": "sketch", "encode_sketch": "images"}
FORMATS = {"L": ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"), "RGB": ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"),
           "RGBA": ("PNG", "WEBP", "TIFF", "GIF"), "P": ("PNG", "GIF", "BMP", "TIFF"), "1": ("PNG", "BMP", "TIFF"),
           "I;16": ("PNG", "TIFF"), "CMYK": ("JPEG", "TIFF")}
unicode = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


def sometimes(rare: st.SearchStrategy, often: st.SearchStrategy) -> st.SearchStrategy:
    """``often`` for three rolls of four, else ``rare``: most requests are well-formed but for one part."""
    return st.integers(0, 3).flatmap(lambda roll: often if roll < 3 else rare)


@st.composite
def images(draw: st.DrawFn) -> bytes:
    """A small valid image of a random mode, size and format, sometimes damaged."""
    mode = draw(st.sampled_from(sorted(FORMATS)))
    width, height = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert("L" if mode in ("1", "I;16") else "RGB")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=draw(st.integers(2, 256)))
    elif mode != image.mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=draw(st.sampled_from(FORMATS[mode])))
    data = buffer.getvalue()
    damage = draw(sometimes(st.sampled_from(["truncate", "flip"]), st.just("none")))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([draw(st.integers(0, 255))]) + data[position + 1:]
    return data


uploads = sometimes(st.binary(max_size=2048), images())
ks = sometimes(st.one_of(st.integers(-5, 2000), st.integers(-(10**30), 10**30), unicode,
                         st.sampled_from(["1.5", "true", "null", "[]", "{}", "1e309", "NaN", " 3 ", "0x10"])),
               st.integers(1, 300))
categories = sometimes(unicode, st.sampled_from(["animal-mammal", "Animal Mammal", "FOOD_FRUIT", "", "null", "3"]))
photo_ids = sometimes(unicode, st.one_of(st.integers(-(10**20), 10**20), st.integers(-2, 200)))
other_names = st.sampled_from(["sketch", "images", "image", "k", "category", "photo_id", "file", ""])


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(endpoint, httpx request kwargs): mostly well-formed, each part sometimes wrong."""
    endpoint = draw(st.sampled_from(ENDPOINTS))
    field = draw(sometimes(other_names, st.just(FILE_FIELD[endpoint])))
    count = draw(sometimes(st.integers(0, 3), st.just(1)))
    files = [(field, (draw(unicode) or "upload", draw(uploads), "application/octet-stream")) for _ in range(count)]
    data: dict[str, str] = {}
    wanted = {"search": ("k", "category"), "explain": ("photo_id",)}.get(endpoint, ())
    for name, values in (("k", ks), ("category", categories), ("photo_id", photo_ids)):
        if draw(sometimes(st.just(name not in wanted), st.booleans() if name in wanted else st.just(False))):
            data[name] = str(draw(values))
    if draw(sometimes(st.just(True), st.just(False))) and files:
        data[field] = "http://127.0.0.1:1/sketch.png"  # text where a file is expected
        files = []
    encoding = draw(sometimes(st.sampled_from(["urlencoded", "json"]), st.just("multipart")))
    if encoding == "json":
        return endpoint, {"content": json.dumps({**data, field: "x"}).encode(),
                          "headers": {"content-type": "application/json"}}
    if encoding == "urlencoded" or not files:
        return endpoint, {"data": data}
    return endpoint, {"files": files, "data": data}


@pytest.fixture(scope="module")
def http(service_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service_url, timeout=60) as http:
        yield http


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_no_generated_request_gets_a_server_error(http: httpx.Client, request: tuple[str, dict[str, Any]]):
    endpoint, kwargs = request
    response = http.post(f"/{endpoint}", **kwargs)
    event(f"{endpoint} {response.status_code}")  # pytest --hypothesis-show-statistics
    assert response.status_code < 500, f"{response.status_code} {response.text[:300]} for {endpoint}"
    if response.status_code >= 400:
        document = response.json()
        assert isinstance(document, dict) and isinstance(document["error"], str) and document["error"]
    else:
        assert response.status_code == 200
        document = response.json()
        if endpoint == "search":
            assert [hit["rank"] for hit in document["results"]] == list(range(1, len(document["results"]) + 1))
        elif endpoint == "encode_sketch":
            assert isinstance(document, list)


def test_the_server_is_still_up(http: httpx.Client):
    assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
    buffer = io.BytesIO()
    drawn = Image.new("L", (32, 32), 255)
    drawn.paste(0, (4, 14, 28, 17))  # a stroke: a blank page is refused (422, the sketch is empty)
    drawn.save(buffer, format="PNG")
    response = http.post("/search", files={"sketch": ("s.png", buffer.getvalue())}, data={"k": "2"})
    assert response.status_code == 200 and len(response.json()["results"]) == 2
