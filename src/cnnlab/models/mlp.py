"""Fully connected networks of the regularisation papers, on MNIST's 784 pixels (no convolutions).

- ``mlp-800``: Wan, Zeiler, Zhang, LeCun & Fergus 2013, "Regularization of neural networks using DropConnect",
  section 6.1 / Table 2: 784-800-800-10 with ReLU, sigmoid or tanh units and No-Drop, Dropout or DropConnect on
  the two hidden layers (keep probability p = 0.5; DropConnect uses :class:`~cnnlab.layers.DropConnectLinear`
  with the paper's Gaussian moment-matching inference).
- ``mlp-1024``: Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov 2014, "Dropout", section 6.1.1 / Table 2:
  three hidden layers of 1024 ReLU units; dropout keeps inputs with probability 0.8 and hidden units with 0.5; the
  max-norm constraint (each unit's incoming weight vector projected back to norm ≤ c after every step; the
  paper's c was chosen on validation data, in the range 3–4) is an option, with its own bound for the first
  layer if wanted (``max_norm_fc1``).

The paper's c is for its own units: pixels in [0, 1] and dropout that scales the weights at test time. cnnlab
standardises pixels, (x − 0.1307) / 0.3081 on MNIST, and uses inverted dropout (kept units scaled by 1 / keep
while training), so the same function has weights keep × (the paper's) on every layer, and 0.3081 × that again on
the first. A bound of 3.5 in the paper's units is therefore 0.5 × 3.5 = 1.75 here on the layers after a hidden
layer (keep 0.5), and 0.8 × 0.3081 × 3.5 = 0.863 on ``fc1`` (input keep 0.8): ``max_norm=1.75, max_norm_fc1=0.863``.

The regulariser and the activation are options of the model (``--model-option drop=dropconnect``), so one
registry entry covers a table's row. Stages: ``fc1``, ``fc2`` (``fc3``); the head (``classifier``) is ``y``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.layers import ConstraintActivity, DropConnectLinear, clip_row_norms_
from cnnlab.models._common import FullyConnectedHeadModel
from cnnlab.models._registry import register_model

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
REGULARISERS = ("none", "dropout", "dropconnect")


class MLP(FullyConnectedHeadModel):
    """A multilayer perceptron on the flattened image: hidden layers of ``widths`` units, then the output layer.

    Args:
        widths: hidden layer widths, e.g. (800, 800).
        num_classes, in_chans, image_size: output classes; input channels and side (square images).
        activation: "relu", "sigmoid" or "tanh".
        drop: "none", "dropout" (units of each hidden layer, and the input with ``input_keep``) or "dropconnect"
            (the weights of each hidden layer).
        keep: probability of keeping a hidden unit (dropout) or connection (DropConnect): the papers' p = 0.5.
        input_keep: dropout only: probability of keeping an input pixel (Srivastava: 0.8; 1.0 for none).
        max_norm: c of the max-norm constraint on each unit's incoming weights (None: no constraint).
        max_norm_fc1: the first layer's own c (its rows read pixels, on another scale than the hidden units);
            None: ``max_norm`` there too.
        per_example: DropConnect: a fresh mask per example (the paper's) or one per batch (cheaper).
        mask_groups: DropConnect with ``per_example=False``: masks a batch, one per contiguous group of examples
            (1: one mask per batch; the cost grows with it, far below per-example masks at 8 or 16).
        inference: DropConnect at test time: "gaussian" (the paper's moment matching, sampled), "gaussian-exact"
            (its expectation in closed form; ReLU only) or "mean".
        samples: DropConnect's Gaussian samples per unit at test time (the paper's Z).
    """

    cpu_channels_last = False  # nothing spatial to lay out

    def __init__(
        self,
        widths: tuple[int, ...],
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        activation: str,
        drop: str,
        keep: float,
        input_keep: float,
        max_norm: float | None,
        per_example: bool,
        max_norm_fc1: float | None = None,
        inference: str = "gaussian",
        samples: int = 1000,
        mask_groups: int = 1,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        if drop not in REGULARISERS:
            raise ConfigError(f"drop must be one of {list(REGULARISERS)}, got {drop!r}.")
        for name, value in (("keep", keep), ("input_keep", input_keep)):
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} is a probability of keeping, in (0, 1]; got {value!r}.")
        for name, bound in (("max_norm", max_norm), ("max_norm_fc1", max_norm_fc1)):
            if bound is not None and not bound > 0:
                raise ConfigError(f"{name} must be a positive norm bound (or None for no constraint); got {bound!r}.")
        if (isinstance(mask_groups, bool) or mask_groups != 1) and drop != "dropconnect":
            raise ConfigError(f"mask_groups is DropConnect's (drop=dropconnect); it means nothing with drop={drop!r}.")
        if not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {image_size!r}.")
        self.num_classes, self.in_chans, self.image_size = num_classes, in_chans, image_size
        self.max_norm, self.max_norm_fc1 = max_norm, max_norm_fc1
        self.constraint_activity = ConstraintActivity()
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())  # (B, C, H, W) -> (B, C·H·W)
        width = in_chans * image_size * image_size
        if drop == "dropout" and input_keep < 1.0:
            layers["input_drop"] = nn.Dropout(1.0 - input_keep)
        for i, units in enumerate(widths, start=1):
            if drop == "dropconnect":
                layers[f"fc{i}"] = DropConnectLinear(
                    width,
                    units,
                    p=keep,
                    activation=ACTIVATIONS[activation](),
                    per_example=per_example,
                    mask_groups=mask_groups,
                    inference=inference,
                    num_samples=samples,
                )
            else:
                stage = OrderedDict(linear=nn.Linear(width, units), act=ACTIVATIONS[activation]())
                if drop == "dropout":
                    stage["drop"] = nn.Dropout(1.0 - keep)
                layers[f"fc{i}"] = nn.Sequential(stage)
            width = units
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(OrderedDict(y=nn.Linear(width, num_classes)))
        self.num_features = width

    @property
    def has_weight_constraints(self) -> bool:  # type: ignore[override]
        return self.max_norm is not None or self.max_norm_fc1 is not None

    @torch.no_grad()
    def apply_weight_constraints_(self) -> None:
        """Max-norm (Srivastava et al. section 5.1): every row of each weight matrix (one unit's incoming weights)
        rescaled to norm ≤ c (``max_norm_fc1`` on the first layer when given). Tensor operations only (no host
        sync)."""
        linears = [module for module in self.modules() if isinstance(module, nn.Linear | DropConnectLinear)]
        for i, module in enumerate(linears):  # in forward order: fc1 first, the output layer y last
            bound = self.max_norm_fc1 if i == 0 and self.max_norm_fc1 is not None else self.max_norm
            if bound is not None:
                clip_row_norms_(module.weight, bound, self.constraint_activity)  # (out, in): a row a unit


def _options(image_size: int, activation: str, drop: str, keep: float, input_keep: float, max_norm, per_example):
    return dict(
        image_size=image_size,
        activation=activation,
        drop=drop,
        keep=keep,
        input_keep=input_keep,
        max_norm=max_norm,
        per_example=per_example,
    )


@register_model(
    "mlp-800",
    paper="Wan, Zeiler, Zhang, LeCun & Fergus 2013, Regularization of neural networks using DropConnect",
    year=2013,
    input_size=(1, 28, 28),
    num_classes=10,
    param_count=1_276_810,
    paper_params="not stated (784-800-800-10)",
    description="784-800-800-10 MLP of the DropConnect paper's MNIST table; drop=none|dropout|dropconnect",
    notes="activation: relu, sigmoid or tanh; drop: none, dropout or dropconnect (p = 0.5 on both hidden layers; "
    "DropConnect inference by the paper's Gaussian moment matching with `samples` draws, its closed form "
    "(inference=gaussian-exact, ReLU only), or inference=mean; "
    "per_example=False draws one mask per batch, which a CPU can afford, and with mask_groups=G one per G-th of "
    "it). The trainer sets image_size.",
)
def mlp_800(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    image_size: int = 28,
    activation: str = "relu",
    drop: str = "none",
    keep: float = 0.5,
    per_example: bool = True,
    inference: str = "gaussian",
    samples: int = 1000,
    mask_groups: int = 1,
) -> MLP:
    options = _options(image_size, activation, drop, keep, 1.0, None, per_example)
    return MLP(
        (800, 800),
        num_classes=num_classes,
        in_chans=in_chans,
        inference=inference,
        samples=samples,
        mask_groups=mask_groups,
        **options,
    )


@register_model(
    "mlp-1024",
    paper="Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov 2014, Dropout",
    year=2014,
    input_size=(1, 28, 28),
    num_classes=10,
    param_count=2_913_290,
    paper_params="not stated (784-1024-1024-1024-10)",
    description="Three hidden layers of 1024 ReLU units, the dropout paper's MNIST net; drop=none|dropout, max_norm",
    notes="drop=dropout keeps inputs with p 0.8 and hidden units with 0.5 (the paper's); max_norm=c adds the "
    "max-norm constraint (the paper's c was chosen on validation data in 3–4), max_norm_fc1=c1 a first-layer bound "
    "of its own (c = 3.5 in the paper's units is max_norm=1.75, max_norm_fc1=0.863 on standardised MNIST pixels "
    "with inverted dropout). The trainer sets image_size.",
)
def mlp_1024(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    image_size: int = 28,
    activation: str = "relu",
    drop: str = "dropout",
    keep: float = 0.5,
    input_keep: float = 0.8,
    max_norm: float | None = None,
    max_norm_fc1: float | None = None,
) -> MLP:
    options = _options(image_size, activation, drop, keep, input_keep, max_norm, True)
    return MLP((1024, 1024, 1024), num_classes=num_classes, in_chans=in_chans, max_norm_fc1=max_norm_fc1, **options)
