"""Batched data augmentation on the device, with per-sample randomness from a seeded generator.

Each augmentation is a callable ``aug(images, generator) -> images`` on float images in [0, 1] of shape
(B, C, H, W), applied before mean/std normalisation. Random parameters are drawn on the CPU from
``generator`` (a few small (B,) draws) and the pixel work runs on the images' device, so there is no
per-sample Python and the same seed gives the same result on every device.

Presets (``--augment``) name what the papers used; several compose with ``+``, e.g. ``pad-crop-flip+pca``.
Written by hand because torchvision's v2 transforms draw one random parameter set per call (per batch),
while these augmentations must vary per image inside a batch that lives on the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.data import targets
from cnnlab.errors import ConfigError, UnknownNameError

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def apply_with_boxes(step: Augmentation, images: torch.Tensor, boxes: torch.Tensor | None, generator: torch.Generator):
    """One augmentation on images and their boxes (B, M, 4): those that move pixels move the boxes alike; the
    others (colour, lighting) leave boxes as they are; a warp boxes cannot follow (elastic) is refused."""
    if hasattr(step, "apply"):
        return step.apply(images, boxes, generator)
    if boxes is not None and getattr(step, "warps", False):
        raise ConfigError(
            f"{type(step).__name__} bends the image locally, so boxes cannot follow it; drop it from --augment "
            "for a task with boxes."
        )
    return step(images, generator), boxes


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def _per_sample(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(B,) CPU values -> (B, 1, 1, 1) on the images' device and dtype."""
    return _to(values, images).view(-1, 1, 1, 1)


def _to(values: torch.Tensor, images: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """CPU draws -> the images' device (and dtype), without a sync: a blocking host-to-GPU copy waits for the
    GPU to finish its queue; a non-blocking one from pageable memory is staged at once and does not."""
    return values.to(images.device, dtype or images.dtype, non_blocking=True)


@dataclass(frozen=True)
class Compose:
    steps: tuple[Augmentation, ...]

    @property
    def uint8_prefix(self) -> int:
        """How many leading steps only move pixels (crop, flip) and can run on uint8 before conversion."""
        count = 0
        for step in self.steps:
            if not getattr(step, "uint8_ok", False):
                break
            count += 1
        return count

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in self.steps:
            images = step(images, generator)
        return images

    def apply(self, images: torch.Tensor, boxes: torch.Tensor | None, generator: torch.Generator):
        for step in self.steps:
            images, boxes = apply_with_boxes(step, images, boxes, generator)
        return images, boxes


@dataclass(frozen=True)
class RandomCrop:
    """A random (H, W) window per image, after zero-padding ``padding`` pixels on each side; ``flip`` also
    mirrors each image left-right with probability 0.5 in the same pass.

    ``size=None`` keeps the input size: the pad-and-crop of small images (CIFAR: pad 4, crop 32). With a size
    smaller than the input it is AlexNet's random 224×224 patches of 256×256 images. Any dtype (uint8 too):
    the whole batch is one ``gather``, so crop and flip cost one pass over the output pixels.
    """

    size: tuple[int, int] | None = None
    padding: int = 0
    flip: bool = False
    uint8_ok = True

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, None, generator)[0]

    def apply(self, images: torch.Tensor, boxes: torch.Tensor | None, generator: torch.Generator):
        """(images, boxes (B, M, 4) XYXY pixels or None) moved alike; see :mod:`cnnlab.data.targets`."""
        b, c, h, w = images.shape
        out_h, out_w = self.size or (h, w)
        if self.padding:
            images = F.pad(images, [self.padding] * 4)
        height, width = images.shape[2:]
        if out_h > height or out_w > width:
            raise ConfigError(f"Random crop {out_h}×{out_w} is larger than the (padded) images {height}×{width}.")
        device = images.device  # the (B, 1) draws go there; the (B, H·W) index is built there, not copied
        top = _to(torch.randint(0, height - out_h + 1, (b, 1), generator=generator), images, torch.int64)
        left = _to(torch.randint(0, width - out_w + 1, (b, 1), generator=generator), images, torch.int64)
        cols = left + torch.arange(out_w, device=device)  # (B, out_w)
        mirrored = None
        if self.flip:
            mirrored = _to(torch.rand(b, 1, generator=generator) < 0.5, images, torch.bool)
            cols = torch.where(mirrored, cols.flip(1), cols)
        rows = top + torch.arange(out_h, device=device)  # (B, out_h)
        index = (rows.unsqueeze(2) * width + cols.unsqueeze(1)).view(b, 1, out_h * out_w)
        index = index.expand(b, c, out_h * out_w)
        images = images.reshape(b, c, height * width).gather(2, index).view(b, c, out_h, out_w)
        if boxes is not None:
            boxes = targets.crop_boxes(targets.pad_boxes(boxes, self.padding), top, left, (out_h, out_w))
            if mirrored is not None:
                boxes = targets.flip_boxes(boxes, out_w, mirrored.view(-1))
        return images, boxes


@dataclass(frozen=True)
class RandomFlip:
    """Mirror each image left-right (``horizontal``) and/or upside-down (``vertical``) with probability p."""

    horizontal: bool = True
    vertical: bool = False
    p: float = 0.5
    uint8_ok = True

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, None, generator)[0]

    def apply(self, images: torch.Tensor, boxes: torch.Tensor | None, generator: torch.Generator):
        h, w = images.shape[-2:]
        for enabled, dim in ((self.horizontal, -1), (self.vertical, -2)):
            if enabled:
                flip = torch.rand(images.shape[0], generator=generator) < self.p
                images = torch.where(_per_sample(flip.float(), images) > 0, images.flip(dim), images)
                if boxes is not None:
                    mirror = targets.flip_boxes if dim == -1 else targets.flip_boxes_vertically
                    boxes = mirror(boxes, w if dim == -1 else h, flip)
        return images, boxes


def _affine(images: torch.Tensor, forward: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Warp by output = forward·input + shift (normalised coordinates; forward (B, 2, 2), shift (B, 2))."""
    inverse = torch.linalg.inv(forward)  # grid_sample maps output -> input
    theta = _to(torch.cat([inverse, -(inverse @ shift.unsqueeze(2))], dim=2), images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class RandomAffine:
    """Random planar affine maps, one per image: LeCun et al.'s "distortions" (1998, section V.B) and more.

    Attributes:
        translate: largest shift, as a fraction of the image side (0.0625 = 2 px of 32), each axis.
        scale: largest relative change of size (0.1 = ×0.9 to ×1.1).
        squeeze: largest horizontal compression with equal vertical elongation, or the reverse.
        stretch: largest independent horizontal / vertical stretch.
        shear: largest horizontal shear (x += shear·y).
        rotate: largest rotation in degrees.

    The default ranges are ours: the paper lists the kinds of transformation but not their ranges.
    Pixels moved in from outside the image are 0.
    """

    translate: float = 0.0625
    scale: float = 0.1
    squeeze: float = 0.1
    shear: float = 0.15
    rotate: float = 0.0
    stretch: float = 0.0

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, 2, 2) linear part and (B, 2) shift of each image's map, in normalised coordinates."""
        scale = _uniform(generator, n, 1 - self.scale, 1 + self.scale)
        squeeze = _uniform(generator, n, 1 - self.squeeze, 1 + self.squeeze)
        stretch = _uniform(generator, 2 * n, 1 - self.stretch, 1 + self.stretch).view(n, 2)
        shear = _uniform(generator, n, -self.shear, self.shear)
        angle = _uniform(generator, n, -self.rotate, self.rotate) * (math.pi / 180)
        shift = _uniform(generator, 2 * n, -self.translate, self.translate).view(n, 2) * 2  # grid side = 2
        sx, sy = scale * squeeze * stretch[:, 0], scale / squeeze * stretch[:, 1]
        cos, sin = torch.cos(angle), torch.sin(angle)
        row0 = torch.stack([cos * sx, (cos * shear - sin) * sy], 1)
        row1 = torch.stack([sin * sx, (sin * shear + cos) * sy], 1)
        forward = torch.stack([row0, row1], 1)  # rotation · shear · scale
        return forward, shift

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        forward, shift = self.draw(images.shape[0], generator)
        return _affine(images, forward, shift)

    def apply(self, images: torch.Tensor, boxes: torch.Tensor | None, generator: torch.Generator):
        forward, shift = self.draw(images.shape[0], generator)
        size = tuple(images.shape[-2:])
        if boxes is not None:
            boxes = targets.affine_boxes(boxes, targets.normalized_to_pixels(forward, shift, size, size), size)
        return _affine(images, forward, shift), boxes


@dataclass(frozen=True)
class ScaleJitter:
    """VGG's scale jittering (Simonyan & Zisserman 2014, section 3.1): rescale so the shorter side is S, drawn
    per image from [s_min, s_max] (in units of the stored side), then take a random ``size`` crop.

    Done as one affine resampling per image: an (size·L/S)-pixel window of the stored L-pixel image, resampled to
    ``size``. Images are stored at a fixed side (e.g. 256), so S > L upsamples rather than reading a larger
    original: the crop is right, the fine detail is what the stored copy has.
    """

    size: tuple[int, int]
    s_min: float = 1.0
    s_max: float = 2.0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, None, generator)[0]

    def apply(self, images: torch.Tensor, boxes: torch.Tensor | None, generator: torch.Generator):
        b, c, h, w = images.shape
        side = _uniform(generator, b, self.s_min, self.s_max) * min(h, w)  # S in pixels of the stored image
        frac_h, frac_w = (self.size[0] / side).clamp(max=1.0), (self.size[1] / side).clamp(max=1.0)
        ty = (torch.rand(b, generator=generator) * 2 - 1) * (1 - frac_h)
        tx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - frac_w)
        zero = torch.zeros(b)
        theta = torch.stack([torch.stack([frac_w, zero, tx], 1), torch.stack([zero, frac_h, ty], 1)], 1)
        grid = F.affine_grid(_to(theta, images), [b, c, *self.size], align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if boxes is not None:  # theta maps output to input coordinates: invert it for the boxes
            forward = torch.diag_embed(torch.stack([1 / frac_w, 1 / frac_h], 1))
            shift = -torch.stack([tx / frac_w, ty / frac_h], 1)
            matrix = targets.normalized_to_pixels(forward, shift, (h, w), tuple(self.size))
            boxes = targets.affine_boxes(boxes, matrix, tuple(self.size))
        return images, boxes


@dataclass(frozen=True)
class ColorJitter:
    """Per-image brightness, contrast and saturation factors drawn from [1 − x, 1 + x]."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        images = images * _per_sample(_uniform(generator, n, 1 - self.brightness, 1 + self.brightness), images)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        contrast = _per_sample(_uniform(generator, n, 1 - self.contrast, 1 + self.contrast), images)
        images = (images - mean) * contrast + mean
        if images.shape[1] == 3:
            grey = _luminance(images)
            saturation = _per_sample(_uniform(generator, n, 1 - self.saturation, 1 + self.saturation), images)
            images = (images - grey) * saturation + grey
        return images.clamp(0, 1)


def _luminance(images: torch.Tensor) -> torch.Tensor:
    # Python numbers, not a tensor made per call (that would be a synchronous copy to a GPU)
    return images[:, 0:1] * 0.299 + images[:, 1:2] * 0.587 + images[:, 2:3] * 0.114


@dataclass(frozen=True)
class RandomGrayscale:
    """Replace an RGB image by its luminance, in all three channels, with probability p."""

    p: float = 0.1

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pick = torch.rand(images.shape[0], generator=generator) < self.p
        if images.shape[1] != 3:
            return images
        return torch.where(_per_sample(pick.float(), images) > 0, _luminance(images).expand_as(images), images)


@dataclass(frozen=True)
class PCALighting:
    """AlexNet's colour augmentation (Krizhevsky et al. 2012, section 4.1): add Σ_i p_i·α_i·λ_i to every pixel,
    with p_i, λ_i the eigenvectors and eigenvalues of the training set's RGB covariance and α_i ~ N(0, std²)
    drawn once per image (std = 0.1 in the paper).

    Attributes:
        eigenvalues: (3,) λ_i, for pixel values in [0, 1].
        eigenvectors: (3, 3), column i is p_i.
        std: standard deviation of α.
    """

    eigenvalues: tuple[float, float, float]
    eigenvectors: tuple[tuple[float, float, float], ...]
    std: float = 0.1

    def shift(self, alpha: torch.Tensor) -> torch.Tensor:
        """(B, 3) α -> (B, 3) RGB offsets [p1 p2 p3]·[α1λ1, α2λ2, α3λ3]ᵀ."""
        eigenvectors = torch.tensor(self.eigenvectors, dtype=alpha.dtype)
        return (alpha * torch.tensor(self.eigenvalues, dtype=alpha.dtype)) @ eigenvectors.t()

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        alpha = torch.randn(images.shape[0], 3, generator=generator) * self.std
        offsets = _to(self.shift(alpha), images)
        return images + offsets.view(-1, 3, 1, 1)


def pca_lighting_from(images: torch.Tensor, max_pixels: int = 1_000_000, std: float = 0.1) -> PCALighting:
    """Eigen-decompose the RGB covariance of uint8 training images (N, 3, H, W) (a seeded sample of pixels)."""
    if images.shape[1] != 3:
        raise ConfigError(f"PCA colour augmentation needs RGB images; this dataset has {images.shape[1]} channel(s).")
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1)
    if pixels.shape[1] > max_pixels:
        pick = torch.randperm(pixels.shape[1], generator=torch.Generator().manual_seed(0))[:max_pixels]
        pixels = pixels[:, pick]
    pixels = pixels.double() / 255
    covariance = torch.cov(pixels)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    return PCALighting(
        tuple(float(v) for v in eigenvalues.flip(0)),
        tuple(tuple(float(x) for x in row) for row in eigenvectors.flip(1).tolist()),
        std,
    )


@dataclass(frozen=True)
class ColorCast:
    """Add a random offset in [−max_shift, max_shift] to each RGB channel of an image, with probability p
    (the "colour casting" of Wu et al. 2015, *Deep Image*: ±20 of 255)."""

    max_shift: float = 20 / 255
    p: float = 0.5

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c = images.shape[:2]
        shift = _uniform(generator, b * c, -self.max_shift, self.max_shift).view(b, c)
        shift = shift * (torch.rand(b, generator=generator) < self.p).float().view(b, 1)
        return (images + _to(shift, images).view(b, c, 1, 1)).clamp(0, 1)


@dataclass(frozen=True)
class Vignette:
    """Darken towards the corners: multiply by 1 − s·(r / r_max)², s drawn per image from [0, strength]."""

    strength: float = 0.5

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _, _, h, w = images.shape
        y = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype).view(h, 1)
        x = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype).view(1, w)
        radius = (x * x + y * y) / 2  # (r / r_max)², 1 in the corners
        strength = _per_sample(_uniform(generator, images.shape[0], 0, self.strength), images)
        return images * (1 - strength * radius)


@dataclass(frozen=True)
class ElasticDistortion:
    """Simard, Steinkraus & Platt (2003): a random displacement field, uniform in [−1, 1] per pixel, smoothed
    by a Gaussian of width ``sigma`` pixels and scaled by ``alpha`` pixels (their MNIST values: σ = 4, α = 34)."""

    alpha: float = 34.0
    sigma: float = 4.0
    warps = True  # boxes cannot follow (see apply_with_boxes)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        field = _to(torch.rand(b, 2, h, w, generator=generator) * 2 - 1, images)
        radius = math.ceil(2 * self.sigma)
        taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
        kernel = torch.exp(-(taps**2) / (2 * self.sigma**2))
        kernel = kernel / kernel.sum()
        field = F.conv2d(
            F.pad(field, [radius, radius, 0, 0], mode="reflect"), kernel.view(1, 1, 1, -1).expand(2, 1, 1, -1), groups=2
        )
        field = F.conv2d(
            F.pad(field, [0, 0, radius, radius], mode="reflect"), kernel.view(1, 1, -1, 1).expand(2, 1, -1, 1), groups=2
        )
        field = field * self.alpha  # (B, 2, H, W) displacement in pixels (dx, dy)
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=images.device, dtype=images.dtype)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=images.device, dtype=images.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x + field[:, 0] * 2 / w, grid_y + field[:, 1] * 2 / h], dim=-1)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---- presets -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentContext:
    """What a preset needs to know: stored image size, the model's input size, and (lazily) PCA statistics."""

    stored_size: tuple[int, int]
    input_size: tuple[int, int]
    channels: int
    pca: Callable[[], PCALighting] | None = None


def _pad_for(ctx: AugmentContext) -> int:
    return max(1, round(min(ctx.stored_size) / 8))  # 4 px for 32×32, as in the ResNet/NIN CIFAR recipes


def _crop(ctx: AugmentContext) -> Augmentation:
    """Random crop to the input size when the stored images are larger, else pad-and-crop."""
    if tuple(ctx.stored_size) != tuple(ctx.input_size):
        return RandomCrop(ctx.input_size)
    return RandomCrop(None, _pad_for(ctx))


def _pca(ctx: AugmentContext) -> Augmentation:
    if ctx.pca is None or ctx.channels != 3:
        raise ConfigError("The 'pca' augmentation needs an RGB training set to compute its colour statistics.")
    return ctx.pca()


ATOMS: dict[str, Callable[[AugmentContext], Augmentation]] = {
    "flip": lambda ctx: RandomFlip(),
    "vflip": lambda ctx: RandomFlip(horizontal=False, vertical=True),
    "pad-crop": lambda ctx: RandomCrop(None, _pad_for(ctx)),
    "crop": _crop,
    "translate": lambda ctx: RandomAffine(translate=0.1, scale=0, squeeze=0, shear=0),
    "rotate": lambda ctx: RandomAffine(translate=0, scale=0, squeeze=0, shear=0, rotate=15),
    "stretch": lambda ctx: RandomAffine(translate=0, scale=0, squeeze=0, shear=0, stretch=0.15),
    "scale-jitter": lambda ctx: ScaleJitter(ctx.input_size, 1.0, 2.0),
    "color-jitter": lambda ctx: ColorJitter(),
    "grayscale": lambda ctx: RandomGrayscale(),
    "pca": _pca,
    "color-cast": lambda ctx: ColorCast(),
    "vignette": lambda ctx: Vignette(),
    "elastic": lambda ctx: ElasticDistortion(),
    "lenet-distortions": lambda ctx: RandomAffine(),
}

PRESETS: dict[str, str] = {  # name -> atoms, and the paper that used them
    "none": "",
    "pad-crop-flip": "pad-crop+flip",  # CIFAR in NIN / ResNet (He et al. 2015, section 4.2)
    "crop-flip": "crop+flip",  # photos: random crop of the stored image + mirror
    "alexnet-2012": "crop+flip+pca",  # Krizhevsky et al. 2012, section 4.1
    "vgg-2014": "scale-jitter+flip+pca",  # Simonyan & Zisserman 2014, section 3.1 (+ AlexNet's colour shift)
    "deep-image": "crop+flip+color-cast+vignette+stretch",  # Wu et al. 2015
}


def list_augmentations() -> list[str]:
    return sorted([*PRESETS, *ATOMS])


def validate_augmentation(spec: str) -> None:
    """Raise for unknown names in a ``+``-separated spec (before any data is loaded)."""
    for part in (p for p in spec.split("+") if p):
        if part not in ATOMS and part not in PRESETS:
            raise UnknownNameError("augmentation preset", part, list_augmentations())


def augmentation_atoms(spec: str) -> list[str]:
    """The atoms of a preset/atom spec, presets expanded: ``alexnet-2012+rotate`` -> crop, flip, pca, rotate."""
    validate_augmentation(spec)
    atoms: list[str] = []
    for part in (p for p in spec.split("+") if p):
        atoms += [a for a in PRESETS[part].split("+") if a] if part in PRESETS else [part]
    return atoms


def mirrors_in_training(spec: str) -> bool:
    """Whether a model trained with ``spec`` saw left-right mirrored images (the ``flip`` atom)."""
    return "flip" in augmentation_atoms(spec)


def build_augmentation(spec: str, ctx: AugmentContext) -> Augmentation | None:
    """The augmentation for a preset/atom spec such as ``pad-crop-flip`` or ``crop+flip+pca``; None for none."""
    steps = [ATOMS[a](ctx) for a in augmentation_atoms(spec)]
    fused: list[Augmentation] = []
    for step in steps:  # a crop followed by a horizontal flip: one gather instead of two passes
        previous = fused[-1] if fused else None
        if (
            isinstance(step, RandomFlip)
            and step.horizontal
            and not step.vertical
            and step.p == 0.5
            and isinstance(previous, RandomCrop)
            and not previous.flip
        ):
            fused[-1] = RandomCrop(previous.size, previous.padding, flip=True)
        else:
            fused.append(step)
    return Compose(tuple(fused)) if fused else None


def get_augmentation(name: str) -> Augmentation | None:
    """An augmentation that needs no dataset context (for tests and quick use); see :func:`build_augmentation`."""
    validate_augmentation(name)
    return build_augmentation(name, AugmentContext((32, 32), (32, 32), 1))
