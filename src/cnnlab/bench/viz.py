"""`bench_viz`: timings of the two expensive views, occlusion and top patches.

- occlusion: ResNet-50 (cnnlab's zoo if registered, else torchvision's, random weights: the cost does not
  depend on them) on one 224×224 image, a 32×32 square at stride 8 = 25×25 = 625 occluded copies, in float32
  and bfloat16; target < 30 s on 2 CPU cores. In float32 the plain way (Captum's ``Occlusion`` on the model
  as it is, same batching) runs in the same call, rounds alternating, for the speed-up column. LeNet-5 on
  32×32 with the default square for comparison.
- top patches: LeNet-5 (faithful and modern) over MNIST's 60,000 training images (real MNIST from the data
  root, found as by every command: ``--data-root``, else ``$CNNLAB_DATA``, else ``~/.cache/cnnlab``; without
  it synthetic uint8 images of the same shape: the cost does not depend on the pixels), at the first stage
  and at the default layer; target < 10 s on 2 CPU cores.

``quick=True`` shrinks every workload (64×64 ResNet-50 input, 6,000 images) so CI can run it in seconds; its
numbers are not comparable with the targets.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cnnlab.data import Preprocessing


@dataclass
class VizBenchRow:
    """One measurement.

    Attributes:
        view: "occlusion" or "top-patches".
        model: model name; ``workload``: what was computed, in words.
        items: occluded copies or images processed; ``seconds``: wall time of the view (best of ``repeats``).
        target_seconds: the goal for this workload on 2 CPU cores (None for comparison rows).
        device, threads, torch: where and with what it ran; ``note``: data source and caveats.
        plain_seconds: the same job done the plain way in the same run (occlusion: Captum's ``Occlusion`` on
            the model as it is, same batching and precision), None where not measured.
    """

    view: str
    model: str
    workload: str
    items: int
    seconds: float
    target_seconds: float | None
    device: str
    threads: int
    torch: str
    note: str = ""
    plain_seconds: float | None = None

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    @property
    def speedup(self) -> float | None:
        """plain seconds / our seconds (> 1: ours is faster)."""
        return self.plain_seconds / self.seconds if self.plain_seconds else None

    def to_dict(self) -> dict:
        return {**asdict(self), "items_per_s": self.items_per_s, "speedup": self.speedup}


def read_mnist_images(root: str | Path | None = None, split: str = "train") -> torch.Tensor | None:
    """MNIST images as uint8 (N, 1, 28, 28) from the data root (default: ``$CNNLAB_DATA``, else
    ``~/.cache/cnnlab``; the files in ``<root>/MNIST/raw`` as for ``--data mnist``), or None if absent."""
    from cnnlab.data import load_dataset
    from cnnlab.errors import CnnlabError

    try:
        dataset = load_dataset("mnist", root)
    except CnnlabError:
        return None
    return getattr(dataset, split).images


def _resnet50(device: torch.device) -> tuple[torch.nn.Module, str]:
    from cnnlab import models

    if "resnet50" in models.list_models():
        return models.create("resnet50", num_classes=1000).to(device).eval(), "resnet50 (cnnlab)"
    import torchvision

    return torchvision.models.resnet50(weights=None).to(device).eval(), "resnet50 (torchvision)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(repeats: int, run, device: torch.device) -> float:
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        run()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def plain_captum_occlusion(
    model: torch.nn.Module, x: torch.Tensor, size: int, stride: int, *, batch_size: int, precision: str
) -> torch.Tensor:
    """Occlusion the plain way: Captum's ``Occlusion`` on the model as it is, probabilities of the predicted
    class, ``batch_size`` copies per forward pass (optionally under bfloat16 autocast)."""
    from captum.attr import Occlusion

    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model(batch).float().softmax(dim=1)

    batch = x.unsqueeze(0)
    with torch.no_grad():
        target = int(forward(batch).argmax())
        return Occlusion(forward).attribute(
            batch,
            sliding_window_shapes=(x.shape[0], size, size),
            strides=(x.shape[0], stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=batch_size,
        )


def bench_occlusion(
    model: torch.nn.Module,
    name: str,
    side: int,
    size: int,
    stride: int,
    *,
    precision: str = "float32",
    batch_size: int = 32,
    repeats: int = 1,
    target: float | None = None,
    device: torch.device,
    incremental: bool | None = None,
    compare_plain: bool = False,
) -> VizBenchRow:
    """Time :func:`cnnlab.inspect.occlusion` on one random ``side``×``side`` image (after a one-batch warm-up);
    with ``compare_plain``, also :func:`plain_captum_occlusion` in the same run, rounds alternating."""
    from cnnlab.inspect.occlusion import occlusion, positions

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(model_in_chans(model), side, side, generator=generator).to(device)
    with torch.no_grad():  # warm-up: allocator, oneDNN primitives, autocast caches
        occlusion(model, x, size=side, stride=side, batch_size=batch_size, precision=precision)
    count = len(positions(side, size, stride)) ** 2
    options = {"batch_size": batch_size, "precision": precision}

    def ours() -> None:
        occlusion(model, x, size=size, stride=stride, incremental=incremental, **options)

    def plain() -> None:
        plain_captum_occlusion(model, x, size, stride, **options)

    seconds, plain_seconds = float("inf"), float("inf")
    for _ in range(repeats):
        seconds = min(seconds, _best_of(1, ours, device))
        if compare_plain:
            plain_seconds = min(plain_seconds, _best_of(1, plain, device))
    mode = {None: "", True: ", incremental", False: ", not incremental"}[incremental]
    return VizBenchRow(
        "occlusion",
        name,
        f"{side}×{side}, square {size} stride {stride}, {precision}, batch {batch_size}{mode}",
        count,
        seconds,
        target,
        str(device),
        torch.get_num_threads(),
        torch.__version__,
        plain_seconds=plain_seconds if compare_plain else None,
    )


def model_in_chans(model: torch.nn.Module) -> int:
    if hasattr(model, "in_chans"):
        return int(model.in_chans)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return first.in_channels


def bench_top_patches(
    name: str,
    images: torch.Tensor,
    layer: str,
    *,
    batch_size: int = 1024,
    repeats: int = 1,
    target: float | None = None,
    note: str = "",
    device: torch.device,
) -> VizBenchRow:
    """Time :func:`cnnlab.inspect.top_patches` (fitting the 28×28 images to 32×32 included) for every channel."""
    from cnnlab import models
    from cnnlab.inspect.patches import top_patches

    torch.manual_seed(0)
    model = models.create(name).to(device).eval()
    pre = Preprocessing(in_chans=1, resize=(28, 28), pad=2, mean=(0.1307,), std=(0.3081,))  # LeNet's MNIST plan

    def run() -> None:
        top_patches(model, pre.to_stored_size(images), pre, layer, batch_size=batch_size, device=device)

    warm = pre.to_stored_size(images[:batch_size])
    top_patches(model, warm, pre, layer, batch_size=batch_size, device=device)  # warm-up
    return VizBenchRow(
        "top-patches",
        name,
        f"{len(images):,} images 28×28 -> 32×32, layer {layer}, top 9 per channel, batch {batch_size}",
        len(images),
        _best_of(repeats, run, device),
        target,
        str(device),
        torch.get_num_threads(),
        torch.__version__,
        note,
    )


def bench_viz(
    quick: bool = False,
    device: str | torch.device = "cpu",
    *,
    repeats: int = 1,
    precisions: tuple[str, ...] = ("float32", "bfloat16"),
    data_root: str | Path | None = None,
) -> list[VizBenchRow]:
    """Occlusion and top-patches timings (see the module docstring); ``quick`` for CI-sized workloads;
    ``data_root``: where real MNIST is (default: ``$CNNLAB_DATA``, else ``~/.cache/cnnlab``).

    Threads are whatever ``torch.get_num_threads()`` says; set them (and keep the machine idle) before
    recording numbers.
    """
    device = torch.device(device)
    rows = []
    resnet, resnet_name = _resnet50(device)
    side, size, stride = (64, 16, 8) if quick else (224, 32, 8)
    for precision in precisions:
        rows.append(
            bench_occlusion(
                resnet,
                resnet_name,
                side,
                size,
                stride,
                precision=precision,
                repeats=repeats,
                target=None if quick else 30.0,
                device=device,
                incremental=True if quick else None,  # quick: 64 px would pick plain passes
                compare_plain=precision == "float32",
            )
        )
    from cnnlab import models

    lenet = models.create("lenet5").to(device).eval()
    rows.append(bench_occlusion(lenet, "lenet5", 32, 5, 1, repeats=repeats, device=device))

    images = read_mnist_images(data_root)
    note = "real MNIST"
    if images is None:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (60_000, 1, 28, 28), dtype=torch.uint8, generator=generator)
        note = "synthetic uint8 images (MNIST not found under the data root; give --data-root)"
    if quick:
        images = images[:6_000]
    for name in ("lenet5", "lenet5-modern"):
        for layer in ("c1", "s4"):
            rows.append(
                bench_top_patches(
                    name,
                    images,
                    layer,
                    repeats=repeats,
                    target=None if quick else 10.0,
                    note=note,
                    device=device,
                )
            )
    return rows


def run(quick: bool = False, device: str = "cpu", data_root: str | Path | None = None) -> list[VizBenchRow]:
    """The benchmark of `cnnlab bench viz` (same as :func:`bench_viz`)."""
    return bench_viz(quick=quick, device=device, data_root=data_root)


def format_rows(rows: list[VizBenchRow]) -> str:
    """A plain-text table of the rows."""
    lines = [
        f"{'view':<12} {'model':<24} {'seconds':>8} {'target':>7} {'items/s':>10} {'plain s':>8} {'×':>6}  workload"
    ]
    for r in rows:
        target = f"{r.target_seconds:g}" if r.target_seconds else "-"
        plain = f"{r.plain_seconds:>8.2f} {r.speedup:>5.2f}×" if r.plain_seconds else f"{'-':>8} {'-':>6}"
        lines.append(
            f"{r.view:<12} {r.model:<24} {r.seconds:>8.2f} {target:>7} {r.items_per_s:>10,.0f} {plain}  {r.workload}"
            + (f" ({r.note})" if r.note else "")
        )
    first = rows[0] if rows else None
    if first:
        lines.append(f"device {first.device}, {first.threads} threads, torch {first.torch}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m cnnlab.bench.viz [--quick] [--data-root DIR]
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cnnlab.bench.viz", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized workloads: checks that it runs")
    parser.add_argument("--data-root", help="where real MNIST is (default: $CNNLAB_DATA, else ~/.cache/cnnlab)")
    args = parser.parse_args()
    print(format_rows(bench_viz(quick=args.quick, data_root=args.data_root)))
