"""Adversarial examples: each attack's defining property, Goodfellow's objective, the CLI, bad input."""

import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.adversarial import AdversarialObjective, PixelModel, fgsm, fooling_images, lbfgs_attack, pgd
from cnnlab.errors import ConfigError, InputSizeError


def _linear(seed=0, classes=4, pixels=16):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(pixels, classes))
    with torch.no_grad():
        model[1].weight.mul_(10)  # logits that pixel changes can move far: every class is reachable in the box
    return model


def _pixels(n=8, seed=1):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2  # away from 0 and 1


def test_fgsm_is_exactly_eps_times_the_gradient_sign():
    model, x = _linear(), _pixels()
    y = torch.arange(8) % 4
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y).backward()
    adversarial = fgsm(model, x, y, 0.1)
    torch.testing.assert_close(adversarial - x, 0.1 * xr.grad.sign())  # clipping does not bind in [0.2, 0.8]
    clipped = fgsm(model, x, y, 0.5)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert torch.equal(fgsm(model, x, y, 0.0), x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_the_pixel_range(norm):
    model, x = _linear(), torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.arange(8) % 4
    eps = 0.1 if norm == "linf" else 0.5
    adversarial = pgd(model, x, y, eps, steps=20, norm=norm, generator=torch.Generator().manual_seed(0))
    delta = (adversarial - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert torch.all(size <= eps + 1e-6)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adversarial), y) > F.cross_entropy(model(x), y)


def test_targeted_attacks_reach_their_target_on_a_linear_model():
    model, x = _linear(), _pixels()
    y = torch.zeros(8, dtype=torch.long)
    target = torch.full((8,), 2)
    adversarial = pgd(model, x, y, 0.5, steps=50, target=target, random_start=False)
    assert torch.equal(model(adversarial).argmax(1), target)
    found, success = lbfgs_attack(model, x, target, max_iter=30)
    assert success.all() and torch.equal(model(found).argmax(1), target)
    assert found.min() >= 0 and found.max() <= 1
    # Szegedy's search looks for the smallest perturbation: it is no larger than the PGD one reaching the target
    assert (found - x).flatten(1).norm(dim=1).mean() <= (adversarial - x).flatten(1).norm(dim=1).mean()


def test_fooling_images_are_confident_noise():
    model = _linear()
    images, confidence = fooling_images(model, 3, (1, 4, 4), count=4, steps=300, step_size=0.05)
    assert images.shape == (4, 1, 4, 4) and images.min() >= 0 and images.max() <= 1
    assert torch.all(confidence > 0.9)


def test_adversarial_training_loss_equals_the_formula():
    torch.manual_seed(0)
    model = _linear(classes=3)
    mean, std = (0.5,), (0.25,)
    pixels, labels = _pixels(6), torch.tensor([0, 1, 2, 0, 1, 2])
    normalised = (pixels - 0.5) / 0.25
    objective = AdversarialObjective(mean, std, eps=0.25, alpha=0.5)
    loss, logits = objective(model, normalised, labels)
    pixel_model = PixelModel(model, mean, std)
    x_adv = fgsm(pixel_model, pixels, labels, 0.25)
    expected = 0.5 * F.cross_entropy(pixel_model(pixels), labels) + 0.5 * F.cross_entropy(pixel_model(x_adv), labels)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, pixel_model(pixels))


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_adversarial_training_gradient_equals_the_formulas(precision):
    """The fused objective replays the clean loss's parameter gradient; a weighted, scaled backward (as the
    trainer does for accumulation and fp16) must still give the gradient of the formula, x_adv held constant.
    fp16 autocast takes the unfused path (the clean backward would be unscaled there)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 3))
    mean, std = (0.5,), (0.25,)
    pixels, labels = _pixels(6), torch.tensor([0, 1, 2, 0, 1, 2])
    objective = AdversarialObjective(mean, std, eps=0.25, alpha=0.3)
    with torch.autocast("cpu", dtype=torch.float16, enabled=precision == "float16"):
        loss, _ = objective(model, (pixels - 0.5) / 0.25, labels)
    (loss * 8.0).backward()  # a loss-scaler factor × an accumulation share
    fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    pixel_model = PixelModel(model, mean, std)
    with torch.autocast("cpu", dtype=torch.float16, enabled=precision == "float16"):
        x_adv = fgsm(pixel_model, pixels, labels, 0.25)
        expected = 0.3 * F.cross_entropy(pixel_model(pixels), labels) + 0.7 * F.cross_entropy(
            pixel_model(x_adv), labels
        )
    torch.testing.assert_close(loss.float(), expected.float())
    (expected * 8.0).backward()
    for got, want in zip(fused, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3 if precision == "float16" else 1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("in_chans", "stride", "padding", "dilation", "groups"),
    [(1, 1, 0, 1, 1), (1, 1, 2, 1, 1), (2, 1, 2, 1, 2), (2, 2, 1, 1, 1), (2, 1, 1, 2, 1), (2, 3, 0, 1, 2)],
)
def test_input_gradient_of_the_first_convolution_equals_autograds(in_chans, stride, padding, dilation, groups):
    """The objective computes ∇x of convolutions that read the input outside autograd (a CPU speed path);
    here the input also reaches the output directly, so the two contributions must add up."""
    from cnnlab.adversarial.objective import _InputConvTap

    torch.manual_seed(0)
    conv = nn.Conv2d(in_chans, 4, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = conv, nn.LazyLinear(3)

        def forward(self, x):
            return self.head(torch.cat([self.conv(x).relu().flatten(1), x.flatten(1)], 1))

    model, x, y = Model(), torch.randn(5, in_chans, 11, 11), torch.tensor([0, 1, 2, 0, 1])
    model(x)  # materialise the lazy layer
    reference = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(F.cross_entropy(model(reference), y), reference)
    x = x.requires_grad_(True)
    with _InputConvTap(model, x) as tap:
        loss = F.cross_entropy(model(x), y)
    assert tap.convs == [conv]
    direct, *outputs = torch.autograd.grad(loss, [x, *tap.outputs])
    torch.testing.assert_close(tap.input_gradient(direct, outputs), want)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m, x, y: fgsm(m, x, y, -0.1), ConfigError, "ε must be a number ≥ 0"),
        (lambda m, x, y: fgsm(m, x, y, 1.5), ConfigError, "beyond the pixel range"),
        (lambda m, x, y: fgsm(m, x * 4 - 2, y, 0.1), ConfigError, r"pixels in \[0, 1\]"),
        (lambda m, x, y: fgsm(m, x[0], y, 0.1), InputSizeError, r"batch \(B, C, H, W\)"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, target=torch.full_like(y, 9)), ConfigError, "out of range"),
        (lambda m, x, y: pgd(m, x, y, 0.1, norm="l1"), ConfigError, "norm must be"),
    ],
)
def test_bad_inputs(call, error, message):
    with pytest.raises(error, match=message):
        call(_linear(), _pixels(), torch.zeros(8, dtype=torch.long))


def test_a_model_without_input_gradients_is_reported():
    class Detached(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3) + x.detach().mean()

    with pytest.raises(ConfigError, match="no gradient"):
        fgsm(Detached(), _pixels(), torch.zeros(8, dtype=torch.long), 0.1)


def test_attack_table_at_zero_equals_eval(cli, trained_run, tmp_path):
    _, evaluation, _ = cli("eval", trained_run, "--device", "cpu")
    code, out, err = cli("attack", trained_run, "--eps", "0,0.1", "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    accuracy = re.search(r"accuracy ([\d.]+)%", evaluation).group(1)
    row = next(line for line in out.splitlines() if line.strip().startswith("0.000"))
    assert row.split()[1] == f"{accuracy}%"
    assert (tmp_path / "robustness.png").exists() and (tmp_path / "examples.png").exists()
    code, _, err = cli("attack", trained_run, "--eps", "-1", "--device", "cpu")
    assert code == 2 and "ε must be" in err
    code, _, err = cli("attack", trained_run, "--target", "12", "--device", "cpu")
    assert code == 2 and "out of range" in err
    code, out, _ = cli(
        "fool", trained_run, "--class", "4", "--count", "2", "--device", "cpu", "--out", tmp_path / "f.png"
    )
    assert code == 0 and (tmp_path / "f.png").exists() and "'4'" in out


def test_fooling_figure_is_titled_with_each_images_confidence(tmp_path):
    from PIL import Image

    from cnnlab.adversarial.runs import fooling_figure
    from cnnlab.outputs import write_picture

    images = torch.rand(3, 1, 8, 8)
    figure = fooling_figure(images, [0.991, 0.5, 0.25], "seven", "lenet5: noise towards class 7 (seven)", first=64)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["#65: 99.1%", "#66: 50.0%", "#67: 25.0%"]
    assert "lenet5: noise towards class 7 (seven)" in figure.get_suptitle()
    assert "p(seven)" in figure.get_suptitle()
    for name in ("f.png", "f.jpg"):  # any format Pillow writes, as --out allows
        with Image.open(write_picture(figure, tmp_path / name)) as image:
            assert image.format == ("PNG" if name.endswith("png") else "JPEG") and image.width > 200


def test_adversarial_training_from_the_command_line(cli, tmp_path):
    code, out, err = cli(
        "train",
        "--model",
        "lenet5-modern",
        "--epochs",
        "1",
        "--adversarial",
        "fgsm",
        "--adv-eps",
        "0.1",
        "--out",
        tmp_path / "adv",
    )
    assert code == 0, err
    assert "final test error" in out
    assert json.loads((tmp_path / "adv" / "config.json").read_text())["config"]["adversarial"] == "fgsm"
    code, _, err = cli("train", "--adversarial", "fgsm", "--adv-eps", "2", "--out", tmp_path / "bad")
    assert code == 2 and "--adv-eps must be in [0, 1]" in err


def test_bench_adversarial_runs_in_quick_mode(cli):
    code, out, err = cli("bench", "adversarial", "--quick", "--device", "cpu")
    assert code == 0, err
    assert "FGSM (ε = 0.25) over 1,000 images" in out and re.search(r"ratio \d+\.\d\d×", out)
