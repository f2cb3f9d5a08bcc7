"""Streaming photos from files: DataLoader workers decode (torchvision.io) and resize; batches stay uint8 until
the device, where they are augmented and normalised exactly as in-memory datasets are.

Same interface as :class:`~cnnlab.data.loader.DeviceTensorLoader` (``batches(epoch, start_batch)``), so the
trainer does not know which one it has.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from cnnlab.data.augment import Augmentation
from cnnlab.data.loader import apply_augmentation
from cnnlab.data.preprocessing import Preprocessing
from cnnlab.errors import ConfigError, DataError, ImageDecodeError


class _DecodeFiles(Dataset):
    """Decodes one file to uint8 (C, H, W) at the stored size; a file that fails gives label −1 and its path."""

    def __init__(self, paths: list[str], labels: torch.Tensor, preprocessing: Preprocessing, strict: bool):
        self.paths, self.labels, self.preprocessing, self.strict = paths, labels, preprocessing, strict
        self.blank = torch.zeros(preprocessing.in_chans, *preprocessing.stored_size, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        from torchvision.io import ImageReadMode, decode_image, read_file

        path = self.paths[index]
        mode = ImageReadMode.GRAY if self.preprocessing.in_chans == 1 else ImageReadMode.RGB
        try:
            with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to TorchCodec
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_image(read_file(path), mode=mode)  # (C, h, w) uint8; the decoder converts modes
        except (RuntimeError, OSError, ValueError):
            try:  # what torchvision.io cannot decode (CMYK JPEG, 16-bit TIFF...) goes through Pillow's conversions
                image = self.preprocessing.decode_file(path)
            except ImageDecodeError as error:
                if self.strict:
                    raise DataError(f"{error} Fix or remove it, or leave out --strict to skip such files.") from None
                return self.blank, -1, path
        return self.preprocessing.to_stored_size(image.unsqueeze(0))[0], int(self.labels[index]), ""


def _collate(batch: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch])
    return images, labels, [b[2] for b in batch if b[2]]


class StreamingLoader:
    """Decode-on-workers loader for photo folders.

    Args:
        paths: image files.
        labels: int64 labels, one per file.
        preprocessing: stored size (resize/aspect), final crop and normalisation.
        batch_size: images per batch (global; see ``world_size``).
        shuffle: seeded order per epoch, as in the in-memory loader.
        seed: base seed.
        device: where batches go (pinned host memory + non-blocking copies when it is a GPU).
        augment: batched augmentation on the device.
        num_workers: decoding processes.
        strict: fail on the first unreadable file instead of skipping it.
        rank, world_size: data-parallel sharding of each global batch, as in DeviceTensorLoader.
        drop_last: skip the last partial batch (a fixed batch shape: CUDA graphs, DDP with few images left).
            A skipped unreadable file still makes its batch one image smaller; ``strict`` rules that out.
    """

    def __init__(
        self,
        paths: list[str],
        labels: torch.Tensor,
        preprocessing: Preprocessing,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        augment: Augmentation | None = None,
        num_workers: int = 2,
        strict: bool = False,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if batch_size < 1 or batch_size % world_size:
            raise ConfigError(f"Batch size {batch_size} must be positive and divisible by {world_size} processes.")
        self.files = _DecodeFiles(paths, labels, preprocessing, strict)
        self.preprocessing, self.batch_size, self.shuffle, self.seed = preprocessing, batch_size, shuffle, seed
        self.device, self.augment, self.num_workers = torch.device(device), augment, num_workers
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.num_samples = len(paths)
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)

    def batches(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)[start_batch * self.batch_size : len(self) * self.batch_size]
        share = self.batch_size // self.world_size
        if self.world_size > 1:  # this rank's contiguous slice of every global batch
            chunks = order.split(self.batch_size)
            order = torch.cat(
                [c[self.rank * -(-len(c) // self.world_size) :][: -(-len(c) // self.world_size)] for c in chunks]
            )
        pin = self.device.type == "cuda"
        loader = DataLoader(
            self.files,
            batch_size=share,
            sampler=order.tolist(),
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=pin,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers else None,
        )
        skipped_before = len(self.skipped)
        pending = None
        for b, (images, labels, failed) in enumerate(loader, start=start_batch):
            self.skipped.update(failed)
            keep = labels >= 0
            if not bool(keep.all()):
                images, labels = images[keep], labels[keep]
            # Start this batch's copy before handing out the previous one, so transfer overlaps compute.
            current = (images.to(self.device, non_blocking=pin), labels.to(self.device, non_blocking=pin), b)
            if pending is not None:
                yield self._finish(*pending, epoch)
            pending = current
        if pending is not None:
            yield self._finish(*pending, epoch)
        new = sorted(self.skipped)[skipped_before:] if len(self.skipped) > skipped_before else []
        if new:
            listing = "\n  ".join(new[:20]) + ("\n  ..." if len(new) > 20 else "")
            warnings.warn(f"Skipped {len(self.skipped)} unreadable image file(s):\n  {listing}", stacklevel=2)

    def raw_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images at the stored size, labels) in file order, unaugmented and uncropped."""
        loader = DataLoader(self.files, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=_collate)
        for images, labels, failed in loader:
            self.skipped.update(failed)
            keep = labels >= 0
            yield images[keep].to(self.device), labels[keep].to(self.device)

    def _finish(
        self, images: torch.Tensor, labels: torch.Tensor, b: int, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is not None:  # (B, C, H, W) on the device
            generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 100_003 + b) * 64 + self.rank)
            images = apply_augmentation(self.augment, images, generator)
        return self.preprocessing.normalize(self.preprocessing.center_crop(images)), labels
