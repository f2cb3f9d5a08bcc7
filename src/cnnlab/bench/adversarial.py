"""`cnnlab bench adversarial`: the cost of attacking and of adversarial training, side by side.

- FGSM over an MNIST-sized test set (10,000 images) with LeNet-5: cnnlab's batched attack vs the usual
  per-batch loop with a DataLoader of tensors (same model, same batch size).
- One training epoch with Goodfellow's objective vs one normal epoch, same model, data and batches: the ratio
  (target ≤ 2.2×).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from cnnlab import models
from cnnlab.adversarial import AdversarialObjective, PixelModel, fgsm
from cnnlab.data import DeviceTensorLoader, Preprocessing
from cnnlab.train.objective import ClassificationObjective


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_fgsm(
    model_name: str = "lenet5-modern", images: int = 10_000, batch_size: int = 1000, device: str = "cpu"
) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    model = models.create(model_name).to(device).eval()
    pixels = torch.rand(images, *models.get_model_info(model_name).input_size, device=device)
    labels = torch.randint(0, 10, (images,), device=device)
    pixel_model = PixelModel(model, (0.1307,), (0.3081,)).to(device)

    def ours() -> None:
        for start in range(0, images, batch_size):
            fgsm(pixel_model, pixels[start : start + batch_size], labels[start : start + batch_size], 0.25)

    def usual() -> None:  # the tutorial way: a DataLoader, a leaf tensor per batch, loss.backward(), x.grad
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(pixels.cpu(), labels.cpu()), batch_size=batch_size
        )
        for x, y in loader:
            x, y = x.to(device).requires_grad_(True), y.to(device)
            loss = F.cross_entropy(pixel_model(x), y)
            model.zero_grad()
            loss.backward()
            (x + 0.25 * x.grad.sign()).clamp(0, 1).detach()

    timings = {}
    for name, run in (("cnnlab", ours), ("usual", usual)):
        run()
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        timings[name] = time.perf_counter() - start
    return {"model": model_name, "images": images, "cnnlab_s": timings["cnnlab"], "usual_s": timings["usual"]}


def bench_adversarial_epoch(
    model_name: str = "lenet5-modern",
    images: int = 10_000,
    batch_size: int = 128,
    device: str = "cpu",
    repeats: int = 3,
) -> dict:
    """Seconds for one epoch of normal training and one of FGSM adversarial training (α = 0.5, ε = 0.25).

    After one warm-up epoch each, the two alternate for ``repeats`` rounds (which goes first alternates too), so a
    change in machine load hits both; the seconds are medians, ``ratios`` the per-round ratios (adversarial /
    normal) and ``ratio`` their median: the paired figure, least moved by a busy machine.
    """
    import statistics

    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    c, h, w = models.get_model_info(model_name).input_size
    data = torch.randint(0, 256, (images, c, h, w), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    pre = Preprocessing(c, (h, w), 0, (0.1307,) * c, (0.3081,) * c)
    loader = DeviceTensorLoader(data, labels, pre, batch_size, shuffle=True, device=device)
    epochs = {}
    for name, objective in (
        ("normal", ClassificationObjective()),
        ("adversarial", AdversarialObjective(pre.mean, pre.std, eps=0.25, alpha=0.5)),
    ):
        torch.manual_seed(0)
        model = models.create(model_name).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def epoch(e: int, model=model, objective=objective, optimizer=optimizer) -> float:
            _sync(device)
            start = time.perf_counter()
            for x, y in loader.batches(e):
                optimizer.zero_grad(set_to_none=True)
                loss, _ = objective(model, x, y)
                loss.backward()
                optimizer.step()
            _sync(device)
            return time.perf_counter() - start

        epoch(0)  # warm-up
        epochs[name] = epoch
    seconds: dict[str, list[float]] = {"normal": [], "adversarial": []}
    for r in range(repeats):
        for name in ("normal", "adversarial") if r % 2 == 0 else ("adversarial", "normal"):
            seconds[name].append(epochs[name](r + 1))
    return {
        "model": model_name,
        "images": images,
        "normal_s": statistics.median(seconds["normal"]),
        "adversarial_s": statistics.median(seconds["adversarial"]),
        "ratios": (ratios := [a / n for a, n in zip(seconds["adversarial"], seconds["normal"], strict=True)]),
        "ratio": statistics.median(ratios),
    }


def run(quick: bool = False, device: str = "cpu") -> tuple[dict, dict]:
    images = 1000 if quick else 10_000
    return bench_fgsm(images=images, device=device), bench_adversarial_epoch(
        images=images // (2 if quick else 1), device=device, repeats=1 if quick else 7
    )
