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
from cnnlab.models._weights import TORCHVISION_NAMES, load_pretrained, resolve_torchvision_weights


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
        param_count: trainable parameters at the defaults: the paper's count where it states an exact one,
            else the exact count of this implementation (``paper_params`` then says what the paper states).
        fixed_input_size: True if the model only takes exactly ``input_size`` (e.g. LeNet-5's F6).
        description: one line on what the model is.
        paper_params: the parameter figure as the paper states it (e.g. ``"60 million"``), for the docs.
        notes: what differs from the paper, and why (rendered in ``docs/models.md``).
        torchvision: the torchvision model of the same architecture and module names (its state dicts load
            with :func:`cnnlab.models.load_torchvision_state_dict`, its weights with ``weights="torchvision"``).
        torchvision_options: options our builder needs to match torchvision's pretrained model (GoogLeNet's
            ``transform_input``).
        aliases: other names that :func:`create` accepts for this model.
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
    paper_params: str = ""
    notes: str = ""
    torchvision: str | None = None
    torchvision_options: tuple[tuple[str, object], ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def options(self) -> dict[str, object]:
        """The builder's keyword options and their defaults."""
        return {
            name: p.default
            for name, p in inspect.signature(self.builder).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY or p.default is not inspect.Parameter.empty
        }


_MODELS: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}  # alias -> registered name


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
    paper_params: str = "",
    notes: str = "",
    torchvision: str | None = None,
    torchvision_options: dict[str, object] | None = None,
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[..., ClassifierModel]], Callable[..., ClassifierModel]]:
    """Decorator registering a model builder under ``name`` (and ``aliases``). Registering a name twice is an error.

    The builder must accept ``num_classes`` and ``in_chans`` keywords.
    """

    def decorator(builder: Callable[..., ClassifierModel]) -> Callable[..., ClassifierModel]:
        for new in (name, *aliases):
            if new in _MODELS or new in _ALIASES:
                owner = _MODELS.get(new) or _MODELS[_ALIASES[new]]
                raise ConfigError(f"Model name {new!r} is already registered (by {owner.builder.__qualname__}).")
        params = inspect.signature(builder).parameters
        missing = {"num_classes", "in_chans"} - set(params)
        if missing:
            raise ConfigError(f"Builder for {name!r} must accept {sorted(missing)} keyword arguments.")
        _MODELS[name] = ModelInfo(
            name=name,
            builder=builder,
            paper=paper,
            year=year,
            input_size=tuple(input_size),
            num_classes=num_classes,
            param_count=param_count,
            fixed_input_size=fixed_input_size,
            description=description,
            paper_params=paper_params,
            notes=notes,
            torchvision=torchvision,
            torchvision_options=tuple((torchvision_options or {}).items()),
            aliases=tuple(aliases),
        )
        for alias in aliases:
            _ALIASES[alias] = name
        if torchvision:
            TORCHVISION_NAMES[name] = torchvision
        return builder

    return decorator


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"lenet*"``), sorted.

    Aliases (e.g. torchvision's ``"vgg16"`` for ``"vgg-d"``) are listed only with ``include_aliases``.
    """
    names = list(_MODELS) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model or alias; unknown names raise with the closest valid names."""
    name = _ALIASES.get(name, name)
    if name not in _MODELS:
        raise UnknownNameError("model", name, [*_MODELS, *_ALIASES])
    return _MODELS[name]


def _check_option_type(model: str, key: str, value: object, default: object) -> None:
    """Refuse a value of another kind than the option's default (a bool, a whole number, a number or a word), so a
    mistyped option fails here instead of silently meaning something else: the string "false" is truthy."""
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(default, float):
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a word"
    else:  # None, tuples...: the builder checks
        return
    if not ok:
        raise ConfigError(
            f"Option {key} of model {model!r} is {kind} (default {default!r}), got {value!r} ({type(value).__name__})."
        )


def create(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    device: torch.device | str | None = None,
    weights: str | None = None,
    pretrained: bool = False,
    **options: object,
) -> ClassifierModel:
    """Build a registered model.

    Args:
        name: registry name or alias (see :func:`list_models`).
        num_classes: number of output classes (default: the model's; with ``weights``, the weights').
        in_chans: number of input channels (default: the model's).
        device: where to build the parameters (``"meta"`` builds shapes only, for free).
        weights: ``"torchvision"`` loads torchvision's default ImageNet weights for the model (downloaded once
            into torch's hub cache, hash-checked), ``"torchvision:IMAGENET1K_V1"`` a named set; the model then
            carries ``model.pretrained`` (a :class:`~cnnlab.models.PretrainedWeights`: preprocessing,
            categories, metrics). Only models with a ``torchvision`` counterpart have weights.
        pretrained: ``True`` is ``weights="torchvision"`` (timm's and torchvision's old spelling).
        **options: the model's own options (see ``get_model_info(name).options``); unknown ones are an error.

    Raises:
        ConfigError: unknown option, bad count, or weights asked for a model that has none.
        CheckpointError: the weights could not be downloaded or read (the message says where to put the file).

    Example:
        >>> model = create("lenet5", num_classes=10)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """
    if pretrained and weights is None:
        weights = "torchvision"
    info = get_model_info(name)
    valid = info.options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items() if k not in ("num_classes", "in_chans")) or "none"
        raise ConfigError(f"Model {name!r} has no option {', '.join(map(repr, unknown))}. Its options: {listing}.")
    for key, value in options.items():
        _check_option_type(name, key, value, valid[key])
    pretrained = None
    if weights is not None:
        pretrained = resolve_torchvision_weights(info, weights)
        expected = len(pretrained.categories)
        if num_classes not in (None, expected) or in_chans not in (None, 3):
            raise ConfigError(
                f"The {pretrained.source} weights are for 3-channel inputs and {expected} classes; build with those "
                f"(then call model.reset_classifier(n) to fine-tune for n classes)."
            )
        num_classes = expected
        options = {**dict(info.torchvision_options), **options}
    num_classes = info.num_classes if num_classes is None else num_classes
    in_chans = info.input_size[0] if in_chans is None else in_chans
    for label, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}.")
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = info.builder(num_classes=num_classes, in_chans=in_chans, **options)
    model.model_name = info.name  # type: ignore[assignment]
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
