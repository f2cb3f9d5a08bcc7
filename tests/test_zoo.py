"""The model zoo against its papers and against torchvision: parameter counts, shapes, layers, interoperability."""

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnlab import models
from cnnlab.errors import CheckpointError, ConfigError, InputSizeError
from cnnlab.layers import DropConnectLinear, LocalResponseNorm, Maxout, ZeroPadShortcut
from cnnlab.models._probe import trace


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (after conftest's two): at batch 2 and 16–64 px the ops are too small to split, and
    OpenMP's spinning threads made this file 2–5× slower whenever the two cores were shared with other jobs."""
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------------
# Parameter counts: ours against the paper's stated figure (in millions, to the precision it is stated) and, for
# the torchvision-compatible models, against torchvision's exact count.

PAPER_MILLIONS = {  # name: (figure, half a unit in its last digit)
    "alexnet": (60, 1),  # "60 million parameters" (exact: 60.97 M)
    "vgg-a": (133, 0.5),  # table 2
    "vgg-a-lrn": (133, 0.5),
    "vgg-b": (133, 0.5),
    "vgg-c": (134, 0.5),
    "vgg-d": (138, 0.5),
    "vgg-e": (144, 0.5),
    "overfeat-fast": (145, 1),  # section 4.1 ("145 million" / "144 million", rounded down)
    "overfeat-accurate": (144, 1),
    "resnet20": (0.27, 0.005),  # table 6
    "resnet32": (0.46, 0.005),
    "resnet44": (0.66, 0.005),
    "resnet56": (0.85, 0.005),
    "resnet110": (1.7, 0.05),
    "resnet1202": (19.4, 0.05),
}


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_parameter_count_matches_the_papers_figure(name):
    figure, tolerance = PAPER_MILLIONS[name]
    count = _trainable(models.create(name, device="meta"))
    assert count == models.get_model_info(name).param_count
    assert abs(count / 1e6 - figure) <= tolerance, f"{name}: {count:,} vs the paper's {figure} M"


@pytest.mark.parametrize("name", sorted(models.torchvision_models()))
def test_parameter_count_equals_torchvision(name):
    tv_name = models.torchvision_models()[name]
    with torch.device("meta"):
        theirs = torchvision.models.get_model(tv_name, weights=None, **_tv_kwargs(tv_name))
    assert (
        _trainable(models.create(name, device="meta")) == _trainable(theirs) == models.get_model_info(name).param_count
    )


def test_per_layer_counts_in_the_docstrings():
    """The per-layer tables in the family docstrings, recomputed."""
    alexnet = models.create("alexnet", device="meta")
    convs = {n: _trainable(m) for n, m in alexnet.features.named_children() if isinstance(m, nn.Conv2d)}
    assert convs == {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624}
    zf = models.create("zfnet", device="meta")
    assert _trainable(zf.features.conv1) == 14_208 and _trainable(zf.features.conv4) == 1_327_488
    nin = models.create("nin-cifar", device="meta")
    mlp = [_trainable(nin.features.mlpconv1), _trainable(nin.features.mlpconv2)]
    assert mlp == [60_928, 535_104] and _trainable(nin.features.mlpconv3) + _trainable(nin.classifier) == 370_954
    googlenet = models.create("googlenet", device="meta")
    assert sum(_trainable(h) for h in googlenet.aux_heads) == 6_379_728  # the rest, 6,998,552, is the main network


# ---------------------------------------------------------------------------------------------------------------
# Shapes at the papers' input sizes (meta tensors: free).


def _shapes(name: str, **options) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every leaf layer and every stage, at the model's input size."""
    model = models.create(name, device="meta", **options).eval()
    c, h, w = models.get_model_info(name).input_size
    shapes = {t.name: t.output_shape[1:] for t in trace(model, (c, h, w)) if t.output_shape}
    x = torch.empty(1, c, h, w, device="meta")
    for stage, module in model.features.named_children():
        x = module(x)
        shapes[f"features.{stage}"] = tuple(x.shape[1:])
    return shapes


def test_alexnet_map_sizes_are_figure_twos():
    s = _shapes("alexnet")
    assert s["features.conv1"] == (96, 55, 55) and s["features.pool1"] == (96, 27, 27)
    assert s["features.conv2"] == (256, 27, 27) and s["features.pool2"] == (256, 13, 13)
    assert s["features.conv5"] == (256, 13, 13) and s["features.pool5"] == (256, 6, 6)
    model = models.create("alexnet", device="meta")
    assert [model.features.get_submodule(f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]


def test_alexnet_initialisation_follows_section_five():
    torch.manual_seed(0)
    model = models.create("alexnet")
    biases = {n: m.bias.unique().tolist() for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert biases == {
        "features.conv1": [0.0],
        "features.conv2": [1.0],
        "features.conv3": [0.0],
        "features.conv4": [1.0],
        "features.conv5": [1.0],
        "classifier.fc6": [1.0],
        "classifier.fc7": [1.0],
        "classifier.fc8": [0.0],  # the output layer is not a "fully-connected hidden layer"
    }
    assert abs(model.classifier.fc6.weight.std().item() - 0.01) < 1e-4
    assert abs(model.features.conv1.weight.std().item() - 0.01) < 5e-4


def test_zfnet_map_sizes_are_figure_threes():
    s = _shapes("zfnet")
    expected = {"conv1": 110, "pool1": 55, "conv2": 26, "pool2": 13, "conv3": 13, "conv5": 13, "pool5": 6}
    assert {k: s[f"features.{k}"][1] for k in expected} == expected
    assert models.create("zfnet", device="meta").features.conv1.kernel_size == (7, 7)


def test_vgg_configurations_are_table_one():
    def convs(name):
        model = models.create(name, device="meta")
        return [m.kernel_size[0] for m in model.features if isinstance(m, nn.Conv2d)]

    assert [len(convs(n)) + 3 for n in ("vgg-a", "vgg-b", "vgg-c", "vgg-d", "vgg-e")] == [11, 13, 16, 16, 19]
    assert convs("vgg-c").count(1) == 3 and convs("vgg-d").count(1) == 0
    lrn = models.create("vgg-a-lrn", device="meta")
    assert isinstance(lrn.features[2], LocalResponseNorm) and lrn.layer_names["norm1"] == "2"
    d = models.create("vgg16", device="meta")
    assert d.model_name == "vgg-d" and d.layer_names["conv5_3"] == "28" and d.layer_names["pool5"] == "30"


def test_googlenet_layers_are_table_one():
    s = _shapes("googlenet")
    assert s["features.maxpool2"] == (192, 28, 28)
    assert s["features.inception3b"] == (480, 28, 28)
    assert s["features.inception4a"] == (512, 14, 14) and s["features.inception4e"] == (832, 14, 14)
    assert s["features.inception5b"] == (1024, 7, 7)
    model = models.create("googlenet", device="meta")
    assert model.features.inception3a.branch3[1].conv.kernel_size == (5, 5)  # real 5×5, not torchvision's 3×3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, LocalResponseNorm) for m in model.modules()) == 2


def test_overfeat_map_sizes_are_tables_one_and_three():
    fast = _shapes("overfeat-fast")
    assert [fast[f"features.{k}"][1] for k in ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5")] == [
        56,
        28,
        24,
        12,
        12,
        6,
    ]
    assert fast["classifier.fc6"] == (3072, 1, 1)
    accurate = _shapes("overfeat-accurate")
    assert [accurate[f"features.{k}"][1] for k in ("pool1", "pool2", "conv6", "pool6")] == [36, 15, 15, 5]


def test_cifar_models_map_sizes():
    r = _shapes("resnet56")
    assert [r[f"features.layer{i}"] for i in (1, 2, 3)] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    n = _shapes("nin-cifar")
    assert n["features.pool1"] == (96, 16, 16) and n["features.pool2"] == (192, 8, 8) and n["classifier.conv"][1] == 8
    m = _shapes("maxout-cifar")
    assert [m[f"features.h{i}.pool"] for i in range(3)] == [(96, 16, 16), (192, 7, 7), (192, 5, 5)]
    assert _shapes("maxout-mnist")["features.h2.pool"] == (24, 3, 3)


# ---------------------------------------------------------------------------------------------------------------
# Layers.


def test_lrn_is_the_papers_formula():
    """b_i = a_i / (k + α Σ_{j=max(0,i−n/2)}^{min(N−1,i+n/2)} a_j²)^β, computed by hand, channel by channel."""
    torch.manual_seed(0)
    a = torch.randn(2, 7, 3, 4) * 30  # large activities, so the normalisation matters
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    expected = torch.empty_like(a)
    for i in range(7):
        window = a[:, max(0, i - n // 2) : min(7 - 1, i + n // 2) + 1]
        expected[:, i] = a[:, i] / (k + alpha * window.pow(2).sum(1)) ** beta
    ours = LocalResponseNorm(size=n, alpha=alpha, beta=beta, k=k)(a)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch_as_is = nn.LocalResponseNorm(n, alpha=alpha, beta=beta, k=k)(a)  # torch divides α by n
    assert not torch.allclose(torch_as_is, expected, rtol=1e-3)
    with pytest.raises(ConfigError, match="odd"):
        LocalResponseNorm(size=4)


def test_maxout_takes_the_max_of_consecutive_pieces_and_routes_the_gradient_to_it():
    x = torch.tensor([[1.0, 5.0, -2.0, 3.0, 0.5, 0.25]], requires_grad=True)  # 3 units × 2 pieces
    y = Maxout(2)(x)
    assert y.tolist() == [[5.0, 3.0, 0.5]]
    y.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0, 1.0, 1.0, 0.0]]
    conv = torch.randn(2, 12, 5, 5)
    out = Maxout(3)(conv)  # a convolutional maxout layer: across channel groups, at every position
    assert out.shape == (2, 4, 5, 5) and torch.equal(out[:, 1], conv[:, 3:6].amax(1))
    assert sum(p.numel() for p in Maxout(3).parameters()) == 0
    with pytest.raises(ConfigError, match="multiple of 4"):
        Maxout(4)(torch.randn(1, 6))


def test_dropconnect_masks_weights_not_units():
    """With one-hot inputs, each output unit independently keeps or drops its weight from that input."""
    torch.manual_seed(0)
    layer = DropConnectLinear(4, 64, p=0.5, bias=False).train()
    x = F.one_hot(torch.full((500,), 2), 4).float()  # every example reads input 2 only
    u = layer(x)  # (500, 64): each entry is 0 or W[:, 2]
    w = layer.weight[:, 2].detach()
    kept = u.detach() == w
    assert torch.all(kept | (u.detach() == 0))
    assert abs(kept.float().mean().item() - 0.5) < 0.03  # Bernoulli(p) per weight
    # Dropout of input unit 2 would zero all 64 outputs together; here they vary within an example.
    partial = (kept.any(1) & ~kept.all(1)).float().mean().item()
    assert partial > 0.99
    assert not torch.equal(kept[0], kept[1])  # a fresh mask per example


def test_dropconnect_moments_and_mean_field_inference():
    torch.manual_seed(0)
    layer = DropConnectLinear(6, 3, p=0.3)
    v = torch.randn(1, 6)
    samples = layer.masked_preactivation(v.expand(20_000, 6)).detach()  # 20,000 masks of the same input
    mean, var = layer.moments(v)
    w, b = layer.weight.detach(), layer.bias.detach()
    torch.testing.assert_close(mean, 0.3 * (v @ w.T + b))
    torch.testing.assert_close(var, 0.3 * 0.7 * ((v * v) @ (w * w).T + b * b))
    torch.testing.assert_close(samples.mean(0, keepdim=True), mean.detach(), atol=0.02, rtol=0.02)
    torch.testing.assert_close(samples.var(0, keepdim=True), var.detach(), atol=0.02, rtol=0.05)
    # Mean-field inference: exactly a(p (W v + b)), deterministic.
    layer = DropConnectLinear(6, 3, p=0.3, activation=nn.ReLU(), inference="mean").eval()
    out = layer(v)
    torch.testing.assert_close(out, F.relu(0.3 * (v @ layer.weight.T + layer.bias)))
    assert torch.equal(out, layer(v))


def test_dropconnect_gaussian_inference_averages_the_activation_over_the_moment_matched_gaussian():
    """Algorithm 2: E[a(u)], u ~ N(μ, σ²), which for a ReLU is μΦ(μ/σ) + σφ(μ/σ) — not relu(μ)."""
    torch.manual_seed(0)
    layer = DropConnectLinear(8, 4, p=0.5, activation=nn.ReLU(), num_samples=200_000).eval()
    layer.generator = torch.Generator().manual_seed(1)
    v = torch.randn(2, 8)
    with torch.no_grad():
        out = layer(v)
        mu, var = layer.moments(v)
    sigma = var.sqrt()
    z = mu / sigma
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = mu * normal.cdf(z) + sigma * normal.log_prob(z).exp()
    torch.testing.assert_close(out, expected, atol=0.01, rtol=0.01)
    assert not torch.allclose(out, F.relu(mu), atol=0.01)  # differs from mean-field where σ matters
    identity = DropConnectLinear(8, 4, p=0.5, num_samples=200_000).eval()
    with torch.no_grad():
        torch.testing.assert_close(identity(v), identity.moments(v)[0], atol=0.01, rtol=0.01)


def test_dropconnect_exact_gaussian_inference_is_the_limit_of_sampling():
    """inference="gaussian-exact" is Algorithm 2 with Z → ∞: the 200,000-sample average is the oracle."""
    torch.manual_seed(0)
    v = torch.randn(3, 8)
    for activation in (nn.ReLU(), None):
        sampled = DropConnectLinear(8, 5, p=0.5, activation=activation, num_samples=200_000).eval()
        sampled.generator = torch.Generator().manual_seed(1)
        exact = DropConnectLinear(8, 5, p=0.5, activation=activation, inference="gaussian-exact").eval()
        exact.load_state_dict(sampled.state_dict())
        with torch.no_grad():
            out = exact(v)
            torch.testing.assert_close(out, sampled(v), atol=0.01, rtol=0.01)
            assert torch.equal(out, exact(v))  # deterministic
    # σ = 0 (a zero input, no bias): relu(μ) = 0, not 0/0.
    layer = DropConnectLinear(4, 2, activation=nn.ReLU(), inference="gaussian-exact", bias=False).eval()
    assert torch.equal(layer(torch.zeros(1, 4)), torch.zeros(1, 2))
    # It stays differentiable (a distilled or fine-tuned net may back-propagate through inference).
    x = torch.cat([torch.randn(1, 4), torch.zeros(1, 4)]).requires_grad_()
    layer(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    # Sigmoid and tanh have no closed form: refused, pointing at sampling.
    with pytest.raises(ConfigError, match="inference='gaussian'"):
        DropConnectLinear(5, 3, activation=nn.Sigmoid(), inference="gaussian-exact")
    changed = DropConnectLinear(5, 3, activation=nn.Sigmoid()).eval()
    changed.inference = "gaussian-exact"  # set after construction: refused at the forward, not silently linear
    with pytest.raises(ConfigError, match="needs a ReLU"):
        changed(torch.randn(2, 5))
    model = models.create("mlp-800", drop="dropconnect", inference="gaussian-exact").eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_dropconnect_trains_through_the_mask():
    layer = DropConnectLinear(5, 3, per_example=False)
    layer(torch.randn(4, 5)).sum().backward()
    assert layer.weight.grad is not None and (layer.weight.grad == 0).any()  # dropped weights get no gradient
    with pytest.raises(ConfigError, match="gaussian"):
        DropConnectLinear(5, 3, inference="sample")


@pytest.mark.parametrize("p", [0.5, 0.3])  # 0.5 draws its masks as random bits, other p as uniforms below p
def test_dropconnect_mask_groups_give_each_group_of_the_batch_its_own_mask(p):
    """mask_groups=G: the batch cut into G contiguous groups (torch.tensor_split), each through its own masked
    weights. Oracle: the same masks, replayed from the generator's seed, applied one example at a time."""
    torch.manual_seed(0)
    layer = DropConnectLinear(6, 300, p=p, per_example=False, mask_groups=4).train()
    layer.generator = torch.Generator().manual_seed(7)
    x = torch.randn(10, 6, requires_grad=True)  # 10 examples in 4 groups: sizes 3, 3, 2, 2
    out = layer(x)
    replay = DropConnectLinear(6, 300, p=p, per_example=False)
    replay.generator = torch.Generator().manual_seed(7)
    masks = replay._bernoulli((4, 300, 6), layer.weight)  # drawn in the layer's order: weights, then biases
    bias_masks = replay._bernoulli((4, 300), layer.bias)
    group = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    x_ref = x.detach().clone().requires_grad_()
    weight_ref = layer.weight.detach().clone().requires_grad_()
    bias_ref = layer.bias.detach().clone().requires_grad_()
    expected = torch.einsum("boi,oi,bi->bo", masks[group], weight_ref, x_ref) + bias_masks[group] * bias_ref
    torch.testing.assert_close(out, expected)
    out.pow(2).sum().backward()
    expected.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, weight_ref.grad)
    assert abs(masks.mean().item() - p) < 0.02  # Bernoulli(p) per weight, on either path
    assert not torch.equal(masks[0], masks[1])  # the groups' masks differ
    # The draws themselves, from the generator by hand: p = 0.5 takes the bits of uniform bytes, lowest first;
    # other p, uniform floats below p.
    generator = torch.Generator().manual_seed(7)
    if p == 0.5:
        raw = torch.randint(0, 256, (4 * 300 * 6 // 8,), dtype=torch.uint8, generator=generator).tolist()
        by_hand = torch.tensor([(byte >> k) & 1 for byte in raw for k in range(8)], dtype=torch.float32)
    else:
        by_hand = (torch.rand(4 * 300 * 6, generator=generator) < p).float()
    assert torch.equal(masks.flatten(), by_hand)
    # and the bits are fair coins, each position alike and neighbours unrelated (a repeated or stuck bit fails)
    many = replay._bernoulli((400, 300, 6), layer.weight).flatten()  # 720,000 draws: sd of a mean ≈ 0.0006
    positions = many.view(-1, 8).mean(0)
    assert torch.all((positions - p).abs() < 0.01), positions
    neighbours = torch.corrcoef(torch.stack([many[:-1], many[1:]]))[0, 1]
    assert abs(neighbours.item()) < 0.01
    torch.testing.assert_close(layer.bias.grad, bias_ref.grad)
    # One-hot inputs show the sharing: examples of a group keep the same weights, other groups other ones.
    x = F.one_hot(torch.full((8,), 2), 6).float()
    kept = layer(x).detach() != 0  # (8, 300), groups of 2
    assert torch.equal(kept[0], kept[1]) and torch.equal(kept[6], kept[7]) and not torch.equal(kept[1], kept[2])
    # A batch smaller than the groups: one mask per example, and no empty group.
    kept = layer(F.one_hot(torch.full((2,), 2), 6).float()).detach() != 0
    assert kept.shape == (2, 300) and not torch.equal(kept[0], kept[1])


def test_dropconnect_mask_groups_are_checked():
    for groups in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="mask_groups must be a whole number"):
            DropConnectLinear(5, 3, per_example=False, mask_groups=groups)
    with pytest.raises(ConfigError, match="needs per_example=False"):
        DropConnectLinear(5, 3, per_example=True, mask_groups=8)
    with pytest.raises(ConfigError, match="mask_groups is DropConnect's"):
        models.create("mlp-800", drop="dropout", mask_groups=8)
    model = models.create("mlp-800", drop="dropconnect", per_example=False, mask_groups=8).train()
    assert "mask_groups=8" in repr(model.features.fc1)
    model(torch.randn(16, 1, 28, 28)).sum().backward()  # trains a step
    assert model.features.fc1.weight.grad is not None


def test_option_a_shortcut_is_parameter_free_zero_padding_identity():
    shortcut = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4) and sum(p.numel() for p in shortcut.parameters()) == 0
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and torch.equal(y[:, 16:], torch.zeros(2, 16, 4, 4))
    model = models.create("resnet110", device="meta")
    downsamples = [m.downsample for m in model.modules() if getattr(m, "downsample", None) is not None]
    assert len(downsamples) == 2 and all(isinstance(d, ZeroPadShortcut) for d in downsamples)
    b = models.create("resnet110", shortcut="B", device="meta")
    assert _trainable(b) > _trainable(model)  # option B: projections add parameters


def test_mlpconv_and_inception_shapes():
    from cnnlab.layers import Inception, MLPConv

    mlp = MLPConv(3, [8, 6, 4], kernel_size=3, padding=1)
    assert mlp(torch.randn(1, 3, 5, 5)).shape == (1, 4, 5, 5) and mlp.conv1.kernel_size == (1, 1)
    block = Inception(10, 2, 3, 4, 1, 5, 6)
    assert block(torch.randn(1, 10, 7, 7)).shape == (1, 2 + 4 + 5 + 6, 7, 7)


# ---------------------------------------------------------------------------------------------------------------
# GoogLeNet's auxiliary classifiers and OverFeat's dense evaluation.


def test_googlenet_aux_heads_come_only_from_forward_with_aux():
    torch.manual_seed(0)
    model = models.create("googlenet", num_classes=10).eval()
    assert model.aux_loss_weight == 0.3
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits, aux = model.forward_with_aux(x)
        assert isinstance(logits, torch.Tensor) and [a.shape for a in aux] == [(1, 10), (1, 10)]
        torch.testing.assert_close(logits, model(x))
        model.train()
        assert isinstance(model(x), torch.Tensor)  # training mode changes nothing about forward's type
    assert isinstance(model.aux1.pool, nn.AvgPool2d) and model.aux1.pool.kernel_size == 5
    assert models.create("googlenet", aux_logits=False, device="meta").aux_heads == []


def test_overfeat_dense_map_of_class_scores():
    torch.manual_seed(0)
    for name, side, step in (("overfeat-fast", 231, 32), ("overfeat-accurate", 221, 36)):
        model = models.create(name, num_classes=5).eval()
        with torch.no_grad():
            x = torch.randn(1, 3, side, side)
            assert model.forward_dense(x).shape == (1, 5, 1, 1)
            big = torch.randn(1, 3, side + step, side + 2 * step)
            features = model.forward_features(big)
            dense = model.classifier(features)  # what forward_dense(big) computes
            assert dense.shape == (1, 5, 2, 3)  # one score per window position, a `step`-pixel stride apart
            torch.testing.assert_close(model.forward_head(features), dense.amax((2, 3)))  # each class's maximum
            # Offset max pooling (section 3.3): k² pooling offsets interleaved, a score every step/k pixels
            k = model.features[-1].kernel_size
            fine = model.forward_dense(big, offset_pooling=True)
            h, w = fine.shape[2] // k, fine.shape[3] // k
            assert fine.shape[:2] == (1, 5) and (h, w) in ((1, 2), (2, 3))
            torch.testing.assert_close(fine[..., ::k, ::k], dense[..., :h, :w])  # offset (0, 0): the plain grid
            before_pool = model.features[:-1](big)
            shifted = model.classifier(model.features[-1](before_pool[:, :, k - 1 :, 1:]))  # offset (k − 1, 1)
            torch.testing.assert_close(fine[..., k - 1 :: k, 1::k], shifted[..., :h, :w])
        with pytest.raises(InputSizeError, match="Offset max pooling shifts the last pooling"):
            model.forward_dense(torch.randn(1, 3, side, side), offset_pooling=True)


# ---------------------------------------------------------------------------------------------------------------
# torchvision: state dicts with random weights (no network), outputs to 1e-5.


def _tv_kwargs(tv_name: str) -> dict:
    return {"init_weights": True} if tv_name == "googlenet" else {}


def _randomize_batch_norm(model: nn.Module) -> None:
    for m in model.modules():  # torchvision's fresh statistics (0, 1) would hide a swapped buffer
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)


def _round_trip(name: str, side: int = 64, **options) -> None:
    tv_name = models.torchvision_models()[name]
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(tv_name, weights=None, num_classes=10, **_tv_kwargs(tv_name), **options)
    _randomize_batch_norm(theirs)
    ours = models.create(name, num_classes=10, **({"transform_input": True} if options.get("transform_input") else {}))
    models.load_torchvision_state_dict(ours, theirs.state_dict())
    theirs.eval(), ours.eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    return ours, theirs


FAST_SHARED = ["alexnet-tv", "resnet18", "resnet34", "resnet50"]
SLOW_SHARED = [n for n in sorted(models.torchvision_models()) if n not in FAST_SHARED and n != "googlenet-bn"]


@pytest.mark.parametrize("name", FAST_SHARED)
def test_torchvision_state_dict_round_trip(name):
    _round_trip(name, side=64 if name == "alexnet-tv" else 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_SHARED)
def test_torchvision_state_dict_round_trip_big_models(name):
    _round_trip(name, side=32)


def test_torchvision_googlenet_round_trip_with_aux_heads_and_input_transform():
    ours, theirs = _round_trip("googlenet-bn", side=64, transform_input=True)
    features = torch.randn(2, 512, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(ours.aux1(features), theirs.aux1(features), rtol=1e-5, atol=1e-5)
    with torch.device("meta"):
        without_aux = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    with pytest.raises(CheckpointError, match="aux_logits=False"):
        models.load_torchvision_state_dict(models.create("googlenet-bn", device="meta"), without_aux.state_dict())
    no_aux = models.create("googlenet-bn", aux_logits=False, device="meta")
    models.load_torchvision_state_dict(no_aux, without_aux.state_dict())


def test_loading_torchvision_weights_into_the_wrong_model_is_a_clear_error():
    with torch.device("meta"):
        resnet18 = torchvision.models.resnet18(weights=None)
    with pytest.raises(CheckpointError, match="num_classes"):
        models.load_torchvision_state_dict(
            models.create("resnet18", num_classes=10, device="meta"), resnet18.state_dict()
        )
    with pytest.raises(ConfigError, match="'googlenet-bn'"):
        models.load_torchvision_state_dict(models.create("googlenet", device="meta"), {})
    with pytest.raises(ConfigError, match="stride_on='3x3'"):
        models.load_torchvision_state_dict(models.create("resnet50", stride_on="1x1", device="meta"), {})


# ---------------------------------------------------------------------------------------------------------------
# create(name, weights="torchvision"): through torch's hub cache, offline.


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "hub"


def test_weights_offline_say_where_to_put_the_file(hub_dir):
    with pytest.raises(CheckpointError) as error:
        models.create("resnet18", weights="torchvision")
    message = str(error.value)
    assert "Could not download" in message and "no network (test)" in message
    assert str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in message and "torch.hub.get_dir()" in message


def test_weights_are_read_from_the_hub_cache_with_their_preprocessing(hub_dir):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()  # stands in for the real file
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(state, hub_dir / "checkpoints" / "resnet18-f37072fd.pth")
    model = models.create("resnet18", weights="torchvision:IMAGENET1K_V1")
    assert torch.equal(model.fc.weight, state["fc.weight"]) and model.num_classes == 1000
    pre = model.pretrained
    assert (pre.crop_size, pre.resize_size) == (224, 256) and pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert len(pre.categories) == 1000 and pre.categories[0] == "tench"
    assert pre.transforms()(torch.zeros(3, 300, 400, dtype=torch.uint8)).shape == (3, 224, 224)


def test_weights_for_models_without_them_name_those_with_them():
    with pytest.raises(ConfigError, match="'alexnet-tv'.*Models with torchvision weights: alexnet-tv"):
        models.create("alexnet", weights="torchvision")
    with pytest.raises(ConfigError, match="no torchvision weights"):
        models.create("resnet20", weights="torchvision")
    with pytest.raises(ConfigError, match="1000 classes"):
        models.create("resnet18", weights="torchvision", num_classes=10)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        models.create("resnet18", weights="torchvision:NOPE")


# ---------------------------------------------------------------------------------------------------------------
# Export.


def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from cnnlab.export import check_onnx, export_model

    torch.manual_seed(0)
    model = models.create("resnet20")
    path = export_model(model, tmp_path / "resnet20.onnx")
    assert path.exists() and model.training  # the model's mode is restored
    assert check_onnx(model, path, batch_size=3) < 1e-4  # another batch size than the export's example


def test_safetensors_export_round_trip(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_model

    from cnnlab.export import export_model

    model = models.create("lenet5-modern")
    path = export_model(model, tmp_path / "lenet.safetensors", format="safetensors")
    copy = models.create("lenet5-modern")
    load_model(copy, str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), copy.state_dict().values(), strict=True))
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["cnnlab_model"] == "lenet5-modern" and f.metadata()["input_shape"] == "[1, 32, 32]"


def test_export_errors():
    from cnnlab.export import export_model

    with pytest.raises(ConfigError, match="onnx, safetensors"):
        export_model(models.create("lenet5"), "x.pt", format="pt")
    with pytest.raises(InputSizeError):
        export_model(models.create("lenet5"), "x.onnx", input_shape=(1, 8, 8))


# ---------------------------------------------------------------------------------------------------------------
# Benchmark, quick mode.


def test_bench_models_quick_mode_reports_both_and_the_ratio():
    from cnnlab.bench.models import bench_models

    rows = bench_models(["resnet18", "resnet20"], quick=True)
    first, second = rows
    assert first["torchvision"] == "resnet18" and first["input_size"] == (3, 32, 32) and first["batch_size"] == 2
    assert first["ours_images_per_s"] > 0 and first["torchvision_images_per_s"] > 0
    assert math.isclose(first["ratio"], first["ours_images_per_s"] / first["torchvision_images_per_s"])
    assert second["torchvision_images_per_s"] is None and second["ratio"] is None


# ---------------------------------------------------------------------------------------------------------------
# Docs.


@pytest.mark.slow
def test_docs_models_table_is_current():
    """docs/models.md is what scripts/models_table.py generates now (regenerate: ... models_table.py --write)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("models_table", root / "scripts" / "models_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert (root / "docs" / "models.md").read_text() == script.document()


def test_dropconnect_inference_script_compares_the_rules_on_a_trained_run(cli, tmp_path):
    """scripts/dropconnect_inference.py on a real (tiny) DropConnect run: each rule's test error from the same
    best.pt; exact and sampled agree closely, and a run without DropConnect is refused."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "dc"
    options = (
        "--model-option",
        "drop=dropconnect",
        "--model-option",
        "per_example=false",
        "--model-option",
        "samples=20",
    )
    code, _, err = cli("train", "--model", "mlp-800", "--data", "digits", "--epochs", "2", *options, "--out", run)
    assert code == 0, err
    script = [sys.executable, str(root / "scripts" / "dropconnect_inference.py")]
    done = subprocess.run([*script, str(run), "--samples", "300"], capture_output=True, text=True, check=True)
    row = next(line for line in done.stdout.splitlines() if line.startswith("| dc |"))
    errors = [float(cell.split()[0]) for cell in row.strip("|").split("|")[1:]]
    assert len(errors) == 3 and all(0 <= e < 50 for e in errors)  # sampled, exact, mean-field: it learned
    assert abs(errors[0] - errors[1]) <= 1.5  # 300 samples sit close to the closed form
    plain = tmp_path / "plain"
    assert cli("train", "--model", "mlp-800", "--data", "digits", "--epochs", "1", "--out", plain)[0] == 0
    refused = subprocess.run([*script, str(plain)], capture_output=True, text=True)
    assert refused.returncode != 0 and "no DropConnect layers" in refused.stderr


def test_dropconnect_step_time_script_times_every_way_of_drawing_masks():
    """scripts/dropconnect_step_time.py (docs/reproductions.md's cost table) runs and prints a row per mask mode."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "dropconnect_step_time.py"
    args = [sys.executable, str(script), "--rounds", "1", "--batch-size", "4", "--groups", "2,4"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "ms a step" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "No-Drop",
        "Dropout",
        "DropConnect, 1 mask a batch",
        "DropConnect, 2 masks a batch",
        "DropConnect, 4 masks a batch",
        "DropConnect, a mask per example (the paper's)",
    ]
    assert rows[0].endswith("| 1.0 |")  # No-Drop against itself
    refused = subprocess.run([*args[:2], "--groups", "0"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "at least 1" in refused.stderr
