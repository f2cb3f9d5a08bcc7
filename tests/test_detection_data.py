"""Detection data: the generated canvases (determinism, tight boxes, sizes, overlap, provenance), the registry,
the VOC and COCO readers on fixtures written here, each bad-input message, and the preview."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_area, box_iou

from cnnlab.data.detection import (
    DetectionDataset,
    DetectionSplit,
    list_detection_datasets,
    load_detection_dataset,
)
from cnnlab.data.detection_canvas import CanvasConfig, make_canvases, resize_digits
from cnnlab.data.detection_readers import VOC_CLASSES, read_coco, read_voc
from cnnlab.data.preview import detection_preview_grid
from cnnlab.data.targets import BoxTargets
from cnnlab.errors import ConfigError, DataError, UnknownNameError
from conftest import SHARED_DATASETS, needs_mnist


@pytest.fixture(scope="module")
def digits():
    """300 fake 28×28 'digits' (a bright blob of random extent on black) and labels: no download needed."""
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(300, 1, 28, 28, dtype=torch.uint8)
    for i in range(300):
        y1, x1 = torch.randint(2, 10, (2,), generator=g).tolist()
        y2, x2 = torch.randint(18, 27, (2,), generator=g).tolist()
        images[i, 0, y1:y2, x1:x2] = torch.randint(100, 256, (y2 - y1, x2 - x1), generator=g, dtype=torch.uint8)
    return images, torch.arange(300) % 10


def _make(digits, count=200, seed=0, **options):
    return make_canvases(*digits, count, CanvasConfig(**options), seed)


def test_same_seed_same_tensors_other_seed_other(digits):
    a, b, c = _make(digits, 100, seed=3), _make(digits, 100, seed=3), _make(digits, 100, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets.boxes, b.targets.boxes)
    assert torch.equal(a.targets.labels, b.targets.labels)
    assert not torch.equal(a.images, c.images)


def test_canvases_shape_counts_and_boxes_inside(digits):
    split = _make(digits, count=150, clutter=6)
    assert split.images.shape == (150, 1, 128, 128) and split.images.dtype == torch.uint8
    counts = split.boxes_per_image()
    assert counts.min() >= 1 and counts.max() == 6 and len(counts.unique()) == 6
    split.targets.validate((128, 128), 10)  # inside the canvas, positive size, labels 0..9
    boxes = split.targets.boxes[split.targets.valid]
    assert torch.equal(boxes, boxes.round())  # on pixel edges


def test_boxes_are_tight_around_the_ink(digits):
    split, ink = _make(digits, count=100), CanvasConfig.ink
    for image, (boxes, _) in zip(split.images[:, 0], split.targets.to_lists(), strict=True):
        for x1, y1, x2, y2 in boxes.long().tolist():
            inside = image[y1:y2, x1:x2] >= ink
            # ink on each of the box's four edge rows/columns: no margin left inside the box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_box_edges_match_the_resized_digit_alone(digits):
    """Re-render each object from its provenance: its ink box in the cell, shifted, is the box."""
    images, _ = digits
    split = _make(digits, count=50)
    prov = split.provenance
    for i in range(50):
        for j in range(int(split.boxes_per_image()[i])):
            left, top, side = prov.cells[i, j].tolist()
            cell = resize_digits(images[prov.digits[i, j]][None], side)[0] >= CanvasConfig.ink
            ys, xs = cell.any(1).nonzero().flatten(), cell.any(0).nonzero().flatten()
            expected = [left + xs[0], top + ys[0], left + xs[-1] + 1, top + ys[-1] + 1]
            assert split.targets.boxes[i, j].tolist() == [float(v) for v in expected]


def test_object_sizes_span_at_least_three_times(digits):
    split = _make(digits, count=400)
    sides = split.provenance.cells[..., 2][split.targets.valid]
    assert sides.min() == 14 and sides.max() == 56  # cell sides: 4×
    boxes = split.targets.boxes[split.targets.valid]
    longer = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert longer.max() / longer.min() >= 3
    small, large = (sides < 28).float().mean(), (sides >= 28).float().mean()  # log-uniform: octaves alike
    assert abs(small - large) < 0.1


def test_overlap_is_limited_torchvision_iou_as_oracle(digits):
    split = _make(digits, count=300, max_objects=6)
    worst = 0.0
    for boxes, _ in split.targets.to_lists():
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        worst = max(worst, float(iou.max()))
        x1y1 = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
        x2y2 = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        inter = (x2y2 - x1y1).clamp(min=0).prod(-1).fill_diagonal_(0)
        area = box_area(boxes)
        assert (inter <= 0.15 * torch.minimum(area[:, None], area[None, :]) + 1e-6).all()
    assert worst <= 0.1


def test_clutter_stays_outside_the_boxes(digits):
    plain, cluttered = _make(digits, count=60), _make(digits, count=60, clutter=8)
    assert torch.equal(plain.targets.boxes, cluttered.targets.boxes)  # clutter comes after, in the random stream
    extra = cluttered.images.int() - plain.images.int()
    assert extra.sum() > 0 and (extra >= 0).all()
    for diff, (boxes, _) in zip(extra[:, 0], cluttered.targets.to_lists(), strict=True):
        for x1, y1, x2, y2 in boxes.long().tolist():
            assert diff[y1:y2, x1:x2].abs().sum() == 0
    assert (cluttered.provenance.clutter >= 0).float().mean() > 0.9


def test_resize_matches_pillow_within_one_level(digits):
    images, _ = digits
    for side in (14, 23, 28, 41, 56):
        ours = resize_digits(images[:40], side)
        pil = [np.asarray(Image.fromarray(i[0].numpy()).resize((side, side), Image.BILINEAR)) for i in images[:40]]
        assert (ours.int() - torch.from_numpy(np.stack(pil)).int()).abs().max() <= 1


def test_canvas_options_are_checked():
    with pytest.raises(ConfigError, match="max_side must fit"):
        CanvasConfig(canvas_size=32)
    with pytest.raises(ConfigError, match="does not take option.*clutterr"):
        load_detection_dataset("mnist-detection", "/nonexistent", clutterr=3)
    with pytest.raises(UnknownNameError, match="mnist-detection"):
        load_detection_dataset("mnist-detections")
    assert {"mnist-detection", "fashion-detection", "voc:PATH", "coco:PATH"} <= set(list_detection_datasets())


@needs_mnist
def test_mnist_detection_from_the_real_digits_train_and_test_apart():
    from cnnlab.data import load_dataset

    data = load_detection_dataset("mnist-detection", SHARED_DATASETS, train_size=150, test_size=60, num_classes=10)
    mnist = load_dataset("mnist", SHARED_DATASETS)
    assert data.classes == [str(d) for d in range(10)] and (len(data.train), len(data.test)) == (150, 60)
    for split, source in ((data.train, mnist.train), (data.test, mnist.test)):
        prov, valid = split.provenance, split.targets.valid
        assert prov.split == ("train" if split is data.train else "test")
        assert torch.equal(source.labels[prov.digits[valid]], split.targets.labels[valid])
        for i in range(20):  # the pasted pixels are those digits' (the canvas keeps the brighter where they meet)
            for j in valid[i].nonzero().flatten().tolist():
                left, top, side = prov.cells[i, j].tolist()
                cell = split.images[i, 0, top : top + side, left : left + side]
                assert (cell >= resize_digits(source.images[prov.digits[i, j]], side)[0]).all()
    # and not the other split's digit at that index (test canvases are made of test digits only)
    i = 0
    left, top, side = data.test.provenance.cells[i, 0].tolist()
    wrong = resize_digits(mnist.train.images[data.test.provenance.digits[i, 0]], side)[0]
    assert not (data.test.images[i, 0, top : top + side, left : left + side] >= wrong).all()
    with pytest.raises(DataError, match="excludes background.*num_classes=10"):
        data.check_num_classes(11)
    assert (SHARED_DATASETS / "MNIST" / "raw").is_dir() and not list(SHARED_DATASETS.glob("*detection*"))


@needs_mnist
def test_fashion_detection_has_fashion_names():
    data = load_detection_dataset("fashion-detection", SHARED_DATASETS, train_size=20, test_size=10, clutter=4)
    assert data.classes[0] == "T-shirt/top" and data.image_shape == (1, 128, 128)


# ---- readers ------------------------------------------------------------------------------------------------------
def _image(path: Path, size=(40, 60), colour=(200, 30, 30)) -> None:  # size: (H, W)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size[::-1], colour).save(path)


def _voc_xml(path: Path, filename: str, objects, size=(40, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{size[1]}</width><height>{size[0]}</height>"
        f"<depth>3</depth></size>{body}</annotation>"
    )


def _voc(tmp_path: Path, lists: bool = True) -> Path:
    root = tmp_path / "VOC"
    specs = {
        "a": [("dog", (1, 1, 60, 40), 0), ("cat", (10, 5, 20, 15), 0)],  # the first: the whole image
        "b": [("cat", (3, 4, 30, 20), 1)],
        "c": [],  # background
        "d": [("person", (5, 5, 9, 9), 0)],
    }
    for stem, objects in specs.items():
        _image(root / "JPEGImages" / f"{stem}.png")
        _voc_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.png", objects)
    if lists:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\n")
        (root / "ImageSets" / "Main" / "val.txt").write_text("d\n")
    return root


def test_voc_round_trip(tmp_path):
    root = _voc(tmp_path)
    data = read_voc(root)
    assert data.classes == ["cat", "dog", "person"] and (len(data.train), len(data.test)) == (3, 1)
    assert data.train.images.shape == (3, 3, 40, 60) and data.train.images[0, 0, 0, 0] == 200
    boxes, labels = data.train.targets.to_lists()[0]
    assert boxes.tolist() == [[0, 0, 60, 40], [9, 4, 20, 15]] and labels.tolist() == [1, 0]  # 1-based -> edges
    assert data.train.boxes_per_image().tolist() == [2, 1, 0]
    assert data.train.names[0].startswith("Annotations/a.xml")
    assert read_voc(root, keep_difficult=False).train.boxes_per_image().tolist() == [2, 0, 0]
    standard = load_detection_dataset(f"voc:{root}", classes=VOC_CLASSES, size=(20, 30))
    assert standard.num_classes == 20 and standard.train.images.shape == (3, 3, 20, 30)
    assert standard.train.targets.boxes[0, 0].tolist() == [0, 0, 30, 20]  # scaled with the image
    assert standard.train.targets.labels[0, 0] == VOC_CLASSES.index("dog")


def test_voc_without_lists_is_split_by_seed(tmp_path):
    data = read_voc(_voc(tmp_path, lists=False), test_fraction=0.25, seed=1)
    assert (len(data.train), len(data.test)) == (3, 1)
    assert read_voc(_voc(tmp_path / "again", lists=False), seed=1).test.names == data.test.names


def _coco(tmp_path: Path, annotations=None, images=("x.png", "y.png", "z.png")) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    for name in images:
        _image(folder / name, (32, 48))
    data = {
        "images": [{"id": i + 1, "file_name": n, "width": 48, "height": 32} for i, n in enumerate(images)],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 1, "image_id": 1, "category_id": 90, "bbox": [2, 3, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 48, 32], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5, 5, 4, 4], "iscrowd": 1},  # a crowd: left out
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, folder


def test_coco_round_trip_contiguous_ids(tmp_path):
    path, folder = _coco(tmp_path)
    data = read_coco(path, folder, test=(path, folder))
    assert data.classes == ["person", "car", "toothbrush"]  # ids 1, 3, 90 -> 0, 1, 2
    boxes, labels = data.train.targets.to_lists()[0]
    assert boxes.tolist() == [[2, 3, 12, 23], [0, 0, 48, 32]] and labels.tolist() == [2, 0]
    assert data.train.boxes_per_image().tolist() == [2, 0, 0]  # crowd left out; z has none: background
    assert data.train.images.shape == (3, 3, 32, 48)
    split = read_coco(path, folder, test_fraction=0.34, seed=0)
    assert (len(split.train), len(split.test)) == (2, 1)


def test_coco_by_name_in_coco_layout(tmp_path):
    path, folder = _coco(tmp_path / "raw")
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"instances_{split}.json").write_text(path.read_text())
        folder.rename(root / split) if split == "train2017" else (root / split).symlink_to(root / "train2017")
    data = load_detection_dataset(f"coco:{root}")
    assert data.name == f"coco:{root}" and (len(data.train), len(data.test)) == (3, 3)


# ---- bad input: each message names the image and the box ---------------------------------------------------------
def test_voc_bad_boxes_name_the_file_and_box(tmp_path):
    cases = [
        ((10, 5, 9, 15), "a.xml.*box 0 .*zero or negative width"),  # xmax < xmin: width 0 in pixel edges
        ((20, 15, 10, 30), "a.xml.*box 0 .*zero or negative width"),
        ((1, 1, 61, 40), "a.xml.*box 0 .*outside the 60×40 image"),
    ]
    for n, (box, pattern) in enumerate(cases):
        root = tmp_path / str(n)
        _image(root / "JPEGImages" / "a.png")
        _voc_xml(root / "Annotations" / "a.xml", "a.png", [("dog", box, 0)])
        _image(root / "JPEGImages" / "b.png")
        _voc_xml(root / "Annotations" / "b.xml", "b.png", [])
        with pytest.raises(DataError, match=pattern):
            read_voc(root, test_fraction=0.5, seed=3)


def test_voc_unknown_class_and_missing_image(tmp_path):
    root = _voc(tmp_path)
    with pytest.raises(DataError, match=r"a.xml .*box 0 .*class 'dog', not one of the 2 classes"):
        read_voc(root, classes=["cat", "person"])
    (root / "JPEGImages" / "b.png").unlink()
    with pytest.raises(DataError, match=r"b.xml \(image b.png\): image file .*b.png is missing"):
        read_voc(root)


def test_coco_bad_input(tmp_path):
    path, folder = _coco(tmp_path, [{"id": 7, "image_id": 2, "category_id": 5, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DataError, match=r"image y.png: annotation 7 \(box .*category_id 5, .*ids 1, 3, 90"):
        read_coco(path, folder)
    path, folder = _coco(tmp_path / "w", [{"id": 8, "image_id": 1, "category_id": 1, "bbox": [40, 1, 10, 5]}])
    with pytest.raises(DataError, match=r"image x.png: box 0 \[40.0, 1.0, 50.0, 6.0\] reaches outside the 48×32"):
        read_coco(path, folder)
    path, folder = _coco(tmp_path / "m")
    (folder / "y.png").unlink()
    with pytest.raises(DataError, match=r"image y.png: image file .*y.png is missing"):
        read_coco(path, folder)


def test_label_out_of_range_and_background_count(digits):
    split = _make(digits, count=4)
    targets = BoxTargets(split.targets.boxes.clone(), split.targets.labels.clone())
    targets.labels[2, 0] = 10
    data = DetectionDataset("mine", DetectionSplit(split.images, targets), split, [str(d) for d in range(10)])
    with pytest.raises(DataError, match="train image 2: box 0 .*label 10, outside 0…9.*without a background"):
        data.validate()
    with pytest.raises(DataError, match="num_classes=11 counts a background class.*pass num_classes=10"):
        data.check_num_classes(11)
    with pytest.raises(DataError, match="num_classes=3, but mine has 10"):
        data.check_num_classes(3)


def test_images_of_different_sizes_need_a_size(tmp_path):
    root = _voc(tmp_path)
    _image(root / "JPEGImages" / "b.png", (50, 60))
    with pytest.raises(DataError, match="different sizes.*pass size=\\(H, W\\)"):
        read_voc(root)
    assert read_voc(root, size=32).train.images.shape == (3, 3, 32, 32)


# ---- preview ------------------------------------------------------------------------------------------------------
def test_preview_writes_a_png_with_boxes(digits, tmp_path):
    split = _make(digits, count=8)
    data = DetectionDataset("fake-detection", split, split, [str(d) for d in range(10)])
    path = detection_preview_grid(data, "pad-crop", tmp_path / "p.png", count=4, draws=1)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 4 * 128
    plain = detection_preview_grid(data, "none", tmp_path / "q.png", count=3)
    assert plain.stat().st_size > 0


@needs_mnist
def test_cli_preview_and_info(cli, tmp_path):
    code, out, err = cli("data", "list")
    assert code == 0 and "mnist-detection" in out and "voc:PATH" in out
    root = _voc(tmp_path)
    code, out, err = cli("data", "preview", f"voc:{root}", "--out", tmp_path / "v.png", "--count", "3")
    assert code == 0 and (tmp_path / "v.png").is_file(), err
    code, out, err = cli("data", "info", f"voc:{root}")
    assert code == 0 and "3 object classes, no background class" in out
