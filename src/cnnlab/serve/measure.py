"""How fast the explorer answers: ``python -m cnnlab.serve.measure RUN_DIR`` (docs/benchmarks.md, docs/serve.md).

It serves the run on a free loopback port (uvicorn in a thread, as ``cnnlab serve`` does), posts the PNG the page
sends for a drawn digit (a 280×280 canvas with a stroke, framed like MNIST), and reports for each view the
server's own time (the ``total`` of its ``Server-Timing`` header: reading the upload, decoding, computing, encoding
the PNGs) and the round trip seen by the client, median and 90th percentile over ``--repeats`` requests after
``--warmup`` unmeasured ones. Requests go one at a time, so nothing waits for a lane; the last row measures
predictions while another client keeps the slow lane busy with occlusions (they share the CPU, not a lane).
"""

from __future__ import annotations

import argparse
import io
import re
import socket
import statistics
import threading
import time
import urllib.request
from pathlib import Path


def drawn_digit() -> bytes:
    """A '7' as the page sends it: white strokes 20 px wide on a black 280×280 canvas, PNG."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(image).line([(95, 60), (190, 60), (150, 150), (125, 230)], fill=255, width=20, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _post(url: str, body: bytes) -> tuple[float, float]:
    """(server total ms from Server-Timing, client round trip ms) of one POST."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "image/png"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        timing = response.headers["Server-Timing"]
    round_trip = (time.perf_counter() - started) * 1e3
    return float(re.search(r"total;dur=([\d.]+)", timing).group(1)), round_trip


def _row(view: str, server_ms: tuple[float, ...], trip_ms: tuple[float, ...]) -> dict:
    return {
        "view": view,
        "server_median": statistics.median(server_ms),
        "server_p90": statistics.quantiles(server_ms, n=10)[-1],
        "round_trip_median": statistics.median(trip_ms),
    }


def measure(run_dir: str | Path, repeats: int = 30, warmup: int = 3, device: str = "cpu") -> list[dict]:
    """Per view: median and 90th-percentile server and round-trip milliseconds for one drawn digit."""
    import uvicorn

    from cnnlab.serve import create_app, load_explorers

    (explorer,) = load_explorers([run_dir], device)
    layer = explorer.default_layer
    views = [
        ("predict", "predict?frame=1"),
        ("feature maps, c1", "features?frame=1&layer=c1" if "c1" in explorer.layers else None),
        (f"feature maps, {layer}", f"features?frame=1&layer={layer}"),
        ("FGSM, ε = 0.1", "fgsm?frame=1&eps=0.1"),
        ("occlusion", "occlusion?frame=1"),
        (f"deconvnet, {layer}", f"deconv?frame=1&layer={layer}"),
        ("guided backprop", "guided-backprop?frame=1"),
    ]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(create_app([explorer]), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/api/runs/{explorer.run_id}/"
    body, rows = drawn_digit(), []
    try:
        for name, path in views:
            if path is None:
                continue
            for _ in range(warmup):
                _post(base + path, body)
            server_ms, trip_ms = zip(*(_post(base + path, body) for _ in range(repeats)), strict=True)
            rows.append(_row(name, server_ms, trip_ms))
        # Lanes: predictions while occlusions run back to back in another client (the slow lane stays busy).
        busy = threading.Event()

        def occlude() -> None:
            while not busy.is_set():
                _post(base + "occlusion?frame=1", body)

        background = threading.Thread(target=occlude, daemon=True)
        background.start()
        try:
            time.sleep(0.2)
            server_ms, trip_ms = zip(*(_post(base + "predict?frame=1", body) for _ in range(repeats)), strict=True)
        finally:
            busy.set()
            background.join(timeout=30)
        rows.append(_row("predict, occlusions running", server_ms, trip_ms))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    import platform

    import torch

    parser = argparse.ArgumentParser(prog="python -m cnnlab.serve.measure", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (e.g. LeNet-5 trained on MNIST)")
    parser.add_argument("--repeats", type=int, default=30, help="measured requests per view (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests first (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args.run_dir, args.repeats, args.warmup)
    print(
        f"{Path(args.run_dir).name}: torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, {args.repeats} requests per view"
    )
    print(f"{'view':<28} {'server median':>14} {'server p90':>11} {'round trip':>11}")
    for row in rows:
        print(
            f"{row['view']:<28} {row['server_median']:>11.1f} ms {row['server_p90']:>8.1f} ms "
            f"{row['round_trip_median']:>8.1f} ms"
        )


if __name__ == "__main__":
    main()
