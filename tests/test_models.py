"""The registry and the model contract, for every registered model."""

import pytest
import torch
from torch import nn

from cnnlab import models
from cnnlab.errors import ConfigError, InputSizeError, UnknownNameError

ALL_MODELS = models.list_models()


def _small_input(name: str, in_chans: int | None = None, batch: int = 2) -> torch.Tensor:
    c, h, w = models.get_model_info(name).input_size
    return torch.randn(batch, in_chans or c, h, w)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, in_chans=3)
    x = _small_input(name, in_chans=3)
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, f"{pname} received a zero gradient"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_contract(name):
    model = models.create(name).eval()
    x = _small_input(name)
    features = model.forward_features(x)
    assert torch.equal(model.forward_head(features), model(x))
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    assert model.stage_names and all(isinstance(model.get_stage(s), nn.Module) for s in model.stage_names)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.train()
    assert model(x).shape == (2, 3)  # same output type in train mode


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
