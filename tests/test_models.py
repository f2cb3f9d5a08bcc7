"""The registry and the model contract, for every registered model."""

import pytest
import torch
from torch import nn

from cnnlab import models
from cnnlab.errors import ConfigError, InputSizeError, UnknownNameError
from cnnlab.layers import Maxout, SpatialTransformer


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread (after conftest's two): at batch 2 and 16–64 px the ops are too small to split, and
    OpenMP's spinning threads made this file 2–5× slower whenever the two cores were shared with other jobs."""
    torch.set_num_threads(1)


ALL_MODELS = models.list_models()  # aliases (vgg16 = vgg-d ...) build the same models and are tested once

# Sides at which a model's auxiliary classifiers run too (the shape probe only checks ``forward``): GoogLeNet's
# paper heads pool inception 4a's 14×14 map 5×5/3 to 4×4 for a 2048-wide layer, which only 224-ish inputs give.
AUX_SIDE = {"googlenet": 224}


def _test_side(name: str) -> tuple[int, int, int]:
    """The model's own input if it only takes that, else the smallest of 16, 32, 64, 128 px that it takes and
    that is at least 1/7 of its own size (ImageNet models: 32 px).

    The zoo at its ImageNet sizes would take minutes on two CPU cores; small inputs still run every layer (the
    stage shapes at the real sizes are checked on meta tensors in test_zoo.py). Below 1/7, an ImageNet ResNet's
    last two stages see 1×1 maps, where batch norm over a batch of two normalises pairs of numbers to ±1 and
    the gradients of resnet152 overflow.
    """
    info = models.get_model_info(name)
    c, h, w = info.input_size
    if info.fixed_input_size:
        return c, h, w
    model = models.create(name, device="meta")
    for side in (16, 32, 64, 128):
        if side < h // 7:
            continue
        try:
            models.trace(model, (c, side, side))  # one shape-only pass on meta tensors
            return c, side, side
        except Exception:  # the probe's failure: some layer cannot take this size
            continue
    return c, h, w


def _max_abs(t: torch.Tensor) -> float:
    return torch.linalg.vector_norm(t, float("inf")).item()  # NaN if any NaN, inf if any inf


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_and_contract(name):
    """Forward, backward (every parameter gets a finite, non-zero gradient), and the model contract.

    One model per test: building the 100M-parameter models dominates the cost of this file.
    """
    torch.manual_seed(0)
    _, h, w = _test_side(name)
    model = models.create(name, num_classes=7, in_chans=3)
    x = torch.randn(2, 3, h, w)
    for module in model.modules():
        if isinstance(module, SpatialTransformer):
            # The regressor of θ starts at zero weights (the identity, as the paper initialises it), so the
            # localisation net gets its first gradient only after one step has moved them: take that step's place.
            nn.init.normal_(module.regressor.weight, std=1e-3)

    # Training step, as the training objective runs it (with the auxiliary heads where the model has them).
    model.train()
    if model.aux_heads:  # the contract says which models have auxiliary classifiers
        side = AUX_SIDE.get(name, h)
        logits, aux = model.forward_with_aux(torch.randn(2, 3, side, side))
        assert len(aux) == 2 and all(a.shape == (2, 7) for a in aux)
        loss = logits.logsumexp(1).sum() + sum(a.logsumexp(1).sum() for a in aux)
    else:
        logits = model(x)
        loss = logits.logsumexp(1).sum()
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            largest = _max_abs(p.grad)
            assert largest == largest and largest != float("inf"), f"{pname} has a non-finite gradient"
            assert largest > 0, f"{pname} received a zero gradient"

    # Contract, in eval mode, from one forward pass (the features captured on the way); every ReLU a module of
    # its own, not in-place, called once per pass (attribution hooks need that).
    model.eval()
    relus = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    assert all(not m.inplace for _, m in relus)
    calls: dict[str, int] = {}
    captured: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls.get(n, 0) + 1)) for n, m in relus]
    handles.append(model.features.register_forward_hook(lambda _m, _i, out: captured.append(out)))
    with torch.no_grad():
        out = model(x)
    for handle in handles:
        handle.remove()
    assert all(count == 1 for count in calls.values()), {n: k for n, k in calls.items() if k != 1}
    (features,) = captured
    with torch.no_grad():
        if type(model).forward_features is not models.ClassifierModel.forward_features:
            torch.testing.assert_close(model.forward_features(x), features, rtol=0, atol=0, equal_nan=True)
        # Untrained deep ResNets overflow in eval mode (batch norm at its initial statistics): NaN == NaN here.
        torch.testing.assert_close(model.forward_head(features), out, rtol=0, atol=0, equal_nan=True)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        assert model.stage_names and all(isinstance(model.get_stage(s), nn.Module) for s in model.stage_names)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model.forward_head(features).shape == (2, 3)
        model.train()
        assert model.forward_head(features).shape == (2, 3)  # same output type in train mode
        if model.aux_heads:  # the contract says which models have auxiliary classifiers
            assert isinstance(model(x), torch.Tensor)  # forward never returns the auxiliary outputs


@pytest.mark.parametrize("name", ALL_MODELS)
def test_registered_parameter_count(name):
    info = models.get_model_info(name)
    model = models.create(name, device="meta")
    if info.param_count is not None:
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == info.param_count


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ConfigError, match="already registered"):
        models.register_model("lenet5", paper="x", year=2000, input_size=(1, 32, 32))(lambda **kw: None)


def test_builder_must_take_num_classes_and_in_chans():
    with pytest.raises(ConfigError, match="must accept"):
        models.register_model("bad-builder", paper="x", year=2000, input_size=(1, 8, 8))(lambda *, depth=1: None)
    assert "bad-builder" not in models.list_models()


def test_unknown_model_suggests_the_closest():
    with pytest.raises(UnknownNameError) as info:
        models.create("lenet")
    assert "lenet5" in info.value.suggestions and "Valid models" in str(info.value)


def test_unknown_option_and_bad_counts_are_errors():
    with pytest.raises(ConfigError, match="has no option 'depth'.*head='rbf'"):
        models.create("lenet5", depth=3)
    with pytest.raises(ConfigError, match="num_classes must be a positive integer"):
        models.create("lenet5", num_classes=0)


def test_list_models_pattern():
    assert models.list_models("lenet*") == ["lenet5", "lenet5-modern"]
    assert models.list_models("nothing*") == []
    assert models.list_models("vgg1*") == []
    assert "vgg16" in models.list_models("vgg1*", include_aliases=True)


def test_aliases_build_the_same_model_under_its_canonical_name():
    info = models.get_model_info("vgg16_bn")
    assert info.name == "vgg-d-bn" and info.aliases == ("vgg16_bn",)
    model = models.create("vgg16", device="meta")
    assert model.model_name == "vgg-d"
    with pytest.raises(ConfigError, match="already registered"):
        models.register_model("vgg11", paper="x", year=2000, input_size=(3, 8, 8))(
            lambda *, num_classes, in_chans: None
        )


def test_input_too_small_names_the_layer_and_the_minimum():
    model = models.create("lenet5-modern")
    with pytest.raises(InputSizeError, match=r"layer 'features.c3.conv'.*smallest input it accepts is 1×32×32"):
        models.check_input_shape(model, (1, 12, 12))


def test_fixed_size_model_refuses_larger_inputs_clearly():
    with pytest.raises(InputSizeError, match=r"at layer 'f6.fc'.*takes exactly 1×32×32"):
        models.check_input_shape(models.create("lenet5"), (1, 40, 40))


def test_channel_mismatch_is_reported():
    with pytest.raises(InputSizeError, match="3 channel.*built for 1"):
        models.check_input_shape(models.create("lenet5"), (3, 32, 32))


def test_smallest_input_size_is_exact():
    model = models.create("lenet5-modern")
    assert models.smallest_input_size(model, 1) == 32


# Models with nothing spatially local before their first global layer: a fully connected first layer, or a spatial
# transformer (its output pixel reads wherever θ, computed from the whole image, points).
# fully connected from the input, transformers that see the whole image, and fractional pooling (whose regions
# depend on the whole map's size, so a crop cannot be pooled as the full map is)
NOT_LOCAL = {"dmnist-fcn", "st-cnn", "st-cnn-addition", "st-fcn", "mlp-800", "mlp-1024", "fmp-cnn"}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_incremental_forward_equals_the_plain_forward(name):
    """Occlusion's incremental inference: copies of an image with a square hidden somewhere (corners, edges,
    middle, one copy left clean) give the model's own outputs, computing the early stages on crops only."""
    from cnnlab.inspect.incremental import IncrementalForward
    from cnnlab.inspect.occlusion import inference_copy

    torch.manual_seed(0)
    c, h, w = _test_side(name)
    model = models.create(name).eval()
    with torch.no_grad():  # BN statistics away from the identity (and deep ResNets kept finite)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(1.0, 2.0), m.weight.uniform_(0.3, 0.8)
    x = torch.randn(c, h, w)
    size = max(2, h // 5)
    copies = [x.clone()]
    for r, col in ((0, 0), (h - size, w - size), (h // 2 - size // 2, w // 3), (0, w - size - 1)):
        hidden = x.clone()
        hidden[:, r : r + size, col : col + size] = 0.0
        copies.append(hidden)
    batch = torch.stack(copies)
    # full_fraction > 1: crops wherever the network is spatially local, however large (test every segment)
    runner = IncrementalForward(inference_copy(model), x, full_fraction=1.01)
    with torch.no_grad():
        expected = model(batch)
        got = runner(batch)
    if any(isinstance(m, Maxout) for m in model.modules()):  # its Python control flow: torch.fx cannot trace it
        assert not runner.enabled and "control flow" in runner.reason
    elif name in NOT_LOCAL:
        pass  # only the outputs must agree (below): the whole network is recomputed
    else:
        assert runner.enabled and sum(s.geometry is not None for s in runner.segments) >= 3, runner.describe()
    scale = 1 + expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-4 * scale
