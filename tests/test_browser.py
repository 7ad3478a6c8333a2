"""The page in a real browser: Debian's Chromium driven by Playwright against the real server (uvicorn).

Chromium is a system package (`apt-get install chromium`; .ci/run installs it): without it this test fails
rather than skips, so CI cannot pass without having run it.
"""

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from helpers import SCRIBBLE, SEVEN, png
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from digits.idx import read_idx
from digits.measure import bound_socket
from digits.serve import create_app

pytestmark = pytest.mark.browser  # `make test-fast` (-m "not browser") runs without Chromium

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The app under uvicorn in a thread, on a free loopback port (bound here, so no race for it)."""
    sock = bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # set after the lifespan has loaded and warmed up the model
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server_url(small_model_path):
    """The small .keras model: no calibration metadata, so every answer is accepted."""
    with serving(create_app(small_model_path)) as url:
        yield url


@pytest.fixture(scope="module")
def calibrated_url(calibrated_bundle):
    """The small model's bundle with rejection metadata: refuses helpers.SCRIBBLE, accepts helpers.SEVEN."""
    with serving(create_app(calibrated_bundle)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url) -> Page:
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.goto(server_url)
    yield page
    page.close()


def draw(page: Page, *strokes: list[tuple[float, float]]) -> None:
    """Mouse strokes through points given as fractions of the drawing canvas (0..1 across and down)."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def percentages(page: Page) -> dict[int, float]:
    bars = page.locator(".bar")
    expect(bars).to_have_count(10)
    shown = {}
    for i in range(10):
        bar = bars.nth(i)
        shown[int(bar.get_attribute("data-digit"))] = float(bar.locator(".pct").inner_text().rstrip("%"))
    return shown


def preview_ink(page: Page) -> int:
    """Sum of the red channel of the 28x28 model-input preview."""
    return page.evaluate(
        "() => document.getElementById('preview').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0).reduce((a, b) => a + b, 0)"
    )


@pytest.mark.parametrize(
    ("digit", "strokes"),
    [
        ("1", [[(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)]]),
        ("7", [[(0.25, 0.2), (0.5, 0.2), (0.75, 0.2), (0.6, 0.5), (0.45, 0.85)]]),
    ],
)
def test_drawn_digit_is_recognised_with_bars(page, digit, strokes):
    draw(page, *strokes)
    expect(page.locator("#digit")).to_have_text(digit)
    expect(page.locator("#result")).to_have_attribute("data-state", "accepted")
    expect(page.locator("#verdict")).to_have_text(re.compile(r"^\d{1,2}% sure$"))
    shown = percentages(page)
    assert sum(shown.values()) == pytest.approx(100, abs=0.6)
    assert max(shown, key=shown.get) == int(digit)
    assert page.locator(".bar.top").get_attribute("data-digit") == digit
    assert preview_ink(page) > 0


def test_seven_in_two_strokes_then_clear(page):
    draw(page, [(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.6, 0.5), (0.45, 0.85)])
    expect(page.locator("#digit")).to_have_text("7")
    page.click("#clear")
    expect(page.locator("#digit")).to_have_text("")
    expect(page.locator("#result")).to_have_attribute("data-state", "empty")
    expect(page.locator("#verdict")).to_have_text("")
    assert page.locator(".bar .pct").all_inner_texts() == [""] * 10
    assert preview_ink(page) == 0


def pad_png(page: Page) -> str:
    return page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")


def test_undo_takes_back_the_last_stroke_then_the_first(page):
    expect(page.locator("#undo")).to_be_disabled()
    draw(page, [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)])
    expect(page.locator("#digit")).to_have_text("1")
    one = pad_png(page)
    draw(page, [(0.2, 0.15), (0.5, 0.15)])
    assert pad_png(page) != one
    page.click("#undo")
    assert pad_png(page) == one  # the canvas as it was before the second stroke
    expect(page.locator("#digit")).to_have_text("1")
    page.keyboard.press("Control+z")  # the shortcut takes back the first stroke: an empty pad
    expect(page.locator("#result")).to_have_attribute("data-state", "empty")
    expect(page.locator("#undo")).to_be_disabled()
    assert preview_ink(page) == 0


def test_uploaded_mnist_digit_is_recognised(page, tiny_mnist_dir, tmp_path):
    images = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    index = int(np.flatnonzero(labels == 2)[0])  # neither a drawn digit nor the empty state
    path = tmp_path / "two.png"
    path.write_bytes(png(images[index]))
    page.set_input_files("#upload", str(path))
    expect(page.locator("#digit")).to_have_text("2")
    assert sum(percentages(page).values()) == pytest.approx(100, abs=0.6)


def test_a_photo_over_the_body_limit_is_shrunk_in_the_browser(page, tmp_path):
    """A 3000x3000 noisy photo of a "7" (4 MB as PNG, over the 2 MiB limit) is sent shrunk, and recognised."""
    rng = np.random.default_rng(0)
    photo = 200 + rng.normal(0, 6, (3000, 3000, 3))
    photo[700:950, 700:2300] = 30  # the bar of the 7
    for row in range(950, 2500, 10):  # its stem, leaning left
        x = 2300 - (row - 950) * 800 // 1550
        photo[row : row + 10, x - 240 : x] = 30
    path = tmp_path / "photo.png"
    path.write_bytes(png(photo.clip(0, 255).astype(np.uint8)))
    assert path.stat().st_size > 2 * 1024 * 1024
    sizes = []
    page.on("request", lambda r: sizes.append(len(r.post_data_buffer or b"")) if "/api/" in r.url else None)
    page.set_input_files("#upload", str(path))
    expect(page.locator("#status")).to_contain_text("model", timeout=20_000)  # answered, or the error shown
    expect(page.locator("#digit")).to_have_text("7")
    assert sizes and max(sizes) < 2 * 1024 * 1024


def test_the_page_runs_under_its_content_security_policy(browser, server_url):
    page = browser.new_page()
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        response = page.goto(server_url)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        draw(page, [(0.5, 0.15), (0.5, 0.85)])
        expect(page.locator("#digit")).to_have_text("1")
        assert violations == []
    finally:
        page.close()


def test_phone_viewport_fits_and_touch_draws(browser, server_url):
    phone = browser.new_page(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    try:
        phone.goto(server_url)
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        box = phone.locator("#pad").bounding_box()
        assert box["width"] <= 390
        phone.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # a dot
        expect(phone.locator("#digit")).not_to_have_text("")
    finally:
        phone.close()


def settled(page: Page) -> None:
    """Wait until the answer for the final drawing is shown (not one for a stroke still being drawn)."""
    expect(page.locator("#result")).to_have_attribute("aria-busy", "false")


def test_a_scribble_is_refused_then_a_digit_is_accepted(browser, calibrated_url):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        page.goto(calibrated_url)
        result, digit, verdict = page.locator("#result"), page.locator("#digit"), page.locator("#verdict")
        draw(page, *SCRIBBLE)
        settled(page)
        expect(result).to_have_attribute("data-state", "rejected")
        expect(verdict).to_contain_text("doesn't look like a digit")
        expect(digit).not_to_have_text(re.compile(r"\d"))  # no big digit
        assert sum(percentages(page).values()) == pytest.approx(100, abs=0.6)  # the bars stay

        page.click("#clear")
        expect(result).to_have_attribute("data-state", "empty")
        draw(page, *SEVEN)
        settled(page)
        expect(result).to_have_attribute("data-state", "accepted")
        expect(digit).to_have_text("7")
        expect(verdict).to_have_text(re.compile(r"^9\d% sure$"))  # calibrated: 0.999 measured
        assert violations == []
    finally:
        page.close()


def test_an_unsure_answer_shows_the_two_candidates(page):
    """The server's answer is stubbed: a real model's "unsure" depends on how a drawing comes out."""
    p = [0.005, 0.01, 0.005, 0.01, 0.47, 0.02, 0.005, 0.03, 0.015, 0.43]
    answer = {
        "digit": 4,
        "probabilities": p,
        "accepted": False,
        "confidence": 0.47,
        "reason": "unsure between 4 and 9",
        "model": "0123456789ab",
        "input": [[0.0] * 28] * 28,
    }
    page.route("**/api/predict*", lambda route: route.fulfill(json=answer))
    draw(page, [(0.5, 0.15), (0.5, 0.85)])
    settled(page)
    expect(page.locator("#result")).to_have_attribute("data-state", "unsure")
    expect(page.locator("#digit")).to_have_text("4 or 9")
    expect(page.locator("#verdict")).to_contain_text("Not sure: 4 or 9?")
    candidates = page.locator(".bar.candidate")
    expect(candidates).to_have_count(2)
    assert [candidates.nth(i).get_attribute("data-digit") for i in range(2)] == ["4", "9"]
    color = page.evaluate("getComputedStyle(document.getElementById('digit')).color")
    assert color == "rgb(242, 193, 78)"  # style.css's --unsure, not the accepted blue


RED_PIXELS = """(selector) => {
    const d = document.querySelector(selector).getContext("2d").getImageData(0, 0, 28, 28).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] - d[i + 1] > 60) n++;
    return n;
}"""


def red_pixels(page: Page, selector: str = "#preview") -> int:
    """Pixels of a 28x28 canvas tinted red (the occlusion map's colour), not grey."""
    return page.evaluate(RED_PIXELS, selector)


def test_show_why_tints_the_ink_the_answer_relied_on(page):
    draw(page, [(0.25, 0.2), (0.5, 0.2), (0.75, 0.2), (0.6, 0.5), (0.45, 0.85)])
    expect(page.locator("#digit")).to_have_text("7")
    settled(page)
    assert red_pixels(page) == 0 and preview_ink(page) > 0
    page.click("#why")  # the drawing is sent again, with ?explain=true
    expect(page.locator("#why")).to_have_attribute("aria-pressed", "true")
    settled(page)
    assert red_pixels(page) > 10
    page.click("#why")
    settled(page)
    assert red_pixels(page) == 0 and preview_ink(page) > 0


def test_a_number_is_written_on_the_wide_canvas_and_read(page):
    page.click("#mode")
    expect(page.locator("#mode")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#title")).to_have_text("Write a number")
    size = page.evaluate(
        "() => [document.getElementById('pad').width, document.getElementById('pad').height]"
    )
    assert size == [840, 280]
    one = [(0.15, 0.15), (0.15, 0.5), (0.15, 0.85)]  # fractions of the wide canvas: x across 840 px
    seven = [(0.4, 0.2), (0.5, 0.2), (0.6, 0.2), (0.55, 0.5), (0.5, 0.85)]
    four = [(0.75, 0.15), (0.7, 0.55), (0.85, 0.55)], [(0.82, 0.3), (0.82, 0.85)]
    draw(page, one, seven, *four)
    expect(page.locator("#digit")).to_have_text("174")
    settled(page)
    expect(page.locator("#result")).to_have_attribute("data-state", "accepted")
    expect(page.locator("#verdict")).to_have_text("Read 174")
    cards = page.locator(".read-digit")
    expect(cards).to_have_count(3)
    expect(cards.nth(1).locator("figcaption")).to_have_text(re.compile(r"^7 \d{1,3}%$"))
    page.click("#why")
    settled(page)
    assert red_pixels(page, ".read-digit canvas") > 5
    page.click("#mode")  # back to one digit: the canvas square and empty again
    expect(page.locator("#title")).to_have_text("Draw a digit")
    expect(cards).to_have_count(0)
    assert page.evaluate("() => document.getElementById('pad').width") == 280
    expect(page.locator("#result")).to_have_attribute("data-state", "empty")


def test_a_number_with_a_doubtful_digit_says_so(page):
    """Stubbed answer, as for one unsure digit: which digits are doubtful shows on their cards."""
    sure = {
        "digit": 2,
        "probabilities": [0.0, 0.0, 1.0] + [0.0] * 7,
        "accepted": True,
        "confidence": 0.99,
        "reason": None,
        "box": [10, 10, 60, 90],
        "input": [[0.0] * 28] * 28,
    }
    doubt = {
        **sure,
        "digit": 4,
        "probabilities": [0.0] * 4 + [0.5] + [0.0] * 4 + [0.5],
        "accepted": False,
        "confidence": 0.5,
        "reason": "unsure between 4 and 9",
        "box": [90, 10, 60, 90],
    }
    reading = {"number": "24", "accepted": False, "digits": [sure, doubt], "model": "0123456789ab"}
    page.click("#mode")
    page.route("**/api/read*", lambda route: route.fulfill(json=reading))
    draw(page, [(0.2, 0.2), (0.2, 0.8)])
    settled(page)
    expect(page.locator("#digit")).to_have_text("2?")
    expect(page.locator("#result")).to_have_attribute("data-state", "unsure")
    expect(page.locator("#verdict")).to_contain_text("Not sure of 1 of 2 digits")
    expect(page.locator(".read-digit").nth(1)).to_have_attribute("data-state", "unsure")
    expect(page.locator(".read-digit").nth(1).locator("figcaption")).to_have_text("4 or 9?")


def test_a_correction_says_when_the_server_does_not_collect(page):
    draw(page, [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)])
    expect(page.locator("#digit")).to_have_text("1")
    settled(page)
    expect(page.locator("#correct")).to_be_visible()
    expect(page.locator("#correct-note")).to_have_text("This server does not collect corrections.")
    expect(page.locator("#choices button")).to_have_count(11)
    expect(page.locator('#choices button[data-label="7"]')).to_be_disabled()


def test_a_correction_is_stored_by_a_collecting_server(browser, small_model_path, tmp_path):
    with serving(create_app(small_model_path, collect=tmp_path / "collected")) as url:
        page = browser.new_page(viewport={"width": 900, "height": 700})
        try:
            page.goto(url)
            page.wait_for_load_state("networkidle")  # GET /api/model has said the server collects
            draw(page, [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)])
            expect(page.locator("#digit")).to_have_text("1")
            settled(page)
            expect(page.locator("#correct-note")).to_have_text("")
            page.click('#choices button[data-label="7"]')
            expect(page.locator("#correct-note")).to_have_text("Thanks: kept for review as 000001.png.")
            expect(page.locator('#choices button[data-label="7"]')).to_be_disabled()  # one per answer
            page.click("#mode")  # whole numbers are not offered for correction
            expect(page.locator("#correct")).to_be_hidden()
        finally:
            page.close()
    (item,) = [
        json.loads(line) for line in (tmp_path / "collected" / "labels.jsonl").read_text().splitlines()
    ]
    assert (item["file"], item["label"], item["answered"]) == ("000001.png", 7, 1)
    stored = np.asarray(Image.open(tmp_path / "collected" / "000001.png"))
    assert stored.shape == (280, 280) and stored.max() == 255  # the canvas as drawn: white ink on black


def canvas_ink(page: Page) -> int:
    """White pixels on the drawing canvas."""
    return page.evaluate(
        "() => { const c = document.getElementById('pad'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 0; i < d.length; i += 4) if (d[i] > 127) n++; return n; }"
    )


def test_the_pen_width_can_be_chosen_and_every_control_is_reachable_by_keyboard(page):
    line = [(0.2, 0.5), (0.8, 0.5)]
    draw(page, line)
    medium = canvas_ink(page)
    page.click("#clear")
    page.select_option("#pen", label="thick")
    draw(page, line)
    assert canvas_ink(page) > 1.3 * medium
    page.click("#clear")
    page.select_option("#pen", label="thin")
    draw(page, line)
    assert canvas_ink(page) < 0.8 * medium
    # Tab walks through the controls in order; each one shows where the focus is.
    focused = []
    page.locator("#clear").focus()  # Undo, before it, is disabled after a Clear
    for _ in range(5):
        focused.append(page.evaluate("() => document.activeElement.id"))
        page.keyboard.press("Tab")
    assert focused[:4] == ["clear", "mode", "why", "pen"], focused
    page.locator("#mode").focus()
    page.keyboard.press("Enter")  # a toggle works from the keyboard too
    expect(page.locator("#mode")).to_have_attribute("aria-pressed", "true")
