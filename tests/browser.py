"""Headless Chromium for browser tests: Debian's chromium and chromedriver driven by Selenium.

Nothing is downloaded at run time: the driver and the browser are always given by path (``make setup-system``
installs both), and Selenium Manager is told to stay offline. Paths can be overridden with ``CHROMIUM_BINARY``
and ``CHROMEDRIVER``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

# Selenium Manager must neither download drivers nor send statistics.
os.environ.setdefault("SE_AVOID_STATS", "true")
os.environ.setdefault("SE_OFFLINE", "true")

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_CHROMEDRIVER = "/usr/bin/chromedriver"

CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-pings",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "CertificateTransparencyComponentUpdater,AutofillServerCommunication",
    "--force-device-scale-factor=1",
)


def chromium_binary() -> str:
    return os.environ.get("CHROMIUM_BINARY") or DEFAULT_CHROMIUM


def chromedriver_binary() -> str:
    return os.environ.get("CHROMEDRIVER") or DEFAULT_CHROMEDRIVER


def chromium_available() -> str | None:
    """None when headless Chromium can be driven here; otherwise the reason why not."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for name, path in (("chromium", chromium_binary()), ("chromedriver", chromedriver_binary())):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{name} not found at {path} (make setup-system installs Debian's chromium and chromium-driver)"
    return None


@contextlib.contextmanager
def headless_chromium(window: tuple[int, int] = (1280, 1000)) -> Iterator["WebDriver"]:  # noqa: F821
    """A Selenium WebDriver on headless Chromium with a throw-away profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    reason = chromium_available()
    if reason:
        raise RuntimeError(reason)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver_binary(), log_output=os.devnull)
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def draw_strokes(driver, canvas, strokes: Sequence[Sequence[Sequence[float]]], size: float = 1.0,
                 step_px: float = 6.0, pointer: str = "mouse", pause_s: float = 0.0) -> None:
    """Draw polylines on ``canvas`` (a WebElement): each stroke is pointer down, small moves, pointer up.

    Points are in canvas-independent coordinates in ``[0, size]`` (``(0, 0)`` top left) and are mapped to the
    canvas's CSS box as offsets from the element centre (the W3C element origin, as Selenium's
    ``move_to_element_with_offset`` uses). ``pointer`` is ``mouse``, ``pen`` or ``touch``; ``pause_s`` waits
    between strokes. All strokes are sent in one action sequence.
    """
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    kinds = {"mouse": interaction.POINTER_MOUSE, "pen": interaction.POINTER_PEN, "touch": interaction.POINTER_TOUCH}
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'});", canvas)
    rect = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    width, height = float(rect[0]), float(rect[1])

    def offset(point: Sequence[float]) -> tuple[int, int]:
        x = min(max(float(point[0]) / size, 0.0), 1.0) * width - width / 2
        y = min(max(float(point[1]) / size, 0.0), 1.0) * height - height / 2
        # integer offsets strictly inside the element
        limit_x, limit_y = math.floor(width / 2) - 1, math.floor(height / 2) - 1
        return (max(-limit_x, min(limit_x, round(x))), max(-limit_y, min(limit_y, round(y))))

    builder = ActionBuilder(driver, mouse=PointerInput(kinds[pointer], pointer), duration=0)
    action = builder.pointer_action
    for index, stroke in enumerate(strokes):
        points = [offset(p) for p in stroke]
        if not points:
            continue
        if index and pause_s:
            action.pause(pause_s)
        action.move_to(canvas, *points[0])
        action.pointer_down()
        last = points[0]
        for target in points[1:]:
            distance = math.dist(last, target)
            steps = max(1, math.ceil(distance / step_px))
            for step in range(1, steps + 1):
                t = step / steps
                action.move_to(canvas, round(last[0] + (target[0] - last[0]) * t),
                               round(last[1] + (target[1] - last[1]) * t))
            last = target
        action.pointer_up()
    builder.perform()


def wait_for_page_ready(driver, timeout: float = 30.0) -> str:
    """Wait until the page has asked ``/info`` and shown its answer (``body.dataset.info``: loaded or failed)
    and is idle; returns how ``/info`` went. The page is idle from its first paint, before ``/info`` answers."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = "const d = document.body.dataset; return d.state === 'idle' ? (d.info || '') : '';"
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda drv: drv.execute_script(script))


def wait_for_state(driver, state: str, previous_searches: int = -1, timeout: float = 20.0) -> int:
    """Wait until ``body.dataset.state == state`` after more than ``previous_searches`` completed searches, with
    no search scheduled; returns the count of completed searches."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    script = ("const d = document.body.dataset;"
              "return [d.state || '', Number(d.searches || 0), d.pending === 'true'];")

    def ready(drv):
        current, searches, pending = drv.execute_script(script)
        return [searches] if current == state and searches > previous_searches and not pending else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(ready)[0]  # a list: 0 searches is falsy
    except TimeoutException:
        current, searches, pending = driver.execute_script(script)
        status = driver.execute_script("const s = document.getElementById('status'); return s && s.textContent;")
        raise TimeoutException(
            f"page state stayed {current!r} (searches={searches}, pending={pending}, status={status!r}); "
            f"wanted {state!r} after more than {previous_searches} searches within {timeout:g} s") from None


def searches(driver) -> int:
    """The count of completed searches the page reports."""
    return int(driver.execute_script("return Number(document.body.dataset.searches || 0);"))


INK_SCRIPT = """
const canvas = arguments[0];
const threshold = arguments[1];
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let ink = 0;
for (let i = 0; i < data.length; i += 4) if (data[i] < threshold) ink += 1;
return ink;
"""


def canvas_ink(driver, canvas, threshold: int = 128) -> int:
    """Pixels of the canvas whose red channel is below ``threshold`` (ink on white)."""
    return int(driver.execute_script(INK_SCRIPT, canvas, threshold))
