"""The model registry: one ``create(name, ...)`` for every architecture."""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.models._contract import ClassifierModel


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model before building it.

    Attributes:
        name: registry name, e.g. ``"lenet5"``.
        builder: function building the model; its keyword arguments are the model's options.
        paper: short citation of the paper the model follows.
        year: year of that paper.
        input_size: default input (C, H, W).
        num_classes: default number of classes.
        param_count: trainable parameters at the defaults, as the paper states them (None if it states none).
        fixed_input_size: True if the model only takes exactly ``input_size`` (e.g. LeNet-5's F6).
        description: one line on what the model is.
    """

    name: str
    builder: Callable[..., ClassifierModel] = field(repr=False)
    paper: str
    year: int
    input_size: tuple[int, int, int]
    num_classes: int
    param_count: int | None = None
    fixed_input_size: bool = False
    description: str = ""

    @property
    def options(self) -> dict[str, object]:
        """The builder's keyword options and their defaults."""
        return {
            name: p.default
            for name, p in inspect.signature(self.builder).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY or p.default is not inspect.Parameter.empty
        }


_MODELS: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    paper: str,
    year: int,
    input_size: tuple[int, int, int],
    num_classes: int = 10,
    param_count: int | None = None,
    fixed_input_size: bool = False,
    description: str = "",
) -> Callable[[Callable[..., ClassifierModel]], Callable[..., ClassifierModel]]:
    """Decorator registering a model builder under ``name``. Registering a name twice is an error.

    The builder must accept ``num_classes`` and ``in_chans`` keywords.
    """

    def decorator(builder: Callable[..., ClassifierModel]) -> Callable[..., ClassifierModel]:
        if name in _MODELS:
            raise ConfigError(f"Model name {name!r} is already registered (by {_MODELS[name].builder.__qualname__}).")
        params = inspect.signature(builder).parameters
        missing = {"num_classes", "in_chans"} - set(params)
        if missing:
            raise ConfigError(f"Builder for {name!r} must accept {sorted(missing)} keyword arguments.")
        _MODELS[name] = ModelInfo(
            name, builder, paper, year, tuple(input_size), num_classes, param_count, fixed_input_size, description
        )
        return builder

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"lenet*"``), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model; unknown names raise with the closest valid names."""
    if name not in _MODELS:
        raise UnknownNameError("model", name, _MODELS)
    return _MODELS[name]


def create(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    device: torch.device | str | None = None,
    **options: object,
) -> ClassifierModel:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        num_classes: number of output classes (default: the model's).
        in_chans: number of input channels (default: the model's).
        device: where to build the parameters (``"meta"`` builds shapes only, for free).
        **options: the model's own options (see ``get_model_info(name).options``); unknown ones are an error.

    Example:
        >>> model = create("lenet5", num_classes=10)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """
    info = get_model_info(name)
    valid = info.options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items() if k not in ("num_classes", "in_chans")) or "none"
        raise ConfigError(f"Model {name!r} has no option {', '.join(map(repr, unknown))}. Its options: {listing}.")
    num_classes = info.num_classes if num_classes is None else num_classes
    in_chans = info.input_size[0] if in_chans is None else in_chans
    for label, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}.")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = info.builder(num_classes=num_classes, in_chans=in_chans, **options)
    model.model_name = name  # type: ignore[assignment]
    return model
