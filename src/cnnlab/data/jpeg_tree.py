"""Small-image JPEG trees (``<folder>/{train,test}/<class>/*.jpg``) decoded once into uint8 tensors, and
``cifar10-jpeg``: CIFAR-10's 60,000 images re-encoded as JPEG (quality 75; a lossy copy, so figures compare
side by side on this copy and only approximately with published CIFAR-10 ones).

Decoding 60,000 tiny JPEGs takes about 10 seconds; the result is cached
as one tensor file so that every later run starts at once. The cache is keyed by a hash of the files'
*contents* (paths, sizes and bytes): a changed or replaced image can never be served from a stale cache. To
avoid reading 55 MB to hash them on every load, the cache also remembers the files' (path, size, mtime) listing
as a fingerprint: when the listing is unchanged the contents are taken to be (git's index does the same), and
only a changed listing costs a re-read and re-hash (and a re-decode only if the contents changed).

The cache lives in ``$XDG_CACHE_HOME/cnnlab/decoded`` (default ``~/.cache/cnnlab/decoded``), never in the data
root, which may be read-only or shared.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.datasets import ImageDataset, ImageSet, register_dataset
from cnnlab.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_JPEG_FOLDER = "CIFAR10-JPEG"
_CIFAR10_PER_CLASS = {"train": 5000, "test": 1000}
_CACHE_FORMAT = 1  # bump when the cached layout changes


def decoded_cache() -> Path:
    """Where decoded JPEG trees are cached: ``$XDG_CACHE_HOME/cnnlab/decoded`` (default ``~/.cache/...``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab" / "decoded"


@dataclass(frozen=True)
class _TreeListing:
    """Every image of a tree, sorted: relative path, size and mtime (the cheap fingerprint)."""

    files: list[tuple[str, int, int]]  # (split/class/name, bytes, mtime ns)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.files).encode()).hexdigest()


def _list_tree(folder: Path, classes: list[str], dataset: str, per_class: dict[str, int] | None) -> _TreeListing:
    """List ``folder/{train,test}/<class>/*.jpg``, with clear errors for a missing or incomplete tree."""
    if not folder.is_dir():
        raise DataError(
            f"Dataset {dataset!r} is not in {folder}: that folder does not exist. It should hold train/ and test/, "
            f"each with one sub-folder of .jpg files per class ({', '.join(classes)}). Point --data-root (or "
            f"$CNNLAB_DATA) at the folder that holds {folder.name}/."
        )
    problems, files = [], []
    for split in ("train", "test"):
        for name in classes:
            class_folder = folder / split / name
            entries = sorted(class_folder.glob("*.jpg")) if class_folder.is_dir() else []
            expected = per_class[split] if per_class else None
            if not class_folder.is_dir():
                problems.append(f"{split}/{name}/ is missing")
            elif not entries:
                problems.append(f"{split}/{name}/ has no .jpg files")
            elif expected is not None and len(entries) != expected:
                problems.append(f"{split}/{name}/ has {len(entries)} images, expected {expected}")
            for path in entries:
                stat = path.stat()
                files.append((f"{split}/{name}/{path.name}", stat.st_size, stat.st_mtime_ns))
    if problems:
        shown = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise DataError(
            f"Dataset {dataset!r} in {folder} is incomplete:\n  {shown}\nCopy the whole folder again (it should "
            f"hold train/ and test/ with one sub-folder per class: {', '.join(classes)})."
        )
    return _TreeListing(files)


def _content_hash(folder: Path, listing: _TreeListing) -> tuple[str, list[bytes]]:
    """sha256 over every file's relative path, length and bytes; the bytes are returned for decoding."""
    digest, contents = hashlib.sha256(), []
    for relative, _, _ in listing.files:
        data = (folder / relative).read_bytes()
        digest.update(relative.encode() + b"\0" + len(data).to_bytes(8, "little"))
        digest.update(data)
        contents.append(data)
    return digest.hexdigest(), contents


def _decode(folder: Path, relatives: list[str], contents: list[bytes]) -> torch.Tensor:
    """uint8 (N, 3, H, W); a file that is not a decodable image of the common size is a DataError naming it.

    Pillow, not torchvision's ``decode_jpeg``: torchvision 0.29 deprecates its image codecs, and decoding happens
    once per copy of the data (then the cache serves it), so the batched decoder's speed-up does not matter.
    """
    import io

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for relative, data in zip(relatives, contents, strict=True):
        try:
            with Image.open(io.BytesIO(data)) as image:
                arrays.append(np.asarray(image.convert("RGB")))  # (H, W, 3) uint8
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DataError(
                f"{folder / relative} is not a readable JPEG ({str(error).splitlines()[0]}). Replace or delete it."
            ) from None
        if arrays[-1].shape != arrays[0].shape:
            first, odd = arrays[0].shape, arrays[-1].shape
            raise DataError(
                f"The images of {folder} must all have one size; {folder / relatives[0]} is {first[1]}×{first[0]} "
                f"but {folder / relative} is {odd[1]}×{odd[0]}."
            )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, H, W, 3) -> (N, 3, H, W)


def load_jpeg_tree(
    folder: Path, classes: list[str], dataset: str, per_class: dict[str, int] | None = None
) -> tuple[ImageSet, ImageSet, bool]:
    """The train and test splits of a JPEG class tree as uint8 tensors, and whether they came from the cache.

    Args:
        folder: the tree (``folder/{train,test}/<class>/*.jpg``).
        classes: class folder names; index = label.
        dataset: name used in messages and in the cache file's name.
        per_class: expected images per class and split (``{"train": 5000, "test": 1000}``), or None for any.
    """
    listing = _list_tree(folder, classes, dataset, per_class)
    cache = decoded_cache()
    index_path = cache / f"{dataset}.index.json"  # fingerprint → content hash, for this dataset's trees
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    content_hash = index.get(listing.fingerprint())
    contents = None
    if content_hash is None:
        content_hash, contents = _content_hash(folder, listing)
    cache_file = cache / f"{dataset}-{content_hash[:20]}.pt"
    if cache_file.is_file():
        try:
            stored = torch.load(cache_file, map_location="cpu", weights_only=True)
            if stored.get("format") == _CACHE_FORMAT and stored.get("content_hash") == content_hash:
                _remember(index_path, index, listing.fingerprint(), content_hash)
                return (
                    ImageSet(stored["train_images"], stored["train_labels"]),
                    ImageSet(stored["test_images"], stored["test_labels"]),
                    True,
                )
        except (OSError, RuntimeError, EOFError, KeyError):
            pass  # a damaged cache file is rebuilt below
    if contents is None:
        content_hash_again, contents = _content_hash(folder, listing)
        if content_hash_again != content_hash:  # contents changed under an unchanged listing: trust the bytes
            content_hash, cache_file = content_hash_again, cache / f"{dataset}-{content_hash_again[:20]}.pt"
    relatives = [relative for relative, _, _ in listing.files]
    images = _decode(folder, relatives, contents)  # (N, 3, H, W)
    labels = torch.tensor([classes.index(relative.split("/")[1]) for relative in relatives])
    is_train = torch.tensor([relative.startswith("train/") for relative in relatives])
    train = ImageSet(images[is_train].contiguous(), labels[is_train])
    test = ImageSet(images[~is_train].contiguous(), labels[~is_train])
    stored = {
        "format": _CACHE_FORMAT,
        "content_hash": content_hash,
        "train_images": train.images,
        "train_labels": train.labels,
        "test_images": test.images,
        "test_labels": test.labels,
    }
    try:
        cache.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save(stored, temporary)
        os.replace(temporary, cache_file)  # atomic: a concurrent reader sees the old file or the whole new one
        _remember(index_path, index, listing.fingerprint(), content_hash)
    except OSError:
        pass  # an unwritable cache only costs the decoding next time
    return train, test, False


def _remember(index_path: Path, index: dict, fingerprint: str, content_hash: str) -> None:
    if index.get(fingerprint) == content_hash:
        return
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = index_path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps({**index, fingerprint: content_hash}))
        os.replace(temporary, index_path)
    except OSError:
        pass


@register_dataset(
    "cifar10-jpeg",
    "CIFAR-10 re-encoded as JPEG (lossy copy): 50,000 / 10,000 colour images, 32×32, 10 classes",
    augment="pad-crop-flip",
)
def _cifar10_jpeg(root: Path, fetch: bool = False) -> ImageDataset:
    folder = root / CIFAR10_JPEG_FOLDER
    if fetch:
        raise DataError(
            "cifar10-jpeg is a local JPEG copy of CIFAR-10 with nothing to download: place the CIFAR10-JPEG/ folder "
            "under --data-root (or use `cnnlab data get cifar10` for the original, where the network allows)."
        )
    train, test, _ = load_jpeg_tree(folder, CIFAR10_CLASSES, "cifar10-jpeg", _CIFAR10_PER_CLASS)
    return ImageDataset(
        "cifar10-jpeg",
        train,
        test,
        list(CIFAR10_CLASSES),
        source=str(folder),
        notes=["JPEG (quality 75) re-encoding of CIFAR-10: lossy; compare figures on this copy side by side."],
    )
