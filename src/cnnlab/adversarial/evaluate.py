"""Robustness tables and figures: accuracy, confidence and perturbation size per ε."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.adversarial.attacks import check_epsilon, fgsm, lbfgs_attack, pgd

METHODS = ("fgsm", "pgd", "lbfgs")


@dataclass
class AttackRow:
    eps: float
    accuracy: float  # on the adversarial images
    confidence: float  # mean max-softmax probability on them
    linf: float  # mean ‖x_adv − x‖∞
    l2: float  # mean ‖x_adv − x‖₂
    target_rate: float | None = None  # targeted attacks: fraction classified as the target
    samples: int = 0


def attack_batch(
    model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, method: str, eps: float, **options: object
) -> torch.Tensor:
    target = options.get("target")
    if method == "fgsm":
        return fgsm(model, pixels, labels, eps, target=target)
    if method == "pgd":
        return pgd(
            model,
            pixels,
            labels,
            eps,
            steps=int(options.get("steps", 10)),
            norm=str(options.get("norm", "linf")),
            target=target,
        )
    if method == "lbfgs":
        return lbfgs_attack(
            model, pixels, target if target is not None else (labels + 1) % int(options["num_classes"])
        )[0]
    from cnnlab.errors import UnknownNameError

    raise UnknownNameError("attack method", method, METHODS)


def attack_table(
    model: nn.Module,
    batches,
    eps_values: list[float],
    method: str = "fgsm",
    *,
    target: int | None = None,
    limit: int | None = None,
    **options: object,
) -> list[AttackRow]:
    """Run ``method`` at every ε over (pixels in [0, 1], labels) batches; one row per ε.

    ``model`` takes pixels (see :class:`~cnnlab.adversarial.attacks.PixelModel`).
    """
    for eps in eps_values:
        check_epsilon(eps, str(options.get("norm", "linf")))
    model.eval()
    sums = {eps: torch.zeros(6, dtype=torch.float64) for eps in eps_values}
    seen = 0
    for pixels, labels in batches:
        if limit is not None and seen >= limit:
            break
        if limit is not None:
            pixels, labels = pixels[: limit - seen], labels[: limit - seen]
        goal = None if target is None else torch.full_like(labels, target)
        for eps in eps_values:
            adversarial = (
                attack_batch(model, pixels, labels, method, eps, target=goal, **options)
                if eps > 0 or method == "lbfgs"
                else pixels
            )
            with torch.no_grad():
                probs = model(adversarial).softmax(1)
            delta = (adversarial - pixels).flatten(1)
            sums[eps] += torch.stack(
                [
                    (probs.argmax(1) == labels).sum().double(),
                    probs.max(1).values.sum().double(),
                    delta.abs().max(1).values.sum().double(),
                    delta.norm(dim=1).sum().double(),
                    (probs.argmax(1) == goal).sum().double()
                    if goal is not None
                    else torch.tensor(0.0, dtype=torch.float64),
                    torch.tensor(0.0, dtype=torch.float64),
                ]
            ).cpu()
        seen += labels.shape[0]
    return [
        AttackRow(
            eps,
            float(s[0]) / seen,
            float(s[1]) / seen,
            float(s[2]) / seen,
            float(s[3]) / seen,
            float(s[4]) / seen if target is not None else None,
            seen,
        )
        for eps, s in sums.items()
    ]


def pixel_batches(loader, preprocessing):
    """(pixels in [0, 1], labels) batches of a test loader: its uint8 images, centre-cropped, unnormalised."""
    for images, labels in loader.raw_batches():  # uint8 at the stored size
        yield preprocessing.center_crop(images).float() / 255, labels


def robustness_curve(
    model: nn.Module,
    preprocessing,
    loader,
    eps_values: list[float],
    method: str = "fgsm",
    *,
    limit: int | None = None,
    **options: object,
) -> list[AttackRow]:
    """:func:`attack_table` of a classifier (which takes normalised images) over a test loader, in pixel space."""
    from cnnlab.adversarial.attacks import PixelModel

    device = next(model.parameters()).device
    pixel_model = PixelModel(model, preprocessing.mean, preprocessing.std).to(device).eval()
    return attack_table(pixel_model, pixel_batches(loader, preprocessing), eps_values, method, limit=limit, **options)


def save_robustness(rows: list[AttackRow], method: str, run_dir: str | Path, label: str) -> tuple[Path, Path]:
    """``robustness.json`` (the rows) and ``robustness.png`` in ``run_dir``, for reports and later comparison."""
    import json
    from dataclasses import asdict

    run_dir = Path(run_dir)
    table = run_dir / "robustness.json"
    table.write_text(json.dumps({"method": method, "rows": [asdict(r) for r in rows]}, indent=1))
    return table, plot_robustness({label: rows}, run_dir / "robustness.png", f"{method} on the test split")


def plot_robustness(curves: dict[str, list[AttackRow]], path: str | Path, title: str = "") -> Path:
    """Accuracy against ε, one line per labelled curve (e.g. normal vs adversarially trained)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, rows in curves.items():
        ax.plot([r.eps for r in rows], [100 * r.accuracy for r in rows], "o-", label=label)
    ax.set(xlabel="ε (pixel range 0–1)", ylabel="accuracy on adversarial examples (%)", title=title or "robustness")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_examples(
    model: nn.Module, pixels: torch.Tensor, adversarial: torch.Tensor, classes: list[str], path: str | Path, eps: float
) -> Path:
    """The seeds' figure: clean image, perturbation (amplified to the full grey range), adversarial image,
    each with the prediction and its confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        clean_probs, adv_probs = model(pixels).softmax(1).cpu(), model(adversarial).softmax(1).cpu()
    delta = (adversarial - pixels).cpu()
    scale = delta.abs().flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1, 1)
    amplified = delta / (2 * scale) + 0.5
    n = pixels.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), dpi=100, squeeze=False)

    def show(ax, image, text):
        image = image.permute(1, 2, 0).numpy()
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(text, fontsize=8)
        ax.axis("off")

    for i in range(n):
        c, a = clean_probs[i], adv_probs[i]
        show(axes[i, 0], pixels[i].cpu(), f"{classes[int(c.argmax())]} {float(c.max()):.1%}")
        show(axes[i, 1], amplified[i], f"perturbation ×{0.5 / float(scale[i]):.1f}")
        show(axes[i, 2], adversarial[i].cpu(), f"{classes[int(a.argmax())]} {float(a.max()):.1%}")
    fig.suptitle(f"clean  |  perturbation (ε = {eps:g})  |  adversarial", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
