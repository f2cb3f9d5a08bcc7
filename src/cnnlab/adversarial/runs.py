"""Attacks on trained runs, as ``cnnlab attack`` and ``cnnlab fool`` do them (usable from Python alike).

>>> reports = attack_runs(["runs/mnist-normal", "runs/mnist-adversarial"], method="fgsm", eps=[0, 0.1, 0.25])
>>> [r.rows[-1].accuracy for r in reports]
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cnnlab.adversarial.attacks import FOOLING_BATCH, PixelModel, check_epsilon, fooling_image_batches
from cnnlab.adversarial.evaluate import (
    AttackRow,
    attack_batch,
    pixel_batches,
    plot_examples,
    plot_robustness,
    robustness_curve,
)
from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class AttackReport:
    """One run's robustness: the rows (one per ε), and the figures written."""

    checkpoint: str
    model: str
    data: str
    method: str
    target: int | None
    rows: list[AttackRow]
    figures: list[Path] = field(default_factory=list)

    def table(self) -> list[str]:
        """The rows as aligned text lines, header first."""
        targeted = self.target is not None
        header = f"{'eps':>6} {'accuracy':>9} {'confidence':>11} {'mean L∞':>8} {'mean L2':>8}"
        lines = [header + ("  target hit" if targeted else "")]
        for r in self.rows:
            line = f"{r.eps:6.3f} {r.accuracy:9.2%} {r.confidence:11.2%} {r.linf:8.4f} {r.l2:8.4f}"
            lines.append(line + (f"  {r.target_rate:10.2%}" if r.target_rate is not None else ""))
        return lines


def attack_runs(
    checkpoints: Sequence[str | Path],
    method: str = "fgsm",
    eps: Sequence[float] = (0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
    *,
    target: int | None = None,
    norm: str | None = None,
    steps: int = 10,
    limit: int | None = None,
    batch_size: int = 500,
    out: str | Path | None = None,
    data: str | None = None,
    data_root: str | None = None,
    device: str = "auto",
    say: Callable[[str], None] = lambda text: None,
) -> list[AttackReport]:
    """Attack each run's test split at every ε; write examples.png per run and robustness.png (one curve each).

    Every checkpoint, dataset, target and output folder is checked before the first attack starts.
    """
    from cnnlab.outputs import output_dir
    from cnnlab.workflows import open_run, require_positive, run_test_loader

    if norm is not None and method != "pgd":
        kind = "L∞ (sign-gradient)" if method == "fgsm" else "L2 (smallest perturbation)"
        raise ConfigError(
            f"--norm {norm} applies to pgd only: {method} is an {kind} attack by definition. Use --method pgd "
            "--norm l2, or leave --norm out."
        )
    norm = norm or "linf"
    eps_values = [check_epsilon(e, norm) for e in eps]
    if not eps_values:
        raise ConfigError("--eps needs at least one value.")
    for flag, value in (("--limit", limit), ("--steps", steps), ("--batch-size", batch_size)):
        require_positive(flag, value)
    jobs = []
    for checkpoint in checkpoints:
        record, model, resolved = open_run(checkpoint, device)
        name, loader = run_test_loader(record, data, data_root, batch_size, resolved, say)
        if target is not None and not 0 <= target < model.num_classes:
            raise ConfigError(f"--target {target} is out of range: the model has classes 0..{model.num_classes - 1}.")
        folder = Path(out) if out else record.run_dir / f"attack-{method}"
        jobs.append((str(checkpoint), record, model, resolved, name, loader, folder))
    for job in jobs:
        output_dir(job[-1])
    limit = limit if limit is not None else (100 if method == "lbfgs" else None)
    reports, curves = [], {}
    for index, (checkpoint, record, model, resolved, name, loader, folder) in enumerate(jobs):
        options = {"steps": steps, "norm": norm, "num_classes": model.num_classes}
        pre = record.preprocessing
        rows = robustness_curve(
            model,
            pre,
            loader,
            [0.0] if method == "lbfgs" else eps_values,
            method,
            target=target,
            limit=limit,
            **options,
        )
        report = AttackReport(checkpoint, record.model_name, name, method, target, rows)
        curves[Path(checkpoint).name if Path(checkpoint).is_dir() else checkpoint] = rows
        pixel_model = PixelModel(model, pre.mean, pre.std).to(resolved).eval()
        pixels, labels = next(pixel_batches(loader, pre))
        pixels, labels = pixels[:6], labels[:6]
        goal = None if target is None else labels.new_full(labels.shape, target)
        adversarial = attack_batch(pixel_model, pixels, labels, method, max(eps_values), target=goal, **options)
        path = folder / f"examples{f'-{index + 1}' if len(jobs) > 1 else ''}.png"
        plot_examples(pixel_model, pixels, adversarial, record.classes, path, max(eps_values))
        report.figures.append(path)
        reports.append(report)
    if method != "lbfgs":
        path = jobs[-1][-1] / "robustness.png"
        plot_robustness(curves, path, f"{method} on {jobs[-1][4]}")
        reports[-1].figures.append(path)
    return reports


@dataclass
class FoolingResult:
    """What :func:`fool_run` grew: the class, each image's confidence, the image files written."""

    class_name: str
    confidences: list[float]
    paths: list[Path]


def fool_run(
    checkpoint: str | Path,
    target_class: int,
    count: int = 8,
    steps: int = 200,
    out: str | Path | None = None,
    device: str = "auto",
) -> FoolingResult:
    """Fooling images (Nguyen et al. 2015): noise grown until the network calls it ``target_class``, in batches of
    at most :data:`FOOLING_BATCH` (one titled figure per batch, each image with its confidence: see
    :func:`fooling_figure`), so memory stays bounded whatever ``count`` is."""
    from cnnlab.outputs import image_suffixes, output_file, write_picture
    from cnnlab.workflows import open_run, require_positive

    require_positive("--count", count)
    require_positive("--steps", steps)
    record, model, resolved = open_run(checkpoint, device)
    if not 0 <= target_class < model.num_classes:
        raise ConfigError(f"--class {target_class} is out of range: the model has classes 0..{model.num_classes - 1}.")
    path = Path(out) if out else record.run_dir / f"fooling-class-{target_class}.png"
    output_file(path, "--out", image_suffixes(), "image")
    pre = record.preprocessing
    pixel_model = PixelModel(model, pre.mean, pre.std).to(resolved).eval()
    batches = fooling_image_batches(
        pixel_model, target_class, pre.input_size, count=count, steps=steps,
        generator=torch.Generator().manual_seed(0), device=resolved,
    )  # fmt: skip
    confidences, written = [], []
    name = record.classes[target_class]
    files = -(-count // FOOLING_BATCH)
    for index, (images, confidence) in enumerate(batches):
        file = path if count <= FOOLING_BATCH else path.with_name(f"{path.stem}-{index + 1:05d}{path.suffix}")
        part = f", file {index + 1} of {files}" if files > 1 else ""
        which = f"class {name}" if name == str(target_class) else f"class {target_class} ({name})"
        title = f"{record.model_name}: noise grown for {steps} steps towards {which}{part}"
        figure = fooling_figure(images, confidence.tolist(), name, title, first=len(confidences))
        write_picture(figure, file)
        confidences += confidence.tolist()
        written.append(file)
    return FoolingResult(name, confidences, written)


def fooling_figure(
    images: torch.Tensor, confidences: Sequence[float], class_name: str, title: str, first: int = 0
) -> Figure:
    """A grid of fooling images (N, C, H, W) in [0, 1], at most 8 a row, each titled with its number and the
    model's confidence for ``class_name``; the figure's title says what they are."""
    from cnnlab.inspect.grid import new_figure, show_image

    n = len(images)
    ncols = min(n, 8)
    nrows = -(-n // ncols)
    fig = new_figure(1.25 * ncols + 0.4, 1.35 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(ax, images[i], f"#{first + i + 1}: {confidences[i]:.1%}")
        else:
            ax.axis("off")
    wrapped = textwrap.fill(title, width=max(36, 16 * ncols))  # a narrow figure (few images) wraps its title
    fig.suptitle(f"{wrapped}\nabove each image: p({class_name})", fontsize=9)
    return fig
