"""Loaders: one interface for the trainer, whatever holds the data.

The trainer asks ``loader.batches(epoch, start_batch)`` and gets normalised float images and int64 labels
on the training device. The order of an epoch is a pure function of (seed, epoch), so a run resumed in the
middle of an epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import torch

from cnnlab.data.augment import Augmentation, apply_with_boxes
from cnnlab.data.preprocessing import Preprocessing
from cnnlab.data.targets import BoxTargets, crop_boxes, drop_degenerate
from cnnlab.errors import ConfigError


class Loader(Protocol):
    batch_size: int
    num_samples: int

    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def batches(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images (B, C, H, W) float, labels (B,) int64) on the device, from batch ``start_batch`` on."""
        ...


def apply_augmentation(
    augment: Augmentation, images: torch.Tensor, generator: torch.Generator, boxes: BoxTargets | None = None
):
    """Run pixel-moving steps (crop, flip) on uint8, the rest on [0, 1] floats; returns uint8 or float images,
    or with ``boxes``, (images, boxes moved with the pixels; boxes pushed out of the image become padding)."""
    if boxes is not None:
        return _augment_with_boxes(augment, images, generator, boxes)
    steps = getattr(augment, "steps", None)
    prefix = augment.uint8_prefix if steps is not None else (1 if getattr(augment, "uint8_ok", False) else 0)
    if steps is None:
        return augment(images, generator) if prefix else augment(images.float() / 255, generator)
    for step in steps[:prefix]:
        images = step(images, generator)  # uint8: a quarter of the bytes of float32
    if prefix < len(steps):
        images = images.float() / 255
        for step in steps[prefix:]:
            images = step(images, generator)
    return images


def _augment_with_boxes(augment: Augmentation, images: torch.Tensor, generator: torch.Generator, boxes: BoxTargets):
    steps = list(getattr(augment, "steps", None) or [augment])
    prefix = augment.uint8_prefix if hasattr(augment, "uint8_prefix") else int(getattr(augment, "uint8_ok", False))
    moved = boxes.boxes
    for i, step in enumerate(steps):
        if i == prefix:
            images = images.float() / 255
        images, moved = apply_with_boxes(step, images, moved, generator)
    return images, drop_degenerate(boxes.with_boxes(moved))


class DeviceTensorLoader:
    """A dataset held whole on the device as uint8, batched and normalised there (no per-sample Python).

    Args:
        images: uint8 (N, C, H, W), already fitted to the model's input size.
        labels: the targets: int64 labels (N,), any tensor whose first axis is the sample (clean images,
            token ids...), or :class:`~cnnlab.data.targets.BoxTargets` (boxes move with augmentations).
        preprocessing: normalisation (mean/std) applied per batch on the device.
        batch_size: images per batch.
        shuffle: new seeded order every epoch.
        seed: base seed of the order; epoch e uses seed·1,000,003 + e.
        drop_last: skip the last partial batch (training usually does; evaluation never should).
        device: where the data lives and batches are produced.
        augment: batched augmentation applied to [0, 1] images before normalisation; its randomness comes
            from a generator seeded by (seed, epoch, batch), so a resumed run draws the same distortions.
        rank: this process's index among ``world_size`` data-parallel processes.
        world_size: number of data-parallel processes. ``batch_size`` stays the *global* batch: every process
            walks the same seeded order and takes its own contiguous 1/world_size slice of each global batch,
            so averaging gradients over processes (DDP) equals one process training on the global batch. The
            augmentation is drawn for the whole global batch in every process (each keeps its slice), so that
            equality holds with augmentation too.
        redraw: for generated datasets (``--redraw``): ``redraw(epoch)`` gives the (uint8 images, labels) of
            epoch ``epoch`` ≥ 1, as many as ``images`` and at the same size; epoch 0 trains on ``images``. It must be
            a pure function of the epoch, so a resumed run, and every data-parallel process, sees the same images.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        preprocessing: Preprocessing,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        augment: Augmentation | None = None,
        rank: int = 0,
        world_size: int = 1,
        redraw: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        if batch_size < 1:
            raise ConfigError(f"Batch size must be a positive integer, got {batch_size}.")
        if batch_size % world_size:
            raise ConfigError(
                f"Batch size {batch_size} (global) is not divisible by the {world_size} processes; "
                f"use a multiple of {world_size}."
            )
        self.images = images.to(device)  # uint8 (N, C, H, W): one copy to the device, a quarter of float32's size
        self.labels = labels.to(device)
        self.preprocessing, self.batch_size = preprocessing, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_samples = images.shape[0]
        self.augment = augment
        self.rank, self.world_size = rank, world_size
        self.redraw = redraw
        self._first_draw = (self.images, self.labels)  # the dataset's own draw: epoch 0 trains on it
        self._drawn_epoch = 0

    def _use_epoch(self, epoch: int) -> None:
        """Hold epoch ``epoch``'s draw (redrawn datasets only; the last one drawn is cached)."""
        if epoch == self._drawn_epoch:
            return
        if epoch == 0:
            self.images, self.labels = self._first_draw
        else:
            images, labels = self.redraw(epoch)
            if images.shape != self._first_draw[0].shape or labels.shape != self._first_draw[1].shape:
                raise ValueError(
                    f"redraw({epoch}) gave images {tuple(images.shape)} and labels {tuple(labels.shape)}; "
                    f"expected {tuple(self._first_draw[0].shape)} and {tuple(self._first_draw[1].shape)}"
                )
            device = self._first_draw[0].device
            self.images, self.labels = images.to(device), labels.to(device)
        self._drawn_epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def order(self, epoch: int) -> torch.Tensor:
        """Sample indices of an epoch, on the data's device."""
        if not self.shuffle:
            return torch.arange(self.num_samples, device=self.images.device)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).to(self.images.device)

    def batches(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.redraw is not None:
            self._use_epoch(epoch)
        order = self.order(epoch)
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            mine = slice(None)
            if self.world_size > 1:  # this rank's contiguous slice of the global batch
                share = -(-len(index) // self.world_size)
                mine = slice(self.rank * share, (self.rank + 1) * share)
            boxes = isinstance(self.labels, BoxTargets)
            if self.augment is None:
                images, targets = self.images[index[mine]], self.labels[index[mine]]  # uint8 (B, C, H, W)
            else:
                # Every process draws the distortions of the whole global batch from one generator and keeps its
                # slice, so N processes see exactly the images one process would (the draws are small; the
                # pixel work on the other slices is the price of that equality).
                generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 100_003 + b) * 64)
                if boxes:  # boxes move with the pixels they frame
                    images, targets = apply_augmentation(
                        self.augment, self.images[index], generator, self.labels[index]
                    )
                    images, targets = images[mine], targets[mine]
                else:
                    images = apply_augmentation(self.augment, self.images[index], generator)[mine]
                    targets = self.labels[index[mine]]
            if boxes:
                targets = self._center_crop_boxes(targets, images.shape[-2:])
            yield self.preprocessing.normalize(self.preprocessing.center_crop(images)), targets

    def _center_crop_boxes(self, targets: BoxTargets, size: tuple[int, int]) -> BoxTargets:
        crop = self.preprocessing.crop
        if crop is None or tuple(size) == tuple(crop):
            return targets
        top, left = round((size[0] - crop[0]) / 2.0), round((size[1] - crop[1]) / 2.0)  # as torchvision
        return drop_degenerate(targets.with_boxes(crop_boxes(targets.boxes, top, left, tuple(crop))))

    def raw_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images at the stored size, labels) in order, unaugmented and uncropped (test-time views)."""
        for b in range(-(-self.num_samples // self.batch_size)):
            index = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self.images[index], self.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)
