"""Image grids and PNG output shared by the views.

Pixel-exact pictures (filter grids, patches) are built as tensors and written with Pillow, nearest-neighbour
upscaled, so a PNG pixel is exactly ``round(255·value)``. Annotated pictures are matplotlib ``Figure`` objects
(the object-oriented API: no pyplot state, no display needed), written by :func:`save` or turned into bytes
for the HTML report by :func:`png_bytes`.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL.Image import Image


def minmax(values: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Scale to [0, 1] by (v − min)/(max − min) over ``dims`` (all dims if None); constant blocks become 0.5."""
    values = values.float()
    dims = tuple(range(values.ndim)) if dims is None else dims
    low = values.amin(dim=dims, keepdim=True)
    high = values.amax(dim=dims, keepdim=True)
    span = high - low
    scaled = (values - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, scaled, torch.full_like(scaled, 0.5))


def tile(images: torch.Tensor, ncols: int | None = None, pad: int = 1, fill: float = float("nan")) -> torch.Tensor:
    """Tile a batch (N, C, h, w) into one (C, H, W) image, row by row, ``pad`` pixels of ``fill`` between tiles.

    Tile ``i`` sits at rows ``pad + r·(h + pad)`` and columns ``pad + c·(w + pad)`` with ``r, c = divmod(i, ncols)``
    (see :func:`tile_origin`). ``ncols`` defaults to ⌈√N⌉.
    """
    n, c, h, w = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    out = torch.full((c, pad + nrows * (h + pad), pad + ncols * (w + pad)), fill, dtype=torch.float32)
    for i in range(n):  # N is small (kernels, channels, patches): a Python loop over tiles is fine here
        top, left = tile_origin(i, ncols, h, w, pad)
        out[:, top : top + h, left : left + w] = images[i].float().cpu()
    return out


def tile_origin(index: int, ncols: int, h: int, w: int, pad: int = 1) -> tuple[int, int]:
    """(top, left) of tile ``index`` in a grid made by :func:`tile`."""
    r, c = divmod(index, ncols)
    return pad + r * (h + pad), pad + c * (w + pad)


def to_pil(image: torch.Tensor, upscale: int = 1, background: float = 1.0) -> Image:
    """A (C, H, W) image in [0, 1] (C = 1 or 3; NaN = ``background``) as a Pillow image, each pixel
    ``upscale``×``upscale`` (nearest neighbour, so values stay exact)."""
    from PIL import Image as PILImage

    image = torch.nan_to_num(image.detach().float().cpu(), nan=background).clamp(0, 1)
    pixels = (image * 255).round().to(torch.uint8)
    if upscale > 1:
        pixels = pixels.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)
    array = pixels.permute(1, 2, 0).numpy()
    return PILImage.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A matplotlib figure not attached to pyplot (safe in libraries and threads, nothing to close)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def png_bytes(picture: Figure | Image) -> bytes:
    """PNG bytes of a matplotlib figure or a Pillow image."""
    buffer = io.BytesIO()
    if hasattr(picture, "savefig"):
        picture.savefig(buffer, format="png")
    else:
        picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def save(picture: Figure | Image, path: str | Path) -> Path:
    """Write a figure or image to ``path`` as PNG atomically (temporary file, then rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png_bytes(picture))
    os.replace(tmp, path)
    return path


def show_image(ax, image: torch.Tensor, title: str = "") -> None:
    """Draw a (C, H, W) image in [0, 1] (grey or RGB) on a matplotlib axis, pixels as squares, no ticks."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def show_signed(ax, values: torch.Tensor, title: str = "", colorbar: bool = True) -> None:
    """Draw a (H, W) signed map with a diverging colour map centred on 0 (red +, blue −)."""
    values = values.detach().float().cpu()
    bound = float(values.abs().max()) or 1.0
    im = ax.imshow(values.numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8)


def safe_name(text: str) -> str:
    """A string usable in a file name: letters, digits, '-', '_' and '.' kept, the rest as '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text).strip("._") or "x"
