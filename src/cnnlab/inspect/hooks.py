"""Getting at a model's layers by name: their outputs, receptive fields, and whether hooks can see its ReLUs.

Layer names are qualified module names (``features.c1.conv``, as in ``model.named_modules()``) or, for models
following the cnnlab contract, stage names (``c1`` = ``features.c1``). Every view resolves names here, so a
typo always gets the same error listing the valid names, closest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnlab.errors import ConfigError, UnknownNameError
from cnnlab.inspect._errors import UnsupportedModelError
from cnnlab.layers import ReceptiveField, ScaledTanh


def layer_names(model: nn.Module) -> list[str]:
    """Every name a view accepts for ``model``: stage names first (if it has stages), then qualified module names."""
    stages = list(model_stages(model))
    return stages + [name for name, _ in model.named_modules() if name and name not in stages]


def model_stages(model: nn.Module) -> dict[str, nn.Module]:
    """The model contract's named stages (``model.features``' children), or none for a model outside the zoo."""
    features = getattr(model, "features", None)
    return dict(features.named_children()) if isinstance(features, nn.Sequential) else {}


def resolve_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """(qualified name, module) of a layer given by qualified name or stage name.

    Raises:
        UnknownNameError: listing the valid names (the closest ones first, as suggestions).
    """
    modules = dict(model.named_modules())
    if name and name in modules:
        return name, modules[name]
    stages = model_stages(model)
    if name in stages:
        return f"features.{name}", stages[name]
    raise UnknownNameError("layer", name, layer_names(model))


class _Stop(Exception):
    """Raised by a forward hook to end the forward pass once every wanted output is captured."""


def layer_outputs(
    model: nn.Module, x: torch.Tensor, names: Sequence[str], *, stop_early: bool = False
) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for the batch ``x`` (forward hooks; gradients flow if enabled).

    Args:
        model: any module.
        x: input batch (B, C, H, W), already normalised.
        names: qualified or stage names; the result is keyed by these names as given.
        stop_early: end the forward pass as soon as the last wanted output exists (saves the rest of the model;
            the model's output is then not computed).

    A module called more than once per forward keeps the output of its first call.

    Raises:
        UnknownNameError: a name that is not a layer.
        ConfigError: a layer the forward pass never runs, or one whose output is not a tensor.
    """
    resolved = {name: resolve_layer(model, name) for name in names}
    outputs: dict[str, object] = {}
    wanted = {qualified for qualified, _ in resolved.values()}

    def make_hook(qualified: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if qualified in outputs:
                return
            if not stop_early and isinstance(output, torch.Tensor):
                output = output.clone()  # a later in-place op (ReLU(inplace=True)) would otherwise change it
            outputs[qualified] = output
            if stop_early and wanted <= outputs.keys():
                raise _Stop

        return hook

    handles = [module.register_forward_hook(make_hook(q)) for q, module in dict(resolved.values()).items()]
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    result = {}
    for name, (qualified, module) in resolved.items():
        if qualified not in outputs:
            raise ConfigError(
                f"Layer {name!r} ({type(module).__name__}) is never run by the model's forward pass, so it has no "
                "output to show. Choose a layer the forward pass uses (see `cnnlab summary`)."
            )
        output = outputs[qualified]
        if not isinstance(output, torch.Tensor):
            raise ConfigError(
                f"Layer {name!r} ({type(module).__name__}) returns a {type(output).__name__}, not a tensor; choose "
                "one of its sub-layers instead."
            )
        result[name] = output
    return result


def spatial_output(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The (B, C, h, w) output of layer ``name``, computing only as much of the model as needed.

    Raises:
        ConfigError: the layer's output is not a feature map (e.g. a fully connected layer).
    """
    output = layer_outputs(model, x, [name], stop_early=True)[name]
    if output.ndim != 4:
        maps = spatial_layers(model, tuple(x.shape[1:]))
        raise ConfigError(
            f"Layer {name!r} outputs shape {tuple(output.shape[1:])}, not a (channels, height, width) feature map, "
            f"so it has no units with a position in the image. Layers with feature maps: {', '.join(maps)}."
        )
    return output


def check_channel(name: str, channel: int, channels: int) -> int:
    """``channel`` if it indexes one of a layer's ``channels`` channels; else a ConfigError giving the range."""
    if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < channels:
        raise ConfigError(
            f"Channel {channel!r} is out of range: layer {name!r} has {channels} channels, numbered 0 to "
            f"{channels - 1}. Give --channel between 0 and {channels - 1}, or leave it out for the strongest."
        )
    return channel


@dataclass(frozen=True)
class LayerGeometry:
    """Where a layer's units sit in the input.

    Attributes:
        name: as asked for; ``qualified``: module name.
        output_shape: (C, h, w) without the batch dimension.
        receptive_field: the layer's field (None once the spatial layout is gone).
        exact: computed along the traced graph (branches and merges included); False: chain arithmetic.
        guessed: layers whose field was inferred from their shapes (see :class:`cnnlab.inspect.fields.FieldMap`).
    """

    name: str
    qualified: str
    output_shape: tuple[int, ...]
    receptive_field: ReceptiveField | None
    exact: bool = True
    guessed: tuple[str, ...] = ()


def layer_geometry(model: nn.Module, input_shape: tuple[int, int, int], name: str) -> LayerGeometry:
    """Output shape and receptive field of layer ``name`` for inputs of shape (C, H, W).

    Uses :func:`cnnlab.inspect.fields.receptive_fields`: ``ReceptiveField`` arithmetic along the model's traced
    graph, so residual shortcuts and Inception branches are merged, not chained.
    """
    from cnnlab.inspect.fields import receptive_fields

    qualified, _ = resolve_layer(model, name)
    fields = receptive_fields(model, tuple(input_shape))
    if qualified not in fields.fields:
        raise ConfigError(f"Layer {name!r} is never run by the model's forward pass; choose another layer.")
    return LayerGeometry(
        name,
        qualified,
        tuple(fields.shapes.get(qualified) or ()),
        fields.fields[qualified],
        fields.exact,
        tuple(fields.guessed),
    )


def field_notes(geometry: LayerGeometry) -> list[str]:
    """Caveats about a layer's receptive field, for the user."""
    notes = []
    if not geometry.exact:
        notes.append(
            "torch.fx could not trace this model, so the receptive field comes from chain arithmetic along the "
            "layers in the order they run: exact for chains, too large for models with parallel branches."
        )
    if geometry.guessed:
        notes.append(
            f"Receptive field: {', '.join(geometry.guessed)} shrink the map without a window attribute and were "
            "taken to be 1×1 subsampling (true for ResNet option-A shortcuts)."
        )
    return notes


def spatial_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Stage names (or, without stages, leaf module names) whose outputs are feature maps, input to output."""
    from cnnlab.models import trace

    records = trace(model, tuple(input_shape))
    maps = {r.name for r in records if r.output_shape is not None and len(r.output_shape) == 4}
    stages = list(model_stages(model))
    if stages:
        return [s for s in stages if any(n == f"features.{s}" or n.startswith(f"features.{s}.") for n in maps)]
    return [r.name for r in records if r.name in maps]


def default_spatial_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The deepest stage (or leaf) whose output is still a map larger than 1×1: the usual layer to look at."""
    from cnnlab.models import trace

    shapes = {r.name: r.output_shape for r in trace(model, tuple(input_shape))}
    candidates = spatial_layers(model, input_shape)
    for name in reversed(candidates):
        qualified = resolve_layer(model, name)[0]
        last = [s for n, s in shapes.items() if n == qualified or n.startswith(qualified + ".")]
        if last and last[-1] is not None and max(last[-1][2:]) > 1:
            return name
    if candidates:
        return candidates[-1]
    raise ConfigError("The model has no layer with a spatial feature map; these views need a convolutional model.")


def unit_box(field: ReceptiveField, y: int, x: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) in input pixels of the receptive field of the unit at (y, x); bottom/right
    exclusive. May extend past the image where the layers pad: clip or pad when cropping."""
    half = (field.size - 1) / 2
    top = round(field.start + y * field.jump - half)
    left = round(field.start + x * field.jump - half)
    return top, left, top + field.size, left + field.size


def crop(image: torch.Tensor, box: tuple[int, int, int, int], fill: float = 0) -> torch.Tensor:
    """The (C, bottom−top, right−left) region ``box`` of ``image`` (C, H, W); parts outside the image are ``fill``."""
    top, left, bottom, right = box
    c, h, w = image.shape
    out = torch.full((c, bottom - top, right - left), fill, dtype=image.dtype, device=image.device)
    t, lf, b, r = max(top, 0), max(left, 0), min(bottom, h), min(right, w)  # the part inside the image
    if t < b and lf < r:
        out[:, t - top : b - top, lf - left : r - left] = image[:, t:b, lf:r]
    return out


# ---- ReLUs that attribution hooks can and cannot see -----------------------------------------------------------
# Element-wise non-linearities that Captum's deconvnet/guided backprop hooks leave alone (only nn.ReLU is hooked).
OTHER_ACTIVATIONS = (
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Softplus,
    ScaledTanh,
)
_FUNCTIONAL_RELUS = {"relu", "relu_", "threshold", "threshold_"}
_CLAMPS = {"clamp", "clamp_", "clamp_min", "clamp_min_", "clip", "clip_"}
_MAXIMA = {"maximum", "max", "fmax"}


def _is_zero(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() > 0 and bool((value == 0).all())
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _is_relu_call(name: str, args: tuple, kwargs: dict) -> bool:
    """relu in any of its spellings: relu/threshold, clamp(min=0) with no upper bound, maximum(x, 0)."""
    if name in _FUNCTIONAL_RELUS:
        return True
    if name in _CLAMPS:
        low = args[1] if len(args) > 1 else kwargs.get("min")
        high = args[2] if len(args) > 2 else kwargs.get("max")
        return high is None and _is_zero(low)
    if name in _MAXIMA and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args):
        return _is_zero(args[0]) or _is_zero(args[1])  # max(x, dim) has an int: not this
    return False


class _ReluCalls(TorchFunctionMode):
    """Records every relu call and the module that was running when it happened."""

    def __init__(self, stack: list[tuple[str, nn.Module]]):
        super().__init__()
        self.stack, self.calls = stack, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if self.stack and _is_relu_call(name, args, kwargs or {}):
            self.calls.append((self.stack[-1], name, bool((kwargs or {}).get("inplace"))))
        return func(*args, **(kwargs or {}))


def functional_relus(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Modules whose own ``forward`` applies a ReLU as a function: ``F.relu``, ``torch.relu``, ``Tensor.relu``,
    ``threshold``, ``clamp(min=0)``/``clamp_min(0)``/``clip(0)`` without an upper bound, ``maximum(x, zeros)``.

    Runs one forward pass on ``x`` under a ``TorchFunctionMode`` that sees every torch call, with a stack of the
    modules running. A relu call whose innermost running module is not an ``nn.ReLU`` is a functional ReLU.
    Not caught: ReLUs built from other operations, such as ``x * (x > 0)`` or ``torch.where(x > 0, x, 0)``.
    """
    stack: list[tuple[str, nn.Module]] = []

    def enter(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            stack.append((name, module))

        return hook

    def leave(module: nn.Module, args: tuple, output: object) -> None:  # returns None: the output stays as it is
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    mode = _ReluCalls(stack)
    try:
        with torch.no_grad(), mode:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    found = []
    for (name, module), func, _ in mode.calls:
        if isinstance(module, nn.ReLU):
            continue
        where = f"{name or '<model>'} ({type(module).__name__}.forward calls {func})"
        if where not in found:
            found.append(where)
    return found


def check_relus_hookable(model: nn.Module, x: torch.Tensor, view: str) -> None:
    """Refuse models whose ReLUs the deconvnet/guided-backprop hooks would miss or break.

    Raises:
        UnsupportedModelError: naming the in-place ``nn.ReLU`` modules or the modules calling a functional relu.
    """
    inplace = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU) and m.inplace]
    if inplace:
        raise UnsupportedModelError(
            f"{view} needs backward hooks on every ReLU, but {', '.join(inplace[:5])}"
            f"{f' and {len(inplace) - 5} more' if len(inplace) > 5 else ''} are nn.ReLU(inplace=True), whose "
            "outputs the hooks cannot wrap. Build the model with inplace=False, or pass a copy made by "
            "cnnlab.inspect.without_inplace_relu(model) (same results, a little more memory)."
        )
    functional = functional_relus(model, x)
    if functional:
        raise UnsupportedModelError(
            f"{view} replaces the backward pass of nn.ReLU modules, but these modules apply a ReLU as a function "
            f"call, which it cannot see: {'; '.join(functional[:5])}. Their ReLUs would be back-propagated as "
            "plain gradients and the result would silently be wrong. Rewrite them to use nn.ReLU() modules."
        )


def without_inplace_relu(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``model`` with every ``nn.ReLU(inplace=True)`` switched to ``inplace=False``, and their names."""
    import copy

    clone = copy.deepcopy(model)
    changed = []
    for name, module in clone.named_modules():
        if isinstance(module, nn.ReLU) and module.inplace:
            module.inplace = False
            changed.append(name)
    return clone, changed


def executed_before(model: nn.Module, input_shape: tuple[int, ...], qualified: str) -> list[tuple[str, nn.Module]]:
    """Leaf modules the forward pass runs up to and including layer ``qualified`` (in execution order)."""
    from cnnlab.models import trace

    records = trace(model, tuple(input_shape))
    last = max(
        (i for i, r in enumerate(records) if r.name == qualified or r.name.startswith(qualified + ".")),
        default=len(records) - 1,
    )
    return [(r.name, r.module) for r in records[: last + 1]]
