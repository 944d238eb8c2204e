"""The served APIs, through ``serving.client`` and raw httpx, against the real ``bentoml serve`` (HOG over the tiny
OpenMoji-ZS gallery): search (k, best-first, category filter, image URLs), info, the refused capabilities of this
model, the encoders, the OpenAPI document, health and the sketch pad page."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serving.client import Explanation, SearchHit, SearchResponse, ServiceError, SketchSearchClient

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HIT_FIELDS = {"rank", "id", "score", "category", "instance_id", "label", "image_url", "style"}
API_ROUTES = {"/search": ["sketch"], "/explain": ["sketch", "photo_id"], "/synthesize": ["sketch"],
              "/encode_sketch": ["images"], "/encode_photo": ["images"]}


@pytest.fixture(scope="module")
def client(service_url: str) -> Iterator[SketchSearchClient]:
    with SketchSearchClient(service_url) as client:
        yield client


@pytest.fixture(scope="module")
def http(service_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service_url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def info(client: SketchSearchClient) -> dict:
    return client.info()


@pytest.fixture(scope="module")
def sketches(tiny_openmoji: Path) -> list[Path]:
    return sorted((tiny_openmoji / "images" / "sketch").glob("*/*.png"))


@pytest.fixture(scope="module")
def photos(tiny_openmoji: Path) -> list[Path]:
    return sorted((tiny_openmoji / "images" / "photo").glob("*/*.png"))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_info_describes_model_gallery_index_and_limits(info: dict):
    assert info["model"]["method"] == "baseline_hog"
    assert {"version", "dataset", "protocol", "score"} <= set(info["model"])
    assert info["gallery_size"] == 174 and info["embedding_dim"] > 0
    assert info["categories"] == sorted(info["categories"]) and "animal-mammal" in info["categories"]
    assert "search" in info["capabilities"] and "explain" not in info["capabilities"]
    assert info["index"]["kind"] in {"exact", "hnsw", "ivf"}
    assert info["limits"] == {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000, "max_side": 12_000,
                              "max_k": 1000}


def test_search_returns_k_hits_best_first(client: SketchSearchClient, sketches: list[Path], info: dict):
    response = client.search(sketches[10], k=7)
    assert isinstance(response, SearchResponse) and response.k == 7
    assert response.gallery_size == info["gallery_size"] and response.model["method"] == "baseline_hog"
    assert response.elapsed_ms >= 0
    hits = response.results
    assert len(hits) == 7 and all(isinstance(hit, SearchHit) for hit in hits)
    assert [hit.rank for hit in hits] == list(range(1, 8))
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert len({hit.id for hit in hits}) == 7 and all(0 <= hit.id < info["gallery_size"] for hit in hits)
    for hit in hits:
        assert hit.image_url == f"/gallery/{hit.id}.png"
        assert hit.category in info["categories"] and hit.instance_id and hit.label


def test_raw_search_answers_the_documented_json(http: httpx.Client, sketches: list[Path]):
    response = http.post("/search", files={"sketch": ("s.png", sketches[0].read_bytes(), "image/png")},
                         data={"k": "3"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert set(document) == {"results", "k", "gallery_size", "model", "elapsed_ms"}
    assert len(document["results"]) == 3 and all(set(hit) == HIT_FIELDS for hit in document["results"])
    default = http.post("/search", files={"sketch": ("s.png", sketches[0].read_bytes(), "image/png")})
    assert default.status_code == 200 and len(default.json()["results"]) == 12  # k defaults to 12


def test_image_urls_resolve_to_pngs(client: SketchSearchClient, http: httpx.Client, sketches: list[Path]):
    for hit in client.search(sketches[3], k=4).results:
        response = http.get(hit.image_url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content.startswith(PNG_SIGNATURE)
        assert Image.open(io.BytesIO(response.content)).size[0] > 0
        assert client.thumbnail(hit.id) == response.content


def test_unknown_thumbnail_is_a_404_with_a_message(client: SketchSearchClient, http: httpx.Client):
    with pytest.raises(ServiceError) as caught:
        client.thumbnail(10_000)
    assert caught.value.status == 404 and "not in the gallery" in caught.value.message
    assert http.get("/gallery/-1.png").json()["error"]
    assert http.get("/gallery/abc.png").status_code in (404, 422)


def test_a_gallery_photo_searched_as_a_sketch_finds_itself(client: SketchSearchClient, photos: list[Path]):
    for photo in photos[::40]:
        hits = client.search(photo, k=5).results
        assert photo.stem in [hit.instance_id for hit in hits]


def test_path_bytes_and_pil_image_give_the_same_answer(client: SketchSearchClient, sketches: list[Path]):
    path = sketches[20]
    answers = [client.search(image, k=5).results for image in
               (path, str(path), path.read_bytes(), Image.open(path))]
    assert all([hit.id for hit in answer] == [hit.id for hit in answers[0]] for answer in answers)


@pytest.mark.parametrize("category", ["animal-mammal", "Animal Mammal", "ANIMAL_MAMMAL", " animal - mammal "])
def test_category_filter_returns_only_that_category(client: SketchSearchClient, sketches: list[Path],
                                                    category: str):
    hits = client.search(sketches[0], k=12, category=category).results
    assert 1 <= len(hits) <= 12 and {hit.category for hit in hits} == {"animal-mammal"}
    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_every_category_of_info_can_be_filtered(client: SketchSearchClient, sketches: list[Path], info: dict):
    seen = 0
    for category in info["categories"]:
        hits = client.search(sketches[1], k=1000, category=category).results
        assert hits and {hit.category for hit in hits} == {category}
        seen += len(hits)
    assert seen == info["gallery_size"]


def test_style_filter_over_http(client: SketchSearchClient, sketches: list[Path], info: dict):
    assert info["styles"] == ["photo"]  # a folder gallery: one style, the folder's name
    hits = client.search(sketches[0], k=5, style="photo", category="animal-mammal").results
    assert hits and {(hit.style, hit.category) for hit in hits} == {("photo", "animal-mammal")}
    assert len(client.search(sketches[0], k=1000, style="photo").results) == info["gallery_size"]
    with pytest.raises(ServiceError) as caught:
        client.search(sketches[0], style="fluent_3d")
    assert caught.value.status == 422 and "style: 'fluent_3d' is not a style of the gallery; known: photo" in str(caught.value)


def test_unknown_category_is_a_422_listing_the_known_ones(client: SketchSearchClient, sketches: list[Path],
                                                          info: dict):
    with pytest.raises(ServiceError) as caught:
        client.search(sketches[0], category="no such category")
    assert caught.value.status == 422
    assert "no such category" in caught.value.message and "known:" in caught.value.message
    assert all(name in caught.value.message for name in info["categories"][:5])


def test_k_above_the_gallery_size_returns_the_whole_gallery(client: SketchSearchClient, sketches: list[Path],
                                                            info: dict):
    size, max_k = info["gallery_size"], info["limits"]["max_k"]
    for k in (size + 1, max_k):
        hits = client.search(sketches[5], k=k).results
        assert sorted(hit.id for hit in hits) == list(range(size))
    with pytest.raises(ServiceError) as caught:
        client.search(sketches[5], k=max_k + 1)
    assert caught.value.status == 422 and f"limit of {max_k}" in caught.value.message


def test_explain_is_refused_naming_the_capability(client: SketchSearchClient, http: httpx.Client,
                                                  sketches: list[Path]):
    with pytest.raises(ServiceError) as caught:
        client.explain(sketches[0], photo_id=3)
    assert caught.value.status == 422 and "explain capability" in caught.value.message
    assert "baseline_hog" in caught.value.message
    raw = http.post("/explain", files={"sketch": ("s.png", sketches[0].read_bytes())}, data={"photo_id": "3"})
    assert raw.status_code == 422 and set(raw.json()) == {"error"}


def test_synthesize_is_refused(http: httpx.Client, sketches: list[Path]):
    response = http.post("/synthesize", files={"sketch": ("s.png", sketches[0].read_bytes(), "image/png")})
    assert response.status_code == 422 and "cannot synthesize" in response.json()["error"]


def test_encoders_return_unit_rows_of_the_model_dimension(client: SketchSearchClient, sketches: list[Path],
                                                          photos: list[Path], info: dict):
    for encode, images in ((client.encode_sketches, sketches[:5]), (client.encode_photos, photos[:3])):
        rows = encode(images)
        assert rows.shape == (len(images), info["embedding_dim"])
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-4)
    assert client.encode_sketches([]).shape[0] == 0


def test_raw_encode_takes_repeated_images_fields(http: httpx.Client, sketches: list[Path], info: dict):
    files = [("images", (f"{i}.png", path.read_bytes(), "image/png")) for i, path in enumerate(sketches[:3])]
    response = http.post("/encode_photo", files=files)
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 3 and all(len(row) == info["embedding_dim"] for row in rows)


def test_batched_encodes_keep_each_request_its_own_rows(client: SketchSearchClient, sketches: list[Path]):
    """Adaptive batching merges concurrent requests: each must still get exactly its own embeddings."""
    groups = [sketches[i: i + 1 + i % 3] for i in range(0, 24, 3)]
    alone = [client.encode_sketches(group) for group in groups]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(client.encode_sketches, groups))
    for single, batched in zip(alone, together, strict=True):
        np.testing.assert_allclose(batched, single, atol=1e-5)


def test_openapi_lists_every_api_with_its_request_schema(http: httpx.Client):
    response = http.get("/docs.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    for route, required in API_ROUTES.items():
        body = paths[route]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(required) <= set(body["required"]) and set(required) <= set(body["properties"])
    search = paths["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert search["sketch"]["format"] == "binary" and search["k"]["type"] == "integer"
    images = paths["/encode_sketch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert images["properties"]["images"]["type"] == "array"
    assert {"/info", "/gallery/{photo_id}.png", "/livez", "/readyz", "/metrics"} <= set(paths)
    assert "get" in paths["/info"] and "get" in paths["/gallery/{photo_id}.png"]


def test_health_endpoints_answer(client: SketchSearchClient, http: httpx.Client):
    assert http.get("/livez").status_code == 200 and http.get("/readyz").status_code == 200
    assert client.ready()
    metrics = http.get("/metrics")
    assert metrics.status_code == 200 and "bentoml_service_request" in metrics.text


def test_ready_is_false_when_nothing_listens():
    from serving_support import free_port

    with SketchSearchClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        assert not client.ready()


def test_sketch_pad_page_is_served(http: httpx.Client):
    page = http.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="pad"' in page.text
    assert http.get("/ui/app.js").status_code == 200
    home = http.get("/")
    assert home.status_code in (302, 307) and home.headers["location"].endswith("/ui/")


def test_method_not_allowed_is_json(http: httpx.Client):
    response = http.get("/search")
    assert response.status_code == 405 and response.json()["error"]


def test_client_reads_explanations_and_error_bodies():
    """The client's parsing, on canned answers (HOG cannot explain, so the real server never sends one)."""
    answer = {"score": 0.5, "photo_id": 3, "method": "m", "picture": "data:image/png;base64,AA==",
              "matches": [{"sketch_patch": [0, 1], "photo_patch": [1, 1], "weight": 0.9}], "sketch_grid": [2, 2]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/explain":
            assert b'name="photo_id"' in request.content and b'name="sketch"' in request.content
            return httpx.Response(200, json=answer)
        if request.url.path == "/info":
            return httpx.Response(503, text="not ready")
        return httpx.Response(400, content=json.dumps({"error": "sketch: bad"}).encode())

    with SketchSearchClient("http://service") as client:
        client._http = httpx.Client(base_url="http://service", transport=httpx.MockTransport(handler))
        explanation = client.explain(Image.new("L", (4, 4)), 3)
        assert explanation == Explanation(0.5, 3, "m", answer["picture"], tuple(answer["matches"]))
        with pytest.raises(ServiceError, match="sketch: bad") as caught:
            client.search(b"bytes")
        assert caught.value.status == 400
        with pytest.raises(ServiceError, match="not ready"):
            client.info()
