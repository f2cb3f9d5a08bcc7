"""Spatial transformer networks (issue 16): the layer against grid_sample and autograd, the distorted-MNIST sets,
the models through the trainer."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab import models
from cnnlab.data import distorted
from cnnlab.errors import ConfigError
from cnnlab.layers import SpatialTransformer
from cnnlab.layers.spatial_transformer import (
    affine_grid,
    base_grid,
    projective_grid,
    sample,
    separable_sample,
    tps_grid,
)

TRANSFORMS = ["affine", "projective", "tps"]


def _transformer(transform: str, channels: int = 3, side: int = 20, **options) -> SpatialTransformer:
    localisation = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, 16), nn.ReLU())
    return SpatialTransformer(localisation, transform, **options)


def _rotation(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]])


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_identity_reproduces_the_input(transform):
    """At initialisation every transform is the identity: bilinear sampling gives the input back to float32
    rounding (identical after 8-bit quantisation), the integer kernel exactly; no half-pixel shift, no blur."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 20, 20)).float() / 255
    for side in (20, 17):  # odd sizes too: pixel centres are not dyadic fractions there
        image = x[..., :side, :side]
        out = _transformer(transform, side=side)(image)
        assert (out - image).abs().max() < 1e-5
        assert torch.equal((out * 255).round(), (image * 255).round())
        nearest = _transformer(transform, side=side, sampling="nearest")(image)
        assert torch.equal(nearest, image)


def test_align_corners_mismatch_would_blur():
    """What the convention guards against: an identity grid built with align_corners=True but sampled with False
    (a classic bug) moves pixels; ours does not."""
    x = torch.rand(1, 1, 12, 12)
    wrong = nn.functional.affine_grid(_rotation(0), [1, 1, 12, 12], align_corners=True)
    assert (sample(x, wrong) - x).abs().max() > 0.05
    assert (sample(x, affine_grid(_rotation(0), (12, 12))) - x).abs().max() < 1e-5


def test_a_quarter_turn_is_torch_rot90():
    """An independent oracle for the coordinate convention: θ = a 90° rotation moves pixel centres onto pixel
    centres, so bilinear sampling must give torch.rot90 (to float32 rounding)."""
    x = torch.rand(2, 3, 10, 10)
    turned = sample(x, affine_grid(_rotation(90).expand(2, 2, 3), (10, 10)))
    matches = [k for k in (1, -1) if torch.allclose(turned, torch.rot90(x, k, dims=(2, 3)), atol=1e-5)]
    assert len(matches) == 1
    back = sample(turned, affine_grid(_rotation(-90).expand(2, 2, 3), (10, 10)))
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)


def test_the_whole_transformer_passes_gradcheck():
    """End to end in float64: output w.r.t. the input, the localisation net and the regressor (non-zero weights)."""
    torch.manual_seed(0)
    for transform in TRANSFORMS:
        st = _transformer(transform, channels=1, side=6, output_size=(5, 4)).double()
        nn.init.normal_(st.regressor.weight, std=0.05)
        x = torch.rand(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
        weight = st.regressor.weight

        def through(u, w, st=st):
            return torch.func.functional_call(st, {"regressor.weight": w}, (u,))

        assert torch.autograd.gradcheck(through, (x, weight))


def test_mixed_precision_keeps_the_transformer_in_float32():
    """Under bfloat16 autocast θ, the grid and the sampling stay float32: the identity still holds (in bfloat16
    the coordinates would be quantised to ~0.1 px and the identity off by ~6% of the range)."""
    x = torch.rand(2, 1, 20, 20)
    for transform in TRANSFORMS:
        st = _transformer(transform, channels=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = st(x)
            params = st.transform_params(x)
        assert out.dtype == torch.float32 and params.dtype == torch.float32
        assert (out - x).abs().max() < 1e-5


def test_padding_modes():
    """Outside the input: zeros (the paper's), or the border pixel (keeps a black background black once the data
    is normalised, where zero is the mean)."""
    x = torch.full((1, 1, 8, 8), -0.4)  # a normalised black
    shrink = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])  # reads twice the extent: half of it outside
    grid = affine_grid(shrink, (8, 8))
    assert sample(x, grid, padding="zeros")[0, 0, 0, 0] == 0
    assert sample(x, grid, padding="border")[0, 0, 0, 0] == pytest.approx(-0.4)
    st = _transformer("affine", channels=1, side=8, padding="border")
    assert "padding=border" in repr(st)
    with pytest.raises(ConfigError, match="Unknown padding"):
        sample(x, grid, padding="wrap")


def test_the_localisation_net_learns_at_a_tenth_of_the_rate():
    """The models' lr_multipliers become optimiser groups: the transformer's parameters at η/10."""
    from cnnlab.train.optim import multiplier_groups

    model = models.create("st-cnn", image_size=28)
    groups = multiplier_groups(model, 0.02)
    transformer_ids = {id(p) for p in model.transformer.parameters()}
    assert len(groups) == 2 and "lr" not in groups[0] and groups[1]["lr"] == pytest.approx(0.002)
    assert {id(p) for p in groups[1]["params"]} == transformer_ids
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    assert multiplier_groups(models.create("dmnist-cnn"), 0.02) is None


def test_a_known_rotation_is_undone():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 6:22, 12:16] = 1.0  # a bar
    rotated = sample(image, affine_grid(_rotation(30), (28, 28)))
    st = _transformer("affine", channels=1, side=28)
    with torch.no_grad():
        st.regressor.bias.copy_(_rotation(-30).flatten())  # θ = the inverse rotation
    restored = st(rotated)
    inside = (slice(None), slice(None), slice(4, 24), slice(4, 24))
    assert (rotated - image)[inside].abs().mean() > 0.05
    assert (restored - image)[inside].abs().mean() < 0.25 * (rotated - image)[inside].abs().mean()


def test_separable_sampler_is_grid_sample_and_gradients_are_autograd_exact():
    """Eq. 3 written out with the bilinear kernel agrees with grid_sample (the oracle), values and gradients; both
    pass gradcheck with respect to the image and the grid, as do the projective and TPS grid generators."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([[[0.81, 0.29, 0.113], [-0.21, 0.93, -0.047]]], dtype=torch.float64).repeat(2, 1, 1)
    # (no point exactly on a pixel centre: the bilinear kernel has a kink there that numerical gradients straddle)
    grid = affine_grid(theta, (7, 8)).detach().requires_grad_()
    torch.testing.assert_close(separable_sample(x, grid), sample(x, grid))
    assert torch.autograd.gradcheck(lambda u, g: separable_sample(u, g), (x, grid))
    assert torch.autograd.gradcheck(lambda u, g: sample(u, g), (x, grid))
    homography = (torch.eye(3, dtype=torch.float64) + 0.05 * torch.randn(3, 3, dtype=torch.float64)).unsqueeze(0)
    assert torch.autograd.gradcheck(lambda h: sample(x[:1], projective_grid(h, (5, 6))), (homography.requires_grad_(),))
    offsets = (0.1 * torch.randn(1, 16, 2, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda o: sample(x[:1], tps_grid(o, (5, 6))), (offsets,))


def test_grids_agree_where_the_transforms_coincide():
    """An affine map written as a homography, and a TPS whose control points move by an affine map, give the
    affine grid (the spline's affine part absorbs it exactly)."""
    theta = torch.tensor([[[0.9, 0.2, 0.1], [-0.1, 1.1, 0.05]]])
    expected = affine_grid(theta, (10, 12))
    homography = torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]])], dim=1)
    torch.testing.assert_close(projective_grid(homography, (10, 12)), expected)
    controls = base_grid(4, 4).reshape(-1, 2) * 0 + torch.stack(
        torch.meshgrid(torch.linspace(-1, 1, 4), torch.linspace(-1, 1, 4), indexing="xy"), -1
    ).reshape(-1, 2)
    moved = controls @ theta[0, :, :2].T + theta[0, :, 2]
    torch.testing.assert_close(tps_grid((moved - controls).unsqueeze(0), (10, 12)), expected, atol=1e-5, rtol=0)


def test_the_integer_kernel_passes_no_gradient_to_theta():
    """The paper's sub-gradient caveat: with the integer (nearest) kernel θ gets zero gradient, bilinear does not."""
    x = torch.rand(1, 1, 10, 10)
    for kernel, moves in (("nearest", False), ("bilinear", True)):
        theta = (_rotation(10) * 0.9).requires_grad_()
        sample(x, affine_grid(theta, (10, 10)), kernel).sum().backward()
        assert (theta.grad.abs().sum() > 0) == moves


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_every_transform_trains_a_step_and_gradients_reach_the_localisation_net(transform):
    torch.manual_seed(0)
    model = models.create("st-cnn", image_size=28, transform=transform)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    localisation = model.transformer.localisation
    before = [p.detach().clone() for p in localisation.parameters()]
    for _ in range(2):  # step 1 moves the zero-initialised regressor; step 2 reaches the localisation net
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert model.transformer.regressor.weight.abs().sum() > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, localisation.parameters(), strict=True))


def test_transformers_in_a_row_and_side_by_side():
    first, second = _transformer("affine", channels=1, side=16), _transformer("tps", channels=1, side=16)
    in_a_row = nn.Sequential(first, second)
    x = torch.rand(2, 1, 16, 16)
    assert in_a_row(x).shape == x.shape
    side_by_side = torch.cat([first(x), _transformer("projective", channels=1, side=16, output_size=(16, 8))(x)], 3)
    assert side_by_side.shape == (2, 1, 16, 24)


def test_clear_errors():
    st = _transformer("affine")
    with pytest.raises(ConfigError, match=r"6 parameters per image"):
        st.grid(torch.zeros(2, 8), (4, 4))
    with pytest.raises(ConfigError, match=r"affine θ must be \(B, 2, 3\)"):
        affine_grid(torch.zeros(2, 3, 3), (4, 4))
    with pytest.raises(ConfigError, match=r"projective θ must be \(B, 3, 3\)"):
        projective_grid(torch.zeros(2, 2, 3), (4, 4))
    with pytest.raises(ConfigError, match=r"n×n grid of control points"):
        tps_grid(torch.zeros(1, 5, 2), (4, 4))
    with pytest.raises(ConfigError, match="Unknown transform"):
        _transformer("rotation")
    with pytest.raises(ConfigError, match="pass features=F"):
        SpatialTransformer(nn.Conv2d(1, 2, 3))
    with pytest.raises(ConfigError, match=r"output size must be two positive integers"):
        _transformer("affine", output_size=0)
    with pytest.raises(ConfigError, match=r"transformer's output is 3×3 px, too small for the classifier.*st_size"):
        models.create("st-cnn", image_size=28, st_size=3)
    with pytest.raises(ConfigError, match="has no option .st_size"):
        models.create("dmnist-cnn", st_size=10)


def _fake_digits(count: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(count, 1, 28, 28, dtype=torch.uint8)
    for i in range(count):  # a bar of random length in the middle of each image: ink to move around
        length = int(torch.randint(8, 20, (1,), generator=generator))
        images[i, 0, 14 - length // 2 : 14 + length // 2, 12:16] = 255
    return images


@pytest.mark.parametrize("name", list(distorted.DISTORTIONS))
def test_distortions_are_deterministic_and_keep_the_digit(name):
    function, _ = distorted.DISTORTIONS[name]
    digits = _fake_digits()
    first = function(digits, torch.Generator().manual_seed(1))
    again = function(digits, torch.Generator().manual_seed(1))
    other = function(digits, torch.Generator().manual_seed(2))
    assert first.dtype == torch.uint8 and torch.equal(first, again) and not torch.equal(first, other)
    side = {"mnist-rts": 42, "mnist-cluttered": 60}.get(name, 28)
    assert first.shape == (len(digits), 1, side, side)
    ink = first.float().sum((1, 2, 3)) / digits.float().sum((1, 2, 3))
    # R and cluttered keep the ink; RTS scales by 0.7–1.2 (area 0.49–1.44); P by 0.75 (area 0.5625: a homography
    # in the wrong direction would give 1/0.5625 = 1.78); E moves ink around (thins or thickens strokes)
    band = {"mnist-rotated": (0.9, 1.1), "mnist-cluttered": (0.999, 5.0), "mnist-rts": (0.4, 1.6)}
    band |= {"mnist-projective": (0.4, 0.75), "mnist-elastic": (0.3, 2.5)}
    low, high = band[name]
    assert low < ink.min() and ink.max() < high, f"{name}: ink ratio {ink.min():.2f}–{ink.max():.2f}"
    if name == "mnist-projective":
        assert abs(ink.mean() - 0.5625) < 0.08


def test_rts_keeps_the_scaled_box_inside_before_rotation():
    """Ink at the corners of MNIST's central 20×20 box: unrotated it always stays inside (the placement rule);
    rotation may push a corner out, which the docs quantify (0.8% of real test digits touch the edge)."""
    corners = torch.zeros(512, 1, 28, 28, dtype=torch.uint8)
    corners[:, :, 4:6, 4:6] = corners[:, :, 4:6, 22:24] = corners[:, :, 22:24, 4:6] = corners[:, :, 22:24, 22:24] = 255
    count = len(corners)
    generator = torch.Generator().manual_seed(0)
    angle = torch.zeros(count)
    scale = 0.7 + 0.5 * torch.rand(count, generator=generator)
    room = (42 - 28 * scale) / 42
    shift = (torch.rand(count, 2, generator=generator) * 2 - 1) * room.unsqueeze(1)
    theta = distorted._rotation_scale(angle, scale, shift)
    canvas = sample(distorted._pad_to(corners.float() / 255, 42), affine_grid(theta, (42, 42)))
    ring = canvas.clone()
    ring[:, :, 1:-1, 1:-1] = 0
    assert ring.max() == 0  # nothing of the box reaches the canvas's edge
    ink = canvas[:, 0] > 0.05
    rows, cols = ink.any(2).float(), ink.any(1).float()
    nearest_edge = torch.stack([rows.argmax(1), cols.argmax(1), rows.flip(1).argmax(1), cols.flip(1).argmax(1)])
    assert nearest_edge.min() <= 4  # ... while the placements use the room up to it (the box: 4·s px beyond the ink)


MNIST_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DATA_ROOT = Path(os.environ.get("CNNLAB_DATA") or MNIST_ROOT)


@pytest.mark.skipif(not (DATA_ROOT / "MNIST" / "raw").exists(), reason="real MNIST not present")
def test_registered_sets_come_from_the_matching_mnist_split():
    from cnnlab.data import load_dataset

    mnist = load_dataset("mnist", DATA_ROOT)
    data = load_dataset("mnist-cluttered", DATA_ROOT)
    assert data.train.images.shape == (60_000, 1, 60, 60) and data.test.images.shape == (10_000, 1, 60, 60)
    assert torch.equal(data.train.labels, mnist.train.labels) and torch.equal(data.test.labels, mnist.test.labels)
    assert torch.equal(load_dataset("mnist-cluttered", DATA_ROOT).test.images, data.test.images)  # deterministic


def test_the_trainer_builds_the_model_for_the_datas_size(tmp_path):
    """image_size comes from the data (here 36 px) and is recorded, so evaluation rebuilds the same model."""
    import cnnlab
    from cnnlab.workflows import load

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (80, 1, 36, 36), dtype=torch.uint8, generator=generator)
    labels = torch.arange(80) % 4
    out = tmp_path / "run"
    cnnlab.train("st-cnn", (images, labels), epochs=1, batch_size=16, out=str(out), progress=False, holdout=0)
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["model_options"]["image_size"] == 36
    predictor = load(out)
    assert len(predictor.predict(images[:3].float() / 255)) == 3

    # The view: inputs beside the transformer's outputs, and θ over training (recorded by the task every epoch).
    from cnnlab.inspect.views import run_view
    from cnnlab.train.record import RunRecord

    state = RunRecord.load(out).task_state()
    assert state["theta_images"].shape == (8, 1, 36, 36) and state["theta_history"].shape == (1, 8, 6)
    result = run_view("transformer", out, count=4, device="cpu")
    assert [p.name for p in result.paths] == ["transformer.png", "transformer-training.png"]
    assert all(p.stat().st_size > 1000 for p in result.paths)


def test_the_transformer_view_refuses_models_without_one(tmp_path):
    import cnnlab
    from cnnlab.inspect.views import run_view

    images, labels = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8), torch.arange(40) % 2
    cnnlab.train("dmnist-cnn", (images, labels), epochs=1, out=str(tmp_path / "run"), progress=False, holdout=0)
    with pytest.raises(ConfigError, match="has no spatial transformer.*st-cnn"):
        run_view("transformer", tmp_path / "run", device="cpu")


def test_parameter_counts_by_hand():
    """The registered counts (42×42 input, classified at 21×21), from the layer table, independently of the code."""
    conv = lambda c_in, c_out, k: c_in * k * k * c_out + c_out  # noqa: E731
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    cnn = conv(1, 32, 9) + conv(32, 32, 7) + linear(32 * 5 * 5, 10)  # 21 -> pool 10 -> pool 5 ('same' convs)
    fcn = linear(21 * 21, 128) + 2 * linear(128, 128) + linear(128, 10)
    # localisation on the full 42: pool 21, conv 5 -> 17, pool 8, conv 5 -> 4; fc 20; regressor of 6 (affine)
    localisation = conv(1, 20, 5) + conv(20, 20, 5) + linear(20 * 4 * 4, 20) + linear(20, 6)
    fcn_localisation = linear(42 * 42, 32) + 2 * linear(32, 32) + linear(32, 6)
    expected = {"dmnist-cnn": cnn, "dmnist-fcn": fcn, "st-cnn": cnn + localisation, "st-fcn": fcn + fcn_localisation}
    for name, count in expected.items():
        assert models.get_model_info(name).param_count == count, name
        model = models.create(name, device="meta")
        assert sum(p.numel() for p in model.parameters()) == count, name
    # MNIST addition: two transformers (each on both channels) side by side, their 4 channels into the CNN
    addition = (
        conv(4, 32, 9) + conv(32, 32, 7) + linear(32 * 5 * 5, 19) + 2 * (localisation + conv(2, 20, 5) - conv(1, 20, 5))
    )
    assert models.get_model_info("st-cnn-addition").param_count == addition
    assert sum(p.numel() for p in models.create("st-cnn-addition", device="meta").parameters()) == addition
    # hidden=N: one ReLU layer of N units between the CNN's features and the 19 sums
    with_hidden = addition - linear(32 * 5 * 5, 19) + linear(32 * 5 * 5, 256) + linear(256, 19)
    wider = models.create("st-cnn-addition", hidden=256, device="meta")
    assert sum(p.numel() for p in wider.parameters()) == with_hidden and wider.num_features == 256
    for bad, message in ((-1, "hidden is the width"), (2.5, "whole number"), (True, "whole number")):
        with pytest.raises(ConfigError, match=message):
            models.create("st-cnn-addition", hidden=bad, device="meta")
    # transformers=1: the paper's "single" (one transformer on both channels); 0: its CNN, the input pooled 2×2
    single = models.create("st-cnn-addition", transformers=1, device="meta")
    assert sum(p.numel() for p in single.parameters()) == addition - conv(4, 32, 9) + conv(2, 32, 9) - (
        localisation + conv(2, 20, 5) - conv(1, 20, 5)
    )
    alone = models.create("st-cnn-addition", transformers=0, device="meta")
    assert alone.transformer is None and isinstance(alone.get_stage("downsample"), nn.AvgPool2d)
    assert sum(p.numel() for p in alone.parameters()) == conv(2, 32, 9) + conv(32, 32, 7) + linear(32 * 5 * 5, 19)
    with pytest.raises(ConfigError, match="transformers=0 is the CNN alone"):
        models.create("st-cnn-addition", transformers=0, transform="tps", device="meta")
    with pytest.raises(ConfigError, match="transformers is how many"):
        models.create("st-cnn-addition", transformers=-1, device="meta")
    tps = models.create("st-cnn", transform="tps", device="meta").transformer.regressor
    assert tps.out_features == 32  # 16 control points (4×4), x and y each


def test_mnist_addition_pairs_and_the_two_transformer_model():
    digits = _fake_digits(32)
    labels = torch.arange(32) % 10
    images, sums = distorted.addition_pairs(digits, labels, torch.Generator().manual_seed(0))
    assert images.shape == (32, 2, 42, 42) and images.dtype == torch.uint8
    assert sums.min() >= 0 and sums.max() <= 18 and not torch.equal(sums, labels)
    model = models.create("st-cnn-addition")
    branches = model.get_stage("transformer").branches
    assert len(branches) == 2 and model.transformer is branches[0]
    x = images.float() / 255
    # at the identity, sampling a half-size output bilinearly at its pixel centres averages 2×2 input pixels
    halved = nn.functional.avg_pool2d(x, 2)
    torch.testing.assert_close(model.get_stage("transformer")(x), torch.cat([halved, halved], 1), atol=1e-5, rtol=0)
    assert model(x).shape == (32, 19)


def test_the_view_draws_every_transformer_of_the_addition_model():
    """Side by side transformers: each one's sampled region on the input, and each one's output, in its colour."""
    from cnnlab.inspect.transformer import OUTLINE_COLOURS, find_transformers, render_transformer

    model = models.create("st-cnn-addition").eval()
    first, second = find_transformers(model)
    with torch.no_grad():  # move the second transformer off the identity, so the two outlines differ
        second.regressor.bias.copy_(torch.tensor([0.5, 0.0, 0.25, 0.0, 0.5, -0.25]))
    images, _ = distorted.addition_pairs(_fake_digits(3), torch.arange(3), torch.Generator().manual_seed(0))
    sums = [str(s) for s in range(19)]
    fig = render_transformer(model, images.float() / 255, (0.0, 0.0), (1.0, 1.0), sums, [None] * 3)
    assert len(fig.axes) == 2 * 2 * 3  # 2 rows of 2 images, each: the input and the two outputs
    input_panel = fig.axes[0]
    assert [line.get_color() for line in input_panel.lines] == list(OUTLINE_COLOURS[:2])
    first_x, second_x = (line.get_xdata() for line in input_panel.lines)
    assert max(first_x) > 41 and max(second_x) < 41  # the identity's border, and a window half the size
    assert first is model.transformer and fig.axes[2].get_title().startswith("output 2 →")
    # the title is wrapped to the figure's width (it was cut off at both sides of a two-column figure)
    title = fig._suptitle.get_text()
    assert "\n" in title and all(len(line) <= 13 * fig.get_figwidth() for line in title.splitlines())


# ---- --redraw: the generated sets' training digits distorted afresh every epoch ----


def _redrawable(name: str, count: int = 40) -> "distorted.RedrawableImageSet":
    digits, labels = _fake_digits(count), torch.arange(count) % 4
    generator = torch.Generator().manual_seed(0)
    if name == "mnist-addition":
        images, targets = distorted.addition_pairs(digits, labels, generator)
    else:
        images, targets = distorted.DISTORTIONS[name][0](digits, generator), labels
    return distorted.RedrawableImageSet(images, targets, sources=digits, source_labels=labels, distortion=name)


@pytest.mark.parametrize("name", distorted.REDRAWABLE)
def test_a_redraw_distorts_the_same_digits_again_deterministically(name):
    split = _redrawable(name)
    first, again, second = split.redrawn(0, 1), split.redrawn(0, 1), split.redrawn(0, 2)
    assert first.images.shape == split.images.shape and first.images.dtype == torch.uint8
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, second.images) and not torch.equal(first.images, split.images)
    assert not torch.equal(first.images, split.redrawn(1, 1).images)  # each run seed has its own draws
    if name != "mnist-addition":
        assert torch.equal(first.labels, split.labels)
    # a subset (the validation hold-out) keeps its own digits, and redraws only those
    index = torch.tensor([1, 5, 6, 30])
    subset = split.select(index)
    assert isinstance(subset, distorted.RedrawableImageSet)
    assert torch.equal(subset.images, split.images[index]) and torch.equal(subset.sources, split.sources[index])
    assert subset.redrawn(0, 1).images.shape == (4, *split.images.shape[1:])


def test_a_redrawn_addition_pairs_each_digit_with_a_partner_of_its_own_subset():
    split = _redrawable("mnist-addition", 64)
    low = split.select((split.source_labels < 2).nonzero().flatten())  # digits 0 and 1 only
    drawn = low.redrawn(0, 3)
    partners = drawn.labels - low.source_labels  # the sum minus the first digit
    assert set(partners.tolist()) <= {0, 1} and len(set(partners.tolist())) == 2


def test_the_loader_trains_epoch_0_on_the_fixed_draw_and_later_epochs_on_redraws():
    from cnnlab.data import DeviceTensorLoader, Preprocessing

    images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    calls = []

    def redraw(epoch):
        calls.append(epoch)
        return torch.full_like(images, epoch), torch.full((6,), epoch)

    raw = Preprocessing(1, (4, 4), 0, (0.0,), (1 / 255,))  # normalize() gives back the stored values
    loader = DeviceTensorLoader(images, torch.zeros(6, dtype=torch.int64), raw, 3, redraw=redraw)
    assert [round(float(x.max())) for x, _ in loader.batches(0)] == [0, 0]
    assert [round(float(x.min())) for x, _ in loader.batches(3)] == [3, 3] and calls == [3]
    assert [int(y.max()) for _, y in loader.batches(2, start_batch=1)] == [2]  # a resumed epoch: the same draw
    assert [int(y.max()) for _, y in loader.batches(2)] == [2, 2] and calls == [3, 2]  # the draw is kept
    assert [int(y.max()) for _, y in loader.batches(0)] == [0, 0] and calls == [3, 2]
    bad = DeviceTensorLoader(
        images, torch.zeros(6, dtype=torch.int64), raw, 3, redraw=lambda e: (images[:5], torch.zeros(5))
    )
    with pytest.raises(ValueError, match="redraw"):
        next(bad.batches(1))


def _write_fake_mnist(root: Path, train: int = 96, test: int = 24) -> None:
    """MNIST's four idx files, made of the fake digits (bars), under root/MNIST/raw."""
    from conftest import idx_bytes

    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    digits = _fake_digits(train + test)[:, 0]
    labels = (torch.arange(train + test) % 4).to(torch.uint8)
    for name, array in {
        "train-images-idx3-ubyte": digits[:train],
        "train-labels-idx1-ubyte": labels[:train],
        "t10k-images-idx3-ubyte": digits[train:],
        "t10k-labels-idx1-ubyte": labels[train:],
    }.items():
        (folder / name).write_bytes(idx_bytes(array.numpy()))


def test_redraw_trains_on_new_draws_and_resumes_bit_exactly(tmp_path):
    import signal

    from cnnlab.errors import TrainingInterrupted
    from cnnlab.train import TrainConfig, Trainer, build_run, load_checkpoint, resolve

    _write_fake_mnist(tmp_path / "data")
    given = {
        "model": "dmnist-cnn",
        "data": "mnist-rts",
        "data_root": str(tmp_path / "data"),
        "epochs": 3,
        "batch_size": 16,
        "holdout": 0.25,
    }

    def train(run_dir, callbacks=(), payload=None, **overrides):
        trainer = Trainer(build_run(resolve(TrainConfig(**given, **overrides)), run_dir=run_dir), callbacks=callbacks)
        if payload is not None:
            trainer.load_state_dict(payload)
        trainer.fit()
        return trainer

    straight = train(tmp_path / "straight", redraw=True)
    fixed = train(tmp_path / "fixed")
    assert straight.history[0]["train_loss"] == fixed.history[0]["train_loss"]  # epoch 1: the same fixed draw
    assert straight.history[1]["train_loss"] != fixed.history[1]["train_loss"]  # then new distortions
    assert straight.history[1]["val_loss"] != fixed.history[1]["val_loss"]

    def stop_after_first_epoch(trainer, row):
        if trainer.epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(tmp_path / "resumed", callbacks=(stop_after_first_epoch,), redraw=True)
    resumed = train(tmp_path / "resumed", payload=load_checkpoint(tmp_path / "resumed"), redraw=True)
    assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in straight.history]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_redraw_refuses_a_dataset_with_nothing_to_draw_again(tmp_path):
    import cnnlab

    with pytest.raises(ConfigError, match=r"--redraw .* 'digits' is stored images.*mnist-rts"):
        cnnlab.train("lenet5", "digits", epochs=1, redraw=True, out=str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_the_preview_shows_redraws_and_both_digits_of_an_addition_pair(tmp_path):
    from PIL import Image

    from cnnlab.data.info import preview_dataset

    _write_fake_mnist(tmp_path / "data")
    for name in ("mnist-rts", "mnist-addition"):  # addition's two channels are drawn side by side (it crashed)
        path, rows = preview_dataset(name, None, tmp_path / f"{name}.png", 4, str(tmp_path / "data"))
        assert rows == "the same digits drawn afresh, as --redraw trains" and Image.open(path).size[0] > 300
    path, rows = preview_dataset("mnist-rts", "rotate", tmp_path / "rotate.png", 4, str(tmp_path / "data"))
    assert rows == "rotate"
