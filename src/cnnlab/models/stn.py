"""Spatial transformer networks for distorted MNIST (Jaderberg et al., "Spatial transformer networks", 2015).

Four models, as the paper's section 4.1 and appendix A.1 compare them: a fully connected network (FCN) and a CNN,
each alone and with a spatial transformer in front (ST-FCN, ST-CNN). Every model takes an ``image_size`` (the
trainer sets it from the data: 28 for R, P and E, 42 for RTS, 60 for cluttered MNIST) because its fully
connected layers depend on it.

    CNN      [avg pool 2×2]  conv 9×9, 32, ReLU  max pool 2×2  conv 7×7, 32, ReLU  max pool 2×2  linear -> classes
    FCN      [avg pool 2×2]  linear 128, ReLU ×3                                                 linear -> classes
    ST-CNN   transformer(localisation: max pool 2×2, conv 5×5 20, ReLU, max pool 2×2, conv 5×5 20, ReLU,
             linear 20, ReLU) -> the CNN above without its first pooling
    ST-FCN   transformer(localisation: linear 32, ReLU ×3) -> the FCN above without its first pooling

Inputs larger than 32 px (RTS's 42×42 and cluttered MNIST's 60×60) are classified at half resolution, as the
paper does for those two sets: the baselines average-pool 2×2 first and the transformer samples its output at
half the input's size (``downsample``), so the classifier behind it is the same network and the transformer's
only advantage is *where* it looks. The convolutions are zero-padded to keep their size ("same"): the same
classifier then takes 14, 21 and 30 px.

As we read the appendix: the layer types, kernel sizes and widths above, ReLU everywhere, the regressor of θ
initialised to the identity. Not reproduced exactly: the paper's learning-rate multipliers for the localisation
network and its 150,000-iteration schedule (our recipes: docs/stn.md).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.layers import SpatialTransformer
from cnnlab.models._common import FullyConnectedHeadModel
from cnnlab.models._registry import register_model

PAPER = "Jaderberg, Simonyan, Zisserman & Kavukcuoglu 2015, Spatial transformer networks"

# (kind, width, kernel): the classifier networks, after any transformer or first pooling.
CNN = [("conv", 32, 9), ("pool", None, 2), ("conv", 32, 7), ("pool", None, 2)]
FCN = [("fc", 128, None), ("fc", 128, None), ("fc", 128, None)]
# The localisation networks (the last fc feeds the transformer's regressor of θ).
CNN_LOCALISATION = [("pool", None, 2), ("conv", 20, 5), ("pool", None, 2), ("conv", 20, 5), ("fc", 20, None)]
FCN_LOCALISATION = [("fc", 32, None), ("fc", 32, None), ("fc", 32, None)]


def _stack(table: list[tuple], channels: int, size: int, padding: str) -> tuple[list[tuple[str, nn.Module]], int, int]:
    """Named layers for ``table`` on a channels×size×size input -> (layers, output width, output side).

    ``padding``: "same" pads convolutions to keep the size (the classifiers), "valid" does not (localisation).
    A table whose layers shrink the input to nothing raises :class:`ConfigError` naming the layer.
    """
    layers: list[tuple[str, nn.Module]] = []
    width, flat, counts = channels, False, {"conv": 0, "pool": 0, "fc": 0}
    for kind, units, kernel in table:
        counts[kind] += 1
        name = f"{kind}{counts[kind]}"
        if kind == "conv":
            pad = kernel // 2 if padding == "same" else 0
            layers.append((name, nn.Sequential(nn.Conv2d(width, units, kernel, padding=pad), nn.ReLU())))
            width, size = units, size + 2 * pad - kernel + 1
        elif kind == "pool":
            layers.append((name, nn.MaxPool2d(kernel)))
            size //= kernel
        else:
            in_features = width if flat else width * size * size
            if not flat:
                layers.append(("flatten", nn.Flatten()))  # (B, C, H, W) -> (B, C·H·W)
                flat = True
            layers.append((name, nn.Sequential(nn.Linear(in_features, units), nn.ReLU())))
            width, size = units, 1
        if size < 1:
            raise ConfigError(f"The input is too small for this network: nothing is left after its layer {name}.")
    return layers, width, size


class DistortedMNISTNet(FullyConnectedHeadModel):
    """FCN, CNN, ST-FCN or ST-CNN (see the module's docstring). Stages: ``transformer`` or ``downsample`` (where
    there is one), then the classifier network's layers (``conv1``, ``pool1``, ... or ``fc1``, ...); the head
    (``classifier``) is the output layer ``y``.

    Args:
        body: :data:`CNN` or :data:`FCN`.
        localisation: :data:`CNN_LOCALISATION`, :data:`FCN_LOCALISATION`, or None for no transformer.
        image_size: side of the (square) input in pixels.
        downsample: 1, or 2 to classify at half resolution (None: 2 above 32 px, else 1).
        st_size: side of the transformer's output (default: image_size // downsample).
        transform, sampling, tps_points, padding: the transformer's (see :class:`~cnnlab.layers.SpatialTransformer`).
        transformers: how many transformers side by side (their outputs stacked as channels).
    """

    def __init__(
        self,
        body: list[tuple],
        localisation: list[tuple] | None,
        *,
        num_classes: int,
        in_chans: int,
        image_size: int,
        downsample: int | None = None,
        st_size: int | None = None,
        transform: str = "affine",
        sampling: str = "bilinear",
        tps_points: int = 4,
        transformers: int = 1,
        padding: str = "zeros",
    ):
        super().__init__()
        if not isinstance(image_size, int) or image_size < 4:
            raise ConfigError(f"image_size must be an integer of at least 4 pixels, got {image_size!r}.")
        downsample = (2 if image_size > 32 else 1) if downsample is None else downsample
        if downsample not in (1, 2):
            raise ConfigError(f"downsample must be 1 or 2, got {downsample!r}.")
        self.num_classes, self.in_chans, self.image_size = num_classes, in_chans, image_size
        stages: list[tuple[str, nn.Module]] = []
        size = image_size // downsample
        body_chans = in_chans
        if localisation is not None:
            size = size if st_size is None else st_size
            if not isinstance(size, int) or size < 1:
                raise ConfigError(f"st_size must be a positive integer, got {size!r}.")
            if not isinstance(transformers, int) or transformers < 1:
                raise ConfigError(f"transformers must be a positive integer, got {transformers!r}.")

            def make() -> SpatialTransformer:
                loc_layers, loc_width, _ = _stack(localisation, in_chans, image_size, "valid")
                return SpatialTransformer(
                    nn.Sequential(OrderedDict(loc_layers)),
                    transform,
                    (size, size),
                    features=loc_width,
                    sampling=sampling,
                    tps_points=tps_points,
                    padding=padding,
                )

            if transformers == 1:
                stages.append(("transformer", make()))
            else:  # side by side, each on the whole input; their outputs stacked as channels
                stages.append(("transformer", ParallelTransformers([make() for _ in range(transformers)])))
                body_chans = in_chans * transformers
        elif st_size is not None:
            raise ConfigError("st_size is the transformer's output size; this model has no transformer.")
        elif downsample == 2:
            stages.append(("downsample", nn.AvgPool2d(2)))
        try:
            body_layers, width, side = _stack(body, body_chans, size, "same")
        except ConfigError as error:
            where = "the transformer's output" if localisation is not None else "the input after downsampling"
            raise ConfigError(
                f"{where} is {size}×{size} px, too small for the classifier behind it ({error}); "
                "the CNN needs at least 4 px (two 2×2 poolings): raise st_size / image_size or use downsample=1."
            ) from None
        self.features = nn.Sequential(OrderedDict(stages + body_layers))
        flat = width if body[-1][0] == "fc" else width * side * side
        self.classifier = nn.Sequential(OrderedDict(y=nn.Linear(flat, num_classes)))
        self.num_features = flat

    cpu_channels_last = False  # grid_sample and the small FC layers gain nothing from NHWC

    # The localisation network (and the regressor of θ) at a tenth of the classifier's learning rate: at the same
    # rate θ swings from batch to batch and the classifier chases a moving image (measured: docs/stn.md).
    lr_multipliers = {"features.transformer.": 0.1}  # noqa: RUF012

    @property
    def transformer(self) -> SpatialTransformer | None:
        """The spatial transformer in front of the classifier (the first of parallel ones), or None."""
        stage = self.features._modules.get("transformer")
        return stage.branches[0] if isinstance(stage, ParallelTransformers) else stage  # type: ignore[return-value]


class ParallelTransformers(nn.Module):
    """Spatial transformers side by side on the same input, their outputs concatenated along the channels:
    (B, C, H, W) -> (B, C·n, h, w). The paper's MNIST-addition model: each transformer can attend to one digit."""

    def __init__(self, branches: list[SpatialTransformer]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


@register_model(
    "dmnist-cnn",
    paper=PAPER,
    year=2015,
    input_size=(1, 42, 42),
    num_classes=10,
    param_count=60_842,
    paper_params="not stated",
    description="The paper's CNN baseline for distorted MNIST (two conv + max-pool layers); any image_size",
    notes="Convolutions zero-padded ('same'); inputs above 32 px average-pooled 2×2 first, as the paper's RTS and "
    "cluttered models. The trainer sets image_size from the data.",
)
def dmnist_cnn(
    *, num_classes: int = 10, in_chans: int = 1, image_size: int = 42, downsample: int | None = None
) -> DistortedMNISTNet:
    return DistortedMNISTNet(CNN, None, **locals())  # every option of the signature, as given


@register_model(
    "dmnist-fcn",
    paper=PAPER,
    year=2015,
    input_size=(1, 42, 42),
    num_classes=10,
    param_count=90_890,
    paper_params="not stated",
    description="The paper's fully connected baseline for distorted MNIST (3 hidden layers of 128); any image_size",
    notes="Inputs above 32 px average-pooled 2×2 first. The trainer sets image_size from the data.",
)
def dmnist_fcn(
    *, num_classes: int = 10, in_chans: int = 1, image_size: int = 42, downsample: int | None = None
) -> DistortedMNISTNet:
    return DistortedMNISTNet(FCN, None, **locals())


@register_model(
    "st-cnn",
    paper=PAPER,
    year=2015,
    input_size=(1, 42, 42),
    num_classes=10,
    param_count=77_928,
    paper_params="not stated",
    description="ST-CNN: a spatial transformer (conv localisation net; affine, projective or TPS) before the CNN",
    notes="transform: affine, projective or tps; sampling: bilinear, nearest or bicubic; st_size: the transformer's "
    "output side (default: image_size, halved above 32 px). The trainer sets image_size from the data.",
    aliases=("stn",),
)
def st_cnn(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    image_size: int = 42,
    transform: str = "affine",
    downsample: int | None = None,
    st_size: int | None = None,
    sampling: str = "bilinear",
    tps_points: int = 4,
    padding: str = "zeros",
) -> DistortedMNISTNet:
    return DistortedMNISTNet(CNN, CNN_LOCALISATION, **locals())


@register_model(
    "st-fcn",
    paper=PAPER,
    year=2015,
    input_size=(1, 42, 42),
    num_classes=10,
    param_count=149_680,
    paper_params="not stated",
    description="ST-FCN: a spatial transformer (fully connected localisation net) before the FCN",
    notes="As st-cnn, with the fully connected networks. The trainer sets image_size from the data.",
)
def st_fcn(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    image_size: int = 42,
    transform: str = "affine",
    downsample: int | None = None,
    st_size: int | None = None,
    sampling: str = "bilinear",
    tps_points: int = 4,
    padding: str = "zeros",
) -> DistortedMNISTNet:
    return DistortedMNISTNet(FCN, FCN_LOCALISATION, **locals())


@register_model(
    "st-cnn-addition",
    paper=PAPER,
    year=2015,
    input_size=(2, 42, 42),
    num_classes=19,
    param_count=110_999,
    paper_params="not stated",
    description="The paper's MNIST-addition model: two spatial transformers side by side before one CNN",
    notes="For mnist-addition (two RTS digits as two channels; the sum is the class). Each transformer sees both "
    "channels; their outputs are stacked (4 channels) for the CNN. transformers=1: one (the paper's 'single'), 0: "
    "the CNN alone; hidden=N: a ReLU layer of N units before the output. The paper's exact sizes are not reproduced.",
)
def st_cnn_addition(
    *,
    num_classes: int = 19,
    in_chans: int = 2,
    image_size: int = 42,
    transform: str = "affine",
    transformers: int = 2,
    downsample: int | None = None,
    hidden: int = 0,
) -> DistortedMNISTNet:
    # A sum is not linear in the two digits' identities: hidden > 0 gives the head a nonlinear layer to add them in
    # (as reproductions of this experiment do), where the single-digit CNN ends in one linear layer.
    if hidden < 0:  # the registry has checked that it is a whole number
        raise ConfigError(f"hidden is the width of a layer before the output (0: none), got {hidden!r}.")
    if transformers < 0:
        raise ConfigError(f"transformers is how many side by side (0: the CNN alone), got {transformers!r}.")
    options = {name: value for name, value in locals().items() if name != "hidden"}
    body = [*CNN, ("fc", hidden, None)] if hidden else CNN
    if transformers == 0:  # the paper's CNN baseline for this task: the same classifier, average-pooled 2×2 input
        if transform != "affine":
            raise ConfigError(f"transform={transform} needs a transformer; transformers=0 is the CNN alone.")
        return DistortedMNISTNet(
            body, None, num_classes=num_classes, in_chans=in_chans, image_size=image_size, downsample=downsample
        )
    return DistortedMNISTNet(body, CNN_LOCALISATION, **options)
