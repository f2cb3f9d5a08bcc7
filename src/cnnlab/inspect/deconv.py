"""The ``deconv`` view: Zeiler & Fergus's deconvnet ("Visualizing and Understanding Convolutional Networks", 2013).

For one unit of a chosen layer (default: the strongest activation of the strongest channel), keep that single
activation, zero every other one, and project it back to pixel space: through each max pooling by unpooling
with the switches (argmax positions) recorded in the forward pass, through each ReLU by rectifying the
signal, and through each convolution by the transposed filters. That is exactly the backward pass of the unit
with every ReLU's backward replaced by a ReLU on the signal, which is what Captum's ``NeuronDeconvolution``
computes (the tests check it against an explicit unpool/rectify/transpose implementation). We seed with the
activation itself (Captum seeds with 1; the projection is linear in the seed's size).

Models without ReLUs (the faithful LeNet-5: scaled tanh, trainable average subsampling) are a different case:
there is nothing to rectify and no switch to record, so the projection is the signed gradient of the unit with
respect to the input (times its activation), tanh slopes included: a linearisation at this input, not a
reconstruction. The result's ``notes`` say so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect._errors import require_captum
from cnnlab.inspect.grid import minmax, new_figure, show_image, show_signed
from cnnlab.inspect.hooks import (
    OTHER_ACTIVATIONS,
    check_channel,
    check_relus_hookable,
    crop,
    executed_before,
    field_notes,
    layer_geometry,
    resolve_layer,
    spatial_output,
    unit_box,
)
from cnnlab.layers import ReceptiveField

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class DeconvProjection:
    """One unit projected back to the input.

    Attributes:
        layer: name as asked for; ``qualified``: module name.
        channel: the unit's channel; ``position``: its (row, column) in the layer's map.
        activation: the unit's value in the forward pass (the seed of the projection).
        projection: (C, H, W) the projection in input space, on the CPU.
        box: (top, left, bottom, right) of the unit's receptive field in input pixels (bottom/right exclusive;
            may reach past the image where layers pad).
        receptive_field: the layer's field (size, jump, start).
        notes: what the projection means for this model (no ReLU, no switches...).
    """

    layer: str
    qualified: str
    channel: int
    position: tuple[int, int]
    activation: float
    projection: torch.Tensor
    box: tuple[int, int, int, int]
    receptive_field: ReceptiveField
    notes: list[str] = field(default_factory=list)


def strongest_unit(maps: torch.Tensor, channel: int | None = None) -> tuple[int, int, int]:
    """(channel, row, column) of the largest activation in (C, h, w) maps, within ``channel`` if given."""
    if channel is None:
        channel = int(maps.flatten(1).amax(dim=1).argmax())
    row, col = divmod(int(maps[channel].argmax()), maps.shape[2])
    return channel, row, col


def deconvnet(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channel: int | None = None,
    position: tuple[int, int] | None = None,
) -> DeconvProjection:
    """Project one unit of ``layer`` back to pixel space for the normalised input ``x`` (C, H, W).

    Args:
        model: a model in eval mode, with ReLUs as ``nn.ReLU(inplace=False)`` modules.
        x: the input, normalised as the model expects.
        layer: qualified or stage name of a layer with a feature-map output.
        channel: the unit's channel (default: the channel with the strongest activation).
        position: (row, column) in the layer's map (default: the channel's strongest activation).

    Raises:
        UnknownNameError, ConfigError: bad layer, channel or position.
        UnsupportedModelError: in-place or functional ReLUs, which the deconvnet hooks cannot handle.
    """
    require_captum()
    from captum.attr import NeuronDeconvolution

    batch = x.unsqueeze(0)
    qualified, module = resolve_layer(model, layer)
    with torch.no_grad():
        maps = spatial_output(model, batch, layer)[0]  # (C, h, w)
    if channel is not None:
        check_channel(layer, channel, maps.shape[0])
    channel, row, col = strongest_unit(maps, channel)
    if position is not None:
        row, col = (int(p) for p in position)
        if not (0 <= row < maps.shape[1] and 0 <= col < maps.shape[2]):
            raise ConfigError(
                f"Position {position} is outside layer {layer!r}'s {maps.shape[1]}×{maps.shape[2]} map; rows and "
                f"columns start at 0."
            )
    check_relus_hookable(model, batch, "The deconvnet")
    activation = float(maps[channel, row, col])  # sync: one number
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        unit_gradient = NeuronDeconvolution(model, module).attribute(
            batch.detach().clone().requires_grad_(), neuron_selector=(channel, row, col)
        )
    projection = (unit_gradient[0] * activation).detach().float().cpu()
    geometry = layer_geometry(model, tuple(x.shape), layer)
    side = max(x.shape[1:])
    field_ = geometry.receptive_field or ReceptiveField(size=side, jump=side, start=(side - 1) / 2)  # whole image
    return DeconvProjection(
        layer,
        qualified,
        channel,
        (row, col),
        activation,
        projection,
        unit_box(field_, row, col),
        field_,
        _notes(model, tuple(x.shape), qualified, layer) + field_notes(geometry),
    )


def _notes(model: nn.Module, input_shape: tuple[int, ...], qualified: str, layer: str) -> list[str]:
    path = executed_before(model, input_shape, qualified)
    relus = [n for n, m in path if isinstance(m, nn.ReLU)]
    pools = [n for n, m in path if isinstance(m, nn.MaxPool2d)]
    others = sorted({type(m).__name__ for _, m in path if isinstance(m, OTHER_ACTIVATIONS)})
    notes = []
    if not relus:
        notes.append(
            f"No ReLU between the input and {layer!r}: nothing to rectify, so this projection is the signed gradient "
            "of the unit with respect to the input, times its activation (what Simonyan et al. 2013 show the "
            "deconvnet reduces to without ReLUs): which pixels would move the unit, and which way, at this input. "
            "It is not a reconstruction of a pattern."
        )
    if others:
        notes.append(
            f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} back-propagated by the local derivative "
            "(only ReLUs are rectified), so the projection depends on the input through their slopes."
        )
    if not pools:
        notes.append(
            f"No max pooling before {layer!r}, so there are no switches: pooling or subsampling layers are "
            "projected back by their transpose (each output spread evenly over its window)."
        )
    return notes


def render_deconv(result: DeconvProjection, image: torch.Tensor, title: str = "") -> Figure:
    """Input with the unit's receptive field boxed, the input patch, the projection, and the projection patch.

    Args:
        result: from :func:`deconvnet`.
        image: the input in [0, 1] (C, H, W), for display.
        title: figure title (default: layer, channel, position and activation).
    """
    from matplotlib.patches import Rectangle

    fig = new_figure(12, 3.6)
    axes = fig.subplots(1, 4)
    top, left, bottom, right = result.box
    nan = float("nan")
    show_image(axes[0], image, "input; box = receptive field")
    show_image(axes[1], crop(image.float(), result.box, fill=nan), f"input patch {bottom - top}×{right - left}")
    proj = result.projection
    patch = crop(proj, result.box, fill=nan)
    if proj.shape[0] == 3:  # colour: each projection min–max scaled to an image, as in the paper's figures
        show_image(axes[2], minmax(proj), "projection (min–max scaled)")
        show_image(axes[3], minmax(torch.nan_to_num(patch)), "projection patch")
    else:
        show_signed(axes[2], proj.sum(0), "projection (red +, blue −)", colorbar=False)
        show_signed(axes[3], patch.sum(0), "projection patch")
    for ax in (axes[0], axes[2]):
        ax.add_patch(
            Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="yellow", lw=1.5)
        )
    fig.suptitle(
        title
        or f"deconvnet: {result.qualified} channel {result.channel} at {result.position}, "
        f"activation {result.activation:.3g}",
        fontsize=10,
    )
    return fig
