"""`cnnlab bench data`: images/s of cnnlab's input pipeline against the usual torchvision way, in one run.

(a) cnnlab: the dataset as one uint8 tensor on the device, batched, augmented (per-image random crop + flip)
    and normalised there.
(b) the usual way: a Dataset of PIL images, torchvision.transforms.v2 per sample (RandomCrop(padding),
    RandomHorizontalFlip, ToImage, ToDtype, Normalize) and a DataLoader with worker processes.

Both produce the same thing: shuffled, augmented, normalised float batches on the device. Synthetic uint8
images of the dataset's shape are used (the pipeline's cost does not depend on the pixel values).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from cnnlab.data.augment import Compose, RandomCrop
from cnnlab.data.loader import DeviceTensorLoader
from cnnlab.data.preprocessing import Preprocessing


@dataclass
class DataBenchRow:
    shape: str
    images: int
    cnnlab_images_per_s: float
    usual_images_per_s: float

    @property
    def ratio(self) -> float:
        return self.cnnlab_images_per_s / self.usual_images_per_s


class _PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        from PIL import Image

        mode = "L" if images.shape[1] == 1 else "RGB"
        arrays = images.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a[..., 0] if mode == "L" else a, mode=mode) for a in arrays]
        self.labels, self.transform = labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_epochs(run_epoch, epochs: int, device: torch.device) -> float:
    run_epoch(0)  # warm-up: worker start-up, allocator, kernels
    _sync(device)
    start = time.perf_counter()
    for e in range(1, epochs + 1):
        run_epoch(e)
    _sync(device)
    return time.perf_counter() - start


def bench_data(
    shape: tuple[int, int, int],
    images: int,
    *,
    batch_size: int = 512,
    padding: int = 4,
    flip: bool = True,
    epochs: int = 2,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
) -> DataBenchRow:
    """Images/s of (a) cnnlab's device pipeline and (b) the usual torchvision pipeline on the same data."""
    from torchvision.transforms import v2

    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (images, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (images,), generator=generator)
    c = shape[0]
    mean, std = (0.5,) * c, (0.25,) * c
    preprocessing = Preprocessing(c, shape[1:], 0, mean, std)
    crop = Compose((RandomCrop(None, padding, flip=flip),))  # what the pad-crop(-flip) presets build
    ours = DeviceTensorLoader(data, labels, preprocessing, batch_size, shuffle=True, device=device, augment=crop)
    sink = torch.zeros((), device=device)

    def ours_epoch(epoch: int) -> None:
        nonlocal sink
        for x, _ in ours.batches(epoch):
            sink = sink + x[0, 0, 0, 0]  # consume the batch without a host sync

    transform = v2.Compose(
        [v2.RandomCrop(shape[1:], padding=padding)]
        + ([v2.RandomHorizontalFlip()] if flip else [])
        + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    )
    usual = torch.utils.data.DataLoader(
        _PILDataset(data, labels, transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )

    def usual_epoch(epoch: int) -> None:
        nonlocal sink
        for x, _ in usual:
            x = x.to(device, non_blocking=True)
            sink = sink + x[0, 0, 0, 0]

    ours_seconds = _time_epochs(ours_epoch, epochs, device)
    usual_seconds = _time_epochs(usual_epoch, epochs, device)
    return DataBenchRow(
        "×".join(map(str, shape)), images, images * epochs / ours_seconds, images * epochs / usual_seconds
    )


def run(quick: bool = False, device: str = "cpu") -> list[DataBenchRow]:
    """The benchmark of `cnnlab bench data`: CIFAR-10-shaped (crop + flip) and MNIST-shaped (crop) data."""
    cifar = 2048 if quick else 50_000
    mnist = 2048 if quick else 60_000
    epochs = 1 if quick else 2
    return [
        bench_data((3, 32, 32), cifar, padding=4, flip=True, epochs=epochs, device=device),
        bench_data((1, 28, 28), mnist, padding=2, flip=False, epochs=epochs, device=device),
    ]
