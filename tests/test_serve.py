"""`cnnlab serve` (issue 20): the explorer's API, in process (Starlette's TestClient) on real trained runs: every view
answers with what the library computes, runs sit side by side, and bad input (a path, an oversize or corrupt
upload, a bad layer or ε) gets a clear JSON error, never a traceback. The page itself is driven in Chromium by
tests/test_serve_browser.py."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnlab.cli import main

pytest.importorskip("starlette")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the dev extra)")

with warnings.catch_warnings():  # Starlette ≥ 1.0 prefers `httpx2` and warns about `httpx`, which still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from cnnlab.serve import Limits, create_app, load_explorers
from cnnlab.serve.images import check_upload, frame_like_mnist

ROOT = Path(__file__).resolve().parents[1]
SMALL = Limits(max_bytes=200_000, max_pixels=1_000_000)  # small limits, so oversize uploads stay cheap to make


def drawn_digit(size: int = 280, small: bool = False) -> bytes:
    """A '7' as the page sends it: light strokes on a black canvas, PNG."""
    image = Image.new("L", (size, size), 0)
    scale = size / 280 * (0.3 if small else 1)
    points = [(95, 60), (190, 60), (150, 150), (125, 230)]
    ImageDraw.Draw(image).line([(x * scale, y * scale) for x, y in points], fill=255, width=max(2, int(20 * scale)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_pixels(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image).copy()


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory) -> Path:
    """lenet5-modern (ReLU, max pooling) on the digits, one epoch: the deconvnet and guided backprop with ReLUs."""
    out = tmp_path_factory.mktemp("serve") / "modern"
    assert main(["train", "--model", "lenet5-modern", "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def client(trained_run, relu_run):
    app = create_app(load_explorers([trained_run, relu_run], "cpu"), SMALL)
    with TestClient(app) as test_client:
        yield test_client


def post(client, view: str, body: bytes | None = None, run: str = "lenet5", **query):
    return client.post(f"/api/runs/{run}/{view}", content=drawn_digit() if body is None else body, params=query)


def test_top_k_is_a_whole_number_in_range(client):
    assert [len(post(client, "predict", top_k=k).json()["top"]) for k in (1, 3, 100)] == [1, 3, 10]
    for bad, message in (("2.5", "top_k must be a whole number"), ("0", "between 1 and 100")):
        response = post(client, "predict", top_k=bad)
        assert response.status_code == 400 and message in response.json()["error"]


def test_the_runs_are_listed_with_their_layers_and_views(client):
    answer = client.get("/api/runs").json()
    assert [r["id"] for r in answer["runs"]] == ["lenet5", "modern"]
    lenet = answer["runs"][0]
    assert lenet["model"] == "lenet5" and lenet["data"] == "digits" and lenet["classes"] == [str(i) for i in range(10)]
    assert lenet["layers"] == ["c1", "s2", "c3", "s4", "c5"] and lenet["default_layer"] in lenet["layers"]
    assert lenet["input_size"] == [1, 32, 32] and lenet["epochs"] == 3
    assert "transformer" not in lenet["views"] and {"predict", "fgsm", "occlusion", "confusion"} <= set(lenet["views"])
    assert answer["limits"] == {"max_bytes": SMALL.max_bytes, "max_pixels": SMALL.max_pixels}


def test_prediction_is_what_the_library_predicts_for_the_same_file(client, trained_run, tmp_path):
    from cnnlab.workflows import load

    digit = tmp_path / "seven.png"
    digit.write_bytes(drawn_digit())
    expected = load(trained_run, "cpu").predict([digit], top_k=5)[0]
    response = post(client, "predict")
    assert response.status_code == 200
    top = response.json()["top"]
    assert [t["class"] for t in top] == [name for name, _ in expected]
    assert [t["probability"] for t in top] == pytest.approx([p for _, p in expected], abs=1e-6)
    assert png_pixels(response.json()["input"]).shape == (32, 32)  # what the network saw
    assert re.fullmatch(r"wait;dur=[\d.]+, compute;dur=[\d.]+, total;dur=[\d.]+", response.headers["server-timing"])


def test_framing_a_drawing_like_mnist_centres_its_ink_in_20_of_28_pixels():
    pixels = torch.zeros(1, 100, 100, dtype=torch.uint8)
    pixels[0, 5:25, 10:20] = 255  # 20 tall, 10 wide, in a corner
    framed = frame_like_mnist(pixels)
    assert framed.shape == (1, 28, 28)
    rows, cols = framed[0].nonzero()[:, 0], framed[0].nonzero()[:, 1]
    assert (int(rows.min()), int(rows.max())) == (4, 23) and (int(cols.min()), int(cols.max())) == (9, 18)
    blank = torch.zeros(1, 50, 50, dtype=torch.uint8)
    assert frame_like_mnist(blank) is blank


def test_framing_changes_what_the_network_sees(client):
    small = drawn_digit(small=True)  # a 7 drawn in the top-left corner
    plain, framed = (post(client, "predict", small, frame=f).json()["input"] for f in (0, 1))
    plain_ink, framed_ink = (png_pixels(u) > 32 for u in (plain, framed))
    assert plain_ink[16:, :].sum() == 0 and framed_ink[16:, :].sum() > 0  # moved from the corner to the centre
    assert framed_ink.sum() > 3 * plain_ink.sum()  # and scaled up


def test_feature_maps_of_a_layer_on_one_shared_scale(client, trained_run):
    from cnnlab.inspect import activations
    from cnnlab.serve.images import decode_upload
    from cnnlab.train.record import RunRecord

    answer = post(client, "features", layer="c1").json()
    assert answer["qualified"] == "features.c1" and answer["shape"] == [6, 28, 28] and answer["channels"] == 6
    assert len(answer["maps"]) == 6 and all(png_pixels(m).shape == (28, 28) for m in answer["maps"])
    record = RunRecord.load(trained_run)
    pixels = decode_upload(drawn_digit(), record.preprocessing, Limits())
    x = record.preprocessing.normalize(pixels.unsqueeze(0))[0]
    (expected,) = activations(record.build_model("cpu"), x, ["c1"])
    assert answer["range"] == pytest.approx([float(expected.values.min()), float(expected.values.max())], abs=1e-5)
    deeper = post(client, "features", layer="c3").json()
    assert deeper["shape"] == [16, 10, 10] and len(deeper["maps"]) == 16


def test_a_bad_layer_name_is_a_clear_400_listing_the_layers(client):
    response = post(client, "features", layer="c9")
    assert response.status_code == 400
    assert "Unknown layer 'c9'" in response.json()["error"] and "c1" in response.json()["error"]
    missing = post(client, "deconv")
    assert missing.status_code == 400 and "?layer=" in missing.json()["error"]


def test_occlusion_follows_the_top_class(client):
    predicted = post(client, "predict").json()["top"][0]
    answer = post(client, "occlusion").json()
    assert answer["class"] == predicted["class"] and answer["probability"] == pytest.approx(predicted["probability"])
    assert answer["size"] >= 1 and 1 <= answer["stride"] <= answer["size"]
    heat = png_pixels(answer["attribution"])
    assert heat.shape == (32, 32, 3) and heat.std() > 0  # not flat


def test_deconvnet_and_guided_backprop_with_and_without_relus(client):
    for run, relus in (("lenet5", False), ("modern", True)):
        deconv = post(client, "deconv", run=run, layer="c3").json()
        assert deconv["layer"] == "c3" and 0 <= deconv["channel"] < 16 and deconv["activation"] > 0
        assert png_pixels(deconv["image"]).shape == (32, 32, 3)
        guided = post(client, "guided-backprop", run=run).json()
        assert guided["class"] == post(client, "predict", run=run).json()["top"][0]["class"]
        assert png_pixels(guided["image"]).std() > 0
        said = " ".join(deconv["notes"] + guided["notes"])
        assert ("no nn.ReLU" in said) is not relus  # the faithful LeNet-5 has tanh: the notes say what that means


def test_fgsm_moves_pixels_by_epsilon_and_lowers_the_attacked_class(client):
    clean = post(client, "fgsm", eps=0).json()
    seen = png_pixels(post(client, "predict").json()["input"]).astype(int)
    assert np.array_equal(png_pixels(clean["image"]).astype(int), seen)  # ε = 0: the image itself
    attacked = post(client, "fgsm", eps=0.3).json()
    moved = np.abs(png_pixels(attacked["image"]).astype(int) - seen)
    assert moved.max() <= round(0.3 * 255) + 1 and moved.max() >= round(0.3 * 255) - 1
    assert attacked["attacked_class"] == clean["top"][0]["class"]

    def probability(answer):
        return next((t["probability"] for t in answer["top"] if t["class"] == answer["attacked_class"]), 0.0)

    assert probability(attacked) < probability(clean)


@pytest.mark.parametrize(
    ("eps", "message"),
    [("-0.1", "ε must be a number ≥ 0"), ("0.9", "beyond the explorer's range"), ("abc", "eps must be a number")],
)
def test_a_bad_epsilon_is_a_clear_400(client, eps, message):
    response = post(client, "fgsm", eps=eps)
    assert response.status_code == 400 and message in response.json()["error"]


def test_training_curves_come_from_the_run_record(client, trained_run):
    from cnnlab.train.record import RunRecord

    rows = client.get("/api/runs/lenet5/curves").json()["rows"]
    history = RunRecord.load(trained_run).history
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["test_error"] for r in rows] == pytest.approx([h["test_error"] for h in history])
    assert {"train_loss", "val_error"} <= set(rows[0])


def test_the_confusion_matrix_is_the_test_split_s(client, trained_run):
    from cnnlab.train.record import RunRecord

    answer = client.get("/api/runs/lenet5/confusion").json()
    matrix = np.array(answer["matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == answer["samples"] == 360
    assert answer["error"] == pytest.approx(1 - np.trace(matrix) / matrix.sum())
    assert answer["error"] == pytest.approx(RunRecord.load(trained_run).history[-1]["test_error"], abs=1e-6)


def test_two_runs_answer_side_by_side_for_one_drawing(client):
    first, second = (post(client, "predict", run=run).json()["top"] for run in ("lenet5", "modern"))
    assert len(first) == len(second) == 5
    assert [t["probability"] for t in first] != [t["probability"] for t in second]  # two models, two answers


@pytest.mark.parametrize(
    "path",
    [
        "/static/%2e%2e/app.py",
        "/static/%2e%2e%2f%2e%2e%2fcli.py",
        "/static/..%2f..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/api/runs/%2e%2e%2f%2e%2e%2fetc/curves",
        "/api/runs/..%2flenet5/curves",
        "/api/runs/lenet5%2f..%2f..%2fcheckpoint.pt/curves",
        "/api/runs/lenet5/checkpoint.pt",
        "/api/runs/lenet5/..%2fcheckpoint.pt",
        "/checkpoint.pt",
        "/lenet5/checkpoint.pt",
        "/etc/passwd",
    ],
)
def test_path_traversal_gets_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.text[:200])
    assert "error" in response.json() and "root:" not in response.text and "[project]" not in response.text


def test_a_run_is_never_addressed_by_its_path(client, trained_run):
    encoded = str(trained_run).replace("/", "%2f")
    assert client.get(f"/api/runs/{encoded}/curves").status_code == 404
    assert client.get("/api/runs/nope/curves").status_code == 404
    assert client.get("/api/runs/lenet5/nope").status_code == 404
    assert client.get("/api/runs/lenet5/predict").status_code == 405  # an image view takes POST


def test_the_page_and_its_assets_come_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad"' in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith(("/static/", "data:")) for a in assets), assets  # no CDN, nothing external
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert not re.search(r"https?://", client.get("/static/app.js").text)


def test_an_oversize_upload_is_refused_with_413(client):
    response = post(client, "predict", b"\x89PNG" + bytes(SMALL.max_bytes))
    assert response.status_code == 413 and "larger than 195 kB, the most the explorer accepts" in response.text
    huge = Image.new("L", (1200, 1000), 0)  # 1.2 MP: a few kB of PNG, over SMALL.max_pixels
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    response = post(client, "predict", buffer.getvalue())
    assert response.status_code == 413 and "1200×1000" in response.json()["error"]


def test_the_default_pixel_limit_refuses_a_decompression_bomb_before_decoding_it():
    from cnnlab.serve.images import UploadTooLargeError

    bomb = Image.new("1", (6000, 6000), 0)  # 36 MP in 4 kB of PNG
    buffer = io.BytesIO()
    bomb.save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(UploadTooLargeError, match="6000×6000"):
        check_upload(buffer.getvalue(), Limits())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "No image was sent"),
        (b"this is not an image", "Cannot decode the uploaded image"),
        (drawn_digit()[:200], "Cannot decode the uploaded image"),  # a PNG cut short
        (b"\x80\x04\x95" + b"\x00" * 40, "Cannot decode the uploaded image"),  # a pickle is only bytes here
    ],
)
def test_a_corrupt_image_is_a_clear_400_not_a_traceback(client, body, message):
    for view in ("predict", "occlusion", "fgsm"):
        response = post(client, view, body)
        assert response.status_code == 400 and message in response.json()["error"], response.text
        assert "Traceback" not in response.text


def test_an_unexpected_failure_is_a_500_without_internals(trained_run):
    explorers = load_explorers([trained_run], "cpu")

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals at /home/someone/model.py line 3")

    explorers[0].predict = broken
    with TestClient(create_app(explorers), raise_server_exceptions=False) as test_client:
        response = test_client.post("/api/runs/lenet5/predict", content=drawn_digit())
    assert response.status_code == 500 and "Internal error while computing predict" in response.json()["error"]
    assert "secret" not in response.text and "Traceback" not in response.text


def test_views_in_other_lanes_run_at_once_without_disturbing_each_other(trained_run):
    """The deconvnet traces the model with torch.fx, which patches nn.Module.__call__ process-wide: predictions in
    other threads meanwhile must still succeed (the gate), and give the same answer as alone."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from cnnlab.serve.images import decode_upload

    (explorer,) = load_explorers([trained_run], "cpu")
    pixels = decode_upload(drawn_digit(), explorer.preprocessing, Limits())
    alone = explorer.predict(pixels)["top"]
    done = threading.Event()

    def keep_predicting() -> int:
        count = 0
        while not done.is_set():
            assert explorer.predict(pixels)["top"] == alone
            explorer.features(pixels, "c1")
            count += 1
        return count

    with ThreadPoolExecutor(3) as pool:
        others = [pool.submit(keep_predicting) for _ in range(2)]
        try:
            for _ in range(8):
                explorer.deconv(pixels, "c3")
        finally:
            done.set()
        assert all(f.result() > 0 for f in others)  # re-raises a failure in those threads


def test_while_a_lane_is_busy_only_the_newest_waiting_request_for_a_view_is_computed(trained_run):
    """A slider dragged across values: requests pile up behind a slow view in the same lane; the older waiting
    one answers 409 `superseded` at once, the newest is computed, and other lanes never wait."""
    import asyncio
    import time as clock

    import httpx

    (explorer,) = load_explorers([trained_run], "cpu")
    computed = []

    def slow_occlusion(pixels):  # holds the slow lane for a second
        clock.sleep(1.0)
        return {"slow": True}

    def guided(pixels):
        computed.append(clock.perf_counter())
        return {"guided": len(computed)}

    explorer.occlusion, explorer.guided_backprop = slow_occlusion, guided

    async def scenario():
        transport = httpx.ASGITransport(app=create_app([explorer]))
        async with httpx.AsyncClient(transport=transport, base_url="http://explorer") as client:

            def send(view):
                return asyncio.create_task(client.post(f"/api/runs/lenet5/{view}", content=drawn_digit()))

            slow = send("occlusion")
            await asyncio.sleep(0.3)
            older = send("guided-backprop")
            await asyncio.sleep(0.1)
            newer = send("guided-backprop")
            await asyncio.sleep(0.1)
            started = clock.perf_counter()
            fast = await send("predict")  # another lane: answers while the slow lane is busy
            fast_seconds = clock.perf_counter() - started
            return await slow, await older, await newer, fast, fast_seconds

    slow, older, newer, fast, fast_seconds = asyncio.run(scenario())
    assert slow.json() == {"slow": True}
    assert older.status_code == 409 and older.json()["superseded"] is True
    assert newer.status_code == 200 and newer.json() == {"guided": 1} and len(computed) == 1
    assert fast.status_code == 200 and fast_seconds < 0.5


def test_stale_requests_for_one_view_are_skipped():
    from cnnlab.serve.app import _Scheduler

    scheduler = _Scheduler()
    first, second = scheduler.ticket("a", "fgsm"), scheduler.ticket("a", "fgsm")
    other = scheduler.ticket("a", "predict")
    assert scheduler.superseded("a", "fgsm", first) and not scheduler.superseded("a", "fgsm", second)
    assert not scheduler.superseded("a", "predict", other)
    assert scheduler.lock("a", "fast") is scheduler.lock("a", "fast")


def test_run_ids_are_url_safe_and_distinct():
    from cnnlab.serve.app import run_ids

    names = ["lenet5-mnist", "lenet5-mnist", "a b/c", ".."]
    assert run_ids(names) == ["lenet5-mnist", "lenet5-mnist-2", "a-b-c", "run"]


def test_a_spatial_transformer_shows_its_output(tmp_path):
    import cnnlab

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=generator)
    out = tmp_path / "st"
    cnnlab.train("st-cnn", (images, torch.arange(64) % 4), epochs=1, batch_size=16, out=str(out), progress=False)
    with TestClient(create_app(load_explorers([out], "cpu"))) as test_client:
        assert "transformer" in test_client.get("/api/runs").json()["runs"][0]["views"]
        answer = test_client.post("/api/runs/st/transformer", content=drawn_digit()).json()
    assert png_pixels(answer["output"]).shape == tuple(answer["output_size"]) == (28, 28)
    outline = np.array(answer["outline"])
    assert outline.ndim == 2 and outline.shape[1] == 2 and np.allclose(outline[0], outline[-1])  # a closed line


def test_a_model_without_a_transformer_says_so(client):
    response = post(client, "transformer")
    assert response.status_code == 400 and "no spatial transformer" in response.json()["error"]


# ---- the command ------------------------------------------------------------------------------------------------
def test_serve_refuses_a_missing_run_dir_before_starting(cli, tmp_path):
    code, out, err = cli("serve", tmp_path / "no-such-run")
    assert code == 2 and "does not exist" in err and "Traceback" not in err and "http://" not in out


def test_serve_refuses_a_bad_or_busy_port(cli, trained_run):
    import socket

    code, _, err = cli("serve", trained_run, "--port", "70000")
    assert code == 2 and "--port must be between" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = cli("serve", trained_run, "--port", str(busy.getsockname()[1]))
    assert code == 2 and "Cannot listen on 127.0.0.1" in err


def test_serve_needs_a_run_dir(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve"])
    assert exit_.value.code == 2 and "RUN_DIR" in capsys.readouterr().err


def test_another_host_is_served_with_a_warning_and_the_address_printed(trained_run, monkeypatch):
    import uvicorn

    from cnnlab.serve import serve

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.append(sockets[0].getsockname()))
    said, warned = [], []
    serve([trained_run], host="0.0.0.0", port=0, device="cpu", say=said.append, warn=warned.append)
    assert len(served) == 1 and served[0][0] == "0.0.0.0" and served[0][1] > 0
    assert said[-1] == f"open http://0.0.0.0:{served[0][1]}/ (Ctrl-C stops the server)"
    assert len(warned) == 1 and "no login" in warned[0] and "127.0.0.1" in warned[0]
    serve([trained_run], port=0, device="cpu", say=said.append, warn=warned.append)
    assert served[1][0] == "127.0.0.1" and len(warned) == 1  # loopback: no warning


def test_only_loopback_addresses_count_as_local():
    from cnnlab.serve.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


@pytest.mark.slow
def test_the_command_prints_its_address_and_serves_it(trained_run):
    import json
    import urllib.request

    process = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "serve", str(trained_run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        address = re.search(r"http://127\.0\.0\.1:(\d+)/", lines[1])
        assert address, lines
        with urllib.request.urlopen(f"{address.group(0)}api/runs", timeout=30) as response:
            assert json.load(response)["runs"][0]["id"] == "lenet5"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "warning" not in process.stderr.read()  # loopback: nothing to warn about


@pytest.mark.slow
def test_the_page_ships_in_the_wheel_and_the_sdist(tmp_path):
    """The page is package data (pyproject.toml) and in MANIFEST.in: an installed cnnlab serves it."""
    import shutil
    import tarfile
    import zipfile

    tree = tmp_path / "tree"  # a copy: building writes an .egg-info next to the sources
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*")
    for name in ("src", "docs"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    code = (
        "from setuptools import build_meta as b; "
        f"print(b.build_wheel({str(tmp_path / 'dist')!r}), b.build_sdist({str(tmp_path / 'dist')!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel, sdist = result.stdout.split()[-2:]
    page = {f"static/{name}" for name in ("index.html", "app.js", "style.css")}
    with zipfile.ZipFile(tmp_path / "dist" / wheel) as archive:
        assert {f"cnnlab/serve/{p}" for p in page} <= set(archive.namelist())
    with tarfile.open(tmp_path / "dist" / sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"src/cnnlab/serve/{p}" for p in page} <= shipped


# ---- a detection run: its boxes ------------------------------------------------------------------------------------
DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def detection_client(tmp_path_factory, trained_run):
    if not (DATASETS / "MNIST" / "raw").is_dir():
        pytest.skip("real MNIST not in ../shared/datasets")
    out = tmp_path_factory.mktemp("serve") / "faster"
    argv = ["detect", "train", "--epochs", "1", "--out", str(out), "--data-root", str(DATASETS), "--batch-size", "4",
            "--data-option", "train_size=16", "--data-option", "test_size=4", "--holdout", "0.25"]  # fmt: skip
    assert main(argv) == 0
    with TestClient(create_app(load_explorers([out, trained_run], "cpu"), SMALL)) as test_client:
        yield test_client


def canvas_png() -> bytes:
    from cnnlab.data.detection import load_detection_dataset

    canvas = load_detection_dataset("mnist-detection", DATASETS, train_size=4, test_size=4).test.images[0, 0]
    buffer = io.BytesIO()
    Image.fromarray(canvas.numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_a_detection_run_shows_its_boxes(detection_client):
    runs = {r["id"]: r for r in detection_client.get("/api/runs").json()["runs"]}
    assert runs["faster"]["views"] == ["boxes", "curves"] and runs["faster"]["task"] == "detection"
    everything = post(detection_client, "boxes", canvas_png(), run="faster", threshold=0.0)
    assert everything.status_code == 200, everything.text
    answer = everything.json()
    assert png_pixels(answer["image"]).shape[:2] == (384, 384)  # the 128 px canvas drawn 3× larger
    confident = post(detection_client, "boxes", canvas_png(), run="faster", threshold=0.5).json()["detections"]
    assert len(confident) <= len(answer["detections"])
    assert all(d["score"] >= 0.5 for d in confident) and all(len(d["box"]) == 4 for d in answer["detections"])
    assert detection_client.get("/api/runs/faster/curves").json()["rows"][0]["epoch"] == 1


@pytest.mark.slow
def test_a_detection_run_refuses_classifier_views_and_bad_thresholds(detection_client):
    wrong = post(detection_client, "predict", canvas_png(), run="faster")
    assert wrong.status_code == 400 and "has no predict view" in wrong.json()["error"]
    bad = post(detection_client, "boxes", canvas_png(), run="faster", threshold=2)
    assert bad.status_code == 400 and "threshold must be a score" in bad.json()["error"]
    assert post(detection_client, "boxes", run="lenet5").status_code == 400  # and a classifier has no boxes
