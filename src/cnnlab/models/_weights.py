"""torchvision interoperability: its state dicts into our models, and its ImageNet weights through ``create``.

Our torchvision-compatible models (``alexnet-tv``, ``vgg*``, ``resnet18`` .. ``resnet152``, ``googlenet-bn``)
use torchvision's module names, so a torchvision state dict loads with a single rule instead of a translation
table: a key that is not one of ours gets the prefix ``features.``. That rule exists because the model
contract puts the stages under ``features``, where ResNet and GoogLeNet keep them at the top level
(``layer1.0.conv1.weight`` -> ``features.layer1.0.conv1.weight``); AlexNet and VGG need no change at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cnnlab.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class PretrainedWeights:
    """Weights a model was loaded with, and the preprocessing and labels that travel with them.

    Attributes:
        source: e.g. ``"torchvision:ResNet50_Weights.IMAGENET1K_V2"``.
        url: where the file comes from.
        file: where torch's hub cache keeps it (``torch.hub.get_dir()/checkpoints/<file name>``).
        categories: class names, index = class.
        mean: per-channel mean of [0, 1] images, subtracted...
        std: ...and divided by.
        resize_size: the shorter side images are resized to first.
        crop_size: the side of the centre crop the model sees.
        interpolation: resize interpolation (``"bilinear"``...).
        metrics: the accuracies torchvision reports for these weights.
    """

    source: str
    url: str
    file: Path
    categories: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_size: int
    crop_size: int
    interpolation: str
    metrics: dict[str, Any] = field(default_factory=dict)
    _enum: Any = field(default=None, repr=False, compare=False)

    def transforms(self) -> nn.Module:
        """torchvision's preset: uint8 or float image tensor -> resized, cropped, standardised float tensor."""
        return self._enum.transforms()


# Our model name -> torchvision's. The registry fills it as models register (it imports this module, never the
# reverse), so weights and registry have no import cycle.
TORCHVISION_NAMES: dict[str, str] = {}


def torchvision_models() -> dict[str, str]:
    """Our model name -> torchvision's, for every model with a torchvision counterpart."""
    return dict(sorted(TORCHVISION_NAMES.items()))


def _hint_for(name: str) -> str:
    """Which of our models is torchvision's namesake of ``name`` (torchvision's ``alexnet`` is our ``alexnet-tv``)."""
    same = [ours for ours, theirs in torchvision_models().items() if theirs == name and ours != name]
    return f" torchvision's {name!r} is our {same[0]!r}; use that name." if same else ""


def resolve_torchvision_weights(info: Any, spec: str) -> PretrainedWeights:
    """``"torchvision"`` or ``"torchvision:<ENUM MEMBER>"`` -> the weights' description (no download yet)."""
    source, _, member = spec.partition(":")
    if source != "torchvision":
        raise ConfigError(f"Unknown weights {spec!r}: use 'torchvision' or 'torchvision:<name>' (e.g. IMAGENET1K_V1).")
    if not info.torchvision:
        raise ConfigError(
            f"Model {info.name!r} has no torchvision weights.{_hint_for(info.name)} Models with torchvision weights: "
            f"{', '.join(torchvision_models())}."
        )
    import torchvision

    enum = torchvision.models.get_model_weights(info.torchvision)
    if member:
        if member not in enum.__members__:
            raise ConfigError(f"{enum.__name__} has no {member!r}; it has {', '.join(enum.__members__)}.")
        weights = enum[member]
    else:
        weights = enum.DEFAULT
    preset = weights.transforms()
    return PretrainedWeights(
        source=f"torchvision:{weights}",
        url=weights.url,
        file=Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name,
        categories=tuple(weights.meta["categories"]),
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        resize_size=int(preset.resize_size[0]),
        crop_size=int(preset.crop_size[0]),
        interpolation=preset.interpolation.value,
        metrics=dict(weights.meta.get("_metrics", {})),
        _enum=weights,
    )


def download_state_dict(weights: PretrainedWeights) -> dict[str, torch.Tensor]:
    """The weights' state dict, from torch's hub cache or downloaded into it (hash-checked on download).

    Raises:
        CheckpointError: saying how to place the file by hand when the download fails.
    """
    cached = weights.file.exists()
    try:
        return weights._enum.get_state_dict(progress=True, check_hash=True)
    except Exception as error:  # network, hash or file errors: all mean "the weights are not usable here"
        if cached:
            raise CheckpointError(
                f"The cached weights file {weights.file} could not be read ({type(error).__name__}: {error}). "
                f"Delete it and retry, or replace it with a good copy of {weights.url}."
            ) from error
        raise CheckpointError(
            f"Could not download the {weights.source} weights from {weights.url} "
            f"({type(error).__name__}: {error}). On a machine without network, download that file elsewhere and "
            f"copy it to {weights.file} (torch's hub cache, torch.hub.get_dir(); set TORCH_HOME to move it); "
            f"it is then loaded from there without network."
        ) from error


def load_pretrained(model: nn.Module, weights: PretrainedWeights) -> None:
    """Download (or read from the cache) and load ``weights`` into ``model``; attach them as ``model.pretrained``."""
    state_dict = download_state_dict(weights)
    load_torchvision_state_dict(model, state_dict)
    model.pretrained = weights  # type: ignore[assignment]


def load_torchvision_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision state dict into our model of the same architecture.

    Works for ``alexnet-tv``, ``vgg-a``/``b``/``d``/``e`` (+ ``-bn``), ``resnet18`` .. ``resnet152`` and
    ``googlenet-bn``; afterwards the model computes what torchvision's does. Every key must find its place
    with the same shape (auxiliary-classifier keys are skipped when the model was built without them).

    Raises:
        ConfigError: the model has no torchvision counterpart (or was built with an incompatible option).
        CheckpointError: keys or shapes do not match, naming them.
    """
    name = getattr(model, "model_name", type(model).__name__)
    if not getattr(model, "torchvision_compatible", False):
        extra = ""
        if getattr(model, "stride_on", None) == "1x1":
            extra = " It was built with stride_on='1x1'; torchvision's bottlenecks need stride_on='3x3'."
        raise ConfigError(
            f"Model {name!r} cannot take torchvision weights.{extra}{_hint_for(name)} Models that can: "
            f"{', '.join(torchvision_models())}."
        )
    ours = model.state_dict()
    no_aux = getattr(model, "aux1", "absent") is None
    mapped: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in state_dict.items():
        target = key if key in ours else f"features.{key}"
        if target not in ours:
            if not (no_aux and key.startswith(("aux1.", "aux2."))):
                unexpected.append(key)
            continue
        if ours[target].shape != value.shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs ours {tuple(ours[target].shape)}")
            continue
        mapped[target] = value
    missing = [k for k in ours if k not in mapped and k not in {m.split(" ")[0] for m in mismatched}]
    if unexpected or missing or mismatched:
        parts = []
        for label, keys in (("shape mismatches", mismatched), ("unexpected keys", unexpected), ("missing", missing)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        hint = ""
        if mismatched:
            hint = " Build the model with the state dict's num_classes (e.g. 1000) and in_chans=3."
        if any(k.startswith(("aux1.", "aux2.")) for k in missing):
            hint += " The state dict has no auxiliary classifiers: build the model with aux_logits=False."
        raise CheckpointError(f"The state dict does not fit model {name!r}: {'; '.join(parts)}.{hint}")
    model.load_state_dict(mapped)
