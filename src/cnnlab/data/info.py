"""``cnnlab data``: the dataset listing, a dataset's description and its augmentation preview, as text lines."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.errors import ConfigError

PREVIEW_MAX_COUNT = 64  # images per row of a preview: a figure, not a dump (memory stays bounded)


def dataset_list() -> list[str]:
    """One line per registered dataset, with its default augmentation."""
    from cnnlab.data.captions import get_caption_dataset_info, list_caption_datasets
    from cnnlab.data.datasets import get_dataset_info, list_datasets
    from cnnlab.data.detection import get_detection_dataset_info, list_detection_datasets

    lines = []
    for name in list_datasets():
        info = get_dataset_info(name)
        lines.append(f"{name:14} {info.description}  [--augment default: {info.augment}]")
    lines.append(f"{'folder:PATH':14} your own images, one sub-folder per class (PATH/train and PATH/val if present)")
    lines.append("detection (boxes and classes per image):")
    lines += [f"{n:18} {get_detection_dataset_info(n).description}" for n in list_detection_datasets()]
    lines.append("captioning (reference captions per image; `cnnlab caption train --data NAME`):")
    lines += [f"{n:26} {get_caption_dataset_info(n).description}" for n in list_caption_datasets()]
    return lines


def describe_caption_dataset(name: str, data_root: str | None = None) -> list[str]:
    """A caption dataset's source, splits, references per image, vocabulary and an example."""
    from cnnlab.data.captions import get_caption_dataset_info, load_caption_dataset, tokenize

    info = get_caption_dataset_info(name)
    dataset = load_caption_dataset(name, data_root)
    c, h, w = dataset.image_shape
    references = [len(refs) for refs in dataset.train.captions]
    lengths = [len(tokenize(caption)) for refs in dataset.train.captions for caption in refs]
    return [
        f"{name}: {info.description}",
        f"  files:      {dataset.source}",
        f"  splits:     train {len(dataset.train):,}   val {len(dataset.val):,}   test {len(dataset.test):,} images",
        f"  images:     {c}×{h}×{w} uint8",
        f"  captions:   {min(references)}–{max(references)} per train image, {min(lengths)}–{max(lengths)} tokens; "
        f"vocabulary {len(dataset.vocabulary()):,} tokens (4 special)",
        f"  example:    {dataset.train.captions[0][0]!r}",
        f"  options:    {', '.join(info.option_names()) or 'none'} (`--data-option KEY=VALUE`)",
    ]


def describe_detection_dataset(name: str, data_root: str | None = None) -> list[str]:
    """A detection dataset's source, splits, classes (no background), image size, boxes per image and sizes."""
    from cnnlab.data.detection import get_detection_dataset_info, load_detection_dataset

    info = get_detection_dataset_info(name)
    dataset = load_detection_dataset(name, data_root)
    c, h, w = dataset.image_shape
    more = " ..." if dataset.num_classes > 12 else ""
    counts = torch.cat([dataset.train.boxes_per_image(), dataset.test.boxes_per_image()])
    targets = dataset.train.targets
    box = targets.boxes[targets.valid]
    sides = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    return [
        f"{name}: {info.description}",
        f"  files:    {dataset.source}",
        f"  train:    {len(dataset.train):,} images   test: {len(dataset.test):,} images",
        f"  classes:  {dataset.num_classes} object classes, no background class: "
        f"{', '.join(dataset.classes[:12])}{more}",
        f"  images:   {c}×{h}×{w} uint8",
        f"  boxes:    {counts.min()}–{counts.max()} per image (mean {counts.float().mean():.2f}); longer side "
        f"{sides.min():.0f}–{sides.max():.0f} px (train)",
        *(f"  note:     {note}" for note in dataset.notes),
        f"  augment:  {info.augment} (the default preview --augment)",
    ]


def describe_dataset(name: str, data_root: str | None = None, fetch: bool = False, val_split: float = 0.2) -> list[str]:
    """Where a dataset's files are, its splits, classes, image size and statistics (``fetch``: download first)."""
    from cnnlab.data.captions import is_caption_dataset
    from cnnlab.data.datasets import get_dataset_info, load_dataset
    from cnnlab.data.detection import is_detection_dataset
    from cnnlab.data.preprocessing import channel_stats

    if is_detection_dataset(name):
        return describe_detection_dataset(name, data_root)
    if is_caption_dataset(name):
        return describe_caption_dataset(name, data_root)
    info = get_dataset_info(name)
    dataset = load_dataset(name, data_root, fetch=fetch, val_split=val_split)
    c, h, w = dataset.image_shape
    more = " ..." if dataset.num_classes > 12 else ""
    lines = [
        f"{dataset.name}: {info.description}",
        f"  files:    {dataset.source}",
        f"  train:    {len(dataset.train):,} images   test: {len(dataset.test):,} images",
        f"  classes:  {dataset.num_classes}: {', '.join(dataset.classes[:12])}{more}",
    ]
    if dataset.streaming:
        lines.append(f"  images:   {c} channels, sizes vary (photos; resized and cropped to the model's input)")
    else:
        mean, std = channel_stats(dataset.train.images)
        mean_text, std_text = ", ".join(f"{m:.4f}" for m in mean), ", ".join(f"{s:.4f}" for s in std)
        lines += [f"  images:   {c}×{h}×{w} uint8", f"  mean/std: {mean_text} / {std_text} (train, [0, 1] scale)"]
    lines += [f"  note:     {note}" for note in dataset.notes]
    lines.append(f"  augment:  {info.augment} (the default --augment)")
    return lines


def preview_dataset(
    name: str,
    augment: str | None = None,
    out: str | Path | None = None,
    count: int = 8,
    data_root: str | None = None,
    val_split: float = 0.2,
) -> tuple[Path, str]:
    """A PNG of ``count`` training images as stored (row 1) and three augmented draws; returns (path, what rows 2-4
    show: the preset, or for a generated set without augmentation, its redraws). Detection datasets are drawn with
    their boxes and class names, moved with the pixels."""
    from cnnlab.data.datasets import get_dataset_info, load_dataset
    from cnnlab.data.detection import get_detection_dataset_info, is_detection_dataset, load_detection_dataset
    from cnnlab.data.preview import detection_preview_grid, preview_grid, shows_redraws
    from cnnlab.outputs import image_suffixes, output_file

    detection = is_detection_dataset(name)
    info = get_detection_dataset_info(name) if detection else get_dataset_info(name)
    if not 1 <= count <= PREVIEW_MAX_COUNT:
        raise ConfigError(f"--count must be between 1 and {PREVIEW_MAX_COUNT} images per row, got {count}.")
    spec = augment or info.augment
    out = out or f"{name.replace(':', '_').replace('/', '_')}-{spec.replace('+', '_')}.png"
    output_file(out, "--out", image_suffixes(), "image")
    if detection:
        return detection_preview_grid(load_detection_dataset(name, data_root), spec, out, count=count), spec
    dataset = load_dataset(name, data_root, val_split=val_split)
    rows = "the same digits drawn afresh, as --redraw trains" if shows_redraws(dataset, spec) else spec
    return preview_grid(dataset, spec, out, count=count), rows


def write_samples(
    name: str, count: int = 2, out: str | Path = ".", data_root: str | None = None, val_split: float = 0.2
) -> list[Path]:
    """The first ``count`` test images of a dataset as PNG files named ``<name><i>_label<class>.png`` (to try
    ``cnnlab predict`` on), at their stored size."""
    from PIL import Image

    from cnnlab.data.datasets import FileImageSet, load_dataset
    from cnnlab.outputs import output_dir

    if not 1 <= count <= PREVIEW_MAX_COUNT:
        raise ConfigError(f"--count must be between 1 and {PREVIEW_MAX_COUNT} images, got {count}.")
    folder = output_dir(out)
    dataset = load_dataset(name, data_root, val_split=val_split)
    if isinstance(dataset.test, FileImageSet):
        raise ConfigError(f"{name} is a folder of image files already; give those files to `cnnlab predict`.")
    stem = name.replace(":", "_").replace("/", "_").removesuffix("s")  # digits -> digit0_label7.png
    written = []
    for i in range(min(count, len(dataset.test))):
        image = dataset.test.images[i]  # uint8 (C, H, W)
        label = dataset.classes[int(dataset.test.labels[i])]
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        path = folder / f"{stem}{i}_label{label}.png"
        Image.fromarray(array).save(path)
        written.append(path)
    return written
