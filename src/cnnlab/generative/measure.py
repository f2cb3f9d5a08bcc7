"""Measuring a generator with a cnnlab classifier: which classes its samples look like (coverage, the first sign
of mode collapse), and the Fréchet distance between real and generated images in the classifier's feature space.

The Fréchet distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash
equilibrium") fits a Gaussian to each set's features and measures

    d² = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½)

It is computed by torchmetrics' ``FrechetInceptionDistance`` with a *custom feature module*: the classifier's
``pre_logits`` vector (the model contract) instead of Inception's pool3, so no Inception weights are needed and
the distance is in the space of a model trained on the same data. Such a distance is only comparable with others
measured with the same classifier; the distance between the real training and the real test images is its floor
(what two samples of the true distribution score), reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError

COVERED = 0.05  # a class counts as covered when at least 5 % of the samples are assigned to it


class ClassifierFeatures(nn.Module):
    """A cnnlab classifier as a feature extractor: images in [0, 1] (B, C, h, w) -> its ``pre_logits`` vector
    (B, num_features), after its own preprocessing (resize, pad, crop, mean/std).

    Args:
        model: a model following the classifier contract (eval mode is set here).
        preprocessing: the classifier's :class:`~cnnlab.data.Preprocessing` (from its run record).
    """

    def __init__(self, model: nn.Module, preprocessing):
        super().__init__()
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.num_features = int(model.num_features)  # read by torchmetrics instead of a probe forward

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] -> the classifier's input, as its preprocessing does it to uint8 images."""
        pre = self.preprocessing
        if images.shape[1] != pre.in_chans:
            raise ConfigError(
                f"The classifier takes {pre.in_chans}-channel images; these have {images.shape[1]}. Measure with a "
                "classifier trained on the generator's data."
            )
        images = images.float()
        if tuple(images.shape[-2:]) != tuple(pre.resize):
            images = F.interpolate(images, size=tuple(pre.resize), mode="bilinear", antialias=True, align_corners=False)
        if pre.pad:
            images = F.pad(images, [pre.pad] * 4)  # (B, C, H, W) -> (B, C, H + 2p, W + 2p), zero border
        return pre.standardize(pre.center_crop(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.prepare(images.to(next(self.model.parameters()).device))
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True).double()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self.prepare(images.to(next(self.model.parameters()).device)))


@dataclass
class Coverage:
    """Share of samples per class (``shares``, index order of ``classes``) and ``covered``: how many classes hold at
    least :data:`COVERED` of them (all of them for a generator that makes every class about equally often)."""

    shares: list[float]
    classes: list[str]
    covered: int
    samples: int

    def text(self) -> str:
        listed = "  ".join(f"{c} {s:.1%}" for c, s in zip(self.classes, self.shares, strict=True))
        return f"{self.covered} of {len(self.classes)} classes ≥ {COVERED:.0%} of {self.samples:,} samples: {listed}"


def class_coverage(
    images: torch.Tensor, features: ClassifierFeatures, classes: list[str], batch: int = 500
) -> Coverage:
    """How a classifier labels ``images`` (N, C, H, W) in [0, 1]: the share of each class."""
    if len(images) == 0:
        raise ConfigError("class_coverage needs at least one image.")
    labels = torch.cat([features.logits(chunk).argmax(1).cpu() for chunk in images.split(batch)])
    counts = torch.bincount(labels, minlength=len(classes)).double()
    shares = (counts / counts.sum()).tolist()
    return Coverage(shares, list(classes), sum(s >= COVERED for s in shares), len(images))


def frechet_distance(real: torch.Tensor, generated: torch.Tensor, features: nn.Module, batch: int = 500) -> float:
    """The Fréchet distance between two image sets (N, C, H, W) in [0, 1] in the space of ``features`` (a module
    mapping images to (B, num_features), with a ``num_features`` attribute), by torchmetrics.

    Raises:
        CnnlabError: torchmetrics is not installed.
        ConfigError: fewer than two images in a set (no covariance).
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:  # a dependency of cnnlab; missing only in a hand-made environment
        raise CnnlabError("The Fréchet distance needs torchmetrics: pip install torchmetrics.") from None
    if len(real) < 2 or len(generated) < 2:
        raise ConfigError(
            f"The Fréchet distance needs at least 2 images per set, got {len(real)} and {len(generated)}."
        )
    metric = FrechetInceptionDistance(feature=features, reset_real_features=True, normalize=False)
    for chunk in real.split(batch):
        metric.update(chunk, real=True)
    for chunk in generated.split(batch):
        metric.update(chunk, real=False)
    return float(metric.compute())


@dataclass
class GanMeasurement:
    """:func:`measure_gan`'s figures: coverage of the generated samples (and of real test images, for reference),
    the Fréchet distance of generated vs real test images, and its floor, real train vs real test."""

    coverage: Coverage
    real_coverage: Coverage
    frechet: float
    frechet_floor: float
    samples: int


def measure_gan(gan_run, classifier_run, n: int = 10_000, seed: int = 0, data_root: str | None = None,
                device: str = "cpu") -> GanMeasurement:  # fmt: skip
    """Coverage and Fréchet distance of ``n`` samples of a GAN run, measured with a cnnlab classifier run trained on
    the same data; the real sets are ``n`` images of the data's test split and ``n`` of its training split.

    Raises:
        CheckpointError: either run is missing or of the wrong kind.
        ConfigError: the classifier's data has other channels or classes than the GAN's.
    """
    from cnnlab.data import load_dataset
    from cnnlab.generative.runs import load_gan
    from cnnlab.workflows import open_run

    gan = load_gan(gan_run, device)
    record, model, _ = open_run(classifier_run, device)
    features = ClassifierFeatures(model, record.preprocessing)
    if gan.classes and list(record.classes) != list(gan.classes):
        raise ConfigError(f"The classifier's classes {record.classes} are not the GAN data's {gan.classes}.")
    dataset = load_dataset(gan.data, data_root)
    if dataset.streaming:
        raise ConfigError(
            f"Measuring a GAN of photo folders ({gan.data}) is not supported yet: in-memory datasets only."
        )
    pick = torch.Generator().manual_seed(seed)

    def real(split) -> torch.Tensor:  # n images of a split, in [0, 1], at the generator's size
        index = torch.randperm(len(split), generator=pick)[:n]
        images = split.images[index].float() / 255
        size = int(gan.spec["size"])
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images

    test, train = real(dataset.test), real(dataset.train)
    generated = gan.sample(n, seed)
    return GanMeasurement(
        coverage=class_coverage(generated, features, record.classes),
        real_coverage=class_coverage(test, features, record.classes),
        frechet=frechet_distance(test, generated, features),
        frechet_floor=frechet_distance(test, train, features),
        samples=n,
    )
