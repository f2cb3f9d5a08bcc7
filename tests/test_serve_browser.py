"""`cnnlab serve` in a real browser (issue 20): Playwright drives Debian's Chromium against the explorer served by
uvicorn on a free loopback port. It draws a stroke with the mouse, waits for the prediction, moves the ε slider,
switches layers, drops a corrupt file, and checks that the screenshots are not blank. Skipped, with the reason,
where Playwright or Chromium is missing (`.ci/run` installs Chromium)."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
STROKE = [(95, 60), (190, 60), (185, 80), (150, 150), (125, 230)]  # a 7, in canvas pixels


def _playwright():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (dev extra)")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium; .ci/run does it)")
    return sync_api


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """The explorer on a free 127.0.0.1 port, three runs side by side: the same LeNet-5 twice (two columns, one
    answer) and an ST-CNN (one epoch on 64 random images: only its transformer panel matters here)."""
    _playwright()
    import torch
    import uvicorn

    import cnnlab
    from cnnlab.serve import create_app, load_explorers

    scratch = tmp_path_factory.mktemp("browser")
    twin = scratch / "lenet5"
    shutil.copytree(trained_run, twin)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cnnlab.train("st-cnn", (images, torch.arange(64) % 4), epochs=1, batch_size=16, out=str(scratch / "st"),
                 progress=False)  # fmt: skip
    app = create_app(load_explorers([trained_run, twin, scratch / "st"], "cpu"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uvicorn_server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    uvicorn_server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def not_blank(png: bytes, what: str) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image.convert("L")).astype(float)
    assert pixels.std() > 20, f"the {what} screenshot is flat (std {pixels.std():.1f})"
    return pixels


def test_draw_predict_slide_epsilon_switch_layers_in_chromium(server, tmp_path):
    sync_api = _playwright()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1700, "height": 1000})
            failures: list[str] = []
            page.on("pageerror", lambda error: failures.append(str(error)))
            page.goto(server)
            page.wait_for_selector("body[data-ready='1']", timeout=15_000)
            assert page.locator("[data-run]").count() == 3
            assert page.locator("[data-run='lenet5'] .transformer-panel").is_hidden()

            # draw a stroke with the mouse; a prediction appears in both columns
            box = page.locator("#pad").bounding_box()
            page.mouse.move(box["x"] + STROKE[0][0], box["y"] + STROKE[0][1])
            page.mouse.down()
            for x, y in STROKE[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
            page.mouse.up()
            for run in ("lenet5", "lenet5-2"):
                page.wait_for_selector(f"[data-run='{run}'][data-predicted]", timeout=15_000)
                assert page.locator(f"[data-run='{run}'] .prediction-panel li").count() == 5
            first = page.locator("[data-run='lenet5']")
            assert first.get_attribute("data-predicted") == page.locator("[data-run='lenet5-2']").get_attribute(
                "data-predicted"
            )  # the same model twice: the same answer
            canvas = not_blank(page.locator("#pad").screenshot(), "canvas")
            assert (canvas > 200).mean() > 0.02 and (canvas < 50).mean() > 0.5  # white ink on black

            # the ε slider: five steps right, and each column shows FGSM at the new ε
            page.wait_for_selector("[data-run='lenet5'] .fgsm-panel[data-eps='0.10']", timeout=15_000)
            page.locator("#eps").focus()
            for _ in range(5):
                page.keyboard.press("ArrowRight")
            for run in ("lenet5", "lenet5-2"):
                page.wait_for_selector(f"[data-run='{run}'] .fgsm-panel[data-eps='0.15']", timeout=15_000)
            assert first.locator(".adversarial").get_attribute("src").startswith("data:image/png;base64,")

            # switch layers: c1 has 6 feature maps, c3 16
            for layer, maps in (("c1", 6), ("c3", 16)):
                first.locator("select.layer").select_option(layer)
                page.wait_for_selector(f"[data-run='lenet5'] .features-panel[data-layer='{layer}']", timeout=15_000)
                assert first.locator(".maps img").count() == maps
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-run] .occlusion, [data-run] .guided')]"
                ".every((img) => img.src.startsWith('data:image/png') && img.complete && img.naturalWidth > 0)",
                timeout=15_000,
            )
            # the spatial transformer's column shows its output and the region it sampled
            st = page.locator("[data-run='st']")
            assert st.locator(".transformer-panel").is_visible()
            page.wait_for_selector("[data-run='st'] .outline[data-drawn='1']", timeout=15_000)
            assert st.locator(".transformed").get_attribute("src").startswith("data:image/png;base64,")
            not_blank(st.locator(".outline").screenshot(), "transformer outline")
            whole = not_blank(page.screenshot(full_page=True), "page")
            assert (whole < 128).mean() > 0.05  # drawings, maps and text on the light page
            column = not_blank(first.screenshot(), "run column")
            assert column.shape[0] > 600

            # a corrupt file: the server's message shows in the page, no traceback
            page.locator("#file").set_input_files(
                files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"not an image at all"}]
            )
            error = first.locator(".run-error")
            error.wait_for(state="visible", timeout=15_000)
            assert "Cannot decode the uploaded image" in error.inner_text()
            assert "Traceback" not in page.content()
            assert failures == [], failures
        finally:
            browser.close()
