"""The dataset registry. Each dataset loads as uint8 tensors in memory, with its own train/test split.

Data knows no models: fitting images to a model's input size is done by :class:`Preprocessing`, which the
caller builds from the dataset's native size and the model's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cnnlab.errors import DataError, UnknownNameError

if TYPE_CHECKING:
    from cnnlab.data.preprocessing import Preprocessing


@dataclass
class ImageSet:
    """One split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"Images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} {self.images.shape}.")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}.")

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, index: torch.Tensor) -> ImageSet:
        """The images at ``index`` (int64), as a split of the same kind (subclasses keep what they carry)."""
        return ImageSet(self.images[index], self.labels[index])

    def model_inputs(self, preprocessing: Preprocessing, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` images (default: all) as the model sees them at test time, and their labels.

        Returns:
            uint8 (n, C, h, w) resized, padded and centre-cropped to ``preprocessing.input_size``; int64 (n,) labels.
        """
        return preprocessing.center_crop(preprocessing.to_stored_size(self.images[:count])), self.labels[:count]


@dataclass
class FileImageSet:
    """One split of a photo collection: image file paths and int64 labels, decoded by the streaming loader."""

    paths: list[str]
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.paths),):
            raise DataError(f"{len(self.paths)} files but labels of shape {tuple(self.labels.shape)}.")

    def __len__(self) -> int:
        return len(self.paths)

    def model_inputs(self, preprocessing: Preprocessing, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``count`` files (default: all) decoded as the model sees them at test time, and their labels.

        Files that cannot be decoded are skipped with a warning naming them, so the labels returned are those of
        the images returned. Everything is decoded into memory: pass ``count`` for large collections.

        Returns:
            uint8 (n, C, h, w) resized and centre-cropped to ``preprocessing.input_size``; int64 (n,) labels.
        """
        from cnnlab.data.streaming import StreamingLoader

        paths, labels = self.paths[:count], self.labels[:count]
        workers = 0 if len(paths) <= 256 else 2  # worker start-up costs more than decoding a few hundred files
        loader = StreamingLoader(paths, labels, preprocessing, 256, num_workers=workers)
        batches = list(loader.raw_batches())  # uint8 at the stored size, unreadable files dropped
        if loader.skipped:
            import warnings

            listing = "\n  ".join(sorted(loader.skipped)[:20])
            warnings.warn(f"Skipped {len(loader.skipped)} unreadable image file(s):\n  {listing}", stacklevel=2)
        if not batches:
            raise DataError(f"None of the {len(paths)} image files could be decoded; check the folder's files.")
        images = torch.cat([b[0] for b in batches])
        return preprocessing.center_crop(images), torch.cat([b[1] for b in batches])


@dataclass
class ImageDataset:
    """A dataset with a train and a test split.

    Attributes:
        name: registry name.
        train: training split.
        test: test split.
        classes: class names, index = label.
        fit_mode: how to bring images to a larger model input: "resize" or "pad" (centre with a zero border).
        source: where the data came from (a path, or the package that ships it).
    """

    name: str
    train: ImageSet | FileImageSet
    test: ImageSet | FileImageSet
    classes: list[str]
    fit_mode: str = "resize"
    source: str = ""
    notes: list[str] = field(default_factory=list)
    val: ImageSet | FileImageSet | None = None  # held out of the training data for model selection (build_run)

    @property
    def streaming(self) -> bool:
        """True for photo collections decoded from files on the fly (sizes vary; always 3 channels)."""
        return isinstance(self.train, FileImageSet)

    @property
    def image_shape(self) -> tuple[int, int, int] | tuple[int, None, None]:
        """(C, H, W) of the stored images; (3, None, None) for streamed photos of varying size."""
        if isinstance(self.train, FileImageSet):
            return (3, None, None)
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def validate(self) -> None:
        """Clear errors for datasets no model can learn from."""
        if self.num_classes < 2:
            raise DataError(f"Dataset {self.name!r} has {self.num_classes} class(es); classification needs at least 2.")
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                raise DataError(f"Dataset {self.name!r} has an empty {split_name} split.")
            low, high = int(split.labels.min()), int(split.labels.max())
            if low < 0 or high >= self.num_classes:
                raise DataError(
                    f"Dataset {self.name!r} {split_name} labels span [{low}, {high}] but there are "
                    f"{self.num_classes} classes: labels must be in [0, {self.num_classes - 1}]."
                )


def split_off(
    split: ImageSet | FileImageSet, fraction: float, seed: int
) -> tuple[ImageSet | FileImageSet, ImageSet | FileImageSet]:
    """(kept, held out): ``fraction`` of each class held out, chosen by a seeded shuffle (stratified), both in
    dataset order. Every class keeps at least one image; a class of one image is kept whole."""
    if not 0 < fraction < 1:
        raise DataError(f"The held-out fraction must be between 0 and 1 (exclusive), got {fraction}.")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7)  # not the data order's or the init's stream
    held = torch.zeros(len(split), dtype=torch.bool)
    for label in split.labels.unique().tolist():
        members = (split.labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = min(len(members) - 1, max(1, round(len(members) * fraction)))
        held[members[:count]] = True
    kept_index, held_index = (~held).nonzero().flatten(), held.nonzero().flatten()
    if isinstance(split, FileImageSet):
        pick = lambda index: FileImageSet([split.paths[i] for i in index.tolist()], split.labels[index])  # noqa: E731
    else:
        pick = split.select
    return pick(kept_index), pick(held_index)


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its loader, a one-line description and the augmentation its papers used."""

    name: str
    loader: Callable[..., ImageDataset] = field(repr=False)
    description: str
    augment: str = "none"


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, description: str, augment: str = "none") -> Callable:
    """Decorator registering ``loader(root: Path, fetch: bool) -> ImageDataset`` under ``name`` (twice: error).

    ``augment`` is the default ``--augment`` preset for the dataset: what its papers used.
    """

    def decorator(loader: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        if name in _DATASETS:
            raise DataError(f"Dataset name {name!r} is already registered.")
        _DATASETS[name] = DatasetInfo(name, loader, description, augment)
        return loader

    return decorator


def list_datasets() -> list[str]:
    """Registered dataset names (``folder:PATH`` is accepted too, for your own images)."""
    return sorted(_DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    for prefix, (description, augment, loader) in _PREFIX_LOADERS.items():
        if name.startswith(prefix):
            return DatasetInfo(name, _prefixed(name, loader), description, augment)
    if name not in _DATASETS:
        raise UnknownNameError("dataset", name, [*_DATASETS, *(f"{p}PATH" for p in _PREFIX_LOADERS)])
    return _DATASETS[name]


# Datasets named by a path (``folder:PATH``, ``tensors:PATH``): their loaders are given by the modules that build
# them (cnnlab.data.sources, cnnlab.data.tensors), which build on this module's records, so this module imports
# neither (no import cycle). The parent package cnnlab.data imports them first.
_PREFIX_LOADERS: dict[str, tuple[str, str, Callable[..., ImageDataset]]] = {}


def register_prefix_loader(prefix: str, description: str, augment: str, loader: Callable[..., ImageDataset]) -> None:
    """Datasets named ``<prefix>PATH`` are loaded by ``loader(name, root, val_split=, seed=)``."""
    _PREFIX_LOADERS[prefix] = (description, augment, loader)


def _prefixed(name: str, loader: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
    """The registry-style loader of one path-named dataset (relative paths are from the working directory)."""

    def load(root: Path, fetch: bool = False, val_split: float = 0.2, seed: int = 0) -> ImageDataset:
        if fetch:
            raise DataError(f"{name} is your own data: there is nothing to download.")
        return loader(name, root, val_split=val_split, seed=seed)

    return load


def default_data_root() -> Path:
    """``$CNNLAB_DATA`` if set, else ``~/.cache/cnnlab``."""
    return Path(os.environ.get("CNNLAB_DATA") or Path.home() / ".cache" / "cnnlab")


def load_dataset(
    name: str, root: str | Path | None = None, *, fetch: bool = False, val_split: float = 0.2, seed: int = 0
) -> ImageDataset:
    """Load a dataset by name from ``root`` (default :func:`default_data_root`).

    Args:
        name: a registered name (see :func:`list_datasets`) or ``folder:PATH``.
        root: the data root; datasets live in torchvision's layout below it (e.g. ``<root>/MNIST/raw``).
        fetch: download missing files first (``cnnlab data get``); otherwise missing files are an error that
            says which files to place where.
        val_split: for ``folder:PATH`` without train/ and val/ sub-folders: the fraction held out for testing.
        seed: seed of that split.
    """
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    split = {"val_split": val_split, "seed": seed} if name.startswith(tuple(_PREFIX_LOADERS)) else {}
    dataset = get_dataset_info(name).loader(root_path, fetch=fetch, **split)
    dataset.validate()
    return dataset


@register_dataset(
    "digits",
    "1,797 real 8×8 handwritten digits bundled with scikit-learn (UCI optdigits test set)",
    augment="lenet-distortions",
)
def _load_digits(root: Path, fetch: bool = False) -> ImageDataset:
    """scikit-learn's digits: 8×8 grey, values 0–16, light strokes on dark. Split 80/20, stratified, seed 0.

    The split is fixed (``random_state=0``) so every run, machine and version tests on the same 360 images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, random_state=0, stratify=labels.numpy()
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return ImageDataset(
        name="digits",
        train=ImageSet(images[train_idx], labels[train_idx]),
        test=ImageSet(images[test_idx], labels[test_idx]),
        classes=[str(d) for d in range(10)],
        fit_mode="resize",
        source="scikit-learn (sklearn.datasets.load_digits), bundled with the package",
    )
