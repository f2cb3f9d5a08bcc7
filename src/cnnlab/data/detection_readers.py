"""Your own detection data: Pascal VOC and COCO, read into memory as a :class:`DetectionDataset`.

- :func:`read_voc` (``voc:PATH``): ``PATH/Annotations/*.xml`` and ``PATH/JPEGImages/``, as in
  ``VOCdevkit/VOC2007``. VOC's corners are 1-based inclusive pixel indices; they become pixel-edge XYXY
  (``xmin − 1, ymin − 1, xmax, ymax``), so a box over the whole W×H image is [0, 0, W, H].
- :func:`read_coco` (``coco:PATH``): an instances JSON and its images folder. ``bbox`` [x, y, w, h] becomes
  [x, y, x + w, y + h]; ``iscrowd`` annotations are left out (they mark crowds, not objects, as torchvision's
  detection references do); category ids become 0 … K − 1 in increasing id order, names kept.

Labels are object classes only (no background class; see :mod:`cnnlab.data.detection`); an image without
objects is kept and trains as background. Images are decoded with Pillow to RGB uint8. They must share one size,
or pass ``size=(H, W)`` (or one int) to resize every image, boxes scaled with it. Bad input is a
:class:`~cnnlab.errors.DataError` naming the file and the box: a missing image, a zero-width, negative or
out-of-image box, an unknown class or category id.

The XML is parsed with the standard library's ``xml.etree`` (``defusedxml`` is not a dependency): read
annotation files you trust.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import torch

from cnnlab.data.detection import DetectionDataset, DetectionSplit, register_detection_dataset
from cnnlab.data.targets import BoxTargets, resize_boxes
from cnnlab.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 20 Pascal VOC classes in their usual order: pass ``classes=VOC_CLASSES`` for the standard labels."""

# One record per image: (name for messages, image path, boxes (n, 4) XYXY pixel edges, class names or ids (n,)).
_Record = tuple[str, Path, list[list[float]], list]


def _decode(path: Path, name: str) -> torch.Tensor:
    """uint8 (3, H, W) from an image file, or a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{name}: image file {path} is missing; put it there or remove its annotation.")
    try:
        with Image.open(path) as image:
            array = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
            width, height = image.size
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{name}: image file {path} cannot be decoded ({error}).") from error
    return array.view(height, width, 3).permute(2, 0, 1).contiguous()


def _build_split(records: list[_Record], labels: list[list[int]], num_classes: int, size) -> DetectionSplit:
    """Decode, validate each image's boxes against its own size (naming it), and resize to one size."""
    images, boxes = [], []
    for (name, path, box, _), label in zip(records, labels, strict=True):
        image = _decode(path, name)
        target = BoxTargets.from_lists([torch.tensor(box, dtype=torch.float32).reshape(-1, 4)], [torch.tensor(label)])
        target.validate(tuple(image.shape[-2:]), num_classes, [name])
        if size is not None and tuple(image.shape[-2:]) != size:
            scale = (size[0] / image.shape[1], size[1] / image.shape[2])
            target = target.with_boxes(resize_boxes(target.boxes, *scale))
            from torchvision.transforms.v2.functional import resize

            image = resize(image, list(size), antialias=True)
        images.append(image)
        boxes.append(target.boxes[0])
    shapes = sorted({tuple(i.shape[-2:]) for i in images})
    if len(shapes) > 1:
        raise DataError(
            f"The images have {len(shapes)} different sizes (e.g. {shapes[0]} and {shapes[-1]}, H×W); pass "
            "size=(H, W) to resize them all (boxes are scaled with them)."
        )
    stacked = torch.stack(images) if images else torch.zeros(0, 3, *(size or (1, 1)), dtype=torch.uint8)
    targets = BoxTargets.from_lists(boxes, [torch.tensor(label, dtype=torch.int64) for label in labels])
    return DetectionSplit(stacked, targets, names=[r[0] for r in records])


def _size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or min(pair) < 1:
        raise DataError(f"size must be one side or (H, W) in pixels, got {size!r}.")
    return pair  # type: ignore[return-value]


def _seeded_split(records: list[_Record], test_fraction: float, seed: int) -> tuple[list[_Record], list[_Record]]:
    """Train and test records from a seeded shuffle (each in file order); at least one image in each."""
    if len(records) < 2:
        raise DataError(f"{len(records)} annotated image(s): a train and a test split need at least 2.")
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[: min(len(records) - 1, max(1, round(len(records) * test_fraction)))])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


# ---- Pascal VOC ------------------------------------------------------------------------------------------------------
def _voc_record(xml_path: Path, images: Path, keep_difficult: bool) -> _Record:
    name = f"{xml_path.parent.name}/{xml_path.name}"
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise DataError(f"{name} is not valid XML ({error}).") from error
    filename = (root.findtext("filename") or f"{xml_path.stem}.jpg").strip()
    boxes, classes = [], []
    for j, obj in enumerate(root.iter("object")):
        if not keep_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        box = obj.find("bndbox")
        label = (obj.findtext("name") or "").strip()
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr, arg-type]
        except (AttributeError, TypeError, ValueError) as error:
            raise DataError(f"{name}: object {j} ({label or 'no name'}) lacks a numeric bndbox.") from error
        if not label:
            raise DataError(f"{name}: object {j} has no <name> (its class).")
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])  # 1-based inclusive indices -> pixel edges
        classes.append(label)
    return f"{name} (image {filename})", images / filename, boxes, classes


def _voc_ids(folder: Path, split: str) -> list[str] | None:
    path = folder / "ImageSets" / "Main" / f"{split}.txt"
    return path.read_text().split() if path.is_file() else None


def read_voc(
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    size: int | Sequence[int] | None = None,
    keep_difficult: bool = True,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DetectionDataset:
    """A Pascal VOC folder (``Annotations/*.xml``, ``JPEGImages/``, optional ``ImageSets/Main/*.txt``).

    Splits: with ``ImageSets/Main/test.txt``, test is its list and train is ``trainval.txt`` (else ``train.txt``
    + ``val.txt``), as VOC2007; else with ``val.txt``, train is ``train.txt`` and test is ``val.txt``, as
    VOC2012; else every annotation is split at random (``test_fraction``, ``seed``).

    Args:
        path: the folder (e.g. ``VOCdevkit/VOC2007``).
        classes: the class names, index = label (e.g. :data:`VOC_CLASSES`); default: the sorted names found.
            An object of another class is an error.
        size: resize every image to (H, W) (or a side), boxes with it; needed when sizes differ.
        keep_difficult: keep objects marked ``<difficult>1</difficult>``.
        test_fraction: the test share when there are no split lists.
        seed: that split's seed.
    """
    folder = Path(path).expanduser()
    annotations, images = folder / "Annotations", folder / "JPEGImages"
    if not annotations.is_dir():
        raise DataError(f"{folder} is not a Pascal VOC folder: {annotations} is missing (and JPEGImages/ beside it).")
    test_ids = _voc_ids(folder, "test")
    if test_ids is not None:
        train_ids = _voc_ids(folder, "trainval") or (_voc_ids(folder, "train") or []) + (_voc_ids(folder, "val") or [])
    elif (val_ids := _voc_ids(folder, "val")) is not None:
        train_ids, test_ids = _voc_ids(folder, "train") or [], val_ids
    else:
        train_ids = None
    read = lambda ids: [_voc_record(annotations / f"{i}.xml", images, keep_difficult) for i in ids]  # noqa: E731
    if train_ids is None:
        xmls = sorted(annotations.glob("*.xml"))
        if not xmls:
            raise DataError(f"{annotations} holds no .xml annotation files.")
        train, test = _seeded_split(read([p.stem for p in xmls]), test_fraction, seed)
    else:
        for i in [*train_ids, *test_ids]:
            if not (annotations / f"{i}.xml").is_file():
                raise DataError(f"ImageSets/Main lists {i!r} but {annotations / f'{i}.xml'} is missing.")
        train, test = read(train_ids), read(test_ids)
    names = list(classes) if classes is not None else sorted({c for r in [*train, *test] for c in r[3]})
    index = {c: k for k, c in enumerate(names)}

    def labels(records: list[_Record]) -> list[list[int]]:
        for name, _, boxes, found in records:
            for j, c in enumerate(found):
                if c not in index:
                    raise DataError(
                        f"{name}: box {j} {boxes[j]} has class {c!r}, not one of the {len(names)} classes given "
                        f"({', '.join(names[:8])}{' ...' if len(names) > 8 else ''}); add it or fix the name."
                    )
        return [[index[c] for c in r[3]] for r in records]

    shape = _size(size)
    return DetectionDataset(
        folder.name,
        _build_split(train, labels(train), len(names), shape),
        _build_split(test, labels(test), len(names), shape),
        names,
        source=str(folder),
    )


# ---- COCO ------------------------------------------------------------------------------------------------------------
def _coco_records(annotations: Path, images_dir: Path) -> tuple[list[_Record], list[int], dict[int, str]]:
    """Records with category ids, the category ids in order, and their names."""
    try:
        data = json.loads(annotations.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{annotations} cannot be read as COCO JSON ({error}).") from error
    categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    by_image = {int(i["id"]): (str(i["file_name"]), [], []) for i in data.get("images", [])}
    for a in data.get("annotations", []):
        image_id, box = int(a["image_id"]), [float(v) for v in a["bbox"]]
        if image_id not in by_image:
            raise DataError(f"{annotations.name}: annotation {a.get('id')} (box {box}) is for image id {image_id}, "
                            "which is not in its images list.")  # fmt: skip
        file_name = by_image[image_id][0]
        if int(a["category_id"]) not in categories:
            raise DataError(
                f"{annotations.name}: image {file_name}: annotation {a.get('id')} (box {box}) has category_id "
                f"{a['category_id']}, which is not in its categories (ids {', '.join(map(str, sorted(categories)))})."
            )
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = box
        by_image[image_id][1].append([x, y, x + w, y + h])
        by_image[image_id][2].append(int(a["category_id"]))
    records = [
        (f"{annotations.name}: image {f}", images_dir / f, boxes, ids) for f, boxes, ids in by_image.values()
    ]  # fmt: skip
    return records, sorted(categories), categories


def read_coco(
    annotations: str | Path,
    images_dir: str | Path,
    *,
    test: tuple[str | Path, str | Path] | None = None,
    size: int | Sequence[int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DetectionDataset:
    """COCO instances JSON (``images``, ``annotations``, ``categories``) and the folder of its images.

    Args:
        annotations: the training JSON (e.g. ``annotations/instances_train2017.json``).
        images_dir: the folder its ``file_name`` s are in (e.g. ``train2017/``).
        test: the test split's (JSON, images folder); without it, the images are split at random.
        size: resize every image to (H, W) (or a side), boxes with it; needed when sizes differ.
        test_fraction: the test share when ``test`` is not given.
        seed: that split's seed.

    Category ids become labels 0 … K − 1 in increasing id order (COCO's 80 ids span 1 … 90); names are kept.
    """
    train, ids, names = _coco_records(Path(annotations).expanduser(), Path(images_dir).expanduser())
    if test is None:
        train, held = _seeded_split(train, test_fraction, seed)
    else:
        held, _, test_names = _coco_records(Path(test[0]).expanduser(), Path(test[1]).expanduser())
        if test_names != names:
            raise DataError(f"The test JSON's categories differ from the training JSON's ({annotations}).")
    label = {category: k for k, category in enumerate(ids)}
    labels = lambda records: [[label[c] for c in r[3]] for r in records]  # noqa: E731
    shape = _size(size)
    return DetectionDataset(
        Path(annotations).stem,
        _build_split(train, labels(train), len(ids), shape),
        _build_split(held, labels(held), len(ids), shape),
        [names[i] for i in ids],
        source=str(annotations),
    )


# ---- by name ---------------------------------------------------------------------------------------------------------
@register_detection_dataset("voc:", "Pascal VOC folder: PATH/Annotations/*.xml + PATH/JPEGImages/", "crop-flip")
def _voc(
    path: Path,
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    size: int | Sequence[int] | None = None,
    keep_difficult: bool = True,
    test_fraction: float = 0.2,
) -> DetectionDataset:
    return read_voc(
        path, classes=classes, size=size, keep_difficult=keep_difficult, test_fraction=test_fraction, seed=seed
    )


@register_detection_dataset(
    "coco:", "COCO layout: PATH/annotations/instances_<split>.json + PATH/<split>/ images", "crop-flip"
)
def _coco(
    path: Path, *, seed: int = 0, size: int | Sequence[int] | None = None, test_fraction: float = 0.2
) -> DetectionDataset:
    """``instances_train*.json`` is the train split and ``instances_val*`` (or ``test*``) the test split, their
    images in ``PATH/<split>/``; with one JSON only, its images are split at random."""
    found = sorted((path / "annotations").glob("instances_*.json"))
    if not found:
        raise DataError(f"{path} is not in COCO's layout: no {path / 'annotations' / 'instances_*.json'}.")
    split = lambda p: p.stem.removeprefix("instances_")  # noqa: E731
    train = [p for p in found if split(p).startswith("train")] or found[:1]
    test = [p for p in found if split(p).startswith(("val", "test")) and p != train[0]]
    pair = (test[0], path / split(test[0])) if test else None
    dataset = read_coco(train[0], path / split(train[0]), test=pair, size=size, test_fraction=test_fraction, seed=seed)
    return dataset
