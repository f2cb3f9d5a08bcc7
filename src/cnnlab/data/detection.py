"""Detection datasets: images with a variable number of boxes each, and their registry.

A detection dataset is uint8 images (N, C, H, W) in memory with :class:`~cnnlab.data.targets.BoxTargets`
(XYXY pixel boxes on pixel edges, padded per image, label −1 for padding), one train and one test split.

**Background convention.** Classes are the K object classes, labelled 0 … K − 1; there is *no* background class
in the labels or in ``classes``. An image without boxes is allowed and trains as background. A detector that
needs a background index (torchvision's Faster R-CNN: label 0, ``num_classes = K + 1``) adds it itself, so
``num_classes`` everywhere in cnnlab's data means K (:meth:`DetectionDataset.check_num_classes` says so when
given K + 1).

Datasets by name (:func:`list_detection_datasets`):

- ``mnist-detection``, ``fashion-detection``: canvases generated from the local MNIST / Fashion-MNIST
  (:mod:`cnnlab.data.detection_canvas`);
- ``voc:PATH``, ``coco:PATH``: your own data in Pascal VOC or COCO layout (:mod:`cnnlab.data.detection_readers`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from cnnlab.data.datasets import default_data_root
from cnnlab.data.targets import BoxTargets
from cnnlab.errors import ConfigError, DataError, UnknownNameError


@dataclass
class DetectionSplit:
    """One split: uint8 images (N, C, H, W), their boxes, and where each image came from.

    Attributes:
        images: uint8 (N, C, H, W).
        targets: boxes (N, M, 4) XYXY pixels and labels (N, M), −1 for padding.
        names: one name per image for messages (file names for datasets read from files), or None.
        provenance: how generated images were made (:class:`~cnnlab.data.detection_canvas.CanvasProvenance`:
            which source digit is in which box), or None for images read from files.
    """

    images: torch.Tensor
    targets: BoxTargets
    names: list[str] | None = None
    provenance: object | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"Images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} {self.images.shape}.")
        if len(self.targets) != self.images.shape[0]:
            raise DataError(f"{self.images.shape[0]} images but boxes for {len(self.targets)}; give one entry each.")
        if self.names is not None and len(self.names) != self.images.shape[0]:
            raise DataError(f"{self.images.shape[0]} images but {len(self.names)} names.")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return tuple(self.images.shape[-2:])  # type: ignore[return-value]

    def boxes_per_image(self) -> torch.Tensor:
        """int64 (N,): the number of boxes of each image (0 for a background image)."""
        return self.targets.valid.sum(1)


@dataclass
class DetectionDataset:
    """A detection dataset: train and test splits and the object class names.

    ``classes`` are the object classes only (labels 0 … K − 1, no background class; see the module docstring).

    Attributes:
        name: the name it was loaded by.
        train: the training split.
        test: the test split.
        val: the validation split held out of the training images (:meth:`with_holdout`), or None.
        classes: object class names, index = label.
        source: where the data came from (a path, or what it was generated from and how).
        notes: facts worth printing with it (measured object counts, dropped objects...).
    """

    name: str
    train: DetectionSplit
    test: DetectionSplit
    classes: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)
    val: DetectionSplit | None = None

    def with_holdout(self, fraction: float) -> DetectionDataset:
        """This dataset with the last ``fraction`` of the training images as a validation split (for choosing
        checkpoints and settings; the test split is only reported). Generated canvases are in random order, and
        a folder's images in its own order, so the last ones are as good a sample as any and the split is the same
        on every machine.

        Raises:
            ConfigError: ``fraction`` outside [0, 1), or leaving no training image.
        """
        if not 0 <= fraction < 1:
            raise ConfigError(f"The validation fraction must be in [0, 1), got {fraction}.")
        held = round(len(self.train) * fraction)
        if held == 0:
            return replace(self, val=None)
        if held >= len(self.train):
            raise ConfigError(
                f"Holding out {fraction:.0%} of {len(self.train)} training images leaves none to train on."
            )
        keep = len(self.train) - held

        def part(index: slice) -> DetectionSplit:
            split = self.train
            names = split.names[index] if split.names is not None else None
            return DetectionSplit(split.images[index], split.targets[index], names, None)

        return replace(self, train=part(slice(0, keep)), val=part(slice(keep, None)))

    @property
    def num_classes(self) -> int:
        """K, the object classes (no background)."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def validate(self) -> None:
        """Refuse boxes a detector cannot learn from (naming the image and the box), and label out of range.

        Raises:
            DataError: a zero-width, negative or out-of-image box, or a label outside 0 … K − 1.
        """
        if self.num_classes < 1:
            raise DataError(f"Detection dataset {self.name!r} has no object classes.")
        for split_name, split in (("train", self.train), ("test", self.test)):
            names = split.names or [f"{split_name} image {i}" for i in range(len(split))]
            split.targets.validate(split.image_size, self.num_classes, names)

    def check_num_classes(self, num_classes: int) -> None:
        """Refuse a ``num_classes`` other than K; say so plainly when it is K + 1 (background counted).

        Raises:
            DataError: ``num_classes`` is not ``len(classes)``.
        """
        k = self.num_classes
        if num_classes == k:
            return
        if num_classes == k + 1:
            raise DataError(
                f"num_classes={num_classes} counts a background class, but cnnlab's convention excludes "
                f"background: {self.name} has {k} object classes (labels 0…{k - 1}); pass num_classes={k}. "
                "A detector that needs a background index adds it itself."
            )
        raise DataError(f"num_classes={num_classes}, but {self.name} has {k} object classes: pass num_classes={k}.")


# ---- the registry -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionDatasetInfo:
    """A registered detection dataset: ``loader(root, *, seed, **options)``, a description, the default preview
    augmentation (no flips for digits), and the dataclass its options are fields of (None: the loader's own
    keyword-only parameters)."""

    name: str
    loader: Callable[..., DetectionDataset] = field(repr=False)
    description: str
    augment: str = "none"
    options: type | None = None

    def option_names(self) -> list[str]:
        """The options ``load_detection_dataset`` accepts for this dataset (besides ``seed``)."""
        if self.options is not None:
            return [f.name for f in fields(self.options)]
        parameters = inspect.signature(self.loader).parameters.values()
        return [p.name for p in parameters if p.kind == p.KEYWORD_ONLY and p.name != "seed"]


_DETECTION: dict[str, DetectionDatasetInfo] = {}
_PREFIXES: dict[str, DetectionDatasetInfo] = {}  # "voc:" -> loader(path, *, seed, **options)


def register_detection_dataset(
    name: str, description: str, augment: str = "none", options: type | None = None
) -> Callable:
    """Decorator registering ``loader(root: Path, *, seed: int, **options) -> DetectionDataset`` under ``name``.

    A name ending in ``:`` registers a path prefix (``voc:`` for ``voc:PATH``): the loader gets the path instead
    of the data root. Options are the fields of the ``options`` dataclass, else the loader's keyword-only
    parameters; unknown ones are refused by name before the loader runs. Registering a name twice is an error.
    """

    def decorator(loader: Callable[..., DetectionDataset]) -> Callable[..., DetectionDataset]:
        table = _PREFIXES if name.endswith(":") else _DETECTION
        if name in table:
            raise DataError(f"Detection dataset name {name!r} is already registered.")
        table[name] = DetectionDatasetInfo(name, loader, description, augment, options)
        return loader

    return decorator


def list_detection_datasets() -> list[str]:
    """Registered detection dataset names, then the path-named ones (``voc:PATH``, ``coco:PATH``)."""
    return sorted(_DETECTION) + [f"{p}PATH" for p in sorted(_PREFIXES)]


def is_detection_dataset(name: str) -> bool:
    """True for a registered detection dataset or a ``voc:``/``coco:`` path name."""
    return name in _DETECTION or name.startswith(tuple(_PREFIXES))


def get_detection_dataset_info(name: str) -> DetectionDatasetInfo:
    for prefix, info in _PREFIXES.items():
        if name.startswith(prefix):
            return info
    if name not in _DETECTION:
        raise UnknownNameError("detection dataset", name, list_detection_datasets())
    return _DETECTION[name]


def load_detection_dataset(
    name: str, root: str | Path | None = None, *, seed: int = 0, num_classes: int | None = None, **options
) -> DetectionDataset:
    """Load (or generate) a detection dataset by name.

    Args:
        name: ``mnist-detection``, ``fashion-detection`` (see :func:`list_detection_datasets`), ``voc:PATH`` or
            ``coco:PATH`` (relative paths are from the working directory).
        root: the data root of the generated datasets' source digits (default: ``$CNNLAB_DATA`` or
            ``~/.cache/cnnlab``), in torchvision's layout (``<root>/MNIST/raw/*.gz``); read in place.
        seed: the seed of generated canvases (same seed: identical tensors on every machine), or of the
            train/test split of a VOC/COCO folder without split lists.
        num_classes: if given, checked against the dataset's K object classes (background excluded).
        **options: the loader's own options, e.g. ``train_size=2000, clutter=8`` for the generated datasets
            (:class:`~cnnlab.data.detection_canvas.CanvasConfig`), ``size=(256, 256)`` for VOC/COCO. Unknown
            names are refused.

    Raises:
        UnknownNameError: an unregistered name.
        ConfigError: an option the loader does not take.
        DataError: missing or malformed files, invalid boxes (naming the image and the box), a wrong
            ``num_classes``.
    """
    info = get_detection_dataset_info(name)
    accepted = info.option_names()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{name} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(accepted) or 'none'}."
        )
    if info.name.endswith(":"):
        dataset = info.loader(Path(name[len(info.name) :]).expanduser(), seed=seed, **options)
        dataset.name = name
    else:
        root_path = Path(root).expanduser() if root is not None else default_data_root()
        dataset = info.loader(root_path, seed=seed, **options)
    dataset.validate()
    if num_classes is not None:
        dataset.check_num_classes(num_classes)
    return dataset
