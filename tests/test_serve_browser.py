"""The page at / in a real headless Chromium (Debian's, driven by Playwright): upload a photo, read the answer.

``RESNETS_UPDATE_DOCS=1`` also saves the screenshot shown in the README (docs/serve.png).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from serve_server import serving  # noqa: E402

from resnets.pipeline import load_inference  # noqa: E402
from resnets.predict import predict_files  # noqa: E402
from resnets.serve import ServeConfig  # noqa: E402

pytestmark = pytest.mark.slow  # a headless browser
ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "examples" / "images" / "cifar10_cat.jpg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PREVIEW_WIDTH = ("width => { const img = document.getElementById('preview'); "
                 "return img.complete && img.naturalWidth === width; }")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_upload_through_the_page_shows_the_cli_answer() -> None:
    inf = load_inference("resnet20", "resnet20.cifar10", device="cpu")
    expected = next(predict_files(inf, [CAT], top=5, workers=0)).top
    with serving(inf, ServeConfig()) as port, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 560})
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(f"http://127.0.0.1:{port}/")
                    or r.url.startswith("blob:") else outside.append(r.url))
            page.goto(f"http://127.0.0.1:{port}/")
            sync_api.expect(page.locator("#model")).to_contain_text("resnet20")
            page.set_input_files("#file", str(CAT))
            page.wait_for_selector("body[data-state=done]", timeout=20_000)
            names = page.locator("#classes .name").all_inner_texts()
            shown = page.locator("#classes .probability").all_inner_texts()
            assert names[0] == expected[0][1] == "cat"
            assert names == [name for _, name, _ in expected]
            assert shown == [f"{100 * p:.2f}%" for *_, p in expected]
            page.wait_for_function(PREVIEW_WIDTH, arg=32)  # the photo itself
            widths = page.locator("#classes .bar span").evaluate_all("spans => spans.map(s => s.style.width)")
            percent = [float(w.removesuffix("%")) for w in widths]  # the browser writes 0.70% as 0.7%
            assert percent == [float(p.removesuffix("%")) for p in shown]  # bars as long as the probabilities
            page.check("#heatmap")  # again, with the heat map: the preview becomes /v1/explain's picture
            page.set_input_files("#file", [])
            page.set_input_files("#file", str(CAT))
            page.wait_for_selector("body[data-state=done]", timeout=20_000)
            sync_api.expect(page.locator("#preview")).to_have_attribute("alt", "the photo with the heat map of cat")
            page.wait_for_function(PREVIEW_WIDTH, arg=256)  # the explanation panel
            assert page.locator("#classes .name").all_inner_texts() == names
            assert not outside, f"the page loaded from elsewhere: {outside}"
            if os.environ.get("RESNETS_UPDATE_DOCS") == "1":
                page.screenshot(path=str(ROOT / "docs" / "serve.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_page_lists_the_models_and_asks_the_chosen_one() -> None:
    """With two models served, the page offers both and sends the photo to the one chosen (?model=NAME)."""
    from resnets.pipeline import Inference
    from resnets.preprocess import Preprocessing

    inf = load_inference("resnet20", "resnet20.cifar10", device="cpu")
    recipe = Preprocessing(inf.preprocessing.mean, inf.preprocessing.std)  # the photo at its own size
    wide = Inference(inf.model, recipe, inf.classes, "resnet20-any-size", inf.weights)
    with serving({"cifar": inf, "wide": wide}, ServeConfig()) as port, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            asked: list[str] = []
            page.on("request", lambda r: asked.append(r.url) if "/v1/predict" in r.url else None)
            page.goto(f"http://127.0.0.1:{port}/")
            sync_api.expect(page.locator("#models option")).to_have_count(2)
            sync_api.expect(page.locator("#model")).to_contain_text("resnet20 ·")
            page.select_option("#models", "wide")
            sync_api.expect(page.locator("#model")).to_contain_text("resnet20-any-size")
            page.set_input_files("#file", str(CAT))
            page.wait_for_selector("body[data-state=done]", timeout=20_000)
            assert asked == [f"http://127.0.0.1:{port}/v1/predict?top=5&model=wide"]
        finally:
            browser.close()
