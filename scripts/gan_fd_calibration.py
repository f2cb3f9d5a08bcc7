"""How far is "3× the floor" in a classifier's feature space? docs/gan.md's calibration of the Fréchet distance that
`cnnlab gan measure` reports: real *training* images, changed in known small ways, against real *test* images, in
the `pre_logits` features of a cnnlab classifier run (the same distance, images and feature module as `gan measure`:
10,000 a side, drawn with the same seeded permutation). Untouched, it is the floor that `gan measure` prints; every
other row says how much one kind of imperfection costs, in multiples of it.

    python scripts/gan_fd_calibration.py runs/mnist-clf            # MNIST (the classifier run's data)

The data root is $CNNLAB_DATA (or --data-root). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cnnlab.data import load_dataset
from cnnlab.generative import ClassifierFeatures, frechet_distance
from cnnlab.workflows import open_run


def _shift(images: torch.Tensor) -> torch.Tensor:
    """Every image moved 1 px right and 1 px down (zeros fill the gap)."""
    return F.pad(images, (1, 0, 1, 0))[..., :-1, :-1]


def _dilate(images: torch.Tensor) -> torch.Tensor:
    """Strokes one pixel thicker: a 2×2 maximum (padded back to the same size)."""
    return F.pad(F.max_pool2d(images, 2, 1), (0, 1, 0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classifier_run")
    parser.add_argument("-n", type=int, default=10_000, help="images a side (default 10,000, as gan measure)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.n < 2:
        parser.error(f"-n must be at least 2 (a covariance needs two images), got {args.n}")
    record, model, _ = open_run(args.classifier_run, "cpu")
    features = ClassifierFeatures(model, record.preprocessing)
    dataset = load_dataset(record.data, args.data_root)
    if dataset.streaming:
        parser.error(f"{record.data} is read from files; the calibration needs an in-memory dataset (MNIST-like)")
    pick = torch.Generator().manual_seed(args.seed)  # as measure_gan draws: test first, then train
    test = dataset.test.images[torch.randperm(len(dataset.test), generator=pick)[: args.n]].float() / 255
    order = torch.randperm(len(dataset.train), generator=pick)[: args.n]
    train, labels = dataset.train.images[order].float() / 255, dataset.train.labels[order]
    noise = torch.Generator().manual_seed(args.seed + 1)
    # one class missing, another twice as often (the sizes of coverage failures the GAN runs show)
    rare, common = 1, 3
    skewed = torch.cat([torch.nonzero(labels != rare).flatten(), torch.nonzero(labels == common).flatten()])
    changes = {
        "none (the floor)": train,
        "Gaussian pixel noise, sd 0.02": (train + 0.02 * torch.randn(train.shape, generator=noise)).clamp(0, 1),
        "Gaussian pixel noise, sd 0.05": (train + 0.05 * torch.randn(train.shape, generator=noise)).clamp(0, 1),
        "Gaussian pixel noise, sd 0.1": (train + 0.1 * torch.randn(train.shape, generator=noise)).clamp(0, 1),
        "shifted 1 px right and down": _shift(train),
        "strokes 1 px thicker (2×2 maximum)": _dilate(train),
        "3×3 box blur": F.avg_pool2d(train, 3, 1, 1, count_include_pad=False),
        f"class {record.classes[rare]} missing, class {record.classes[common]} twice as often": train[skewed],
    }
    started = time.perf_counter()
    floor = None
    print(f"| training images, changed | Fréchet distance to {args.n:,} test images | × the floor |")
    print("|---|---:|---:|")
    for label, images in changes.items():
        distance = frechet_distance(test, images, features)
        floor = distance if floor is None else floor
        print(f"| {label} | {distance:.2f} | {distance / floor:.1f} |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s; classifier {args.classifier_run} ({record.model_name})")


if __name__ == "__main__":
    main()
