"""Images in and out of the explorer: uploads decoded safely into a model's input, arrays encoded as PNGs.

Every upload goes through the run's own :class:`~cnnlab.data.Preprocessing` (the same decoding, conversion and
resizing as ``cnnlab predict``), after two checks that refuse it before any pixel is decoded: the encoded size
(:attr:`Limits.max_bytes`) and the pixel count its header declares (:attr:`Limits.max_pixels`, far below
Pillow's own decompression-bomb guard). Everything sent back is a PNG (a ``data:`` URL inside JSON) or plain
numbers: nothing is pickled, and the page needs no image library.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.errors import ImageDecodeError

UPLOAD_NAME = "the uploaded image"


@dataclass(frozen=True)
class Limits:
    """What one upload may be.

    Attributes:
        max_bytes: encoded size; a drawn 280×280 canvas is ~10 kB as PNG, a phone photo 2–5 MB.
        max_pixels: width × height the header declares: 4096² (16.8 MP, 50 MB as RGB) is more than any view needs,
            since every image is resized to the model's input (28–224 px) anyway.
    """

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 4096 * 4096


class UploadTooLargeError(ImageDecodeError):
    """An upload over :attr:`Limits.max_bytes` (HTTP 413)."""


def size_text(count: int) -> str:
    """A byte count for people: ``8 MiB``, ``195 kB``."""
    return f"{count / 2**20:.3g} MiB" if count >= 2**20 else f"{count / 1024:.3g} kB"


def check_upload(data: bytes, limits: Limits) -> None:
    """Refuse an empty upload, one over the byte limit, or an image whose header declares too many pixels.

    Raises:
        UploadTooLargeError, ImageDecodeError: with what was wrong and what is allowed.
    """
    from cnnlab.data.preprocessing import open_image

    if not data:
        raise ImageDecodeError("No image was sent: draw on the canvas or drop a PNG or JPEG file.")
    if len(data) > limits.max_bytes:
        raise UploadTooLargeError(
            f"The image is {size_text(len(data))}; uploads may be at most {size_text(limits.max_bytes)}. "
            "Resize it first (the model sees it at its input size anyway)."
        )
    try:
        with open_image(io.BytesIO(data), UPLOAD_NAME) as image:  # reads the header only
            width, height = image.size
    except ImageDecodeError:
        raise
    except Exception as error:  # Pillow raises several types for a bad header; all mean the same to the user
        raise ImageDecodeError(
            f"Cannot decode {UPLOAD_NAME}: {error}. Give a PNG or JPEG (or another format Pillow reads)."
        ) from None
    if width * height > limits.max_pixels:
        raise UploadTooLargeError(
            f"The image is {width}×{height} pixels ({width * height / 1e6:.1f} MP); at most "
            f"{limits.max_pixels / 1e6:.1f} MP are decoded. Resize it first."
        )


def frame_like_mnist(pixels: torch.Tensor) -> torch.Tensor:
    """A drawing (uint8 (C, H, W), light ink on black) framed as MNIST frames its digits: the ink's bounding box
    scaled to 20/28 of the side, centred, in a square; a blank drawing is returned unchanged.

    LeCun et al. fitted each digit into a 20×20 box inside the 28×28 image (keeping its aspect ratio); a digit
    drawn across a whole canvas would otherwise be far larger than anything the network saw. (MNIST centres by
    the centre of mass; the bounding box is close enough for strokes and needs no sub-pixel shift.)
    """
    ink = pixels.amax(dim=0) > 32  # (H, W): 32 of 255 ignores anti-aliasing haze and JPEG noise
    if not bool(ink.any()):
        return pixels
    rows, cols = ink.any(dim=1).nonzero()[:, 0], ink.any(dim=0).nonzero()[:, 0]
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = pixels[:, top:bottom, left:right]  # (C, h, w)
    side = round(max(box.shape[1:]) * 28 / 20)  # the box fills 20 of 28 pixels
    framed = torch.zeros(pixels.shape[0], side, side, dtype=pixels.dtype)
    y, x = (side - box.shape[1]) // 2, (side - box.shape[2]) // 2
    framed[:, y : y + box.shape[1], x : x + box.shape[2]] = box
    return framed


def decode_upload(data: bytes, preprocessing, limits: Limits, frame: bool = False) -> torch.Tensor:
    """An uploaded image as the model's uint8 input (C, H, W): checked, decoded, optionally framed like an MNIST
    digit (:func:`frame_like_mnist`), resized and padded by the run's preprocessing.

    Raises:
        UploadTooLargeError, ImageDecodeError: an image that is empty, too large or not decodable.
    """
    check_upload(data, limits)
    decoded = preprocessing.decode_bytes(data, UPLOAD_NAME)  # (C, h, w) uint8 at its own size
    if frame:
        decoded = frame_like_mnist(decoded)
    return preprocessing.center_crop(preprocessing.to_stored_size(decoded.unsqueeze(0)))[0]


# ---- out: PNGs as data URLs ------------------------------------------------------------------------------------
def png_url(pixels: np.ndarray) -> str:
    """A ``data:image/png;base64`` URL of uint8 (H, W), (H, W, 3) or (H, W, 4) pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=1)  # speed over size
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_url(image: torch.Tensor) -> str:
    """A PNG of an image in [0, 1], (C, H, W) with 1 or 3 channels (other counts: the first channel)."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] not in (1, 3):
        image = image[:1]
    pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return png_url(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def grey_url(values: torch.Tensor, low: float, high: float) -> str:
    """A grey PNG of (H, W) values scaled from [low, high] to black…white (a shared scale keeps weak maps weak)."""
    span = high - low if high > low else 1.0
    scaled = ((values.detach().float().cpu() - low) / span).clamp(0, 1)
    return png_url((scaled * 255).round().to(torch.uint8).numpy())


def signed_url(values: torch.Tensor, colormap: str = "RdBu_r") -> str:
    """A PNG of signed (H, W) values with a diverging colour map centred on zero (white), symmetric in ±max|v|."""
    import matplotlib

    values = values.detach().float().cpu()
    bound = float(values.abs().max()) or 1.0
    rgba = matplotlib.colormaps[colormap](((values / bound + 1) / 2).numpy(), bytes=True)  # (H, W, 4) uint8
    return png_url(rgba[..., :3])


def heat_url(values: torch.Tensor, colormap: str = "magma") -> str:
    """A PNG of non-negative (H, W) values, min–max scaled through a sequential colour map."""
    import matplotlib

    values = values.detach().float().cpu()
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    return png_url(matplotlib.colormaps[colormap](scaled.numpy(), bytes=True)[..., :3])
