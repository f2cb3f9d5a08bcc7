"""Targets beyond labels: boxes batched by indexing, moved with the pixels by every pixel-moving augmentation,
checked op by op against torchvision.transforms.v2 on tv_tensors.BoundingBoxes (the oracle)."""

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from cnnlab.data import DeviceTensorLoader, Preprocessing
from cnnlab.data.augment import Compose, ElasticDistortion, RandomAffine, RandomCrop, RandomFlip, ScaleJitter
from cnnlab.data.loader import apply_augmentation
from cnnlab.data.targets import (
    PADDING_LABEL,
    BoxTargets,
    affine_boxes,
    crop_boxes,
    drop_degenerate,
    flip_boxes,
    flip_boxes_vertically,
    pad_boxes,
    resize_boxes,
)
from cnnlab.errors import ConfigError, DataError

SIZE = (32, 40)  # (H, W): not square, so a swapped axis shows


def _random_boxes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = SIZE
    x = torch.randint(0, w - 4, (n, 1), generator=g).float()
    y = torch.randint(0, h - 4, (n, 1), generator=g).float()
    bw = torch.randint(2, 14, (n, 1), generator=g).float()
    bh = torch.randint(2, 14, (n, 1), generator=g).float()
    return torch.cat([x, y, (x + bw).clamp(max=w), (y + bh).clamp(max=h)], 1)


def _oracle(boxes: torch.Tensor, size=SIZE) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size)


# ---- each operation against torchvision ------------------------------------------------------------------------------
def test_flips_crop_pad_and_resize_match_torchvision():
    boxes = _random_boxes(20)
    h, w = SIZE
    batched = boxes.unsqueeze(0)  # (1, M, 4)
    torch.testing.assert_close(flip_boxes(batched, w)[0], TF.horizontal_flip(_oracle(boxes)).as_subclass(torch.Tensor))
    torch.testing.assert_close(
        flip_boxes_vertically(batched, h)[0], TF.vertical_flip(_oracle(boxes)).as_subclass(torch.Tensor)
    )
    want = TF.crop(_oracle(boxes), top=5, left=7, height=20, width=24).as_subclass(torch.Tensor)
    torch.testing.assert_close(crop_boxes(batched, torch.tensor([5]), torch.tensor([7]), (20, 24))[0], want)
    torch.testing.assert_close(pad_boxes(batched, 4)[0], TF.pad(_oracle(boxes), [4]).as_subclass(torch.Tensor))
    want = TF.resize(_oracle(boxes), [48, 100]).as_subclass(torch.Tensor)
    torch.testing.assert_close(resize_boxes(batched, 48 / h, 100 / w)[0], want)


def test_per_image_parameters_act_on_their_own_image_only():
    boxes = torch.stack([_random_boxes(5, seed) for seed in range(3)])  # (3, 5, 4)
    mirrored = torch.tensor([True, False, True])
    out = flip_boxes(boxes, SIZE[1], mirrored)
    for i in range(3):
        want = TF.horizontal_flip(_oracle(boxes[i])) if mirrored[i] else boxes[i]
        torch.testing.assert_close(out[i], torch.as_tensor(want).as_subclass(torch.Tensor))
    top, left = torch.tensor([0, 3, 6]), torch.tensor([1, 4, 9])
    out = crop_boxes(boxes, top, left, (24, 30))
    for i in range(3):
        want = TF.crop(_oracle(boxes[i]), top=int(top[i]), left=int(left[i]), height=24, width=30)
        torch.testing.assert_close(out[i], want.as_subclass(torch.Tensor))


AFFINES = [(0.0, [3, -2], 1.0, [0.0, 0.0]), (30.0, [2, -3], 1.1, [5.0, 0.0]), (-12.0, [0, 0], 0.8, [0.0, 7.0])]


@pytest.mark.parametrize("angle, translate, scale, shear", AFFINES)
def test_affine_matches_torchvision(angle, translate, scale, shear):
    kwargs = {"angle": angle, "translate": translate, "scale": scale, "shear": shear}
    # torchvision's map in pixel coordinates, read off three points it moves (degenerate boxes near the centre)
    probes = torch.tensor([[20.0, 16.0], [24.0, 16.0], [20.0, 20.0]])
    moved = TF.affine(_oracle(probes.repeat(1, 2)), **kwargs).as_subclass(torch.Tensor)[:, :2]
    source = torch.cat([probes, torch.ones(3, 1)], 1)  # (3, 3)
    matrix = torch.linalg.solve(source, moved).T  # (2, 3): moved = matrix · [p; 1]
    boxes = _random_boxes(30, seed=4)
    want = TF.affine(_oracle(boxes), **kwargs).as_subclass(torch.Tensor)
    torch.testing.assert_close(affine_boxes(boxes.unsqueeze(0), matrix.unsqueeze(0), SIZE)[0], want, atol=1e-3, rtol=0)


# ---- augmentations move boxes with the pixels ------------------------------------------------------------------------
def _framed_images(boxes: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) images that are 255 exactly inside each image's first box (integer coordinates)."""
    images = torch.zeros(len(boxes), 1, *SIZE, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes[:, 0].int().tolist()):
        images[i, 0, y1:y2, x1:x2] = 255
    return images


def _extent(image: torch.Tensor, threshold: float) -> list[float]:
    """The box around the pixels above ``threshold`` (XYXY, pixel edges)."""
    ys, xs = (image[0] > threshold).nonzero(as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


@pytest.mark.parametrize(
    "augment",
    [RandomCrop(padding=4, flip=True), RandomCrop(size=(24, 28)), RandomFlip(horizontal=True, vertical=True, p=0.5)],
    ids=["pad-crop-flip", "crop", "flips"],
)
def test_exact_pixel_moves_take_the_boxes_exactly(augment):
    boxes = _random_boxes(16, seed=1).view(16, 1, 4) // 1 + torch.tensor([0.0, 0.0, 4.0, 4.0])
    boxes = boxes.clamp(max=torch.tensor([SIZE[1], SIZE[0], SIZE[1], SIZE[0]]).float())
    targets = BoxTargets(boxes, torch.zeros(16, 1, dtype=torch.int64))
    images, moved = apply_augmentation(augment, _framed_images(boxes), torch.Generator().manual_seed(3), targets)
    plain = apply_augmentation(augment, _framed_images(boxes), torch.Generator().manual_seed(3))
    assert torch.equal(images, plain)  # the boxes cost no random draw: the images are those of a plain run
    for i in range(16):
        if moved.valid[i, 0]:
            assert _extent(images[i], 127) == moved.boxes[i, 0].tolist(), i
        else:  # cropped away: no pixel of it is left (at least not a whole pixel row or column)
            assert (images[i] > 127).sum() == 0 or min(images[i].shape[-2:]) < 1


@pytest.mark.parametrize(
    "augment", [RandomAffine(translate=0.1, scale=0.15, rotate=15.0), ScaleJitter(size=(24, 24), s_min=1.0, s_max=1.5)]
)
def test_warps_take_the_boxes_around_the_warped_pixels(augment):
    boxes = _random_boxes(12, seed=2).view(12, 1, 4) // 1 + torch.tensor([4.0, 4.0, 10.0, 10.0])
    boxes = boxes.clamp(max=torch.tensor([SIZE[1], SIZE[0], SIZE[1], SIZE[0]]).float())
    targets = BoxTargets(boxes, torch.zeros(12, 1, dtype=torch.int64))
    images, moved = apply_augmentation(augment, _framed_images(boxes), torch.Generator().manual_seed(5), targets)
    for i in range(12):
        if not moved.valid[i, 0] or (images[i] > 0.5).sum() == 0:
            continue
        extent = torch.tensor(_extent(images[i], 0.5))
        # the box encloses the warped pixels' corners; interpolation blurs edges by about a pixel
        torch.testing.assert_close(moved.boxes[i, 0], extent, atol=1.6, rtol=0)


def test_compose_moves_boxes_and_refuses_warps_boxes_cannot_follow():
    boxes = BoxTargets(_random_boxes(4).view(4, 1, 4), torch.zeros(4, 1, dtype=torch.int64))
    images = _framed_images(boxes.boxes)
    composed = Compose((RandomCrop(padding=2, flip=True), RandomAffine()))
    out, moved = apply_augmentation(composed, images, torch.Generator().manual_seed(0), boxes)
    assert out.shape == (4, 1, *SIZE) and moved.boxes.shape == (4, 1, 4)
    with pytest.raises(ConfigError, match="ElasticDistortion bends the image"):
        apply_augmentation(Compose((ElasticDistortion(),)), images, torch.Generator(), boxes)


# ---- batching and validation -----------------------------------------------------------------------------------------
def _pre() -> Preprocessing:
    return Preprocessing(1, SIZE, 0, (0.5,), (0.25,))


def test_loader_batches_box_targets_by_indexing_and_drops_boxes_pushed_out():
    lists = [_random_boxes(k % 4, seed=k) for k in range(10)]  # 0 to 3 boxes per image: padded to 3
    targets = BoxTargets.from_lists(lists, [torch.arange(len(b)) for b in lists])
    assert targets.boxes.shape == (10, 3, 4) and int(targets.valid.sum()) == sum(len(b) for b in lists)
    images = torch.zeros(10, 1, *SIZE, dtype=torch.uint8)
    loader = DeviceTensorLoader(images, targets, _pre(), 4, shuffle=True, seed=2)
    order = loader.order(1)
    seen = []
    for b, (x, y) in enumerate(loader.batches(1)):
        index = order[b * 4 : (b + 1) * 4]
        assert isinstance(y, BoxTargets) and torch.equal(y.boxes, targets.boxes[index]) and x.shape[0] == len(y)
        seen += [pair for pair in y.to_lists()]
    assert sum(len(b) for b, _ in seen) == int(targets.valid.sum())
    crop = DeviceTensorLoader(images, targets, _pre(), 10, augment=RandomCrop(size=(8, 8)), seed=1)
    _, cropped = next(iter(crop.batches()))
    assert (cropped.boxes[..., 2] <= 8).all() and (cropped.labels[~cropped.valid] == PADDING_LABEL).all()
    assert int(cropped.valid.sum()) < int(targets.valid.sum())  # some boxes fell outside an 8×8 window


def test_loader_carries_any_per_sample_tensor():
    images = torch.randint(0, 255, (6, 1, *SIZE), dtype=torch.uint8)
    tokens = torch.arange(6 * 5).view(6, 5)
    loader = DeviceTensorLoader(images, tokens, _pre(), 4, shuffle=True, seed=0)
    for b, (_, y) in enumerate(loader.batches(0)):
        assert torch.equal(y, tokens[loader.order(0)[b * 4 : (b + 1) * 4]])


def test_two_processes_get_the_halves_of_the_global_batch_with_their_boxes():
    targets = BoxTargets.from_lists([_random_boxes(2, k) for k in range(8)], [torch.zeros(2)] * 8)
    images = _framed_images(targets.boxes)
    make = lambda rank, world: DeviceTensorLoader(  # noqa: E731
        images, targets, _pre(), 8, augment=RandomCrop(padding=2, flip=True), seed=3, rank=rank, world_size=world
    )
    (_, whole), (_, first), (_, second) = (next(iter(make(r, w).batches())) for r, w in ((0, 1), (0, 2), (1, 2)))
    assert torch.equal(torch.cat([first.boxes, second.boxes]), whole.boxes)


def test_bad_boxes_are_refused_naming_the_image_and_the_box():
    good = BoxTargets.from_lists(
        [torch.tensor([[1.0, 2, 5, 6]]), torch.zeros(0, 4)], [torch.tensor([2]), torch.zeros(0)]
    )
    good.validate(SIZE, num_classes=3)  # an image with no objects is allowed: it trains as background
    cases = [
        (torch.tensor([[5.0, 2, 5, 6]]), 0, "box 0 [5.0, 2.0, 5.0, 6.0] has zero or negative width"),
        (torch.tensor([[6.0, 2, 5, 6]]), 0, "zero or negative width"),
        (torch.tensor([[1.0, 2, 50, 6]]), 0, "reaches outside the 40×32 image"),
        (torch.tensor([[1.0, 2, 5, 6]]), 3, "label 3, outside 0…2"),
    ]
    for box, label, message in cases:
        bad = BoxTargets.from_lists([box], [torch.tensor([label])])
        with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
            bad.validate(SIZE, num_classes=3, names=["cat.jpg"])
        assert str(caught.value).startswith("cat.jpg: ")
    with pytest.raises(DataError, match="2 boxes but 1 labels"):
        BoxTargets.from_lists([torch.zeros(2, 4)], [torch.zeros(1)])


def test_degenerate_boxes_become_padding():
    targets = BoxTargets(torch.tensor([[[0.0, 0, 0.5, 4], [1.0, 1, 3, 3]]]), torch.tensor([[1, 2]]))
    kept = drop_degenerate(targets)
    assert kept.labels.tolist() == [[PADDING_LABEL, 2]] and kept.boxes[0, 0].tolist() == [0, 0, 0, 0]
