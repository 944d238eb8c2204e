"""The sketch pad on the real service, in headless Chromium: draw a known emoji's line art stroke by stroke,
let the page search as you draw, and find that emoji's photo among the results shown; a screenshot is kept
(``artifacts/test-screenshots/sketch_pad_live.png``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from browser import chromium_available, draw_strokes, headless_chromium, wait_for_page_ready, wait_for_state
from helpers import REPO_ROOT
from PIL import Image

from sbir.datasets.openmoji import openmoji_svg_dir
from sbir.datasets.strokes import VIEWBOX, line_layer_strokes

MISSING = chromium_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=f"no headless Chromium: {MISSING}")]
SCREENSHOT = REPO_ROOT / "artifacts" / "test-screenshots" / "sketch_pad_live.png"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def line_art(hexcode: str, max_points: int = 40) -> list[list[tuple[float, float]]]:
    """The open strokes of an OpenMoji's line layer as polylines in viewBox units (thinned for speed)."""
    strokes = line_layer_strokes((openmoji_svg_dir() / f"{hexcode}.svg").read_text(), hexcode)
    out = []
    for stroke in strokes:
        if stroke.filled or len(stroke.points) < 2:
            continue
        step = max(1, len(stroke.points) // max_points)
        points = stroke.points[::step].tolist() + [stroke.points[-1].tolist()]
        out.append([(float(x), float(y)) for x, y in points])
    return out


@pytest.mark.parametrize("hexcode", ["1F40C"])  # snail: an emoji of the gallery
def test_drawing_an_emoji_finds_its_photo(service_url: str, hexcode: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium() as driver:
        driver.get(f"{service_url}/ui/")
        assert wait_for_page_ready(driver) == "loaded"
        assert "174" in driver.find_element(By.TAG_NAME, "header").text  # the page read /info
        canvas = driver.find_element(By.ID, "pad")
        draw_strokes(driver, canvas, line_art(hexcode), size=VIEWBOX)
        wait_for_state(driver, "done", previous_searches=0, timeout=60)
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .result")
        shown = [card.get_attribute("data-instance-id") for card in cards]
        assert len(cards) == 12 and hexcode in shown, f"{hexcode} not among the results shown: {shown}"
        cards[shown.index(hexcode)].click()
        explanation = driver.find_element(By.ID, "explanation")
        WebDriverWait(driver, 20).until(lambda _: "explain capability" in explanation.text)  # HOG has no explain capability: the page shows the 4xx message
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    assert Path(SCREENSHOT).stat().st_size > 10_000


@pytest.mark.parametrize("model", ["dsn", "zse"])
def test_clicking_a_result_shows_the_explanation_picture(tiny_openmoji: Path, tmp_path: Path, model: str) -> None:
    """With a model that can explain (DSN by its exact patch-pair decomposition, ZSE-SBIR by its relation
    network), the clicked result's patch correspondences appear as a picture; ZSE-SBIR also synthesises."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from serving_support import bentoml_server, make_bundle

    home, bundle = make_bundle(tmp_path / model, tiny_openmoji / "images" / "photo", model=model)
    with bentoml_server("serving.service:SketchSearch", home, tmp_path / f"{model}.log",
                        {"ZSSBIR_BUNDLE": str(bundle)}) as (url, _), headless_chromium() as driver:
        sketch = next((tiny_openmoji / "images" / "sketch").glob("*/*.png")).read_bytes()
        synthesis = httpx.post(f"{url}/synthesize", files={"sketch": ("s.png", sketch, "image/png")}, timeout=60)
        if model == "zse":
            body = synthesis.json()
            assert synthesis.status_code == 200 and body["picture"].startswith("data:image/png")
            assert body["grid"] == [2, 2] and len(body["photo_ids"]) == body["num_photos"] == 8  # relation anchors
            assert all(0 <= cell[0] < 8 and 0 <= cell[1] < 2 and 0 <= cell[2] < 2 for row in body["sources"]
                       for cell in row)
        else:
            assert synthesis.status_code == 422 and "cannot synthesize" in synthesis.json()["error"]
        blank = _png(Image.new("RGB", (256, 256), "white"))  # a model that explains refuses an empty sketch
        for route, fields in (("/explain", {"photo_id": "0"}), ("/synthesize", {})):
            answer = httpx.post(f"{url}{route}", files={"sketch": ("s.png", blank, "image/png")}, data=fields,
                                timeout=60)
            expected = "the sketch is empty" if route == "/explain" or model == "zse" else "cannot synthesize"
            assert answer.status_code == 422 and expected in answer.json()["error"], (route, answer.text)
        driver.get(f"{url}/ui/")
        assert wait_for_page_ready(driver) == "loaded"
        draw_strokes(driver, driver.find_element(By.ID, "pad"), line_art("1F40C"), size=VIEWBOX)
        wait_for_state(driver, "done", previous_searches=0, timeout=60)
        driver.find_elements(By.CSS_SELECTOR, "#results .result")[0].click()
        picture = driver.find_element(By.ID, "explanation-img")
        WebDriverWait(driver, 30).until(lambda _: (picture.get_attribute("src") or "").startswith("data:image/png"))
        width = driver.execute_script("return arguments[0].naturalWidth;", picture)
        assert width > 200  # sketch and photo side by side with their heatmaps and matched patches
        driver.save_screenshot(str(SCREENSHOT.with_name(f"sketch_pad_explanation_{model}.png")))
