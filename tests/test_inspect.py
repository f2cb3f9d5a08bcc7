"""The inspection views: each view's defining property on small models with known weights, and bad input."""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnlab import models
from cnnlab.data import Preprocessing
from cnnlab.errors import CnnlabError, ConfigError, DataError, ImageDecodeError, UnknownNameError
from cnnlab.inspect import (
    UnsupportedModelError,
    activations,
    confident_mistakes,
    confusion_matrix,
    filters,
    layer_geometry,
    render_activations,
    render_filters,
    run_view,
    top_patches,
    without_inplace_relu,
)
from cnnlab.inspect.grid import minmax, save, tile_origin
from cnnlab.inspect.hooks import crop, unit_box
from cnnlab.inspect.mistakes import Predictions
from cnnlab.models import ClassifierModel

MNIST_RAW = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "MNIST" / "raw"


# ---- small models with known structure -------------------------------------------------------------------------
class FunctionalReluBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))  # the hooks of deconvnet/guided backprop cannot see this ReLU


class TinyNet(ClassifierModel):
    """1×16×16 -> conv 4@3×3 (pad 1), ReLU, max pool 2 -> conv 6@3×3 (pad 1), ReLU, max pool 2 -> linear 3."""

    def __init__(self, inplace: bool = False, functional: bool = False, in_chans: int = 1):
        super().__init__()
        self.num_classes, self.in_chans, self.num_features = 3, in_chans, 96
        b2 = (
            FunctionalReluBlock()
            if functional
            else nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 6, 3, padding=1), act=nn.ReLU()))
        )
        self.features = nn.Sequential(
            OrderedDict(
                b1=nn.Sequential(OrderedDict(conv=nn.Conv2d(in_chans, 4, 3, padding=1), act=nn.ReLU(inplace=inplace))),
                p1=nn.MaxPool2d(2),
                b2=b2,
                p2=nn.MaxPool2d(2),
            )
        )
        self.head = nn.Linear(96, 3)

    def forward_head(self, x, pre_logits=False):
        x = torch.flatten(x, 1)
        return x if pre_logits else self.head(x)


class CornerNet(nn.Module):
    """Looks only at the top-left 8×8 corner of the image: everything else is irrelevant by construction."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8 * 8, 4)

    def forward(self, x):
        return self.fc(x[:, 0, :8, :8].flatten(1))


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model.eval()


IDENTITY = Preprocessing(in_chans=1, resize=(16, 16), pad=0, mean=(0.0,), std=(1.0,))


# ---- receptive fields -----------------------------------------------------------------------------------------
class ResidualNet(nn.Module):
    """stem conv3 -> [conv3 s2 -> ReLU -> conv3] + [conv1 s2 shortcut] -> ReLU -> avg pool 2 -> two branches cat."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv_a = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.conv_b = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(4, 4, 1, stride=2)
        self.out_act = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.branch3 = nn.Conv2d(4, 2, 3, padding=1)
        self.branch5 = nn.Conv2d(4, 2, 5, padding=2)

    def forward(self, x):
        x = self.stem(x)
        x = self.out_act(self.conv_b(self.act(self.conv_a(x))) + self.shortcut(x))
        x = self.pool(x)
        return torch.cat([self.branch3(x), self.branch5(x)], dim=1)


def test_receptive_fields_merge_branches_and_match_the_gradients_support():
    from cnnlab.inspect.fields import receptive_fields

    model = ResidualNet()
    fields = receptive_fields(model, (1, 32, 32))
    assert fields.exact and fields.shapes["branch5"] == (2, 8, 8)
    assert fields.fields["out_act"].jump == 2  # the chain arithmetic would stride twice (shortcut, then conv_a)
    assert (fields.fields["out_act"].size, fields.fields["pool"].size) == (9, 11)  # 3 + 2 + 2·2; + 1·2
    final = fields.fields["branch5"]
    assert final.size == 11 + 4 * 4 and fields.fields["branch3"].size == 11 + 2 * 4
    # the oracle: with positive weights, no bias and a positive input every path is open, so the input pixels
    # with a non-zero gradient are exactly the unit's receptive field (clipped to the image)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.abs() + 0.01) if p.ndim > 1 else p.zero_()
    x = (torch.rand(1, 1, 32, 32) + 0.5).requires_grad_()
    out = model(x)  # (1, 4, 8, 8); channels 2, 3: the 5×5 branch
    for r, c in ((0, 0), (3, 4), (7, 7)):
        (grad,) = torch.autograd.grad(out[0, 3, r, c], x, retain_graph=True)
        rows, cols = grad[0, 0].nonzero(as_tuple=True)
        top, left, bottom, right = unit_box(final, r, c)
        assert (int(rows.min()), int(rows.max()) + 1) == (max(top, 0), min(bottom, 32))
        assert (int(cols.min()), int(cols.max()) + 1) == (max(left, 0), min(right, 32))


def test_receptive_fields_equal_the_summary_on_chains_and_fall_back_when_untraceable():
    from cnnlab.inspect import summarize
    from cnnlab.inspect.fields import receptive_fields

    model = models.create("lenet5")
    fields = receptive_fields(model, (1, 32, 32))
    assert fields.exact and fields.fields["features.s4"].size == 16
    for row in summarize(model, (1, 32, 32)).rows:
        assert fields.fields[row.name] == row.receptive_field, row.name

    class Untraceable(TinyNet):
        def forward_features(self, x):
            if x.shape[-1] > 1000:  # Python control flow on a size: torch.fx cannot trace it
                x = x[..., ::2, ::2]
            return self.features(x)

    fallback = receptive_fields(Untraceable(), (1, 16, 16))
    assert not fallback.exact and fallback.fields["features.b2"].size == 8


# ---- training curves -----------------------------------------------------------------------------------------
def test_curves_ring_the_best_epoch_and_name_it_in_the_legend(tmp_path):
    from cnnlab.inspect.curves import curves_figure, plot_curves

    errors = [0.5, 0.2, 0.1, 0.15]
    rows = [
        {"epoch": e + 1, "train_loss": 1 / (e + 1), "test_loss": 1.2 / (e + 1), "train_error": err, "test_error": err}
        for e, err in enumerate(errors)
    ]
    figure = curves_figure(rows, "tiny on digits")
    _, ax_err = figure.axes
    legend = [t.get_text() for t in ax_err.get_legend().get_texts()]
    assert legend == ["train", "test", "best test 10.00% (epoch 3)"]
    ring = ax_err.get_lines()[-1]
    assert list(ring.get_xdata()) == [3] and list(ring.get_ydata()) == [10.0] and ring.get_marker() == "o"
    # a run with a validation split: the best epoch is the validation split's (as best.pt), its test error named
    rows = [
        {**row, "val_loss": row["test_loss"], "val_error": v} for row, v in zip(rows, [0.4, 0.3, 0.2, 0.1], strict=True)
    ]
    legend = [t.get_text() for t in curves_figure(rows).axes[1].get_legend().get_texts()]
    assert legend == ["train", "validation", "test", "best epoch 4: validation 10.00%, test 15.00%"]
    assert not ax_err.texts  # no label drawn over the curves
    assert plot_curves(rows, tmp_path / "c.png").is_file()


# ---- filters --------------------------------------------------------------------------------------------------
def test_filter_grid_shows_exact_min_max_scaled_kernels(tmp_path):
    model = TinyNet()
    with torch.no_grad():
        model.features.b1.conv.weight.copy_(torch.arange(4 * 9, dtype=torch.float32).view(4, 1, 3, 3) ** 1.5 - 20)
    view = filters(model)  # default: the first convolution
    assert view.qualified == "features.b1.conv" and view.mode == "grey"
    w = model.features.b1.conv.weight.detach()
    expected = (w - w.amin((1, 2, 3), keepdim=True)) / (
        w.amax((1, 2, 3), keepdim=True) - w.amin((1, 2, 3), keepdim=True)
    )
    torch.testing.assert_close(view.tiles, expected, rtol=0, atol=1e-6)
    for i in range(4):  # each tile of the grid is exactly that kernel, scaled
        top, left = tile_origin(i, view.ncols, 3, 3)
        torch.testing.assert_close(view.grid[:, top : top + 3, left : left + 3], expected[i], rtol=0, atol=1e-6)
    # ...and so is the picture: the grid itself, drawn pixel for pixel, titled, with indices and a colour bar
    figure = render_filters(view, title="tiny features.b1.conv")
    image_axes, bar_axes = figure.axes
    drawn = torch.from_numpy(np.asarray(image_axes.images[0].get_array(), dtype=np.float32))
    torch.testing.assert_close(drawn, view.grid[0], rtol=0, atol=0, equal_nan=True)
    assert image_axes.images[0].get_interpolation() == "nearest"
    assert figure.get_suptitle() == "tiny features.b1.conv: 4 kernels of 1×3×3"
    assert [t.get_text() for t in image_axes.get_xticklabels()] == ["0", "1"]  # 4 kernels: 2 per row
    assert [t.get_text() for t in image_axes.get_yticklabels()] == ["0", "2"]  # the first index of each row
    assert "scaled per kernel: its min to its max" in bar_axes.get_ylabel()
    save(figure, tmp_path / "f.png")
    assert Image.open(tmp_path / "f.png").size[0] > 100


def test_rgb_filters_keep_colour_balance_and_shared_scale():
    model = seeded(TinyNet(in_chans=3))
    w = model.features.b1.conv.weight.detach()
    each = filters(model, "b1", scale="each")
    assert each.mode == "rgb" and each.tiles.shape == (4, 3, 3, 3) and each.grid.shape[0] == 3
    torch.testing.assert_close(each.tiles, minmax(w, dims=(1, 2, 3)))  # one range per kernel, all 3 colours
    shared = filters(model, "features.b1.conv", scale="all")
    torch.testing.assert_close(shared.tiles, (w - w.min()) / (w.max() - w.min()))


def test_deeper_layer_filters_are_kernel_norms_showing_the_connection_table():
    model = models.create("lenet5")
    view = filters(model, "c3")
    assert view.mode == "norms" and view.tiles is None and view.norms.shape == (16, 6)
    mask = model.features.c3.conv.connection_mask()
    assert (view.norms[~mask] == 0).all() and (view.norms[mask] > 0).all()
    torch.testing.assert_close(view.norms, view.kernels.flatten(2).norm(dim=2))
    as_tiles = filters(model, "c3", mode="tiles")
    assert as_tiles.tiles.shape == (96, 1, 5, 5) and as_tiles.ncols == 6


def test_filters_bad_layer_names():
    model = models.create("lenet5")
    with pytest.raises(UnknownNameError, match=r"Did you mean 'c1'.*Valid layers: c1, c2|Did you mean 'c1'") as err:
        filters(model, "c11")
    assert "features.c1.conv" in str(err.value)
    with pytest.raises(ConfigError, match="no convolution kernels. Layers with kernels: features.c1.conv"):
        filters(model, "f6.fc")
    with pytest.raises(ConfigError, match="scale"):
        filters(model, scale="sideways")


# ---- activations ----------------------------------------------------------------------------------------------
def test_activations_by_stage_or_qualified_name_with_shapes_in_captions():
    model = seeded(models.create("lenet5-modern"))
    x = torch.randn(1, 32, 32)
    maps = activations(model, x, ["c1", "features.c1.conv", "c3", "f6.fc"])
    assert [m.shape for m in maps] == [(6, 28, 28), (6, 28, 28), (16, 10, 10), (84,)]
    torch.testing.assert_close(maps[0].values, F.relu(maps[1].values))  # the stage c1 = conv then ReLU
    with torch.no_grad():
        torch.testing.assert_close(maps[1].values, model.features.c1.conv(x.unsqueeze(0))[0])
    fig = render_activations(maps, x.clamp(0, 1))
    titles = [ax.get_title() for ax in fig.axes]
    assert any("c1 (features.c1): 6×28×28" in t for t in titles)
    assert any("f6.fc: 84" in t for t in titles)
    default = activations(model, x)
    assert [m.layer for m in default] == ["c1", "s2", "c3", "s4", "c5"]


# ---- deconvnet ------------------------------------------------------------------------------------------------
def zeiler_fergus(model: TinyNet, x: torch.Tensor, channel: int, row: int, col: int) -> torch.Tensor:
    """The deconvnet written out: unpool with recorded switches, rectify, transposed filters (stage b2's output)."""
    f = model.features
    a1 = F.relu(f.b1.conv(x))
    p1, switches = F.max_pool2d(a1, 2, return_indices=True)
    a2 = F.relu(f.b2.conv(p1))
    signal = torch.zeros_like(a2)
    signal[0, channel, row, col] = a2[0, channel, row, col]  # keep one activation, zero the rest
    signal = F.relu(signal)  # b2's ReLU
    signal = F.conv_transpose2d(signal, f.b2.conv.weight, padding=1)  # b2's conv, transposed filters
    signal = F.max_unpool2d(signal, switches, 2, output_size=a1.shape[-2:])  # p1, with the switches
    signal = F.relu(signal)  # b1's ReLU
    return F.conv_transpose2d(signal, f.b1.conv.weight, padding=1)[0]  # b1's conv


def test_deconv_equals_explicit_unpool_rectify_transpose():
    pytest.importorskip("captum")
    from cnnlab.inspect import deconvnet

    model = seeded(TinyNet(), 3)
    x = torch.randn(1, 16, 16)
    result = deconvnet(model, x, "b2")  # default: the strongest unit
    with torch.no_grad():
        maps = model.features.b2(model.features.p1(model.features.b1(x.unsqueeze(0))))[0]
    assert result.activation == pytest.approx(float(maps.max()))
    assert maps[result.channel, result.position[0], result.position[1]] == maps.max()
    with torch.no_grad():
        expected = zeiler_fergus(model, x.unsqueeze(0), result.channel, *result.position)
    torch.testing.assert_close(result.projection, expected, rtol=1e-5, atol=1e-6)
    assert result.projection.abs().sum() > 0
    # a chosen channel and position
    other = deconvnet(model, x, "features.b2", channel=1, position=(2, 5))
    with torch.no_grad():
        torch.testing.assert_close(
            other.projection, zeiler_fergus(model, x.unsqueeze(0), 1, 2, 5), atol=1e-6, rtol=1e-5
        )
    assert result.notes == []  # ReLUs and max pooling: the textbook case, nothing to caveat


def test_deconv_of_one_unit_is_zero_outside_its_receptive_field():
    pytest.importorskip("captum")
    from cnnlab.inspect import deconvnet

    model = seeded(models.create("lenet5-modern"), 1)
    x = torch.randn(1, 32, 32)
    for layer, field in (("c1", 5), ("c3", 14)):
        result = deconvnet(model, x, layer)
        assert result.receptive_field.size == field
        top, left, bottom, right = result.box
        assert (bottom - top, right - left) == (field, field)
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[max(top, 0) : bottom, max(left, 0) : right] = True
        assert (result.projection[0][~inside] == 0).all()
        assert (result.projection[0][inside] != 0).any()


def test_deconv_without_relu_is_the_units_gradient_and_says_so():
    pytest.importorskip("captum")
    from cnnlab.inspect import deconvnet

    model = models.create("lenet5").eval()  # scaled tanh, trainable average subsampling: no ReLU, no switches
    torch.manual_seed(0)
    x = torch.randn(1, 32, 32)
    result = deconvnet(model, x, "c3")
    c, r, k = result.channel, *result.position
    inp = x.unsqueeze(0).clone().requires_grad_()
    unit = model.features.c3(model.features.s2(model.features.c1(inp)))[0, c, r, k]
    (grad,) = torch.autograd.grad(unit, inp)
    torch.testing.assert_close(result.projection, grad[0] * unit.item(), rtol=1e-5, atol=1e-7)
    text = " ".join(result.notes)
    assert "No ReLU" in text and "gradient" in text and "ScaledTanh" in text and "no switches" in text


def test_deconv_bad_input():
    pytest.importorskip("captum")
    from cnnlab.inspect import deconvnet

    x = torch.randn(1, 16, 16)
    model = seeded(TinyNet())
    with pytest.raises(UnknownNameError, match="Did you mean 'b2'"):
        deconvnet(model, x, "b3")
    with pytest.raises(ConfigError, match=r"Channel 6 is out of range: layer 'b2' has 6 channels, numbered 0 to 5"):
        deconvnet(model, x, "b2", channel=6)
    with pytest.raises(ConfigError, match="not a \\(channels, height, width\\) feature map"):
        deconvnet(model, x, "head")
    with pytest.raises(ConfigError, match="outside"):
        deconvnet(model, x, "b2", position=(8, 0))
    inplace = seeded(TinyNet(inplace=True))
    with pytest.raises(UnsupportedModelError, match=r"features\.b1\.act are nn\.ReLU\(inplace=True\)"):
        deconvnet(inplace, x, "b2")
    fixed, changed = without_inplace_relu(inplace)
    assert changed == ["features.b1.act"] and inplace.features.b1.act.inplace  # the original is untouched
    reference = TinyNet()
    reference.load_state_dict(inplace.state_dict())
    torch.testing.assert_close(deconvnet(fixed, x, "b2").projection, deconvnet(reference.eval(), x, "b2").projection)
    functional = seeded(TinyNet(functional=True))
    with pytest.raises(UnsupportedModelError, match=r"features\.b2 \(FunctionalReluBlock\.forward calls relu\)"):
        deconvnet(functional, x, "p2")


# ---- top patches ----------------------------------------------------------------------------------------------
def blob_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n dark 16×16 images, image i with one 3×3 blob of brightness growing with a random rank at a random place."""
    g = torch.Generator().manual_seed(seed)
    brightness = torch.randperm(n, generator=g) + 20  # all different
    images = torch.randint(0, 10, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    places = torch.randint(0, 14, (n, 2), generator=g)
    for i in range(n):
        r, c = places[i].tolist()
        images[i, 0, r : r + 3, c : c + 3] = brightness[i]
    return images, brightness


def test_top_patches_are_the_argmax_images_of_a_unit():
    images, brightness = blob_images(100)
    model = TinyNet()
    with torch.no_grad():  # channel 0 of b1: the sum of a 3×3 window (a blob detector); others: nothing
        model.features.b1.conv.weight.zero_()
        model.features.b1.conv.bias.zero_()
        model.features.b1.conv.weight[0] = 1.0
    model.eval()
    result = top_patches(model, images, IDENTITY, "features.b1.conv", [0], k=9, batch_size=7)  # 15 batches
    expected = brightness.argsort(descending=True)[:9]
    assert result.indices[0].tolist() == expected.tolist()
    assert result.images_seen == 100 and result.receptive_field.size == 3
    for j, i in enumerate(expected.tolist()):  # the patch is the blob itself: the unit's 3×3 field
        assert (result.patches[0, j] == brightness[i]).all()
        top, left, bottom, right = result.boxes[0, j].tolist()
        assert (bottom - top, right - left) == (3, 3)
        assert torch.equal(images[i, :, top:bottom, left:right], result.patches[0, j])


def test_top_patches_streaming_equals_brute_force():
    images, _ = blob_images(61, seed=1)
    model = seeded(TinyNet(), 2)
    result = top_patches(model, images, IDENTITY, "b2", k=5, batch_size=8)
    with torch.no_grad():
        maps = model.features.b2(model.features.p1(model.features.b1(IDENTITY.normalize(images))))  # (N, 6, 8, 8)
    per_image = maps.flatten(2).amax(2)  # (N, 6)
    values, order = per_image.T.topk(5, dim=1)
    assert result.channels == list(range(6))
    torch.testing.assert_close(result.values, values)
    assert torch.equal(per_image.T.gather(1, result.indices), result.values)  # each image reaches its value
    distinct = (values[:, :-1] > values[:, 1:]).all(dim=1)  # a dead channel ties at 0: any order is right
    assert distinct.sum() >= 4 and torch.equal(result.indices[distinct], order[distinct])
    assert len(set(result.indices[~distinct].flatten().tolist())) == (~distinct).sum() * 5  # distinct images
    field = layer_geometry(model, (1, 16, 16), "b2").receptive_field
    assert field.size == 8 and field.jump == 2  # conv3 (pad 1) -> pool 2 -> conv3 (pad 1)
    for ch in range(6):
        for j in range(5):
            r, c = result.positions[ch, j].tolist()
            assert maps[result.indices[ch, j], ch, r, c] == result.values[ch, j]
            box = unit_box(field, r, c)
            assert torch.equal(result.patches[ch, j], crop(images[result.indices[ch, j]], box))


def test_top_patches_bad_input():
    images, _ = blob_images(10)
    model = seeded(TinyNet())
    with pytest.raises(ConfigError, match="Channel 4 is out of range: layer 'b1' has 4 channels"):
        top_patches(model, images, IDENTITY, "b1", [4])
    with pytest.raises(DataError, match="fit them first"):
        top_patches(model, images[:, :, :8], IDENTITY, "b1")
    with pytest.raises(DataError, match="uint8"):
        top_patches(model, images.float(), IDENTITY, "b1")


def read_idx_images(path: Path) -> torch.Tensor:
    import gzip

    with gzip.open(path) as handle:
        data = handle.read()
    n, h, w = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).view(n, 1, h, w)


def test_top_patches_on_real_mnist():
    path = MNIST_RAW / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip(f"real MNIST not present at {path}")
    images = read_idx_images(path)  # the 10,000 test images; the 60,000-image timing is cnnlab.bench.viz's job
    assert images.shape == (10_000, 1, 28, 28)
    images = images[:5_000]  # enough to check against brute force; keeps the suite fast
    pre = Preprocessing(in_chans=1, resize=(28, 28), pad=2, mean=(0.1307,), std=(0.3081,))
    torch.manual_seed(0)
    model = models.create("lenet5-modern").eval()
    fitted = pre.to_stored_size(images)
    result = top_patches(model, fitted, pre, "c3", [0, 5], batch_size=1000)
    assert result.images_seen == 5_000 and result.values.shape == (2, 9) and result.patches.shape[-2:] == (14, 14)
    with torch.no_grad():  # brute force over all of them
        maps = model.features.c3(model.features.s2(model.features.c1(pre.normalize(fitted))))
    values, order = maps[:, [0, 5]].flatten(2).amax(2).T.topk(9, dim=1)
    torch.testing.assert_close(result.values, values)
    assert torch.equal(result.indices, order)


# ---- occlusion ------------------------------------------------------------------------------------------------
def test_occluding_an_irrelevant_region_leaves_the_probability_unchanged():
    pytest.importorskip("captum")
    from cnnlab.inspect import occlusion

    model = CornerNet().eval()
    torch.manual_seed(1)
    x = torch.randn(1, 32, 32)
    result = occlusion(model, x, size=6, stride=2, baseline=0.0)
    assert result.probs.shape == (14, 14, 4)
    with torch.no_grad():
        clean = model(x.unsqueeze(0)).softmax(1)[0]
    touches = (result.rows.view(-1, 1) < 8) & (result.cols.view(1, -1) < 8)  # the square overlaps the corner
    # unchanged up to float rounding (the copies run in batches, the clean image alone)
    torch.testing.assert_close(result.target_prob[~touches], clean[result.target].expand(int((~touches).sum())))
    assert ((result.target_prob[touches] - clean[result.target]).abs() > 1e-4).all()
    # Captum spreads each drop over the square's pixels: squares touching the corner reach column/row 6 + 5 = 11
    assert result.attribution[:, 12:].abs().max() < 1e-6 and result.attribution[12:, :].abs().max() < 1e-6
    assert (result.attribution[:8, :8].abs() > 1e-4).any()


def test_occlusion_maps_match_occluding_by_hand():
    pytest.importorskip("captum")
    from cnnlab.inspect import occlusion

    model = seeded(TinyNet(), 4)
    x = torch.randn(1, 16, 16)
    result = occlusion(model, x, target=2, size=5, stride=3, baseline=-0.5, batch_size=7)
    assert result.rows.tolist() == [0, 3, 6, 9, 12] and result.cols.tolist() == [0, 3, 6, 9, 12]  # last one clipped
    with torch.no_grad():
        for i, r in enumerate(result.rows.tolist()):
            for j, c in enumerate(result.cols.tolist()):
                hidden = x.clone()
                hidden[:, r : r + 5, c : c + 5] = -0.5
                probs = model(hidden.unsqueeze(0)).softmax(1)[0]
                torch.testing.assert_close(result.probs[i, j], probs, rtol=1e-5, atol=1e-6)
    assert result.top_class.shape == (5, 5) and result.target == 2


def test_occlusion_follows_log_odds_which_show_a_saturated_prediction():
    pytest.importorskip("captum")
    from cnnlab.inspect import occlusion, render_occlusion

    model = CornerNet().eval()
    x = torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # make the prediction saturate: p rounds to 1 in float32
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(200)
    result = occlusion(model, x, size=6, stride=2, baseline=0.0)
    with torch.no_grad():
        logits = model(x.unsqueeze(0))[0].double()
    t = result.target
    expected = logits[t] - torch.cat([logits[:t], logits[t + 1 :]]).logsumexp(0)
    assert result.clean_probs[t] == 1.0 and result.clean_log_odds > 20  # p shows nothing; the log-odds do
    assert abs(result.clean_log_odds - float(expected)) < 1e-3 * abs(float(expected))
    touches = (result.rows.view(-1, 1) < 8) & (result.cols.view(1, -1) < 8)
    assert (result.log_odds_drop[touches].abs() > 1e-2).all()
    assert (result.log_odds_drop[~touches].abs() < 1e-3 * result.clean_log_odds).all()
    figure = render_occlusion(result, torch.rand(1, 32, 32))
    titles = [ax.get_title() for ax in figure.axes]
    assert any("drop of log-odds" in title for title in titles)
    assert "shown instead of p" in figure.get_supxlabel()


def test_occlusion_bad_options():
    pytest.importorskip("captum")
    from cnnlab.inspect import occlusion

    model, x = CornerNet().eval(), torch.randn(1, 32, 32)
    with pytest.raises(ConfigError, match="size 40 does not fit the 32×32 input"):
        occlusion(model, x, size=40)
    with pytest.raises(ConfigError, match="stride 9 must be between 1 and the square size 8"):
        occlusion(model, x, size=8, stride=9)
    with pytest.raises(ConfigError, match="Class 7 is out of range"):
        occlusion(model, x, target=7)
    with pytest.raises(ConfigError, match="Precision"):
        occlusion(model, x, precision="int8")


# ---- saliency, guided backprop --------------------------------------------------------------------------------
def test_saliency_is_the_input_gradient_and_guided_backprop_checks_relus():
    pytest.importorskip("captum")
    from cnnlab.inspect import guided_backprop, saliency

    model = seeded(TinyNet(), 5)
    x = torch.randn(1, 16, 16)
    result = saliency(model, x, target=1)
    inp = x.unsqueeze(0).clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(inp)[0, 1], inp)
    torch.testing.assert_close(result.values, grad[0])
    torch.testing.assert_close(result.heat, grad[0].abs().amax(0))
    guided = guided_backprop(model, x)
    assert guided.values.shape == (1, 16, 16) and guided.target == int(model(x.unsqueeze(0)).argmax())
    with pytest.raises(UnsupportedModelError, match="inplace=True"):
        guided_backprop(seeded(TinyNet(inplace=True)), x)
    tanh = guided_backprop(models.create("lenet5").eval(), torch.randn(1, 32, 32))
    assert "no nn.ReLU" in tanh.notes[0]


# ---- confusion, mistakes --------------------------------------------------------------------------------------
def test_confusion_matrix_and_confident_mistakes():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.tensor(
        [[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.95, 0.05, 0], [0, 0, 1.0], [0.1, 0.6, 0.3]]
    )
    predictions = Predictions(labels, probs.argmax(1), probs)
    matrix = confusion_matrix(predictions)
    assert matrix.tolist() == [[1, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert confident_mistakes(predictions, 10).tolist() == [3, 1, 5]  # wrong ones, most confident first
    assert confident_mistakes(predictions, 1).tolist() == [3]


# ---- run_view: the CLI's entry point --------------------------------------------------------------------------
def test_run_view_every_kind_on_a_trained_run(trained_run, tmp_path):
    pytest.importorskip("captum")
    kinds = {
        "filters": {},
        "activations": {"count": 2},
        "deconv": {},
        "top-patches": {"max_units": 4},
        "occlusion": {"size": 8, "stride": 4},
        "saliency": {},
        "guided-backprop": {},
        "confusion": {},
        "errors": {"count": 4},
        "curves": {},
    }
    results = {}
    for kind, options in kinds.items():
        results[kind] = run_view(kind, trained_run, out_dir=tmp_path / kind, device="cpu", **options)
        assert results[kind].paths, kind
        for path in results[kind].paths:
            with Image.open(path) as image:
                assert image.format == "PNG" and min(image.size) > 20, (kind, path)
    assert any("No ReLU" in n for n in results["deconv"].notes)  # the faithful LeNet-5: the caveat reaches the user
    assert [p.name for p in results["activations"].paths] == ["activations-test-0.png", "activations-test-1.png"]


def test_run_view_converts_and_resizes_images_with_a_note(trained_run, tmp_path):
    rgba = tmp_path / "seven.png"
    Image.new("RGBA", (50, 40), (200, 10, 10, 255)).save(rgba)
    result = run_view("activations", trained_run, [rgba], layer=["c1", "c3"], out_dir=tmp_path, device="cpu")
    assert result.paths == [tmp_path / "activations-seven.png"]
    assert any("converted from RGBA to grey" in n and "resized from 50×40 to 32×32" in n for n in result.notes)
    exact = tmp_path / "exact.png"
    Image.new("L", (32, 32), 0).save(exact)
    assert run_view("activations", trained_run, [exact], layer="c1", out_dir=tmp_path, device="cpu").notes == []


def test_run_view_bad_input(trained_run, tmp_path):
    def view(kind, *images, **kw):
        return run_view(kind, trained_run, images, out_dir=tmp_path, device="cpu", **kw)

    with pytest.raises(UnknownNameError, match="Unknown view 'occlussion'. Did you mean 'occlusion'"):
        view("occlussion")
    with pytest.raises(ConfigError, match="no option 'sise'. Its options: count, data, data_root, size, stride"):
        view("occlusion", sise=8)
    with pytest.raises(ConfigError, match="must be a whole number"):
        view("occlusion", size="8")
    with pytest.raises(ConfigError, match="Option max_units of the top-patches view must be at least 1, got 0"):
        view("top-patches", max_units=0)
    with pytest.raises(ConfigError, match="one of each, all"):
        view("filters", scale="some")
    with pytest.raises(ConfigError, match="has no layer to choose"):
        view("confusion", layer="c1")
    with pytest.raises(ConfigError, match="has no channel to choose"):
        view("filters", channel=1)
    with pytest.raises(UnknownNameError, match="Unknown layer 'c9'.*Valid layers: c1, c3, c5"):
        view("activations", layer="c9")
    with pytest.raises(ConfigError, match="Channel 16 is out of range: layer 'c3' has 16 channels"):
        view("top-patches", layer="c3", channel=16)
    with pytest.raises(ImageDecodeError, match="does not exist"):
        view("activations", tmp_path / "missing.png")
    with pytest.raises(ConfigError, match="does not read image files"):
        view("confusion", tmp_path / "missing.png")
    assert all(issubclass(e, CnnlabError) for e in (UnsupportedModelError, ConfigError, UnknownNameError))


def test_view_arguments_for_the_command_line():
    import argparse

    from cnnlab.inspect.views import VIEWS, add_view_arguments, options_from_args, view_list

    parser = argparse.ArgumentParser()
    add_view_arguments(parser)
    args = parser.parse_args(["--size", "8", "--precision", "bfloat16", "--batch-size", "16"])
    assert options_from_args(args) == {"size": 8, "precision": "bfloat16", "batch_size": 16}
    assert options_from_args(parser.parse_args([])) == {}  # not given: each view keeps its own defaults
    help_text = parser.format_help()
    assert "[top-patches] dataset split to search" in help_text and "(default: train)" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "int8"])
    assert all(kind in view_list() for kind in VIEWS)


def test_bench_viz_measures_both_views():
    pytest.importorskip("captum")
    from cnnlab.bench.viz import bench_occlusion, bench_top_patches, format_rows

    device = torch.device("cpu")
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    rows = [
        bench_occlusion(models.create("lenet5").eval(), "lenet5", 32, 8, 4, device=device),
        bench_top_patches("lenet5-modern", images, "c1", batch_size=128, target=10.0, device=device),
    ]
    assert rows[0].items == 7 * 7 and rows[1].items == 300
    assert all(r.seconds > 0 and r.threads >= 1 for r in rows)
    text = format_rows(rows)
    assert "occlusion" in text and "top-patches" in text and "threads" in text


def test_views_read_the_runs_own_dataset_from_where_it_was_trained(trained_run, tmp_path, monkeypatch):
    """Like eval and attack: without --data-root, a view of the run's own dataset looks where the run read it."""
    from cnnlab.inspect.views import ViewContext
    from test_datasets import _write_mnist

    _write_mnist(tmp_path / "MNIST" / "raw", n_train=10, n_test=10)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "elsewhere"))
    ctx = ViewContext(trained_run, "cpu", tmp_path / "out")
    ctx.record.data, ctx.record.config["data_root"] = "mnist", str(tmp_path)
    assert len(ctx.dataset().test) == 10
    with pytest.raises(DataError, match="MNIST/raw"):  # another root named explicitly is used as given
        ctx.dataset(data_root=str(tmp_path / "elsewhere"))


@pytest.mark.parametrize(
    ("spelling", "is_relu"),
    [
        (lambda x: F.relu(x), True),
        (lambda x: x.clamp(min=0), True),
        (lambda x: torch.clamp_min(x, 0.0), True),
        (lambda x: x.clip(0), True),
        (lambda x: torch.maximum(x, torch.zeros_like(x)), True),
        (lambda x: torch.max(x, torch.tensor(0.0)), True),
        (lambda x: x.clamp(0, 6), False),  # ReLU6: bounded, another activation
        (lambda x: x.clamp(min=-1), False),
        (lambda x: torch.maximum(x, 0.5 * x), False),  # leaky ReLU
        (lambda x: x.max(dim=1, keepdim=True).values.expand_as(x), False),
    ],
)
def test_functional_relus_are_found_in_every_spelling(spelling, is_relu):
    from cnnlab.inspect.hooks import functional_relus

    class Block(nn.Module):
        def forward(self, x):
            return spelling(x)

    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), block=Block()))
    assert bool(functional_relus(model, torch.randn(1, 1, 5, 5))) == is_relu


def test_occlusion_runs_a_bn_folded_copy_with_the_same_outputs():
    from cnnlab.inspect.occlusion import inference_copy

    torch.manual_seed(0)
    model = models.create("resnet20").eval()
    with torch.no_grad():  # BN statistics that are not the identity, so folding has work to do
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    fast = inference_copy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the caller's model is untouched
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            fast(x.contiguous(memory_format=torch.channels_last)), model(x), rtol=1e-4, atol=1e-4
        )
    assert inference_copy(model.train()) is model  # training mode: batch statistics, nothing to fold


# ---- incremental inference (occlusion's fast path) ------------------------------------------------------------
class OddGeometryNet(nn.Module):
    """Every window the incremental planner reads, in awkward settings, then an operation it does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.reflect = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")
        self.dilated = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.skip = nn.Conv2d(4, 4, 1, stride=2)  # stride larger than the kernel: skips positions
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.branch = nn.Conv2d(4, 3, 5, padding=2)
        self.tail = nn.Conv2d(11, 5, 3)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        x = torch.tanh(self.dilated(F.relu(self.reflect(x))))
        x = self.skip(x) + self.pool(F.pad(x, (0, 0, 0, 0, 0, 0)))  # both 16×16
        x = torch.cat([x, self.branch(x), F.avg_pool2d(x, 3, 1, 1)], dim=1)  # 4 + 3 + 4 channels
        x = F.conv2d(x, self.tail.weight * 0.5, self.tail.bias, padding=1)
        x = x[:, :, ::2, ::2] * 2
        x = torch.roll(x, 1, dims=3)  # moves positions: incremental inference must stop before it
        return self.head(F.relu(self.tail(torch.cat([x] * 2 + [x[:, :1]], 1))).mean((2, 3)))


def occluded_copies(x: torch.Tensor, size: int, spots) -> torch.Tensor:
    copies = [x.clone()]
    for r, c in spots:
        hidden = x.clone()
        hidden[:, r : r + size, c : c + size] = -1.0
        copies.append(hidden)
    return torch.stack(copies)


def test_incremental_forward_handles_every_window_and_stops_at_unknown_operations():
    from cnnlab.inspect.incremental import IncrementalForward

    model = seeded(OddGeometryNet(), 3).eval()
    x = torch.randn(2, 32, 32)
    batch = occluded_copies(x, 5, [(0, 0), (27, 27), (13, 6), (0, 30), (31, 31)])
    for full_fraction in (1.01, 0.7, 0.0):  # crops everywhere; the default; whole maps from the start
        runner = IncrementalForward(model, x, full_fraction=full_fraction)
        assert runner.enabled and "roll" in runner.reason, runner.describe()
        with torch.no_grad():
            torch.testing.assert_close(runner(batch), model(batch), rtol=1e-5, atol=1e-5)
    local = [s for s in runner.segments if s.geometry is not None]
    assert local[0].geometry[0].stride == 1 and local[-1].geometry[0].stride in (1, 2)
    assert runner.verify(batch)


def test_incremental_forward_refuses_wrapping_padding_and_untraceable_models():
    from cnnlab.inspect.incremental import IncrementalForward

    circular = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(1, 8, 8)
    circular(x.unsqueeze(0))
    runner = IncrementalForward(circular.eval(), x)
    assert not runner.enabled and "circular" in runner.reason and "plain forward passes" in runner.describe()

    class Branchy(nn.Module):
        def forward(self, x):
            return x.sum((2, 3)) if x.mean() > 0 else -x.sum((2, 3))  # control flow on values

    runner = IncrementalForward(Branchy(), x)
    assert not runner.enabled
    assert "training mode" in IncrementalForward(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten()), x).reason
    batch = occluded_copies(x, 3, [(2, 2)])
    torch.testing.assert_close(runner(batch), Branchy()(batch))


def test_occlusion_incremental_equals_plain_passes_and_is_the_cpu_default_for_large_images(monkeypatch):
    pytest.importorskip("captum")
    import cnnlab.inspect.incremental as incremental_module
    from cnnlab.inspect import occlusion

    occlusion_module = sys.modules["cnnlab.inspect.occlusion"]  # the function shadows the submodule's name
    model = seeded(models.create("lenet5-modern"), 2).eval()
    x = torch.randn(1, 32, 32)
    fast = occlusion(model, x, size=6, stride=3, incremental=True)
    plain = occlusion(model, x, size=6, stride=3, incremental=False)
    # equal up to float rounding (the convolution library may sum a crop in another order)
    torch.testing.assert_close(fast.probs, plain.probs, rtol=1e-4, atol=1e-5)
    # log-odds are logit differences: rounding is relative to the logits' scale (here in the thousands)
    scale = float(plain.log_odds.abs().max())
    torch.testing.assert_close(fast.log_odds, plain.log_odds, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(fast.attribution, plain.attribution, rtol=1e-4, atol=1e-5 * scale)

    built: list[tuple[int, ...]] = []

    class Counting(incremental_module.IncrementalForward):
        def __init__(self, model, image, **kwargs):
            built.append(tuple(image.shape))
            super().__init__(model, image, **kwargs)

    monkeypatch.setattr(occlusion_module, "IncrementalForward", Counting)
    occlusion(model, x, size=8, stride=8)  # 32×32: planning would cost more than it saves
    assert built == []
    big = nn.Sequential(nn.Conv2d(1, 2, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    occlusion(big.eval(), torch.randn(1, 112, 112), size=16, stride=16)
    assert built == [(1, 112, 112)]


def test_occlusion_falls_back_to_plain_passes_when_the_incremental_result_disagrees(monkeypatch):
    pytest.importorskip("captum")
    from cnnlab.inspect import occlusion
    from cnnlab.inspect.incremental import IncrementalForward

    torch.manual_seed(2)
    model = models.create("lenet5-modern").eval()  # its own initialisation: logits of order 1
    x = torch.randn(1, 32, 32)
    expected = occlusion(model, x, size=8, stride=4, incremental=False)
    broken = IncrementalForward.__call__
    monkeypatch.setattr(IncrementalForward, "__call__", lambda self, batch: broken(self, batch) + 0.1)
    with pytest.warns(UserWarning, match="Incremental occlusion disagreed with plain forward passes"):
        result = occlusion(model, x, size=8, stride=4, incremental=True)
    torch.testing.assert_close(result.probs, expected.probs)


def test_summary_parameter_verdicts_say_what_they_compare():
    from cnnlab.inspect.summary import parameter_verdict, summarize

    googlenet = summarize(models.create("googlenet"), (3, 224, 224))
    assert googlenet.trainable == 6_998_552 and googlenet.not_run == {"aux1": 3_188_840, "aux2": 3_190_888}
    text = " ".join(parameter_verdict(googlenet))
    assert "6,379,728 trainable parameters in aux1, aux2" in text and "13,378,280 matches the expected" in text
    resnet = " ".join(parameter_verdict(summarize(models.create("resnet18"), (3, 64, 64))))
    assert "the paper states no parameter count (only 1.8×10⁹ multiply-adds)" in resnet and "states not" not in resnet
    custom = " ".join(parameter_verdict(summarize(models.create("lenet5-modern", num_classes=3), (1, 32, 32))))
    assert "not compared" in custom and "differs" not in custom and "—" not in custom
    modern = " ".join(parameter_verdict(summarize(models.create("lenet5-modern"), (1, 32, 32))))
    assert modern == "Trainable parameters 61,706 matches the expected 61,706 (see docs/models.md)."


def test_bench_viz_finds_mnist_under_the_data_root_like_every_command(tmp_path, monkeypatch):
    from cnnlab.bench.viz import read_mnist_images
    from test_datasets import _write_mnist

    _write_mnist(tmp_path / "MNIST" / "raw", n_train=12, n_test=10)
    assert read_mnist_images(tmp_path).shape == (12, 1, 28, 28)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path))  # the default root, as for --data mnist
    assert read_mnist_images(split="test").shape == (10, 1, 28, 28)
    assert read_mnist_images(tmp_path / "nowhere") is None  # the benchmark then uses synthetic images


@pytest.mark.parametrize("mistakes", [0, 3, 41])
def test_confusion_colour_bar_counts_in_whole_numbers(mistakes):
    from cnnlab.inspect.mistakes import render_confusion

    fig = render_confusion(np.array([[30, mistakes], [1, 25]]), ["a", "b"])
    fig.canvas.draw()
    ticks = fig.axes[1].get_yticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
