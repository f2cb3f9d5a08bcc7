"""Checking an input shape against a model before any real computation, with errors that name the layer.

The model is run on ``meta`` tensors (shapes only, no memory, no arithmetic) through
``torch.func.functional_call``, so the check costs milliseconds even for large models and never touches the
real weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import InputSizeError
from cnnlab.layers.arithmetic import conv_output_size, window_geometry


@dataclass
class LayerTrace:
    """One executed leaf module: its qualified name, the module, and its input/output shapes (batch first)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None


class _ProbeFailure(Exception):
    def __init__(self, layer: LayerTrace, cause: Exception, too_small: bool):
        super().__init__(str(cause))
        self.layer, self.cause, self.too_small = layer, cause, too_small


def is_leaf(module: nn.Module) -> bool:
    """A module that computes something itself: no child modules other than containers of parameters."""
    return all(isinstance(c, nn.ParameterDict | nn.ParameterList) for c in module.children())


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every leaf of ``model``, in registration order."""
    return [(n, m) for n, m in model.named_modules() if n and is_leaf(m)]


def trace(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> list[LayerTrace]:
    """Run ``model`` on a meta tensor of shape (batch_size, *input_shape) and record every leaf module executed.

    The model runs in eval mode (each module's own mode is restored afterwards): shapes do not depend on it, and
    in training mode batch norm refuses a batch of one at 1×1, which is not a question of input size.

    Raises:
        _ProbeFailure: (internal) if a layer fails; :func:`check_input_shape` turns it into an InputSizeError.
    """
    meta_state = {
        name: torch.empty_like(t, device="meta")
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
    }
    records: list[LayerTrace] = []
    running: list[LayerTrace] = []

    def pre_hook(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None
            running.append(LayerTrace(name, module, shape, None))

        return hook

    def post_hook(module: nn.Module, args: tuple, output: object) -> None:
        record = running.pop()
        if isinstance(output, torch.Tensor):
            record.output_shape = tuple(output.shape)
        records.append(record)

    handles = []
    for name, module in leaf_modules(model):
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        handles.append(module.register_forward_hook(post_hook))
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            torch.func.functional_call(model, meta_state, (torch.empty(batch_size, *input_shape, device="meta"),))
    except Exception as error:  # any torch error inside a layer: reported with the layer's name
        layer = running[-1] if running else LayerTrace("<model>", model, (batch_size, *input_shape), None)
        window = window_geometry(layer.module)
        too_small = False
        if window is not None and layer.input_shape is not None and len(layer.input_shape) == 4:
            kernel, stride, padding, dilation = window
            ceil = bool(getattr(layer.module, "ceil_mode", False))
            smallest = min(layer.input_shape[2:])
            too_small = conv_output_size(smallest, kernel, stride, padding, dilation, ceil_mode=ceil) < 1
        raise _ProbeFailure(layer, error, too_small) from error
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return records


def _fits(model: nn.Module, in_chans: int, size: int) -> bool | None:
    """True if a size×size input runs, False if some layer finds it too small, None for any other failure."""
    try:
        trace(model, (in_chans, size, size))
        return True
    except _ProbeFailure as failure:
        return False if failure.too_small else None


def smallest_input_size(model: nn.Module, in_chans: int, limit: int = 8192) -> int | None:
    """The smallest square input side that no windowed layer finds too small (binary search on meta tensors)."""
    low, high = 1, limit
    if _fits(model, in_chans, high) is False:
        return None
    while low < high:
        mid = (low + high) // 2
        if _fits(model, in_chans, mid) is False:
            low = mid + 1
        else:
            high = mid
    return low


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape)


def check_input_shape(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerTrace]:
    """Check that ``model`` accepts inputs of shape (C, H, W); return the per-layer trace if it does.

    Raises:
        InputSizeError: naming the layer that cannot take the input, and the size that would work.
    """
    name = getattr(model, "model_name", type(model).__name__)
    in_chans = getattr(model, "in_chans", None)
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise InputSizeError(f"Input shape {input_shape} is not a (channels, height, width) triple of positive sizes.")
    if in_chans is not None and input_shape[0] != in_chans:
        raise InputSizeError(
            f"Input has {input_shape[0]} channel(s) but model {name!r} was built for {in_chans}. Build it with "
            f"in_chans={input_shape[0]} (CLI: the dataset sets it), or convert the images "
            f"({'to grey' if in_chans == 1 else 'to RGB'})."
        )
    try:
        return trace(model, tuple(input_shape))
    except _ProbeFailure as failure:
        layer = failure.layer
        got = _shape_text(layer.input_shape[1:]) if layer.input_shape else "?"
        if failure.too_small:
            smallest = smallest_input_size(model, input_shape[0])
            fix = (
                f"The smallest input it accepts is {input_shape[0]}×{smallest}×{smallest}."
                if smallest
                else "No input size up to 8192 fits."
            )
            raise InputSizeError(
                f"Input {_shape_text(input_shape)} is too small for model {name!r}: layer {layer.name!r} "
                f"({type(layer.module).__name__}) gets a {got} input and its output would be smaller than 1×1. "
                f"{fix} Resize the images or choose a model for smaller inputs."
            ) from None
        from cnnlab.models._registry import _MODELS  # late: the registry imports nothing from here

        info = _MODELS.get(name)
        hint = (
            f"Model {name!r} takes exactly {_shape_text(info.input_size)} inputs ({info.paper}); resize to that."
            if info is not None and info.fixed_input_size
            else "Check the input size against `cnnlab summary`."
        )
        raise InputSizeError(
            f"Input {_shape_text(input_shape)} does not fit model {name!r} at layer {layer.name!r} "
            f"({type(layer.module).__name__}, input {got}): {str(failure.cause).rstrip('. ')}. {hint}"
        ) from None
