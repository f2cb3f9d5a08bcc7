"""What a spatial transformer does: each input beside the transformer's output, with the region of the input it
sampled outlined (Jaderberg et al. 2015, Figure 1), and how that region moved over training.

The outline is the border of the output's sampling grid mapped into the input's pixels: for an affine θ a
parallelogram, for a projective θ a quadrilateral, for a thin-plate spline a curved frame. θ over training comes
from the run itself: the classification task records θ of a few fixed validation images after every epoch.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect.grid import new_figure, show_image
from cnnlab.layers import SpatialTransformer

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def find_transformers(model: nn.Module) -> list[SpatialTransformer]:
    """The model's spatial transformers in module order (several where they stand side by side, as in MNIST
    addition); a clear error for models without one."""
    found = [module for module in model.modules() if isinstance(module, SpatialTransformer)]
    if not found:
        name = getattr(model, "model_name", "") or type(model).__name__
        raise ConfigError(
            f"{name} has no spatial transformer, so there is nothing for this view to show; "
            "train st-cnn or st-fcn (e.g. `cnnlab train --model st-cnn --data mnist-rts`)."
        )
    return found


def find_transformer(model: nn.Module) -> SpatialTransformer:
    """The model's first spatial transformer; a clear error for models without one."""
    return find_transformers(model)[0]


def _to_edges(grid: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 2) coordinates of pixel centres -> (B, H + 2, W + 2, 2) with the outer edges (half a pixel
    further out) added by linear extrapolation: exact for affine maps, a close fit for smooth ones."""
    grid = torch.cat([1.5 * grid[:, :1] - 0.5 * grid[:, 1:2], grid, 1.5 * grid[:, -1:] - 0.5 * grid[:, -2:-1]], 1)
    return torch.cat(
        [1.5 * grid[:, :, :1] - 0.5 * grid[:, :, 1:2], grid, 1.5 * grid[:, :, -1:] - 0.5 * grid[:, :, -2:-1]], 2
    )


def sampled_outline(transformer: SpatialTransformer, params: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """(B, P) θ -> (B, L, 2) the outer edge of the output, as (x, y) input pixel coordinates (a closed polyline):
    the identity's outline is the input's own border."""
    height, width = transformer.output_size or input_size
    grid = transformer.grid(params.float(), (max(height, 2), max(width, 2)))  # (B, H, W, 2) source coordinates
    grid = _to_edges(grid)  # (B, H + 2, W + 2, 2): the outermost rows and columns are the output's edges
    border = torch.cat(
        [grid[:, 0, :], grid[:, :, -1], grid[:, -1, :].flip(1), grid[:, :, 0].flip(1), grid[:, :1, 0]], dim=1
    )  # (B, L, 2): top, right, bottom, left, back to the start
    in_h, in_w = input_size
    x = ((border[..., 0] + 1) * in_w - 1) / 2  # align_corners=False: −1 is the image's left edge
    y = ((border[..., 1] + 1) * in_h - 1) / 2
    return torch.stack([x, y], dim=-1)


def _display(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """A normalised (C, H, W) model input back to [0, 1] for drawing; two channels (MNIST addition) as red and
    green, more than three as the first."""
    scale = torch.tensor(std).view(-1, 1, 1)
    image = (x.detach().cpu().float() * scale + torch.tensor(mean).view(-1, 1, 1)).clamp(0, 1)
    if image.shape[0] == 2:
        return torch.cat([image, torch.zeros_like(image[:1])])
    return image if image.shape[0] in (1, 3) else image[:1]


def _frame(ax, size) -> None:
    """The same view for every panel: the image and a margin of 15% around it (outlines may leave the image)."""
    height, width = size
    ax.set_xlim(-0.5 - 0.15 * width, width - 0.5 + 0.15 * width)
    ax.set_ylim(height - 0.5 + 0.15 * height, -0.5 - 0.15 * height)


# One colour per transformer side by side (the first is the orange of the single-transformer figure).
OUTLINE_COLOURS = ("#ffb000", "#00c8ff", "#ff4fd8", "#7dff4f")


@torch.no_grad()
def render_transformer(
    model: nn.Module,
    inputs: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    classes: list[str],
    labels: list[int | None],
) -> Figure:
    """Panels per image: the input with each transformer's sampled region outlined, then each transformer's
    output, the prediction on the last. ``inputs``: (B, C, H, W) normalised model inputs (B ≤ 16)."""
    transformers = find_transformers(model)
    count = len(transformers)
    outputs = [transformer(inputs) for transformer in transformers]
    outlines = [sampled_outline(t, t.transform_params(inputs), tuple(inputs.shape[-2:])).cpu() for t in transformers]
    predictions = model(inputs).softmax(1)
    panels = 1 + count  # the input, then one output per transformer
    columns = min(4 if count == 1 else 2, len(inputs))
    rows = -(-len(inputs) // columns)
    fig = new_figure(1.6 * panels * columns, 1.9 * rows + 0.5)
    axes = fig.subplots(rows, panels * columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(len(inputs)):
        row, first = i // columns, panels * (i % columns)
        left, label = axes[row, first], labels[i]
        show_image(
            left, _display(inputs[i], mean, std), "input" + (f" ({classes[label]})" if label is not None else "")
        )
        for k, outline in enumerate(outlines):
            left.plot(outline[i, :, 0], outline[i, :, 1], color=OUTLINE_COLOURS[k % 4], linewidth=1.2)
        _frame(left, inputs.shape[-2:])
        top = int(predictions[i].argmax())
        for k, output in enumerate(outputs):
            ax = axes[row, first + 1 + k]
            title = f"output {k + 1}" if count > 1 else "output"
            if k == count - 1:
                title += f" → {classes[top]} {float(predictions[i, top]):.0%}"
            show_image(ax, _display(output[i], mean, std), title)
            if count > 1:  # which outline this output belongs to
                ax.axis("on")
                for side in ax.spines.values():
                    side.set(visible=True, color=OUTLINE_COLOURS[k % 4], linewidth=2)
    if count == 1:
        title = (
            f"Spatial transformer ({transformers[0].transform}): the input with the region it samples (orange), "
            "and what the classifier behind it sees"
        )
    else:
        title = (
            f"{count} spatial transformers side by side: the input with the region each samples (orange, blue, "
            "...), and each one's output (framed in its colour), stacked for the classifier"
        )
    # wrapped to the figure's width (about 13 characters an inch at 9 pt): two columns of three panels are
    # narrower than the side-by-side title
    fig.suptitle(textwrap.fill(title, width=int(13 * fig.get_figwidth())), fontsize=9)
    return fig


def render_theta_history(
    transformer: SpatialTransformer,
    images: torch.Tensor,
    history: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Figure:
    """The tracked images with the sampled region after every epoch, light (epoch 1) to dark (last), and the
    identity (the initial θ) dashed. ``images``: (n, C, H, W) normalised; ``history``: (epochs, n, P)."""
    import matplotlib

    colours = matplotlib.colormaps["viridis_r"]
    epochs = history.shape[0]
    count = min(8, images.shape[0])
    fig = new_figure(1.9 * count, 2.5)
    axes = fig.subplots(1, count, squeeze=False)[0]
    size = tuple(images.shape[-2:])
    identity = transformer.identity_params()
    with torch.no_grad():
        start = sampled_outline(transformer, identity.expand(count, -1), size)
        outlines = [sampled_outline(transformer, history[e, :count].float(), size) for e in range(epochs)]
    for i, ax in enumerate(axes):
        show_image(ax, _display(images[i], mean, std), f"image {i}")
        ax.plot(start[i, :, 0], start[i, :, 1], color="white", linewidth=0.8, linestyle="--")
        for e, outline in enumerate(outlines):
            shade = colours(0.15 + 0.85 * (e + 1) / epochs)
            ax.plot(outline[i, :, 0], outline[i, :, 1], color=shade, linewidth=1.0)
        _frame(ax, size)
    fig.suptitle(
        f"Where the transformer looks, epoch 1 (light) to {epochs} (dark); dashed: the identity it started from",
        fontsize=9,
    )
    return fig
