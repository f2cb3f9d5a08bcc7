"""docs/images/serve.png: the explorer (`cnnlab serve`) in headless Chromium, a 7 drawn with the mouse.

    python scripts/serve_screenshot.py runs/lenet5-mnist runs/lenet5-mnist-adversarial

Serves the runs on a free loopback port (uvicorn in a thread), draws the stroke through Playwright's mouse, sets
ε, waits until every panel (prediction, feature maps, occlusion, deconvnet, guided backprop, FGSM, curves,
confusion matrix) is filled, and saves the full page.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STROKE = [(95, 60), (190, 60), (185, 80), (150, 150), (125, 230)]  # a 7, in canvas pixels


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from cnnlab.serve import create_app, load_explorers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories, shown side by side")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "serve.png"))
    parser.add_argument("--eps", type=float, default=0.15, help="the ε slider's value (default: 0.15)")
    parser.add_argument("--layer", default="c1", help="the feature maps' layer (default: c1)")
    args = parser.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(create_app(load_explorers(args.runs, "cpu")), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 340 + 420 * len(args.runs), "height": 900})
            page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}/")
            page.wait_for_selector("body[data-ready='1']")
            page.locator("#eps").fill(str(args.eps))  # a range input takes fill(); it fires `input`
            for select in page.locator("select.layer").all():
                select.select_option(args.layer)
            box = page.locator("#pad").bounding_box()
            page.mouse.move(box["x"] + STROKE[0][0], box["y"] + STROKE[0][1])
            page.mouse.down()
            for x, y in STROKE[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
            page.mouse.up()
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-run] img')].filter((img) => img.offsetParent)"
                ".every((img) => img.complete && img.naturalWidth > 0) && "
                "![...document.querySelectorAll('.confusion-caption')].some((p) => p.textContent.startsWith('comp'))",
                polling=250,  # ms; not on animation frames, which a headless page may not render
                timeout=120_000,
            )
            page.wait_for_timeout(500)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
