"""Your own tensors as a dataset: ``tensors:PATH`` names a file holding uint8 images and labels of both splits,
written by :func:`save_tensor_dataset` (``cnnlab.train(model, (images, labels))`` writes one into the run
directory, so ``cnnlab eval RUN`` and every view find the run's data later). Loads with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cnnlab.data.datasets import ImageDataset, ImageSet, register_prefix_loader
from cnnlab.errors import DataError

PREFIX = "tensors:"


def as_uint8_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) uint8, or floats in [0, 1] (scaled to 0…255), as uint8 (N, C, H, W)."""
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if images.ndim != 4:
        raise DataError(f"The {what} must be (N, C, H, W) or (N, H, W), got shape {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.is_floating_point():
        raise DataError(f"The {what} must be uint8 (0…255) or floats in [0, 1], got {images.dtype}.")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise DataError(
            f"The {what} are floats in [{low:.3g}, {high:.3g}]; give them in [0, 1] (or as uint8 0…255), before any "
            "normalisation: cnnlab measures and applies mean/std itself."
        )
    return (images * 255).round().to(torch.uint8).contiguous()


def from_torch_dataset(dataset: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, int64 labels) of a map-style torch ``Dataset`` yielding (image, label) pairs, where an image
    is a tensor (C, H, W) / (H, W) or a PIL image."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    images, labels = [], []
    for index in range(len(dataset)):
        item = dataset[index]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise DataError(
                f"Item {index} of the dataset is not an (image, label) pair; it is a {type(item).__name__}."
            )
        image, label = item
        image = TF.pil_to_tensor(image) if isinstance(image, Image.Image) else torch.as_tensor(image)
        images.append(image if image.ndim == 3 else image.unsqueeze(0))
        labels.append(int(label))
    if not images:
        raise DataError("The dataset is empty.")
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise DataError(
            f"The dataset's images have {len(shapes)} different shapes ({sorted(shapes)[:3]}...); resize them first."
        )
    return as_uint8_images(torch.stack(images)), torch.tensor(labels)


def save_tensor_dataset(
    path: str | Path,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: Sequence[str] | None = None,
) -> str:
    """Write both splits to ``path`` (a ``.pt`` of tensors and strings) and return the dataset name to train on,
    ``tensors:<absolute path>``."""
    train_images, test_images = as_uint8_images(train[0], "training images"), as_uint8_images(test[0], "test images")
    train_labels, test_labels = torch.as_tensor(train[1]).long(), torch.as_tensor(test[1]).long()
    count = int(max(train_labels.max(), test_labels.max())) + 1
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(count)]
    ImageSet(train_images, train_labels), ImageSet(test_images, test_labels)  # shape checks, clear errors
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
              "test_labels": test_labels, "classes": names}  # fmt: skip
    torch.save(record, path)
    return PREFIX + str(path)


def load_tensor_dataset(name: str, root: Path | None = None, **split: object) -> ImageDataset:
    """The dataset a ``tensors:PATH`` name points at (its splits are its own: ``root`` and ``split`` are unused)."""
    path = Path(name.removeprefix(PREFIX)).expanduser()
    if not path.is_file():
        raise DataError(
            f"{name}: the file {path} does not exist; it is written with the run that trained on these tensors "
            "(run directory/data.pt). Give the run's own data.pt, or train again."
        )
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
        train = ImageSet(record["train_images"], record["train_labels"])
        test = ImageSet(record["test_images"], record["test_labels"])
        classes = list(record["classes"])
    except (KeyError, RuntimeError, EOFError, TypeError) as error:
        raise DataError(
            f"{path} is not a tensors dataset written by cnnlab ({type(error).__name__}: {error})."
        ) from None
    return ImageDataset(name, train, test, classes, source=str(path))


register_prefix_loader(
    "tensors:", "your own tensors, saved with the run that trained on them", "none", load_tensor_dataset
)
