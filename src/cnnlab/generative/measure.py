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

Two more checks: a *classifier score* — Salimans et al. 2016's Inception score, exp(E_x KL(p(y|x) ‖ p(y))), with
the cnnlab classifier's softmax in place of Inception's (torchmetrics' ``InceptionScore`` with the classifier as its
feature module): high when each sample is confidently one class and the classes are balanced, at most the number
of classes — and *nearest-neighbour copies*: each sample's nearest training image in pixels, against the same
distance for real test images (which are not copies), to catch a generator that memorised its training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError, ConfigError

COVERED = 0.05  # a class counts as covered when at least 5 % of the samples are assigned to it
# Samples (and as many real test images) compared with every training image for copies: 1,000 put a 1 % share of
# copies at ± 0.3 points (binomial sd) for 1,000 × 60,000 distances (~2 s on one CPU thread at 28 px).
NEAREST = 1000
COPY_PERCENTILE = 0.01  # a sample nearer to a training image than 99 % of real test images are counts as a copy


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


class FrechetToReal:
    """The Fréchet distance of image sets to one fixed real set in the space of ``features``, by torchmetrics: the
    real set's feature statistics are computed once (``reset_real_features=False``), so measuring several
    generated sets against it (one per epoch) does not run the real images through the features again.

    Args:
        real: (N, C, H, W) images in [0, 1], N ≥ 2.
        features: a module mapping images to (B, num_features), with a ``num_features`` attribute.

    Raises:
        CnnlabError: torchmetrics is not installed.
        ConfigError: fewer than two real images (no covariance).
    """

    def __init__(self, real: torch.Tensor, features: nn.Module, batch: int = 500):
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError:  # a dependency of cnnlab; missing only in a hand-made environment
            raise CnnlabError("The Fréchet distance needs torchmetrics: pip install torchmetrics.") from None
        if len(real) < 2:
            raise ConfigError(f"The Fréchet distance needs at least 2 images per set, got {len(real)} real ones.")
        self.batch = batch
        self.metric = FrechetInceptionDistance(feature=features, reset_real_features=False, normalize=False)
        for chunk in real.split(batch):
            self.metric.update(chunk, real=True)

    def __call__(self, generated: torch.Tensor) -> float:
        """The distance of ``generated`` (M, C, H, W) in [0, 1], M ≥ 2, to the real set."""
        if len(generated) < 2:
            raise ConfigError(f"The Fréchet distance needs at least 2 images per set, got {len(generated)}.")
        self.metric.reset()  # the generated set's statistics only: the real ones are kept
        for chunk in generated.split(self.batch):
            self.metric.update(chunk, real=False)
        return float(self.metric.compute())


def frechet_distance(real: torch.Tensor, generated: torch.Tensor, features: nn.Module, batch: int = 500) -> float:
    """The Fréchet distance between two image sets (N, C, H, W) in [0, 1] in the space of ``features`` (a module
    mapping images to (B, num_features), with a ``num_features`` attribute), by torchmetrics.

    Raises:
        CnnlabError: torchmetrics is not installed.
        ConfigError: fewer than two images in a set (no covariance).
    """
    if len(real) < 2 or len(generated) < 2:
        raise ConfigError(
            f"The Fréchet distance needs at least 2 images per set, got {len(real)} and {len(generated)}."
        )
    return FrechetToReal(real, features, batch)(generated)


class _Logits(nn.Module):
    """The classifier's logits for images in [0, 1]: the feature module torchmetrics' InceptionScore expects."""

    def __init__(self, features: ClassifierFeatures):
        super().__init__()
        self.features = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features.logits(images).double().cpu()


def classifier_score(
    images: torch.Tensor, features: ClassifierFeatures, splits: int = 10, seed: int = 0, batch: int = 500
) -> tuple[float, float]:
    """(mean, sd) over ``splits`` parts of exp(E_x KL(p(y|x) ‖ p(y))) of ``images`` (N, C, H, W) in [0, 1], with the
    classifier's softmax as p(y|x): 1 for samples it cannot tell apart or that are all one class, up to the number
    of classes for confident, balanced ones. By torchmetrics (its ``InceptionScore`` with a custom feature module);
    ``seed`` fixes the shuffle into parts."""
    import warnings

    try:
        from torchmetrics.image.inception import InceptionScore
    except ImportError:  # a dependency of cnnlab; missing only in a hand-made environment
        raise CnnlabError("The classifier score needs torchmetrics: pip install torchmetrics.") from None
    if len(images) < splits:
        raise ConfigError(f"The classifier score needs at least {splits} images (one per split), got {len(images)}.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=_Logits(features), splits=splits, normalize=False)
    for chunk in images.split(batch):
        metric.update(chunk)
    with torch.random.fork_rng(), warnings.catch_warnings():  # the split shuffle draws from the global RNG
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # one split: no sd (0 below)
        torch.manual_seed(seed)
        mean, sd = metric.compute()
    return float(mean), float(sd) if splits > 1 else 0.0


def nearest_training_images(images: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's nearest training image in pixels (Euclidean, images in [0, 1]): (distances (N,), indices (N,)),
    by scikit-learn's exact brute-force neighbour search (BLAS matrix products, chunked)."""
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(train.flatten(1).float().numpy())
    distances, indices = search.kneighbors(images.flatten(1).float().numpy())
    return torch.from_numpy(distances[:, 0]).double(), torch.from_numpy(indices[:, 0]).long()


@dataclass
class NearestCopies:
    """Samples against their nearest training images, in pixels; real test images (no copies) as the reference.

    Attributes:
        distances: (n,) each checked sample's distance to its nearest training image.
        indices: (n,) that training image's index in the training split.
        real_distances: (m,) the same for real test images.
    """

    distances: torch.Tensor
    indices: torch.Tensor
    real_distances: torch.Tensor

    @property
    def threshold(self) -> float:
        """The distance below which only 1 % of real test images lie: nearer than that is a copy."""
        return float(torch.quantile(self.real_distances, COPY_PERCENTILE))

    @property
    def copies(self) -> float:
        """Share of samples nearer to a training image than :attr:`threshold` (≈ 0.01 for a generator that makes
        new images as real test images are new; far more for one that reproduces its training set)."""
        return float((self.distances < self.threshold).double().mean())

    @property
    def median_ratio(self) -> float:
        """The samples' median nearest distance over the real test images' (≈ 1 or more: new images; ≪ 1: copies)."""
        return float(self.distances.median() / self.real_distances.median().clamp_min(1e-12))

    def text(self) -> str:
        return (
            f"{self.copies:.1%} of {len(self.distances):,} samples are nearer to a training image than 99 % of real "
            f"test images are (a copy; real test images: 1 % by definition); median nearest distance "
            f"{float(self.distances.median()):.2f} vs the real images' {float(self.real_distances.median()):.2f} "
            f"(ratio {self.median_ratio:.2f})"
        )


def render_copies(samples: torch.Tensor, train: torch.Tensor, copies: NearestCopies, count: int = 8):
    """The ``count`` samples nearest to a training image (top row) above those training images (bottom row), as a
    Pillow image: what a memorising generator's copies look like."""
    from cnnlab.inspect.grid import tile, to_pil

    order = copies.distances.argsort()[:count]
    pairs = torch.cat([samples[order], train[copies.indices[order]]])  # (2·count, C, H, W) in [0, 1]
    return to_pil(tile(pairs, ncols=len(order), pad=1, fill=1.0), upscale=3)


@dataclass
class GanMeasurement:
    """:func:`measure_gan`'s figures: coverage of the generated samples (and of real test images, for reference),
    the Fréchet distance of generated vs real test images, and its floor, real train vs real test; the classifier
    score of the samples and of real test images; the nearest-neighbour copy check and its picture."""

    coverage: Coverage
    real_coverage: Coverage
    frechet: float
    frechet_floor: float
    samples: int
    classifier_score: tuple[float, float] | None = None  # (mean, sd) over 10 splits
    real_classifier_score: tuple[float, float] | None = None
    copies: NearestCopies | None = None
    copies_picture: Path | None = None

    def lines(self) -> list[str]:
        """What ``cnnlab gan measure`` prints."""
        out = [
            f"coverage of {self.samples:,} samples: {self.coverage.text()}",
            f"real test images, for reference: {self.real_coverage.text()}",
            f"Fréchet distance (classifier features): generated vs real test {self.frechet:.3f}; real train vs "
            f"real test (the floor) {self.frechet_floor:.3f}",
        ]
        if self.classifier_score is not None and self.real_classifier_score is not None:
            (mean, sd), (real, real_sd) = self.classifier_score, self.real_classifier_score
            out.append(f"classifier score (exp E KL(p(y|x) ‖ p(y)), 10 splits): {mean:.2f} ± {sd:.2f}; real test "
                       f"images {real:.2f} ± {real_sd:.2f}; at most {len(self.coverage.classes)}")  # fmt: skip
        if self.copies is not None:
            out.append(f"nearest training images: {self.copies.text()}")
        if self.copies_picture is not None:
            out.append(f"wrote {self.copies_picture} (the samples nearest to a training image, above those images)")
        return out


def measure_gan(gan_run, classifier_run, n: int = 10_000, seed: int = 0, data_root: str | None = None,
                device: str = "cpu", nearest: int = NEAREST, copies_out: str | Path | None = None,
                ) -> GanMeasurement:  # fmt: skip
    """Coverage, Fréchet distance and classifier score of ``n`` samples of a GAN run, measured with a cnnlab
    classifier run trained on the same data (the real sets: ``n`` images of the data's test split and ``n`` of its
    training split); and the first ``nearest`` samples against every training image, for copies, with a picture
    of the nearest pairs (``copies_out``, default ``nearest-copies.png`` in the GAN's run directory).

    Raises:
        CheckpointError: either run is missing or of the wrong kind.
        ConfigError: the classifier's data has other channels or classes than the GAN's; n below 10.
    """
    from cnnlab.data import load_dataset
    from cnnlab.generative.runs import load_gan
    from cnnlab.inspect.grid import save
    from cnnlab.workflows import open_run

    for label, value, least in (("n", n, 10), ("nearest", nearest, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{label} must be a whole number of at least {least}, got {value!r}.")
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

    def fitted(images: torch.Tensor) -> torch.Tensor:  # uint8 images -> [0, 1] at the generator's size
        images, size = images.float() / 255, int(gan.spec["size"])
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images

    def real(split) -> torch.Tensor:  # n images of a split, drawn at random
        return fitted(split.images[torch.randperm(len(split), generator=pick)[:n]])

    test, train = real(dataset.test), real(dataset.train)
    generated = gan.sample(n, seed)
    every_train = fitted(dataset.train.images)  # the whole training split in its order: indices are the split's
    checked = min(nearest, n)
    distances, indices = nearest_training_images(generated[:checked], every_train)
    copies = NearestCopies(distances, indices, nearest_training_images(test[:checked], every_train)[0])
    picture = Path(copies_out) if copies_out is not None else gan.path.parent / "nearest-copies.png"
    save(render_copies(generated[:checked], every_train, copies), picture)
    return GanMeasurement(
        coverage=class_coverage(generated, features, record.classes),
        real_coverage=class_coverage(test, features, record.classes),
        frechet=frechet_distance(test, generated, features),
        frechet_floor=frechet_distance(test, train, features),
        samples=n,
        classifier_score=classifier_score(generated, features, seed=seed),
        real_classifier_score=classifier_score(test, features, seed=seed),
        copies=copies,
        copies_picture=picture,
    )
