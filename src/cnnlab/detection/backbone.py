"""Any zoo model as a detector's convolutional trunk, through the model contract.

Every cnnlab model has ``features``, an ``nn.Sequential`` of named stages (``model.stage_names``).
:class:`DetectorBackbone` keeps the stages up to one of them and measures two numbers by probing:

- ``stride`` s: how many input pixels one feature cell steps over;
- the border the unpadded ("valid") convolutions eat: LeNet-5's 5×5 convolutions lose 28 px of a 128 px canvas
  (out = (W − 28) / 4). The backbone pads its input by half of it on each side, so that feature cell i covers
  input pixels [s·i, s·(i + 1)) of the *unpadded* image, and the map has W / s cells. Anchors
  (torchvision's ``AnchorGenerator`` steps by image size // map size) and RoI pooling (``spatial_scale`` = 1/s)
  then line up with the image without any per-architecture table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError


def _trunk(model: nn.Module, stage: str | None) -> tuple[nn.Sequential, str]:
    names = list(getattr(model, "stage_names", []))
    features = getattr(model, "features", None)
    if not names or not isinstance(features, nn.Sequential):
        raise ConfigError(f"{type(model).__name__} does not follow the model contract (no `features` stages).")
    stage = stage or names[-1]
    if stage not in names:
        raise ConfigError(f"Backbone stage {stage!r} is not one of this model's stages: {', '.join(names)}.")
    children = dict(features.named_children())
    kept = names[: names.index(stage) + 1]
    return nn.Sequential(*[children[n] for n in kept]), stage


def _output_side(trunk: nn.Module, channels: int, side: int) -> int:
    with torch.no_grad():
        return int(trunk(torch.zeros(1, channels, side, side)).shape[-1])


class DetectorBackbone(nn.Module):
    """The stages of a zoo model up to ``stage`` (default: all), padded so feature cells tile the image.

    Args:
        model: a model of the zoo (``cnnlab.models.create``).
        stage: the last stage kept (default: the last one); deeper stages see more but are coarser.
        image_size: (H, W) of the detector's images (the probe uses it).

    Attributes:
        out_channels: channels of the feature map (what torchvision's detection heads read).
        stride: input pixels per feature cell.
        padding: pixels added on each side of the input (left, right, top, bottom).

    Raises:
        ConfigError: the stage is unknown, or the trunk shrinks the image to nothing.
    """

    def __init__(self, model: nn.Module, stage: str | None = None, image_size: tuple[int, int] = (128, 128)):
        super().__init__()
        self.body, self.stage = _trunk(model, stage)
        self.in_chans = int(getattr(model, "in_chans", 3))
        was_training = self.body.training
        self.body.eval()  # the probe must not move batch-norm statistics
        side = max(image_size)
        try:
            small, large = (
                _output_side(self.body, self.in_chans, side),
                _output_side(self.body, self.in_chans, 2 * side),
            )
        except RuntimeError as error:
            raise ConfigError(
                f"The {self.stage!r} stage of {type(model).__name__} cannot take {side}×{side} images ({error}); "
                "choose an earlier --backbone-stage or larger images."
            ) from None
        self.body.train(was_training)
        if small < 2 or large <= small:
            raise ConfigError(
                f"The {self.stage!r} stage turns a {side} px image into {small} cells: too coarse to detect anything; "
                "choose an earlier --backbone-stage."
            )
        self.stride = round(side / (large - small))  # one more cell per `stride` more pixels
        lost = max(side - self.stride * small, 0)  # the border valid convolutions eat (floor included)
        lost = lost - lost % self.stride if lost % self.stride < self.stride // 2 else lost
        self.padding = (lost // 2, lost - lost // 2, lost // 2, lost - lost // 2)
        with torch.no_grad():
            self.body.eval()
            probe = self.body(F.pad(torch.zeros(1, self.in_chans, *image_size), self.padding))
            self.body.train(was_training)
        self.out_channels = int(probe.shape[1])
        self.feature_size = tuple(probe.shape[-2:])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images -> (B, out_channels, ≈H/stride, ≈W/stride) features."""
        if any(self.padding):
            images = F.pad(images, self.padding)
        return self.body(images)
