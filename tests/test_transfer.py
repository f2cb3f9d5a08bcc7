"""Transfer learning building blocks: features, channel adaptation, freezing, linear probes."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab import models
from cnnlab.errors import ConfigError, DataError, UnknownNameError
from cnnlab.transfer import (
    PRE_LOGITS,
    adapt_input_channels,
    feature_layers,
    freeze,
    frozen_stages,
    head_and_body_parameters,
    linear_probe,
    load_features,
    save_features,
    stage_features,
)


def test_features_equal_forward_features_pooled():
    model = models.create("lenet5-modern").eval()
    x = torch.randn(4, 1, 32, 32)
    last = model.stage_names[-1]
    expected = F.adaptive_avg_pool2d(model.forward_features(x), 1).flatten(1)
    torch.testing.assert_close(stage_features(model, x, last), expected)
    assert stage_features(model, x, "c1").shape == (4, 6)
    torch.testing.assert_close(
        stage_features(model, x, PRE_LOGITS), model.forward_head(model.forward_features(x), pre_logits=True)
    )
    assert feature_layers(model)[-1] == PRE_LOGITS
    with pytest.raises(UnknownNameError, match="Did you mean 'c3'"):
        stage_features(model, x, "c33")


@pytest.mark.parametrize(("source", "target"), [(3, 1), (1, 3)])
def test_channel_adaptation_preserves_the_response_to_a_grey_image(source, target):
    model = models.create("lenet5-modern", in_chans=source).eval()
    grey = torch.rand(2, 1, 32, 32)
    before = model(grey.expand(2, source, 32, 32))
    note = adapt_input_channels(model, target)
    assert note and "note:" in note and model.in_chans == target
    torch.testing.assert_close(model(grey.expand(2, target, 32, 32)), before, rtol=1e-4, atol=1e-5)


def test_frozen_parameters_do_not_change_after_a_step():
    model = models.create("lenet5-modern")
    model.reset_classifier(5)
    stages = frozen_stages(model, freeze="c3")
    assert stages == ["c1", "s2", "c3"] and frozen_stages(model, train_from="c5") == ["c1", "s2", "c3", "s4"]
    freeze(model, stages)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    head, body = head_and_body_parameters(model)
    optimizer = torch.optim.SGD([{"params": head, "lr": 0.1}, {"params": body, "lr": 0.01}], momentum=0.9)
    F.cross_entropy(model(torch.randn(8, 1, 32, 32)), torch.randint(0, 5, (8,))).backward()
    optimizer.step()
    state = model.state_dict()
    for key, value in snapshot.items():
        frozen = key.startswith(("features.c1", "features.s2", "features.c3"))
        assert torch.equal(state[key], value) == frozen, key
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    with pytest.raises(UnknownNameError, match="Valid stages"):
        frozen_stages(model, freeze="conv9")


def test_batchnorm_statistics_of_frozen_stages_stay():
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = models.create("lenet5-modern")
    model.features.c1.add_module("bn", nn.BatchNorm2d(6))
    freeze(model, ["c1"])
    assert isinstance(model.features.c1.bn, FrozenBatchNorm2d)
    before = model.features.c1.bn.running_mean.clone()
    model.train()
    model(torch.randn(4, 1, 32, 32) * 5 + 3)
    assert torch.equal(model.features.c1.bn.running_mean, before)


def _features(tmp_path, n=200, dim=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    y = np.arange(n) % classes
    x = centres[y] + rng.normal(0, 1, (n, dim))
    return save_features(tmp_path / "f.npz", (x[: n // 2], y[: n // 2]), (x[n // 2 :], y[n // 2 :]), {"layer": "c5"})


@pytest.mark.parametrize("classifier", ["svm", "logreg", "ridge"])
def test_linear_probe_separates_separable_features(tmp_path, classifier):
    result = linear_probe(load_features(_features(tmp_path)), classifier)
    assert result["test_error"] < 0.1 and result["dim"] == 6


def test_bad_features_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_features(tmp_path / "none.npz")
    np.savez(tmp_path / "wrong.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="lacks"):
        load_features(tmp_path / "wrong.npz")
    path = save_features(tmp_path / "one.npz", (np.zeros((4, 2)), np.zeros(4)), (np.zeros((2, 2)), np.zeros(2)), {})
    with pytest.raises(ConfigError, match="one class"):
        load_features(path)
    path = save_features(
        tmp_path / "mismatch.npz", (np.zeros((4, 2)), np.arange(4) % 2), (np.zeros((2, 3)), np.zeros(2)), {}
    )
    with pytest.raises(DataError, match="different widths"):
        load_features(path)
    with pytest.raises(UnknownNameError):
        linear_probe(load_features(_features(tmp_path)), "forest")


def test_finetune_command_freezes_records_and_uses_the_learning_rates(cli, trained_run, tmp_path):
    from cnnlab.train import load_checkpoint

    out = tmp_path / "ft"
    code, stdout, err = cli(
        "finetune",
        trained_run,
        "--data",
        "digits",
        "--freeze",
        "c3",
        "--labels-per-class",
        "5",
        "--epochs",
        "1",
        "--lr-head",
        "0.01",
        "--lr-body",
        "0.002",
        "--device",
        "cpu",
        "--out",
        out,
    )
    assert code == 0, err
    assert "final test error" in stdout
    source, tuned = load_checkpoint(trained_run), load_checkpoint(out)
    record = json.loads((out / "config.json").read_text())
    assert tuned["transfer"]["frozen_stages"] == ["c1", "s2", "c3"]
    assert record["config"]["labels_per_class"] == 5
    for key, value in source["model_state"].items():
        if key.startswith(("features.c1", "features.s2", "features.c3")):
            assert torch.equal(tuned["model_state"][key], value), key  # frozen: bit for bit the source's
    assert not torch.equal(
        tuned["model_state"]["features.c5.conv.weight"], source["model_state"]["features.c5.conv.weight"]
    )
    groups = tuned["train_state"]["parts"]["model"]["optimizer"]["param_groups"]
    assert sorted(g["initial_lr"] for g in groups) == [0.002, 0.01]
    bad = ["--freeze", "c9", "--device", "cpu", "--out", str(tmp_path / "bad")]
    code, _, err = cli("finetune", trained_run, "--data", "digits", *bad)
    assert code == 2 and "Unknown stage 'c9'" in err


def test_bench_transfer_runs_in_quick_mode(cli):
    code, out, err = cli("bench", "transfer", "--quick", "--device", "cpu")
    assert code == 0, err
    assert "linear probe" in out


def test_load_run_weights_takes_all_but_a_reshaped_output_layer(tmp_path, trained_run):
    """A dmnist-cnn trained on the 8 px grey digits, loaded into one for 96 px colour scenes: the convolutions come
    over (the first split over the three channels), the output layer (another input width) stays fresh."""
    from cnnlab.cli import main
    from cnnlab.errors import CheckpointError
    from cnnlab.train.record import RunRecord
    from cnnlab.transfer import load_run_weights

    run = tmp_path / "dmnist"
    assert main(["train", "--model", "dmnist-cnn", "--data", "digits", "--epochs", "1", "--out", str(run)]) == 0
    trained = RunRecord.load(run).build_model()
    target = models.create("dmnist-cnn", in_chans=3, image_size=96)
    fresh_head = target.classifier.y.weight.clone()
    note = load_run_weights(target, run)
    assert "loaded 4 tensors" in note and "output layer" in note and "grey→RGB" in note
    assert torch.equal(target.features.conv1[0].weight, trained.features.conv1[0].weight.repeat(1, 3, 1, 1) / 3)
    assert torch.equal(target.features.conv2[0].weight, trained.features.conv2[0].weight)
    assert torch.equal(target.classifier.y.weight, fresh_head)
    same = models.create("dmnist-cnn", image_size=8)  # same shapes: everything loads, the output layer too
    assert "loaded 6 tensors" in load_run_weights(same, run)
    assert torch.equal(same.classifier.y.weight, trained.classifier.y.weight)

    with pytest.raises(ConfigError, match="trained lenet5, and the model to load into is dmnist-cnn"):
        load_run_weights(models.create("dmnist-cnn"), trained_run)
    fcn = tmp_path / "fcn"
    assert main(["train", "--model", "dmnist-fcn", "--data", "digits", "--epochs", "1", "--out", str(fcn)]) == 0
    with pytest.raises(ConfigError, match="beyond its output layer"):
        load_run_weights(models.create("dmnist-fcn", image_size=28), fcn)
    with pytest.raises(CheckpointError):
        load_run_weights(models.create("dmnist-cnn"), tmp_path / "nothing")
