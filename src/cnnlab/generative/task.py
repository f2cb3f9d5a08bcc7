"""The GAN as a task of the engine: two optimiser parts on every batch (the discriminator's step, then the
generator's), a fixed noise batch kept in the task's state, and a diagnosis of the two classic failures.

Losses (Goodfellow et al. 2014, section 3; Radford et al. 2015 train the same way):

- discriminator: −log D(x) − log(1 − D(G(z))), as two binary cross-entropies on logits, one on a batch of real
  images and one on a batch of generated ones (two forward passes, so batch norm never mixes real and generated
  images in one batch: the authors' code does the same);
- generator: the *non-saturating* loss −log D(G(z)) (section 3: "rather than training G to minimize
  log(1 − D(G(z))) we can train G to maximize log D(G(z))", which gives strong gradients early in learning).

Failure modes named in the epoch line and recorded as columns (metrics.csv, summary.json, the checkpoint's history):

- ``train_d_wins`` = 1 when the epoch's mean D loss is below :data:`D_LOSS_FLOOR` while its mean G loss is above
  :data:`G_LOSS_CEILING`: the discriminator tells every image apart and the generator's gradient has vanished;
- ``mode_collapse`` = 1 when the generator's samples for the fixed noise are far less varied than real images
  (:func:`sample_diversity`, :func:`diagnose_collapse`): many of them have a near-copy among the others, or their
  mean pairwise distance shrank well below that of real images: the generator ignores much of z;
- ``classes_dropped`` > 0 (with a classifier run of the same data, ``--coverage-run``): after every epoch
  :data:`COVERAGE_SAMPLES` samples of fixed noise are classified, and classes that get under 5 % of them are named
  (``classes_covered``, ``rarest_class``, ``rarest_share``): the partial mode collapse that pixel distances miss, a
  generator that makes every kind of image but some classes rarely or never. The same samples give the epoch's
  Fréchet distance in the classifier's features (``frechet``, against :data:`COVERAGE_SAMPLES` real test images)
  beside its floor (``frechet_floor``: as many real training images against the same test images), a quality
  curve over the epochs, not a failure rule;
- NaN/inf in either loss: the engine stops at its next sync point (``NonFiniteLossError``), and
  :func:`cnnlab.generative.train_gan` names which of the two losses diverged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.generative.measure import COVERED, ClassifierFeatures, FrechetToReal, class_coverage
from cnnlab.train import Part, Task

if TYPE_CHECKING:
    from cnnlab.train.setup import TrainingRun

FIXED_SAMPLES = 64  # the fixed-noise grid: 8 × 8 images, the same z every epoch
# The "discriminator wins" rule. D loss 0.05 = both cross-entropies at ~0.025: D(x) ≈ 0.975 and D(G(z)) ≈ 0.025 on
# average; G loss 4 = D(G(z)) ≈ e⁻⁴ ≈ 1.8 %. Chosen from those meanings, not tuned over many runs (docs/gan.md
# gives the losses of the measured MNIST run).
D_LOSS_FLOOR = 0.05
G_LOSS_CEILING = 4.0
# The "mode collapse" rule, on the 64 fixed-noise samples against 64 real test images (evenly spaced through the
# test split), in pixels of the generator's range; see sample_diversity. Chosen from what the numbers mean, not tuned:
# - twins > 0.25: more than a quarter of the samples have another sample closer to them than the two closest of the
#   64 real images are to each other (real-like samples have ~0: by definition no real pair is closer than that);
#   a generator that sends a quarter of its noise to one image scores about that;
# - diversity < 0.5: the samples' mean pairwise distance is under half the real images'. A generator making k
#   distinct images equally often scores about (1 − 1/k) × (distance between them / real mean distance), so this
#   fires at about two or fewer distinct images; it catches the gradual shrinking that twins may miss.
COLLAPSE_TWINS = 0.25
COLLAPSE_DIVERSITY = 0.5
REFERENCE_IMAGES = 64  # real images the samples' spread is compared with
# Class coverage during training: 1,000 samples put a class's 5 % threshold 7 standard errors from 0 and 10 %
# (sd of a share of 0.1: 0.95 points), at ~0.3 s per epoch for a 28 px DCGAN and a LeNet on one CPU thread. The
# Fréchet distance of the same samples is biased upwards at this n (its floor, measured alike, shows by how much):
# it follows quality from epoch to epoch; `cnnlab gan measure` (10,000 samples) gives the figure to quote.
COVERAGE_SAMPLES = 1000


class GANTask(Task):
    """A generator and a discriminator trained by the engine (:class:`~cnnlab.train.Trainer`).

    Args:
        generator: maps noise (B, z_dim) to images (B, C, H, W) in the data's range; has ``z_dim``.
        discriminator: maps images to one logit each, (B, 1) ("real").
        seed: seed of the fixed noise of the sample grid.
        options: per-part optimiser overrides (``{"discriminator": {"lr": ...}}``); default: the run's config.
        reuse_fakes: the generator's step scores the images the discriminator's step generated (the
            ``pytorch/examples`` DCGAN loop and most code since: one generator pass per step, ≈ 10 % less work at
            28 px) instead of drawing new noise and generating again (Goodfellow et al.'s algorithm 1, the default).
        coverage: a classifier of the same data (:class:`~cnnlab.generative.ClassifierFeatures`) and its class
            names: class coverage of :data:`COVERAGE_SAMPLES` fixed-noise samples after every epoch.
        d_loss_scale: factor on the discriminator's loss in its step (the 2014 file's objective is half the sum of
            the two cross-entropies: 0.5; under SGD that halves the discriminator's step, under Adam it changes
            nothing). ``d_loss`` in the metrics stays unscaled.
    """

    name = "gan"
    main = "generator"
    sums: ClassVar[Mapping[str, torch.dtype]] = {
        "d_loss": torch.float64,
        "g_loss": torch.float64,
        "d_real": torch.float64,  # Σ D(x), the discriminator's probability "real" on real images
        "d_fake": torch.float64,  # Σ D(G(z)) on generated images, in the discriminator's step
    }
    selection = None  # no "best" epoch: a GAN's losses do not rank its samples
    resume_command = "cnnlab gan train --resume"

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        seed: int = 0,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        reuse_fakes: bool = False,
        coverage: tuple[ClassifierFeatures, list[str]] | None = None,
        d_loss_scale: float = 1.0,
    ):
        if not d_loss_scale > 0:
            raise ConfigError(f"d_loss_scale must be a positive factor, got {d_loss_scale!r}.")
        self.models = {"generator": generator, "discriminator": discriminator}
        self.d_loss_scale = float(d_loss_scale)
        self.coverage = coverage
        self.coverage_run: str | None = None  # where the coverage classifier came from (recorded; set by train_gan)
        self.reuse_fakes = bool(reuse_fakes)
        # reuse_fakes: each micro-batch's generated images, with their graph into the generator, from the
        # discriminator's step to the generator's (the engine runs every micro-batch of one part before the next)
        self._fakes: list[torch.Tensor] = []
        self.z_dim = int(generator.z_dim)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        # The grid's noise: drawn once from its own generator (not the global RNG, which the run's seed drives)
        self.fixed_noise = torch.randn(FIXED_SAMPLES, self.z_dim, generator=torch.Generator().manual_seed(seed))
        self.reference: torch.Tensor | None = None  # real images (N, C, H, W) in the generator's range, once
        # with coverage: the distance to COVERAGE_SAMPLES real test images (their features computed once) and its
        # floor, set once per process by set_coverage_reference
        self.frechet_to_real: FrechetToReal | None = None
        self.frechet_floor: float | None = None
        # coverage's noise: its own seeded generator too, so every epoch (and a resumed run) classifies the same z
        self.coverage_noise = torch.randn(
            COVERAGE_SAMPLES, self.z_dim, generator=torch.Generator().manual_seed(seed + 1)
        )

    def parts(self) -> list[Part]:
        return [
            Part("discriminator", ("discriminator",), self.options.get("discriminator", {})),
            Part("generator", ("generator",), self.options.get("generator", {})),
        ]

    def noise(self, count: int, device: torch.device) -> torch.Tensor:
        """z ~ N(0, I), (count, z_dim), from the global RNG (saved and restored by the engine on resume)."""
        return torch.randn(count, self.z_dim, device=device)

    def loss(self, part: str, nets: Mapping[str, Any], batch: tuple[torch.Tensor, Any]) -> tuple[torch.Tensor, dict]:
        real, _ = batch
        n = len(real)
        # reuse_fakes: the discriminator's step made this micro-batch's images, so the generator's step draws no noise
        z = None if part == "generator" and self._fakes else self.noise(n, real.device)
        if part == "discriminator":
            if self.reuse_fakes:
                made = nets["generator"](z)  # with its graph: the generator's step backpropagates through it
                self._fakes.append(made)
                fake = made.detach()
            else:
                with torch.no_grad():  # no graph into the generator (and DDP expects no backward there)
                    fake = nets["generator"](z)
            real_logits = nets["discriminator"](real).reshape(n)
            fake_logits = nets["discriminator"](fake).reshape(n)
            loss = F.binary_cross_entropy_with_logits(
                real_logits, torch.ones_like(real_logits)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            step_loss = loss * self.d_loss_scale if self.d_loss_scale != 1.0 else loss
            with torch.no_grad():  # the reported loss is the unscaled one, comparable across recipes
                return step_loss, {
                    "d_loss": loss.detach().double() * n,
                    "d_real": torch.sigmoid(real_logits.float()).sum().double(),
                    "d_fake": torch.sigmoid(fake_logits.float()).sum().double(),
                }
        fake = self._fakes.pop(0) if self._fakes else nets["generator"](z)
        logits = nets["discriminator"](fake).reshape(n)
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))  # non-saturating: −log D(G(z))
        return loss, {"g_loss": loss.detach().double() * n}

    # ---- what is reported ------------------------------------------------------------------------------
    def train_metrics(self, sums: Mapping[str, float], seen: int) -> dict[str, float]:
        means = {f"train_{name}": value / max(seen, 1) for name, value in sums.items()}
        means["train_d_wins"] = float(diagnose(means["train_d_loss"], means["train_g_loss"]) is not None)
        return means

    def progress_text(self, sums: Mapping[str, float], seen: int) -> str:
        n = max(seen, 1)
        return (
            f"D {sums['d_loss'] / n:.3f} G {sums['g_loss'] / n:.3f} "
            f"D(x) {sums['d_real'] / n:.2f} D(G(z)) {sums['d_fake'] / n:.2f}"
        )

    def evaluate(self, nets: Mapping[str, nn.Module], run: TrainingRun, distributed: bool) -> dict[str, float]:
        """The mode-collapse columns, from the fixed noise's samples: one generator pass over 64 noise vectors (as
        the sample grid) and two 64×64 distance matrices; 0.12 s at 28 px and 1.4 s at 64 px on one loaded CPU
        thread, against minutes per epoch. Every process computes the same numbers (same weights, noise, images)."""
        if self.reference is None:
            self.reference = reference_images(run)
        diversity, twins = sample_diversity(self.samples(nets["generator"]), self.reference)
        collapsed = diagnose_collapse(diversity, twins, len(self.fixed_noise)) is not None
        row = {"sample_diversity": diversity, "sample_twins": twins, "mode_collapse": float(collapsed)}
        if self.coverage is not None:
            if self.frechet_to_real is None:
                self.set_coverage_reference(run)
            row |= self.class_coverage(nets["generator"])
        return row

    def set_coverage_reference(self, run: TrainingRun) -> None:
        """The real images the coverage samples' Fréchet distance is measured against (:data:`COVERAGE_SAMPLES` of
        the test split, evenly spaced) and its floor (as many training images, evenly spaced, against them)."""
        features = self.coverage[0]
        low, high = getattr(self.models["generator"], "output_range", (-1.0, 1.0))
        test, train = (((reference_images(run, COVERAGE_SAMPLES, split) - low) / (high - low)).clamp(0, 1)
                       for split in ("test", "train"))  # fmt: skip
        self.frechet_to_real = FrechetToReal(test, features)
        self.frechet_floor = self.frechet_to_real(train)

    def class_coverage(self, generator: nn.Module) -> dict[str, float]:
        """The coverage columns: how many classes the classifier finds in ≥ 5 % of the coverage samples, how many
        it finds in fewer (``classes_dropped``), and the rarest class (its index) with its share; with real images
        set (:meth:`set_coverage_reference`), the samples' Fréchet distance to them and its floor."""
        features, classes = self.coverage
        low, high = getattr(generator, "output_range", (-1.0, 1.0))
        images = torch.cat([self.samples(generator, chunk) for chunk in self.coverage_noise.split(250)])
        images = ((images - low) / (high - low)).clamp(0, 1)
        shares = class_coverage(images, features, classes).shares
        rarest = min(range(len(shares)), key=shares.__getitem__)
        covered = sum(share >= COVERED for share in shares)
        row = {"classes_covered": float(covered), "classes_dropped": float(len(shares) - covered),
               "rarest_class": float(rarest), "rarest_share": shares[rarest]}  # fmt: skip
        if self.frechet_to_real is not None:
            row |= {"frechet": self.frechet_to_real(images), "frechet_floor": float(self.frechet_floor)}
        return row

    def epoch_text(self, row: Mapping[str, float]) -> str:
        text = (
            f"D loss {row['train_d_loss']:.3f}  G loss {row['train_g_loss']:.3f}  "
            f"D(x) {row['train_d_real']:.2f}  D(G(z)) {row['train_d_fake']:.2f}"
        )
        problems = [diagnose(row["train_d_loss"], row["train_g_loss"])]
        if "sample_diversity" in row:  # rows of runs written before the collapse columns have none
            text += f"  diversity {row['sample_diversity']:.2f}"
            problems.append(diagnose_collapse(row["sample_diversity"], row["sample_twins"], len(self.fixed_noise)))
        if "classes_covered" in row:
            classes = self.coverage[1] if self.coverage is not None else None
            text += f"  classes ≥ 5 %: {row['classes_covered']:.0f}"
            problems.append(diagnose_coverage(row, classes))
        if "frechet" in row:
            text += f"  FD {row['frechet']:.1f} (floor {row['frechet_floor']:.1f})"
        return "  ".join([text, *(f"[{p}]" for p in problems if p)])

    def samples(self, generator: nn.Module | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The fixed noise's images (64, C, H, W) (or ``noise``'s), in the generator's output range, from the
        generator in eval mode (batch norm's running statistics: sampling leaves the training state untouched)."""
        generator = generator if generator is not None else self.models["generator"]
        noise = self.fixed_noise if noise is None else noise
        was_training = generator.training
        generator.eval()
        try:
            with torch.no_grad():
                device = next(generator.parameters()).device
                return generator(noise.to(device)).float().cpu()
        finally:
            generator.train(was_training)

    def log_images(self, tensorboard: Any, step: int, nets: Mapping[str, nn.Module], run: TrainingRun) -> None:
        low, high = getattr(self.models["generator"], "output_range", (-1.0, 1.0))
        images = (self.samples(nets["generator"]) - low) / (high - low)
        writer = getattr(tensorboard, "writer", None)
        if writer is not None:  # the grid as one image; the engine's wrapper may not offer raw images
            from torchvision.utils import make_grid

            writer.add_image("samples/fixed_noise", make_grid(images.clamp(0, 1), nrow=8), step)

    # ---- what is saved ---------------------------------------------------------------------------------
    def record(self, run: TrainingRun) -> dict:
        generator = self.models["generator"]
        return {
            "gan": {
                "arch": getattr(generator, "arch", ""),
                "size": int(generator.image_size),
                "channels": int(generator.channels),
                "z_dim": self.z_dim,
                "reuse_fakes": self.reuse_fakes,
                "coverage_run": self.coverage_run,
            },
            "preprocessing": run.preprocessing.to_dict(),
            "classes": list(run.dataset.classes),
            "data": run.config.data,
        }

    def state_dict(self) -> dict:
        return {"fixed_noise": self.fixed_noise.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "fixed_noise" in state:
            self.fixed_noise = state["fixed_noise"].clone()


def diagnose(d_loss: float, g_loss: float) -> str | None:
    """The failure an epoch's mean losses show, in words, or None.

    >>> diagnose(0.01, 7.5)
    'discriminator wins: D loss 0.010 ≈ 0 while G loss 7.50 is high (vanishing generator gradient)'
    """
    if d_loss != d_loss or g_loss != g_loss:  # NaN
        return f"non-finite loss: D {d_loss}, G {g_loss}"
    if d_loss < D_LOSS_FLOOR and g_loss > G_LOSS_CEILING:
        return (
            f"discriminator wins: D loss {d_loss:.3f} ≈ 0 while G loss {g_loss:.2f} is high "
            "(vanishing generator gradient)"
        )
    return None


def reference_images(run: TrainingRun, count: int = REFERENCE_IMAGES, split: str = "test") -> torch.Tensor:
    """``count`` real images evenly spaced through one split of the run's data (``"test"`` or ``"train"``; so every
    class of a sorted split is there), as the generator sees them (its preprocessing: size and range),
    (count, C, H, W) on the CPU."""
    images_of, pre = getattr(run.dataset, split), run.preprocessing
    total = len(images_of.labels)
    index = torch.linspace(0, total - 1, min(count, total)).round().long().unique()
    if hasattr(images_of, "images"):  # in memory: uint8 (N, C, h, w)
        images = pre.center_crop(pre.to_stored_size(images_of.images[index]))
    else:  # photo files, decoded here (count of them, once per run)
        images = torch.stack([pre.load_image(images_of.paths[i]) for i in index.tolist()])
    return pre.normalize(images).cpu()


def sample_diversity(samples: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """How varied generated images are, against real ones, in pixels (both (N, C, H, W) in the same range).

    Returns:
        diversity: the samples' mean pairwise Euclidean distance over the real images' (≈ 1 for samples as varied
            as the data, 0 for a generator whose output ignores z);
        twins: the share of samples whose nearest other sample is closer than the two closest real images are to
            each other (≈ 0 for real-like samples, 1 for a collapsed generator).
    """
    if len(samples) < 2 or len(real) < 2:
        raise ValueError("sample_diversity needs at least 2 samples and 2 real images")
    fake_d = torch.cdist(samples.flatten(1).double(), samples.flatten(1).double())  # (N, N)
    real_d = torch.cdist(real.flatten(1).double(), real.flatten(1).double())  # (M, M)
    fake_off = ~torch.eye(len(samples), dtype=torch.bool)
    real_off = ~torch.eye(len(real), dtype=torch.bool)
    diversity = fake_d[fake_off].mean() / real_d[real_off].mean().clamp_min(1e-12)
    nearest = fake_d.masked_fill(~fake_off, float("inf")).min(dim=1).values  # (N,)
    twins = (nearest < real_d[real_off].min()).double().mean()
    return float(diversity), float(twins)


def diagnose_coverage(row: Mapping[str, float], classes: list[str] | None = None) -> str | None:
    """The words for classes the generator makes rarely or never (``[classes dropped: ...]``), or None.

    >>> diagnose_coverage({"classes_covered": 8, "classes_dropped": 2, "rarest_class": 1, "rarest_share": 0.009})
    'classes dropped: 2 of 10 classes under 5% of the coverage samples; the rarest, 1, at 0.9%'
    """
    if not row.get("classes_dropped"):
        return None
    rarest = int(row["rarest_class"])
    name = classes[rarest] if classes is not None and rarest < len(classes) else str(rarest)
    total = int(row["classes_covered"] + row["classes_dropped"])
    return (
        f"classes dropped: {row['classes_dropped']:.0f} of {total} classes under {COVERED:.0%} of the coverage "
        f"samples; the rarest, {name}, at {row['rarest_share']:.1%}"
    )


def diagnose_collapse(diversity: float, twins: float, samples: int = FIXED_SAMPLES) -> str | None:
    """The words for a collapsed generator (``[mode collapse: ...]`` on the epoch line), or None.

    >>> diagnose_collapse(0.9, 0.0) is None
    True
    >>> diagnose_collapse(0.05, 1.0)
    'mode collapse: 64 of 64 fixed-noise samples have a near-copy among them; spread 0.05 × the real images'
    """
    if twins > COLLAPSE_TWINS or diversity < COLLAPSE_DIVERSITY:
        return (
            f"mode collapse: {round(twins * samples)} of {samples} fixed-noise samples have a near-copy among them; "
            f"spread {diversity:.2f} × the real images"
        )
    return None


def coverage_classifier(classifier_run: str | Path, dataset: Any, device: torch.device | str = "cpu"):
    """(features, class names) of a classifier run of the GAN's data; clear errors for another kind of run or
    another dataset's classes or channels."""
    from cnnlab.workflows import open_run

    record, model, _ = open_run(classifier_run, device)
    if list(record.classes) != list(dataset.classes) or record.preprocessing.in_chans != dataset.image_shape[0]:
        raise ConfigError(
            f"--coverage-run {classifier_run} is a classifier of {record.data or '?'} ({len(record.classes)} "
            f"classes, {record.preprocessing.in_chans} channel(s)); the GAN's data {dataset.name} has "
            f"{len(dataset.classes)} classes and {dataset.image_shape[0]} channel(s). Train one on the same data, "
            "e.g. `cnnlab train --model lenet5-modern --data mnist --epochs 1`."
        )
    return ClassifierFeatures(model, record.preprocessing), list(record.classes)
