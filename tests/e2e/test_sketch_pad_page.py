"""The browser sketch pad (serving/static) in headless Chromium against a fake service.

No BentoML here: a stdlib HTTP server on 127.0.0.1 serves ``serving/static/`` under ``/ui/`` and fakes
``/search``, ``/explain``, ``/info`` and ``/gallery/<id>.png``. The fake search decodes the posted PNG and answers
with as many results as the drawing has ink (one per ``INK_PER_RESULT`` pixels), so the results on the page prove
that the drawn strokes reached the server.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from browser import canvas_ink, chromium_available, draw_strokes, headless_chromium, searches, wait_for_page_ready, wait_for_state
from PIL import Image

MISSING = chromium_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=f"no headless Chromium: {MISSING}")]

REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC = REPO_ROOT / "serving" / "static"
SCREENSHOTS = REPO_ROOT / "artifacts" / "test-screenshots"
INK_THRESHOLD = 128  # red channel below this is ink (the page draws black on white)
INK_PER_RESULT = 150
TOO_LITTLE_INK = 147  # pixels of the 384² pad: 0.1 %, the real service's blank threshold (sbir.ink.BLANK_INK_FRACTION)
GALLERY_SIZE = 40
CATEGORIES = ("animal-mammal", "food-fruit", "travel-places", "objects-tool")
STYLES = ("openmoji_zs", "twemoji", "fluent_3d")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def ink_pixels(png: bytes) -> tuple[int, tuple[int, int]]:
    image = Image.open(io.BytesIO(png))
    rgb = np.asarray(image.convert("RGB"))
    return int((rgb[..., 0] < INK_THRESHOLD).sum()), image.size


def expected_count(ink: int, k: int) -> int:
    return min(k, GALLERY_SIZE, ink // INK_PER_RESULT)


class FakeService:
    """What the fake endpoints received (read by the tests)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.searches: list[dict] = []
        self.explains: list[dict] = []
        self.explain_picture = "data:image/png;base64," + base64.b64encode(
            png_bytes(Image.new("RGB", (96, 48), (220, 40, 40)))).decode()

    def search_count(self) -> int:
        with self.lock:
            return len(self.searches)

    def last_search(self) -> dict:
        with self.lock:
            return dict(self.searches[-1])


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None, str | None]]:
    """name → (payload, filename, content type) of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise ValueError("not multipart/form-data")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_payload(decode=True) or b"", part.get_filename(), part.get_content_type())
    return fields


def make_handler(state: FakeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet test output
            pass

        def send_body(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, status: int, payload: dict) -> None:
            self.send_body(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path in ("/", "/ui"):
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", "/ui/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path.startswith("/ui/"):
                name = path[len("/ui/"):] or "index.html"
                target = (STATIC / name).resolve()
                if STATIC.resolve() not in target.parents or not target.is_file():
                    self.send_json(404, {"error": f"no such file: {name}"})
                else:
                    self.send_body(200, target.read_bytes(),
                                   CONTENT_TYPES.get(target.suffix, "application/octet-stream"))
            elif path == "/info":
                self.send_json(200, {"model": {"method": "dsn", "version": "fake-1"}, "gallery_size": GALLERY_SIZE,
                                     "capabilities": ["search", "explain"], "limits": {"max_k": 48},
                                     "categories": list(CATEGORIES), "styles": list(STYLES)})
            elif path.startswith("/gallery/") and path.endswith(".png"):
                photo = int(path[len("/gallery/"):-len(".png")])
                shade = (photo * 37) % 200
                self.send_body(200, png_bytes(Image.new("RGB", (64, 64), (shade, 120, 255 - shade))), "image/png")
            else:
                self.send_json(404, {"error": f"not found: {path}"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            try:
                fields = parse_multipart(self.headers.get("Content-Type", ""), body)
                sketch, filename, content_type = fields["sketch"]
                ink, size = ink_pixels(sketch)
            except Exception as error:  # noqa: BLE001 - the page must have sent a readable PNG
                self.send_json(400, {"error": f"bad request: {error!r}"})
                return
            if self.path == "/search":
                k = int(fields["k"][0])
                category = fields["category"][0].decode() if "category" in fields else None
                style = fields["style"][0].decode() if "style" in fields else None
                with state.lock:
                    state.searches.append({"ink": ink, "size": size, "k": k, "category": category, "style": style,
                                           "filename": filename, "content_type": content_type})
                if ink < TOO_LITTLE_INK:  # as the real service answers a blank or near-blank sketch
                    self.send_json(422, {"error": "sketch: the sketch is empty (its strokes cover 0.010% of the "
                                                  "picture; at least 0.1% is needed): draw something to search with"})
                    return
                count = expected_count(ink, k)
                results = []
                for rank in range(1, count + 1):
                    photo = (rank * 7) % GALLERY_SIZE
                    results.append({"rank": rank, "id": photo, "score": round(0.95 - 0.0137 * rank, 6),
                                    "category": category or CATEGORIES[photo % len(CATEGORIES)],
                                    "instance_id": f"1F{400 + photo}", "label": f"emoji {photo}",
                                    "image_url": f"/gallery/{photo}.png",
                                    "style": style or STYLES[photo % len(STYLES)]})
                self.send_json(200, {"results": results, "k": k, "gallery_size": GALLERY_SIZE,
                                     "model": {"method": "dsn", "version": "fake-1"}, "elapsed_ms": 1.5})
            elif self.path == "/explain":
                photo = int(fields["photo_id"][0])
                with state.lock:
                    state.explains.append({"photo_id": photo, "ink": ink})
                if photo % 2:
                    self.send_json(422, {"error": "model dsn has no explain capability"})
                else:
                    self.send_json(200, {"score": 0.812, "picture": state.explain_picture, "method": "dsn-fake",
                                         "matches": [{"sketch_box": [0, 0, 10, 10], "photo_box": [0, 0, 8, 8],
                                                      "similarity": 0.9}]})
            else:
                self.send_json(404, {"error": f"not found: {self.path}"})

    return Handler


@pytest.fixture(scope="module")
def fake_service() -> Iterator[tuple[str, FakeService]]:
    state = FakeService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-sbir-service", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def driver():
    with headless_chromium(window=(1280, 1000)) as drv:
        yield drv


@pytest.fixture
def page(driver, fake_service):
    """The sketch pad freshly loaded, model information shown."""
    base, state = fake_service
    driver.get(base + "/ui/")
    assert wait_for_page_ready(driver) == "loaded"
    assert "dsn" in driver.find_element("id", "model-info").text
    return driver, state


def results_on_page(driver) -> list[dict]:
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#results .result')).map((card) => ({
            id: card.dataset.id, instanceId: card.dataset.instanceId, category: card.dataset.category,
            style: card.dataset.style,
            rank: card.querySelector('.rank').textContent, score: card.querySelector('.score').textContent,
            src: card.querySelector('img').getAttribute('src')}));""")


# Two strokes on a 100×100 grid: a diagonal and a horizontal line.
TWO_STROKES = [[(15, 20), (50, 55), (85, 85)], [(10, 75), (90, 75)]]


def test_draw_search_explain_undo_clear(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver, state = page
    canvas = driver.find_element(By.ID, "pad")
    assert driver.execute_script("return getComputedStyle(arguments[0]).touchAction;", canvas) == "none"
    assert driver.find_element(By.ID, "pen-width").get_attribute("value") == "4"
    assert driver.find_element(By.ID, "k").get_attribute("value") == "12"
    assert driver.find_element(By.ID, "explain-hint").is_displayed()
    assert "40 photos" in driver.find_element(By.ID, "model-info").text
    assert canvas_ink(driver, canvas) == 0
    assert driver.execute_script("return document.body.dataset.state") == "idle"

    # Two strokes → one debounced search carrying the drawing.
    before = searches(driver)
    draw_strokes(driver, canvas, TWO_STROKES, size=100)
    done = wait_for_state(driver, "done", before)
    ink = canvas_ink(driver, canvas)
    posted = state.last_search()
    assert posted["content_type"] == "image/png" and posted["filename"] == "sketch.png"
    assert posted["size"] == (384, 384)
    assert posted["ink"] > 1000, f"the posted sketch is (nearly) blank: {posted}"
    assert posted["ink"] == ink, "the server must get exactly what the canvas shows"
    assert posted["k"] == 12 and posted["category"] is None
    shown = results_on_page(driver)
    assert len(shown) == expected_count(ink, 12) == 12
    first = shown[0]
    assert first["rank"] == "#1" and first["score"] == f"{0.95 - 0.0137:.3f}" and first["src"] == "/gallery/7.png"
    assert first["instanceId"] == "1F407" and first["category"]
    status = driver.find_element(By.ID, "status").text
    assert status.startswith("12 results in ") and " ms" in status

    # An even id is explained with a picture; an odd one shows the service's error message.
    driver.find_element(By.CSS_SELECTOR, "#results .result[data-id='14']").click()
    panel = driver.find_element(By.ID, "explanation")
    picture = driver.find_element(By.ID, "explanation-img")
    WebDriverWait(driver, 10).until(lambda d: picture.is_displayed() and d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth", picture) == 96)
    assert picture.get_attribute("src").startswith("data:image/png;base64,")
    assert "score 0.812" in panel.text
    assert state.explains[-1]["photo_id"] == 14 and state.explains[-1]["ink"] == ink

    driver.find_element(By.CSS_SELECTOR, "#results .result[data-id='7']").click()
    WebDriverWait(driver, 10).until(lambda d: "no explain capability" in panel.text)
    assert panel.is_displayed() and not picture.is_displayed()
    assert "model dsn has no explain capability" in panel.text

    # Category and k go with the search.
    category = driver.find_element(By.ID, "category")
    category.send_keys("food-fruit")
    done = wait_for_state(driver, "done", done)
    assert state.last_search()["category"] == "food-fruit"
    assert {r["category"] for r in results_on_page(driver)} == {"food-fruit"}

    # The photo style (from /info) goes with the search too; "every style" sends none.
    style = Select(driver.find_element(By.ID, "style"))
    assert [o.get_attribute("value") for o in style.options] == ["", *STYLES]
    style.select_by_value("fluent_3d")
    done = wait_for_state(driver, "done", done)
    assert state.last_search()["style"] == "fluent_3d" and state.last_search()["category"] == "food-fruit"
    assert {r["style"] for r in results_on_page(driver)} == {"fluent_3d"}
    style.select_by_value("")
    done = wait_for_state(driver, "done", done)
    assert state.last_search()["style"] is None

    # Undo removes the last stroke (less ink, a new search with fewer results); Ctrl+Z the first one.
    driver.find_element(By.ID, "undo").click()
    after_undo = canvas_ink(driver, canvas)
    assert 0 < after_undo < ink
    done = wait_for_state(driver, "done", done)
    assert state.last_search()["ink"] == after_undo
    assert len(results_on_page(driver)) == expected_count(after_undo, 12)

    draw_strokes(driver, canvas, [[(50, 10), (50, 90)]], size=100)
    done = wait_for_state(driver, "done", done)
    with_third = canvas_ink(driver, canvas)
    assert with_third > after_undo
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement.blur();")  # Ctrl+Z in the category field is the field's
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    assert canvas_ink(driver, canvas) == after_undo
    done = wait_for_state(driver, "done", done)

    # Screenshot of a drawn sketch, its results and an explanation.
    driver.find_element(By.CSS_SELECTOR, "#results .result[data-id='14']").click()
    WebDriverWait(driver, 10).until(lambda d: picture.is_displayed())
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / "sketch_pad_fake.png"))

    # Clear empties the pad and the results; nothing is searched for an empty pad.
    posts = state.search_count()
    driver.find_element(By.ID, "clear").click()
    assert canvas_ink(driver, canvas) == 0
    WebDriverWait(driver, 5).until(lambda d: d.execute_script("return document.body.dataset.state") == "idle")
    assert results_on_page(driver) == []
    assert not panel.is_displayed()
    time.sleep(0.8)
    assert state.search_count() == posts
    assert driver.find_element(By.ID, "undo").get_attribute("disabled") is not None
    # The only console error allowed is the browser's note about the expected 422.
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert all("/explain" in message and "422" in message for message in errors), errors


def test_a_first_dot_asks_for_more_drawing_not_an_error(page):
    """The service refuses a near-blank sketch (422, "the sketch is empty"): the page says to keep drawing, shows
    no error and no results, and searches normally once there is more ink."""
    from selenium.webdriver.common.by import By

    driver, state = page
    canvas = driver.find_element(By.ID, "pad")
    before = searches(driver)
    draw_strokes(driver, canvas, [[(50, 50), (50.5, 50.5)]], size=100)
    before = wait_for_state(driver, "done", before)
    status = driver.find_element(By.ID, "status")
    assert "Keep drawing" in status.text and "error" not in (status.get_attribute("class") or "")
    assert results_on_page(driver) == []
    draw_strokes(driver, canvas, [[(10, 20), (90, 80)]], size=100)
    wait_for_state(driver, "done", before)
    assert len(results_on_page(driver)) == expected_count(canvas_ink(driver, canvas), 12)


def test_quick_strokes_are_debounced(page):
    from selenium.webdriver.common.by import By

    driver, state = page
    canvas = driver.find_element(By.ID, "pad")
    strokes = [[(10 + 15 * i, 10), (10 + 15 * i, 90)] for i in range(6)]
    before, posts = searches(driver), state.search_count()
    draw_strokes(driver, canvas, strokes, size=100, pause_s=0.05)
    wait_for_state(driver, "done", before)
    time.sleep(0.8)  # anything else scheduled would have been sent by now
    completed, sent = searches(driver) - before, state.search_count() - posts
    assert 1 <= completed < len(strokes) and 1 <= sent < len(strokes), (completed, sent)
    assert state.last_search()["ink"] == canvas_ink(driver, canvas)
    assert len(results_on_page(driver)) == expected_count(canvas_ink(driver, canvas), 12)


def test_upload_an_image_instead(page, tmp_path: Path):
    from selenium.webdriver.common.by import By

    driver, state = page
    canvas = driver.find_element(By.ID, "pad")
    picture = Image.new("RGB", (200, 100), "white")
    picture.paste((0, 0, 0), (20, 20, 180, 80))  # 160×60 black box, scaled ×1.92 into the 384 px pad
    path = tmp_path / "drawing.png"
    picture.save(path)
    before = searches(driver)
    driver.find_element(By.ID, "upload").send_keys(str(path))
    wait_for_state(driver, "done", before)
    ink = canvas_ink(driver, canvas)
    assert abs(ink - 160 * 60 * 1.92 ** 2) < 0.05 * 160 * 60 * 1.92 ** 2
    assert state.last_search()["ink"] == ink
    # aspect kept: white bands above and below the centred picture
    assert driver.execute_script(
        "return Array.from(arguments[0].getContext('2d').getImageData(192, 10, 1, 1).data).slice(0, 3)",
        canvas) == [255, 255, 255]
    driver.find_element(By.ID, "undo").click()
    assert canvas_ink(driver, canvas) == 0
    assert driver.execute_script("return document.body.dataset.state") == "idle"
