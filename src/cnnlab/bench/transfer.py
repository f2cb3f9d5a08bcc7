"""`cnnlab bench transfer`: feature extraction and linear probes at MNIST scale.

- Features of LeNet-5's last stage for 70,000 MNIST-sized images: cnnlab's device loader vs the usual way
  (a Dataset of PIL images, ToTensor + Normalize per sample, a DataLoader with 2 workers), side by side.
- A linear probe (scikit-learn) on 60,000 feature vectors: fit time.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from cnnlab import models
from cnnlab.data import DeviceTensorLoader, Preprocessing
from cnnlab.transfer import extract_features, linear_probe, stage_features


def bench_features(images: int = 70_000, batch_size: int = 1000, device: str = "cpu", num_workers: int = 2) -> dict:
    from torchvision.transforms import v2

    from cnnlab.bench.data import _PILDataset

    device = torch.device(device)
    torch.manual_seed(0)
    model = models.create("lenet5").to(device).eval()
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (images, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    pre = Preprocessing(1, (28, 28), 2, (0.1307,), (0.3081,))  # LeNet-5: MNIST padded to 32×32

    start = time.perf_counter()
    loader = DeviceTensorLoader(pre.to_stored_size(data), labels, pre, batch_size, device=device)
    ours, _ = extract_features(model, loader, "c5")
    ours_s = time.perf_counter() - start

    transform = v2.Compose(
        [v2.Pad(2), v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize((0.1307,), (0.3081,))]
    )
    dataset = _PILDataset(data, labels, transform)
    start = time.perf_counter()
    usual = []
    with torch.no_grad():
        for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
            usual.append(stage_features(model, x.to(device), "c5").cpu())
    usual_s = time.perf_counter() - start
    same = bool(np.allclose(ours, torch.cat(usual).numpy(), atol=1e-4))
    return {"images": images, "cnnlab_s": ours_s, "usual_s": usual_s, "same_features": same}


def bench_probe(samples: int = 60_000, dim: int = 120, classifier: str = "svm") -> dict:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (10, dim))
    y = np.arange(samples + 10_000) % 10
    x = (centres[y] + rng.normal(0, 1.5, (len(y), dim))).astype(np.float32)
    features = {"train_x": x[:samples], "train_y": y[:samples], "test_x": x[samples:], "test_y": y[samples:]}
    result = linear_probe(features, classifier)
    return {
        "samples": samples,
        "dim": dim,
        "classifier": classifier,
        "fit_s": result["fit_seconds"],
        "test_error": result["test_error"],
    }


def run(quick: bool = False, device: str = "cpu") -> tuple[dict, list[dict]]:
    images, samples = (5000, 5000) if quick else (70_000, 60_000)
    return bench_features(images, device=device), [bench_probe(samples, classifier=c) for c in ("svm", "logreg")]
