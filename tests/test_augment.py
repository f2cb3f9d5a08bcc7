"""Each augmentation's defining property, determinism, and test-time views."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from cnnlab.data.augment import (
    AugmentContext,
    ColorJitter,
    ElasticDistortion,
    RandomCrop,
    RandomFlip,
    ScaleJitter,
    build_augmentation,
    pca_lighting_from,
)
from cnnlab.data.loader import apply_augmentation
from cnnlab.data.tta import ten_crop_boxes, views
from cnnlab.errors import UnknownNameError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flip_is_its_own_inverse():
    images = torch.rand(6, 3, 8, 8)
    flip = RandomFlip(p=1.0)
    assert torch.equal(flip(images, _gen()), images.flip(-1))
    assert torch.equal(flip(flip(images, _gen()), _gen()), images)
    both = RandomFlip(horizontal=True, vertical=True, p=1.0)
    assert torch.equal(both(both(images, _gen()), _gen()), images)


def test_random_crop_is_a_window_of_the_padded_image():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    out = RandomCrop(None, 2)(images, _gen())
    padded = torch.nn.functional.pad(images, [2] * 4)
    for b in range(2):
        windows = [padded[b, :, t : t + 6, lf : lf + 6] for t in range(5) for lf in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    assert out.dtype == torch.uint8


def test_fused_crop_flip_equals_crop_then_mirror_of_the_same_window():
    images = torch.rand(16, 3, 10, 10)
    fused = RandomCrop((8, 8), 0, flip=True)(images, _gen(3))
    for b in range(16):
        windows = [images[b, :, t : t + 8, lf : lf + 8] for t in range(3) for lf in range(3)]
        assert any(torch.equal(fused[b], w) or torch.equal(fused[b], w.flip(-1)) for w in windows)
    spec = build_augmentation("pad-crop-flip", AugmentContext((32, 32), (32, 32), 3))
    assert len(spec.steps) == 1 and spec.steps[0].flip  # the preset fuses into one gather


def test_pca_lighting_adds_exactly_the_eigen_shift_to_every_pixel():
    generator = _gen(1)
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=generator)
    pca = pca_lighting_from(images)
    x = images.float() / 255
    out = pca(x, _gen(7))
    alpha = torch.randn(20, 3, generator=_gen(7)) * pca.std
    eigenvectors, eigenvalues = torch.tensor(pca.eigenvectors), torch.tensor(pca.eigenvalues)
    expected = (eigenvectors * (alpha[:, None, :] * eigenvalues)).sum(-1)  # Σ_i p_i α_i λ_i, per image
    torch.testing.assert_close(out - x, expected.view(20, 3, 1, 1).expand_as(x), rtol=1e-5, atol=1e-6)
    covariance = torch.cov(images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255)
    torch.testing.assert_close(
        covariance @ eigenvectors[:, 0].double(), eigenvalues[0] * eigenvectors[:, 0].double(), rtol=1e-4, atol=1e-7
    )


def test_ten_crop_returns_the_right_ten_boxes():
    images = torch.rand(2, 3, 12, 10)
    crops = views(images, "10crop", (8, 6))
    assert crops.shape == (10, 2, 3, 8, 6)
    boxes = ten_crop_boxes(12, 10, (8, 6))
    assert boxes == [(0, 0, 8, 6), (0, 4, 8, 6), (4, 0, 8, 6), (4, 4, 8, 6), (2, 2, 8, 6)]
    for i, (t, lf, h, w) in enumerate(boxes):
        assert torch.equal(crops[i], images[:, :, t : t + h, lf : lf + w])
        # torchvision's mirrored five are the five crops of the mirrored image
        assert torch.equal(crops[5 + i], images.flip(-1)[:, :, t : t + h, lf : lf + w])
    assert torch.equal(crops, torch.stack(TF.ten_crop(images, [8, 6])))


def test_flip_and_multiscale_views():
    images = torch.rand(2, 1, 8, 8)
    flip = views(images, "flip", (8, 8))
    assert torch.equal(flip[0], images) and torch.equal(flip[1], images.flip(-1))
    assert views(images, "multiscale", (8, 8)).shape == (3, 2, 1, 8, 8)
    with pytest.raises(UnknownNameError):
        views(images, "5crop", (8, 8))


def test_every_preset_runs_seeded_and_keeps_shapes():
    ctx = AugmentContext(
        (36, 36), (32, 32), 3, lambda: pca_lighting_from(torch.randint(0, 256, (4, 3, 36, 36), dtype=torch.uint8))
    )
    images = torch.randint(0, 256, (4, 3, 36, 36), dtype=torch.uint8)
    for spec in [
        "pad-crop-flip",
        "crop-flip",
        "alexnet-2012",
        "vgg-2014",
        "deep-image",
        "elastic+rotate+translate",
        "color-jitter+grayscale+color-cast+vignette+stretch+vflip+scale-jitter",
        "lenet-distortions",
    ]:
        aug = build_augmentation(spec, ctx)
        a = apply_augmentation(aug, images, _gen(5))
        assert torch.equal(a, apply_augmentation(aug, images, _gen(5))), spec
        assert a.shape[:2] == (4, 3), spec
    with pytest.raises(UnknownNameError, match="Did you mean 'pad-crop'"):
        build_augmentation("pad-crap", ctx)


def test_elastic_with_no_displacement_is_the_identity_and_scale_jitter_crops():
    images = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(ElasticDistortion(alpha=0)(images, _gen()), images, atol=1e-5, rtol=0)
    assert ScaleJitter((8, 8))(images, _gen()).shape == (3, 1, 8, 8)
    jittered = ColorJitter()(torch.rand(4, 3, 8, 8), _gen())
    assert jittered.min() >= 0 and jittered.max() <= 1


def test_loader_augmentation_is_reproducible_across_runs():
    from cnnlab.data import DeviceTensorLoader, Preprocessing

    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    pre = Preprocessing(3, (8, 8), 0, (0.5,) * 3, (0.5,) * 3)
    aug = build_augmentation("pad-crop-flip", AugmentContext((8, 8), (8, 8), 3))

    def epoch(seed):
        loader = DeviceTensorLoader(images, torch.arange(10), pre, 4, shuffle=True, seed=seed, augment=aug)
        return torch.cat([x for x, _ in loader.batches(2)])

    assert torch.equal(epoch(0), epoch(0)) and not torch.equal(epoch(0), epoch(1))


def test_tta_keeps_only_the_views_training_covered():
    from cnnlab.data.tta import TTAPlan, plan_tta

    assert plan_tta("10crop", "pad-crop-flip") == TTAPlan("10crop")
    assert plan_tta("flip", "crop+flip+pca") == TTAPlan("flip")
    assert plan_tta("multiscale", "lenet-distortions") == TTAPlan("multiscale")
    assert plan_tta("10crop", None) == TTAPlan("10crop")  # unknown training augmentation: as asked
    plan = plan_tta("10crop", "pad-crop+rotate")
    assert (plan.mirror, plan.corners) == (False, True)
    assert "5 crops without mirrors: training used no flips (augmentation 'pad-crop+rotate')" in plan.note
    plan = plan_tta("10crop", "flip+translate")
    assert (plan.mirror, plan.corners) == (True, False) and "no random crops" in plan.note
    plan = plan_tta("10crop", "lenet-distortions")
    assert (plan.mirror, plan.corners) == (False, False)
    assert "centre crop alone (as without --tta): training used no flips and no random crops" in plan.note
    plan = plan_tta("flip", "vflip+translate")  # vertical flips are not the left-right mirror
    assert not plan.mirror and "the image alone" in plan.note
    images = torch.rand(2, 1, 8, 8)
    assert torch.equal(views(images, "10crop", (8, 8), mirror=False), views(images, "10crop", (8, 8))[:5])
    assert views(images, "10crop", (8, 8), corners=False).shape == (2, 2, 1, 8, 8)
    assert torch.equal(views(images, "10crop", (8, 8), mirror=False, corners=False)[0], images)
    assert views(images, "flip", (8, 8), mirror=False).shape == (1, 2, 1, 8, 8)


def test_10crop_on_digits_keeps_the_error_of_plain_evaluation(trained_run, cli):
    def error(out: str) -> str:
        return next(line for line in out.splitlines() if line.startswith("top-1 error"))

    code, plain, _ = cli("eval", trained_run, "--device", "cpu")
    assert code == 0
    code, tta, err = cli("eval", trained_run, "--device", "cpu", "--tta", "10crop")
    assert code == 0 and "training used no flips and no random crops" in err
    assert error(tta) == error(plain)  # with every view, 35.6% against 6.1% (3 epochs)
