"""Preprocessing that travels with a checkpoint, so `eval` and `predict` never guess it."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from cnnlab.errors import ImageDecodeError


@functools.lru_cache(maxsize=64)
def _channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, C, 1, 1) constant, made once per device and dtype: building it from Python numbers every batch would be
    a synchronous host-to-GPU copy inside the training loop. Shared: never modify it in place."""
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)


@dataclass(frozen=True)
class Preprocessing:
    """How raw uint8 images become model inputs.

    Attributes:
        in_chans: 1 (grey) or 3 (RGB); images of other modes are converted to this.
        resize: (H, W) the images are resized to (bilinear, antialiased).
        pad: zero border added on each side after resizing, in pixels (LeNet pads 28×28 MNIST to 32×32).
        mean: per-channel mean of the training images in [0, 1], subtracted...
        std: ...and divided by, per channel.
        keep_aspect: photos: resize the shorter side to max(resize), then centre-crop to ``resize`` (no squashing).
        crop: the model's input (H, W), centre-cropped from the stored size at test time (AlexNet: 224 of 256);
            training augmentations crop at random instead. None: the stored size is the input size.
    """

    in_chans: int
    resize: tuple[int, int]
    pad: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    keep_aspect: bool = False
    crop: tuple[int, int] | None = None

    @property
    def stored_size(self) -> tuple[int, int]:
        """(H, W) of images after :meth:`fit`, before the final crop."""
        return (self.resize[0] + 2 * self.pad, self.resize[1] + 2 * self.pad)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of what the model receives."""
        return (self.in_chans, *(self.crop or self.stored_size))

    def to_stored_size(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and pad a uint8 batch (N, C, h, w) -> (N, C, H, W) at the stored size, still uint8."""
        if tuple(images.shape[-2:]) != tuple(self.resize):
            if self.keep_aspect:
                images = TF.resize(images, max(self.resize), antialias=True)  # shorter side
                images = TF.center_crop(images, list(self.resize))
            else:
                images = TF.resize(images, list(self.resize), antialias=True)
        if self.pad:
            images = F.pad(images, [self.pad] * 4)
        return images

    def center_crop(self, images: torch.Tensor) -> torch.Tensor:
        """Centre-crop (…, H, W) to the model's input size when the images are larger."""
        if self.crop is not None and tuple(images.shape[-2:]) != tuple(self.crop):
            images = TF.center_crop(images, list(self.crop))
        return images

    def normalize(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (N, C, H, W) -> (x/255 − mean)/std per channel, on the images' device; float input is taken as
        already in [0, 1]. (Two plain steps, so attacks that work on x/255 see bit-identical model inputs.)"""
        return self.standardize(images if images.is_floating_point() else images.to(dtype) / 255)

    def standardize(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] (N, C, H, W) -> (x − mean) / std per channel."""
        mean = _channel_constant(self.mean, images.device, images.dtype)
        std = _channel_constant(self.std, images.device, images.dtype)
        return (images - mean) / std

    def load_image(self, path: str | Path) -> torch.Tensor:
        """Decode an image file of any mode into the model's input: uint8 (C, H, W), fitted and centre-cropped.

        Raises:
            ImageDecodeError: naming the file, if it is missing or cannot be decoded.
        """
        return self.center_crop(self.to_stored_size(self.decode_file(path).unsqueeze(0)))[0]

    def decode_file(self, path: str | Path) -> torch.Tensor:
        """Decode an image file of any mode (grey, RGB, RGBA, palette, 16-bit, CMYK) to uint8 (C, h, w) with
        ``in_chans`` channels, at its own size.

        Raises:
            ImageDecodeError: naming the file, if it is missing or cannot be decoded.
        """
        path = Path(path)
        try:
            return self._decode(path, f"image file {str(path)!r}")
        except FileNotFoundError:
            raise ImageDecodeError(f"Image file {str(path)!r} does not exist.") from None
        except IsADirectoryError:
            raise ImageDecodeError(f"{str(path)!r} is a directory, not an image file.") from None

    def decode_bytes(self, data: bytes, name: str = "the image") -> torch.Tensor:
        """:meth:`decode_file` for an encoded image held in memory (an upload); ``name`` is what errors call it.

        Raises:
            ImageDecodeError: the bytes are not an image Pillow can decode (or one too large to decode safely).
        """
        import io

        return self._decode(io.BytesIO(data), name)

    def _decode(self, source, name: str) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with open_image(source, name) as image:
                image.load()
                mode = "L" if self.in_chans == 1 else "RGB"
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    # Transparent pixels become white, as in a browser; converting straight away would make them black.
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, rgba)
                elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    image = image.point(lambda v: v / 256).convert("L") if image.mode != "F" else image.convert("L")
                converted = image.convert(mode)
                return TF.pil_to_tensor(converted)  # (C, h, w) uint8
        except (ImageDecodeError, FileNotFoundError, IsADirectoryError):
            raise
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ImageDecodeError(
                f"Cannot decode {name}: {error}. Give a PNG or JPEG (or another format Pillow reads)."
            ) from None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            in_chans=int(d["in_chans"]),
            resize=tuple(d["resize"]),
            pad=int(d["pad"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            keep_aspect=bool(d.get("keep_aspect", False)),
            crop=tuple(d["crop"]) if d.get("crop") else None,
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    scaled = images.to(torch.float64) / 255
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


MAX_PIXELS_VARIABLE = "CNNLAB_MAX_IMAGE_PIXELS"


def open_image(path, name: str | None = None):
    """``PIL.Image.open`` (of a path or a binary file object, called ``name`` in errors) with Pillow's guard
    against decompression bombs turned into a clear error.

    Pillow refuses images over ``Image.MAX_IMAGE_PIXELS`` × 2 (about 179 million pixels by default); the
    environment variable ``CNNLAB_MAX_IMAGE_PIXELS`` raises the limit (to that many pixels).

    Raises:
        ImageDecodeError: the image is larger than the limit (the message says how to lift it).
    """
    import os
    import warnings

    from PIL import Image

    limit = os.environ.get(MAX_PIXELS_VARIABLE)
    if limit:
        try:
            Image.MAX_IMAGE_PIXELS = int(limit) // 2  # Pillow refuses above twice this (and warns above it)
        except ValueError:
            raise ImageDecodeError(f"{MAX_PIXELS_VARIABLE}={limit!r} must be a whole number of pixels.") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError:
        allowed = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        what = name or f"image file {str(path)!r}"
        raise ImageDecodeError(
            f"{what[0].upper()}{what[1:]} is too large to decode safely: more than {allowed:,} pixels (a guard against "
            f"decompression bombs). Resize it, or if you trust the file lift the limit: "
            f"{MAX_PIXELS_VARIABLE}=<pixels> cnnlab ..."
        ) from None
