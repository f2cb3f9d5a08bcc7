"""Fooling networks: adversarial examples, adversarial training, robustness curves.

Attacks work on any model of the registry through :class:`PixelModel` (pixels in [0, 1] in, logits out).
"""

from cnnlab.adversarial.attacks import (
    PixelModel,
    check_epsilon,
    fgsm,
    fooling_image_batches,
    fooling_images,
    input_gradient,
    lbfgs_attack,
    pgd,
)
from cnnlab.adversarial.evaluate import (
    AttackRow,
    attack_table,
    plot_examples,
    plot_robustness,
    robustness_curve,
    save_robustness,
)
from cnnlab.adversarial.objective import AdversarialObjective
from cnnlab.adversarial.runs import AttackReport, FoolingResult, attack_runs, fool_run

__all__ = [
    "AdversarialObjective",
    "AttackReport",
    "AttackRow",
    "FoolingResult",
    "PixelModel",
    "attack_runs",
    "attack_table",
    "check_epsilon",
    "fgsm",
    "fool_run",
    "fooling_image_batches",
    "fooling_images",
    "input_gradient",
    "lbfgs_attack",
    "pgd",
    "plot_examples",
    "plot_robustness",
    "robustness_curve",
    "save_robustness",
]
