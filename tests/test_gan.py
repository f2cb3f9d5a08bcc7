"""GANs (issue 18): the DCGAN and 2014 MLP nets against their tables and init, the GAN task trained by the engine
with exact resume and failure detection, the sample / interpolate / measure workflows and the `cnnlab gan` command.

Fast by design: the bundled 8×8 digits upscaled to 28 px, a dozen steps per run, random tensors elsewhere."""

import copy
import importlib.util
import json
import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnlab import generative, models
from cnnlab.errors import CheckpointError, ConfigError, NonFiniteLossError, UnknownNameError
from cnnlab.generative import GANTask, diagnose
from cnnlab.models.dcgan import DCGAN
from cnnlab.train import load_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # small ops; the two cores are shared with other jobs


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---- the nets ---------------------------------------------------------------------------------------------------
def _dcgan_counts(size: int, channels: int, z_dim: int = 100) -> tuple[int, int]:
    """(generator, discriminator) parameters from the table alone: 4×4 kernels, no bias before batch norm (2 per
    channel), a bias on the layers without it."""
    base, widths = DCGAN[size]
    g = z_dim * widths[0] * base * base + 2 * widths[0]  # project + BN
    g += sum(a * b * 16 + 2 * b for a, b in pairwise(widths))  # up-sampling + BN
    g += widths[-1] * channels * 16 + channels  # output, with bias
    reverse = widths[::-1]
    d = channels * reverse[0] * 16 + reverse[0]  # conv1, with bias, no BN
    d += sum(a * b * 16 + 2 * b for a, b in pairwise(reverse))
    d += widths[0] * base * base + 1  # head: a base×base conv to one logit
    return g, d


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes_and_parameter_counts(size, channels):
    generator, discriminator = generative.build_gan("dcgan", size, channels, device="meta")
    assert (_trainable(generator), _trainable(discriminator)) == _dcgan_counts(size, channels)
    with torch.device("meta"):
        images = generator(torch.zeros(5, 100))
        assert images.shape == (5, channels, size, size)
        assert generator(torch.zeros(5, 100, 1, 1)).shape == images.shape  # (B, z) or (B, z, 1, 1)
        assert discriminator(images).shape == (5, 1)
        features = discriminator.forward_features(images)
        assert discriminator.forward_head(features, pre_logits=True).shape == (5, discriminator.num_features)
    info = models.get_model_info(f"dcgan-discriminator-{size}")
    default = models.create(info.name, device="meta")
    assert _trainable(default) == info.param_count == _dcgan_counts(size, info.input_size[0])[1]


def test_dcgan_layers_follow_the_papers_guidelines():
    generator, discriminator = generative.build_gan("dcgan", 64, 3)
    g_stages, d_stages = list(generator.stages), list(discriminator.features)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g_stages[-1].modules())  # none on G's output
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d_stages[0].modules())  # none on D's input
    assert all(any(isinstance(m, nn.BatchNorm2d) for m in s.modules()) for s in g_stages[:-1] + d_stages[1:])
    assert isinstance(g_stages[-1][-1], nn.Tanh) and all(isinstance(s[-1], nn.ReLU) for s in g_stages[:-1])
    assert all(isinstance(s[-1], nn.LeakyReLU) and s[-1].negative_slope == 0.2 for s in d_stages)
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (2, 2) for c in convs[:-1]) and not any(isinstance(m, nn.MaxPool2d | nn.Linear)
                                                                      for m in discriminator.modules())  # fmt: skip


def test_dcgan_initialisation_statistics():
    torch.manual_seed(0)
    generator, discriminator = generative.build_gan("dcgan", 64, 3)
    for net in (generator, discriminator):
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.weight.numel() > 10_000:
                w = m.weight.detach()
                assert abs(w.mean().item()) < 0.002 and abs(w.std().item() - 0.02) < 0.001, name
            if isinstance(m, nn.BatchNorm2d):
                assert abs(m.weight.mean().item() - 1) < 0.01 and 0.01 < m.weight.std().item() < 0.03, name
                assert torch.all(m.bias == 0)
            if getattr(m, "bias", None) is not None:
                assert torch.all(m.bias == 0), name


def test_the_2014_mlp_nets():
    generator, discriminator = generative.build_gan("mlp", 28, 1)
    g = 100 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 784 + 784
    d = (784 * 1200 + 1200) + (240 * 1200 + 1200) + (240 + 1)  # maxout 240 × 5 pieces twice, one logit
    assert (_trainable(generator), _trainable(discriminator)) == (g, d) and d == models.get_model_info(
        "gan-mlp-discriminator"
    ).param_count
    images = generator(torch.randn(4, 100))
    assert images.shape == (4, 1, 28, 28) and images.min() >= 0 and images.max() <= 1  # sigmoid
    assert discriminator(images).shape == (4, 1) and discriminator.num_features == 240
    with pytest.raises(ConfigError, match="makes 28 px images"):
        generative.build_gan("mlp", 32, 1)
    # the pylearn2 file's initialisation: weights uniform in ±0.05 (generator) and ±0.005 (discriminator), biases 0
    for net, init_range in ((generator, 0.05), (discriminator, 0.005)):
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                assert 0.9 * init_range < m.weight.abs().max() <= init_range and torch.all(m.bias == 0)
                assert m.weight.std().item() == pytest.approx(init_range / 3**0.5, rel=0.05)  # uniform's sd
    means = torch.rand(1, 28, 28)
    generator.init_output_bias_(means)
    torch.testing.assert_close(generator(torch.zeros(1, 100)), means.clamp(1e-3, 1 - 1e-3)[None], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="one mean per output pixel"):
        generator.init_output_bias_(torch.rand(3, 28, 28))


def test_the_2014_discriminator_objective_is_half_the_sum():
    """AdversaryCost2's d_obj = 0.5·(CE(real) + CE(fake)): the step scales, the reported loss does not."""
    generator, discriminator = generative.build_gan("mlp", 28, 1)
    real = torch.rand(4, 1, 28, 28)
    results = {}
    for scale in (1.0, 0.5):
        task = generative.GANTask(generator, discriminator, d_loss_scale=scale)
        torch.manual_seed(0)  # the same noise and dropout masks for both
        loss, sums = task.loss("discriminator", task.models, (real, None))
        results[scale] = (loss.item(), sums["d_loss"].item())
    assert results[0.5][0] == pytest.approx(0.5 * results[1.0][0]) and results[0.5][1] == results[1.0][1]
    with pytest.raises(ConfigError, match="d_loss_scale must be a positive factor"):
        generative.GANTask(generator, discriminator, d_loss_scale=0)


def test_generator_registry():
    assert generative.list_generators("dcgan*") == ["dcgan-generator-28", "dcgan-generator-32", "dcgan-generator-64"]
    with pytest.raises(ConfigError, match="already registered"):
        generative.register_generator(generative.GENERATORS["gan-mlp-generator"])
    with pytest.raises(UnknownNameError, match="dcgan-generator-64"):
        generative.create_generator("dcgan-generator-46")
    with pytest.raises(ConfigError, match="28 or 32 or 64"):
        generative.generator_name("dcgan", 48)
    with pytest.raises(UnknownNameError):
        generative.generator_name("stylegan", 64)
    with pytest.raises(ConfigError, match="channels must be"):
        generative.create_generator("dcgan-generator-32", channels=0)


# ---- the task -------------------------------------------------------------------------------------------------
def test_diagnosis_names_the_failure():
    assert diagnose(0.6, 1.5) is None
    assert "discriminator wins" in diagnose(0.01, 6.0)
    assert "non-finite" in diagnose(float("nan"), 1.0)
    task = GANTask(*generative.build_gan("dcgan", 28, 1, z_dim=8))
    row = task.train_metrics({"d_loss": 0.32, "g_loss": 320.0, "d_real": 31.9, "d_fake": 0.1}, 32)
    assert row["train_d_wins"] == 1.0 and "discriminator wins" in task.epoch_text(row)
    healthy = task.train_metrics({"d_loss": 32.0, "g_loss": 64.0, "d_real": 20.0, "d_fake": 10.0}, 32)
    assert healthy["train_d_wins"] == 0.0 and "[" not in task.epoch_text(healthy)


def test_reuse_fakes_is_the_pytorch_examples_step():
    """With reuse_fakes, one engine step (the discriminator's part, then the generator's, as the Trainer runs them)
    equals the pytorch/examples DCGAN iteration on the same noise, with one generator pass instead of two."""
    torch.manual_seed(0)
    generator, discriminator = generative.build_gan("dcgan", 28, 1, z_dim=8)
    plain_g, plain_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    real = torch.rand(16, 1, 28, 28) * 2 - 1
    passes = []
    generator.register_forward_hook(lambda *_: passes.append(1))
    task = GANTask(generator, discriminator, reuse_fakes=True)
    optimisers = {name: torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
                  for name, net in task.models.items()}  # fmt: skip
    torch.manual_seed(5)
    for part in ("discriminator", "generator"):
        optimisers[part].zero_grad()
        loss, _ = task.loss(part, task.models, (real, None))
        loss.backward()
        optimisers[part].step()
    assert len(passes) == 1 and not task._fakes

    opt_d = torch.optim.Adam(plain_d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(plain_g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    torch.manual_seed(5)
    fake = plain_g(torch.randn(16, 8))
    plain_d.zero_grad()
    (bce(plain_d(real).view(-1), torch.ones(16)) + bce(plain_d(fake.detach()).view(-1), torch.zeros(16))).backward()
    opt_d.step()
    plain_g.zero_grad()
    bce(plain_d(fake).view(-1), torch.ones(16)).backward()
    opt_g.step()
    for ours, theirs in ((generator, plain_g), (discriminator, plain_d)):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), name

    default = GANTask(*generative.build_gan("dcgan", 28, 1, z_dim=8))  # algorithm 1: new noise, a second pass
    calls = []
    default.models["generator"].register_forward_hook(lambda *_: calls.append(1))
    for part in ("discriminator", "generator"):
        default.loss(part, default.models, (real, None))[0].backward()
    assert len(calls) == 2


class _IgnoresZ(nn.Module):
    """A generator forced to collapse: one learned image whatever z is (plus a trace of z, far below pixel scale)."""

    z_dim, output_range = 8, (-1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.image = nn.Parameter(torch.rand(1, 1, 28, 28) * 2 - 1)
        self.mix = nn.Linear(8, 28 * 28)

    def forward(self, z):
        return (self.image + 1e-3 * self.mix(z.reshape(len(z), -1)).view(-1, 1, 28, 28)).clamp(-1, 1)


def _digits(split: str, count: int = 64, offset: int = 0) -> torch.Tensor:
    """``count`` digits images evenly spaced through a split, at 28 px in [-1, 1] (the DCGAN's range)."""
    from cnnlab.data import load_dataset

    images = getattr(load_dataset("digits"), split).images
    index = torch.linspace(0, len(images) - 1 - offset, count).round().long() + offset
    x = images[index].float() / 255 * 2 - 1
    return torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)


def test_mode_collapse_is_detected_and_named():
    real = _digits("test")
    task = GANTask(_IgnoresZ(), generative.build_gan("dcgan", 28, 1, z_dim=8)[1])
    task.reference = real  # what evaluate() would read from the run's test split
    row = task.evaluate(task.models, run=None, distributed=False)
    assert row["mode_collapse"] == 1.0 and row["sample_twins"] == 1.0 and row["sample_diversity"] < 0.01
    losses = task.train_metrics({"d_loss": 32.0, "g_loss": 64.0, "d_real": 20.0, "d_fake": 10.0}, 32)
    assert "[mode collapse: 64 of 64 fixed-noise samples have a near-copy" in task.epoch_text({**losses, **row})
    # real-like, diverse samples: other real images (the training split) score like real data and are not flagged
    diversity, twins = generative.sample_diversity(_digits("train", offset=3), real)
    assert 0.8 < diversity < 1.2 and twins <= 0.1
    assert generative.diagnose_collapse(diversity, twins) is None
    # partial collapse: a third of the samples one image (twins), or every sample a blend near the mean (spread)
    third = _digits("train", offset=3).clone()
    third[:22] = third[0]
    diversity, twins = generative.sample_diversity(third, real)
    assert diversity > 0.5 and twins >= 22 / 64 and "mode collapse" in generative.diagnose_collapse(diversity, twins)
    blurred = 0.3 * _digits("train", offset=3) + 0.7 * real.mean(0, keepdim=True)
    diversity, twins = generative.sample_diversity(blurred, real)
    assert diversity < 0.5 and generative.diagnose_collapse(diversity, twins) is not None
    with pytest.raises(ValueError):
        generative.sample_diversity(real[:1], real)


GIVEN = {"data": "digits", "epochs": 1, "batch_size": 128, "device": "cpu", "seed": 3, "checkpoint_every": 4,
         "keep_last": 10, "log_every": 2}  # fmt: skip


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    """A DCGAN trained on the digits (28 px): 1 epoch of 12 steps, a checkpoint every 4."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("gan") / "run"
    tensorboard = importlib.util.find_spec("tensorboard") is not None  # then the grid goes there too
    result = generative.train_gan({**GIVEN, "out": str(out), "tensorboard": tensorboard}, z_dim=16)
    assert len(result.history) == 1 and result.trainer.step == 12
    return out


def test_a_gan_run_has_its_record_and_a_sample_grid_per_epoch(gan_run):
    names = {p.name for p in gan_run.iterdir()}
    assert {"checkpoint.pt", "config.json", "metrics.csv", "summary.json", "samples"} <= names
    assert "best.pt" not in names  # no selection: GAN losses do not rank samples
    grid = Image.open(gan_run / "samples" / "epoch001.png")
    assert grid.size == (2 * (1 + 8 * 29), 2 * (1 + 8 * 29))  # 8×8 tiles of 28 px, 1 px apart, ×2
    payload = load_checkpoint(gan_run)
    assert payload["task"] == "gan" and payload["gan"] == {"arch": "dcgan", "size": 28, "channels": 1, "z_dim": 16,
                                                  "reuse_fakes": False, "coverage_run": None}  # fmt: skip
    assert set(payload["model_states"]) == {"discriminator"} and payload["config"]["model"] == "dcgan-generator-28"
    assert payload["config"]["optimizer"] == "adam" and payload["config"]["momentum"] == 0.5
    assert {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake", "train_d_wins", "sample_diversity",
            "sample_twins", "mode_collapse"} <= set(payload["history"][0])  # fmt: skip
    summary = json.loads((gan_run / "summary.json").read_text())
    assert summary["last"]["mode_collapse"] in (0.0, 1.0) and 0 <= summary["last"]["sample_twins"] <= 1
    assert "mode_collapse" in (gan_run / "metrics.csv").read_text().splitlines()[0]
    assert payload["train_state"]["task_state"]["fixed_noise"].shape == (64, 16)
    if (gan_run / "tensorboard").exists():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(gan_run / "tensorboard"))
        events.Reload()
        assert events.Tags()["images"] == ["samples/fixed_noise"]
        assert {"epoch/train_d_loss", "epoch/train_d_wins", "train/generator_loss"} <= set(events.Tags()["scalars"])


def test_a_gan_resumes_bit_exactly_with_its_fixed_noise(gan_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(gan_run, copy)
    step4 = copy / "checkpoints" / "step000000004.pt"
    with pytest.raises(ConfigError, match="--size cannot change"):
        generative.train_gan({**GIVEN, "out": str(copy)}, size=32, resume=str(step4))
    with pytest.raises(ConfigError, match="--reuse-fakes cannot change"):
        generative.train_gan({**GIVEN, "out": str(copy)}, reuse_fakes=True, resume=str(step4))
    resumed = generative.train_gan({**GIVEN, "out": str(copy)}, resume=str(step4))
    assert resumed.resumed_at == (0, 4) and resumed.trainer.step == 12
    straight = load_checkpoint(gan_run)
    again = load_checkpoint(copy)
    for key in ("model_state",):
        for name, value in straight[key].items():
            assert torch.equal(value, again[key][name]), name
    for name, value in straight["model_states"]["discriminator"].items():
        assert torch.equal(value, again["model_states"]["discriminator"][name]), name
    noise = [p["train_state"]["task_state"]["fixed_noise"] for p in (straight, again)]
    assert torch.equal(*noise)
    same = ("train_d_loss", "train_g_loss", "train_d_real", "train_d_fake", "sample_diversity", "sample_twins")
    assert [straight["history"][0][k] for k in same] == [again["history"][0][k] for k in same]
    a = np.asarray(Image.open(gan_run / "samples" / "epoch001.png"))
    b = np.asarray(Image.open(copy / "samples" / "epoch001.png"))
    assert np.array_equal(a, b)  # the same z, the same weights: the same grid


def test_a_diverging_gan_stops_and_names_the_loss(tmp_path, monkeypatch):
    real_loss = GANTask.loss

    def nan_in_g(self, part, nets, batch):
        loss, sums = real_loss(self, part, nets, batch)
        return (loss * float("nan"), sums) if part == "generator" else (loss, sums)

    monkeypatch.setattr(GANTask, "loss", nan_in_g)
    with pytest.raises(NonFiniteLossError, match="GAN diverged.*generator's loss"):
        generative.train_gan({**GIVEN, "out": str(tmp_path / "nan"), "log_every": 1}, z_dim=8)
    assert '"status": "non-finite loss"' in (tmp_path / "nan" / "summary.json").read_text()


@pytest.mark.parametrize(("arch", "low", "high"), [("dcgan", -1.0, 1.0), ("mlp", 0.0, 1.0)])
def test_the_data_are_scaled_to_the_generators_range(arch, low, high, tmp_path):
    from cnnlab.generative.runs import build_gan_run
    from cnnlab.train import TrainConfig, resolve

    config = resolve(TrainConfig(**{**generative.GAN_DEFAULTS, "data": "digits", "device": "cpu"}))
    run, task = build_gan_run(config, arch, None, 8, tmp_path / arch, overwrite=False)
    images, _ = next(iter(run.train_loader.batches()))
    assert images.shape == (128, 1, 28, 28) and run.config.model == generative.generator_name(arch, 28)
    assert images.min().item() == pytest.approx(low, abs=1e-6) and images.max().item() == pytest.approx(high, abs=1e-6)
    fake = task.samples()
    assert fake.shape == (64, 1, 28, 28) and low <= fake.min() and fake.max() <= high
    run.run_dir.release()


@pytest.mark.slow
def test_photo_folders_train_in_colour_at_32_and_64_px(tmp_path):
    """`--data folder:PATH` (the issue's own photos; cifar10-jpeg takes the in-memory colour path cifar10 does):
    photos of any size, streamed, at `--size 32` and at the default 64 px, one short epoch each."""
    photos = tmp_path / "photos"
    for k, name in enumerate(("cats", "dogs")):
        (photos / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + 3 * i, 30), (40 * k + 20 * i, 90, 200 - 30 * i)).save(photos / name / f"{i}.png")
    given = {**GIVEN, "checkpoint_every": 0, "batch_size": 4, "data": f"folder:{photos}"}
    small = generative.train_gan({**given, "out": str(tmp_path / "small")}, size=32, reuse_fakes=True)
    assert small.run.config.model == "dcgan-generator-32" and small.trainer.step >= 1
    assert generative.load_gan(tmp_path / "small").sample(4).shape == (4, 3, 32, 32)
    default = generative.train_gan({**given, "out": str(tmp_path / "default")})
    assert default.run.config.model == "dcgan-generator-64"
    grid = Image.open(tmp_path / "default" / "samples" / "epoch001.png")
    assert grid.mode == "RGB" and grid.size[0] > 8 * 64


def test_the_2014_gan_trains_by_the_engine(tmp_path):
    given = {key: value for key, value in GIVEN.items() if key != "batch_size"}
    result = generative.train_gan({**given, "out": str(tmp_path / "mlp"), "checkpoint_every": 0}, arch="mlp")
    config = result.run.config  # the file's recipe, not DCGAN's: SGD η 0.1, momentum 0.5, batch 100
    assert (config.optimizer, config.lr, config.momentum, config.batch_size) == ("sgd", 0.1, 0.5, 100)
    assert isinstance(result.trainer.optimizer, torch.optim.SGD)
    task = result.trainer.task  # and its objective: half the discriminator's sum, one batch of samples for both
    assert task.d_loss_scale == 0.5 and task.reuse_fakes
    row = result.history[0]
    assert row["train_d_loss"] == row["train_d_loss"] and 0 < row["train_d_real"] < 1
    assert generative.load_gan(tmp_path / "mlp").spec["arch"] == "mlp"


@pytest.mark.slow
def test_a_gan_trains_under_torchrun(tmp_path):
    import json
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnlab",
               "gan", "train", "--data", "digits", "--epochs", "1", "--device", "cpu", "--z-dim", "8",
               "--out", str(tmp_path / "ddp")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["status"] == "complete" and summary["task"] == "gan"
    assert (tmp_path / "ddp" / "samples" / "epoch001.png").exists()


# ---- sampling, latent walks ------------------------------------------------------------------------------------
def test_sample_and_interpolate(gan_run, tmp_path):
    result = generative.sample_run(gan_run, n=5, out=tmp_path / "five.png", seed=1)
    assert result.images.shape == (5, 1, 28, 28)
    assert Image.open(result.path).size == (2 * (1 + 3 * 29), 2 * (1 + 2 * 29))  # 3 columns, 2 rows
    assert torch.equal(generative.sample_run(gan_run, n=5, out=tmp_path / "again.png", seed=1).images, result.images)
    walk = generative.interpolate_run(gan_run, steps=4, rows=2, out=tmp_path / "walk.png")
    assert walk.images.shape == (8, 1, 28, 28) and Image.open(walk.path).size == (2 * (1 + 4 * 29), 2 * (1 + 2 * 29))
    gan = generative.load_gan(gan_run)
    ends = torch.randn(2, 2, 16, generator=torch.Generator().manual_seed(0))  # the walk's seeded end points
    torch.testing.assert_close(walk.images[[0, 3, 4, 7]], gan.generate(ends.transpose(0, 1).reshape(4, 16)))
    sphere = generative.interpolate_run(gan_run, steps=4, rows=2, out=tmp_path / "arc.png", spherical=True)
    torch.testing.assert_close(sphere.images[[0, 3]], walk.images[[0, 3]], atol=1e-5, rtol=0)  # same ends
    assert (gan_run / "samples-64-seed0.png").exists() is False  # only where asked


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gan", "train", "--data", "digits", "--size", "30"], "28 or 32 or 64 px"),
        (["gan", "train", "--arch", "mlp", "--data", "digits", "--size", "64"], "28 px"),
        (["gan", "train", "--data", "digit"], "Unknown dataset 'digit'"),
        (["gan", "train", "--lr", "0"], "--lr must be a positive number"),
        (["gan", "train", "--z-dim", "0"], "--z-dim must be"),
        (["gan", "sample", "no/such/run"], "does not exist"),
        (["gan", "interpolate", "no/such/run"], "does not exist"),
    ],
)
def test_bad_input_gets_one_clear_error(cli, argv, message, tmp_path):
    code, _, err = cli(*argv, "--out", tmp_path / "o")
    assert code != 0 and message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_command_line(cli, gan_run, trained_run, tmp_path):
    code, out, _ = cli("gan", "sample", gan_run, "-n", "4", "--out", tmp_path / "s.png")
    assert code == 0 and "s.png" in out and (tmp_path / "s.png").exists()
    code, _, err = cli("gan", "sample", gan_run, "-n", "0")
    assert code != 0 and "-n must be a whole number from 1" in " ".join(err.split())
    code, out, _ = cli("gan", "interpolate", gan_run, "--steps", "3", "--rows", "1", "--out", tmp_path / "w.png")
    assert code == 0 and (tmp_path / "w.png").exists()
    code, _, err = cli("gan", "sample", trained_run)
    assert code != 0 and "is a classification run, not a GAN run" in " ".join(err.split())
    code, _, err = cli("train", "--resume", gan_run)
    assert code != 0 and "is a GAN run; continue it with: cnnlab gan train --resume" in " ".join(err.split())
    code, out, _ = cli("summary", "dcgan-generator-64")
    assert code == 0 and "input 100×1×1" in out and "3×64×64" in out
    code, out, _ = cli("summary", gan_run)
    assert code == 0 and "input 16×1×1" in out and "1×28×28" in out
    code, out, _ = cli("summary", "dcgan-discriminator-32")
    assert code == 0 and "663,361" in out


@pytest.mark.parametrize("action", ["train", "sample", "interpolate", "measure"])
def test_every_gan_action_has_help_with_examples(action, capsys):
    from cnnlab.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["gan", action, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "examples:" in out and f"cnnlab gan {action}" in out


# ---- measuring -------------------------------------------------------------------------------------------------
class _Brightness(models.ClassifierModel):
    """A stand-in classifier: class k for images whose mean is nearest k/9 (10 classes); features = the mean."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten())
        self.num_classes, self.in_chans, self.num_features = 10, 1, 1
        self.scale = nn.Parameter(torch.ones(1))

    def forward_head(self, x, pre_logits=False):
        mean = x.mean(1, keepdim=True) * self.scale  # (B, 1)
        return mean if pre_logits else -(mean - torch.arange(10) / 9).abs()


def _identity_preprocessing(size: int):
    from cnnlab.data import Preprocessing

    return Preprocessing(1, (size, size), 0, (0.0,), (1.0,))


def test_class_coverage_counts_each_class_share():
    features = generative.ClassifierFeatures(_Brightness(), _identity_preprocessing(8))
    levels = torch.tensor([0] * 50 + [3] * 30 + [9] * 16 + [5] * 4) / 9  # 4 % of class 5: not covered
    images = levels.view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    coverage = generative.class_coverage(images, features, [str(k) for k in range(10)])
    assert coverage.shares[0] == 0.5 and coverage.shares[3] == 0.3 and coverage.shares[5] == 0.04
    assert coverage.covered == 3 and coverage.samples == 100 and "3 of 10 classes" in coverage.text()


def _frechet_oracle(a: np.ndarray, b: np.ndarray) -> float:
    """Heusel et al.'s formula on the two sets' sample means and covariances, with scipy's sqrtm."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


class _Flatten(nn.Module):
    num_features = 4

    def forward(self, x):
        return x.flatten(1).double()


def test_frechet_distance_against_the_formula():
    pytest.importorskip("torchmetrics")
    g = torch.Generator().manual_seed(0)
    real = torch.randn(600, 4, 1, 1, generator=g)
    same = generative.frechet_distance(real, real.clone(), _Flatten())
    assert abs(same) < 1e-4
    other = torch.randn(600, 4, 1, 1, generator=g)  # another sample of the same distribution
    shifted = other + 0.5  # |Δμ|² grows by 4 × 0.25
    near = generative.frechet_distance(real, other, _Flatten())
    far = generative.frechet_distance(real, shifted, _Flatten())
    assert 0 < near < 0.1 < 0.9 < far
    expected = _frechet_oracle(real.flatten(1).double().numpy(), shifted.flatten(1).double().numpy())
    assert far == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ConfigError, match="at least 2 images"):
        generative.frechet_distance(real[:1], real, _Flatten())


def test_measure_a_gan_with_a_classifier_run(gan_run, trained_run):
    pytest.importorskip("torchmetrics")
    measured = generative.measure_gan(gan_run, trained_run, n=64)
    assert measured.samples == 64 and len(measured.coverage.shares) == 10
    assert measured.real_coverage.covered >= 8  # the classifier recognises real digits (3 epochs of LeNet-5)
    assert measured.frechet_floor >= 0 and measured.frechet > measured.frechet_floor  # 12 steps of GAN training
    real_score, generated_score = measured.real_classifier_score[0], measured.classifier_score[0]
    assert 1 <= generated_score < real_score <= 10  # the classifier is sure of real digits, less of 12-step samples
    copies = measured.copies
    assert len(copies.distances) == 64 and copies.indices.max() < 1797 - 360  # all of the digits' training split
    assert 0 <= copies.copies <= 1 and copies.median_ratio > 0.5  # 12 steps of training copy nothing
    assert measured.copies_picture == gan_run / "nearest-copies.png" and measured.copies_picture.stat().st_size > 500
    assert any(line.startswith("classifier score") for line in measured.lines())


def test_measuring_a_classifier_run_as_a_gan_is_an_error(trained_run):
    with pytest.raises(CheckpointError, match="not a GAN run"):
        generative.load_gan(trained_run)


# ---- the discriminator as features (`cnnlab gan probe`) ---------------------------------------------------------
def test_discriminator_features_follow_section_5_1():
    _, discriminator = generative.build_gan("dcgan", 28, 1)
    discriminator.eval()
    images = torch.randn(3, 1, 28, 28)
    paper = generative.discriminator_features(discriminator, images)
    assert paper.shape == (3, 64 * 16 + 128 * 16)  # each stage max-pooled to a 4×4 grid, concatenated
    conv1 = discriminator.features.conv1(images)  # (3, 64, 14, 14)
    torch.testing.assert_close(paper[:, :1024], torch.nn.functional.adaptive_max_pool2d(conv1, 4).flatten(1))
    last = generative.discriminator_features(discriminator, images, "pre-logits")
    assert last.shape == (3, discriminator.num_features) == (3, 128 * 7 * 7)
    _, maxout = generative.build_gan("mlp", 28, 1)
    assert generative.discriminator_features(maxout.eval(), images).shape == (3, 240 + 240)  # flat stages whole
    with pytest.raises(UnknownNameError):
        generative.discriminator_features(discriminator, images, "pool5")


def test_probe_the_discriminator_against_the_same_net_from_scratch(gan_run, tmp_path):
    from cnnlab.data import load_dataset
    from cnnlab.data.datasets import split_off
    from cnnlab.train.setup import subset_per_class

    result = generative.probe_discriminator(gan_run, labels=(3,), seeds=2, holdout=0.1, epochs=2,
                                            out=tmp_path / "probe.json")  # fmt: skip
    assert [(c.labels_per_class, c.seed) for c in result.cells] == [(3, 0), (3, 1)]
    kept, held = split_off(load_dataset("digits").train, 0.1, 1)  # what `cnnlab train --holdout 0.1 --seed 1` holds
    assert result.dim == 3072 and result.validation_images == len(held.labels) == 142  # 10 % of each class
    for cell in result.cells:
        assert 0 <= cell.probe_error <= 1 and cell.probe_c in generative.probe.C_GRID
        assert cell.scratch_epochs == 2 and cell.scratch_epoch in (1, 2)
        assert cell.probe_error < 0.5 and cell.untrained_error < 0.5  # 30 labels: far better than chance (90 %)
    # the scratch net trained on exactly the probe's labelled images, and chose its epoch on the same split
    scratch = load_checkpoint(gan_run / "probe-scratch" / "labels3-seed1")
    assert scratch["model"]["name"] == "dcgan-discriminator-28" and scratch["model"]["num_classes"] == 10
    assert scratch["config"]["labels_per_class"] == 3 and scratch["config"]["holdout"] == 0.1
    assert scratch["config"]["seed"] == 1 and scratch["config"]["augment"] == "none"
    assert {"val_error", "val_loss"} <= set(scratch["history"][0]) and "test_error" not in scratch["history"][0]
    assert len(subset_per_class(kept, 3, 1).labels) == 30
    written = json.loads((tmp_path / "probe.json").read_text())
    assert written["summary"][0]["seeds"] == 2 and len(written["cells"]) == 2
    assert "trained D + linear" in result.table()[0] and " ± " in result.table()[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"labels": (0,)}, "--labels must be positive"),
        ({"seeds": 0}, "--seeds must be"),
        ({"holdout": 0.0}, "--holdout must be"),
        ({"features": "pool5"}, "pool5"),
        ({"epochs": 0}, "--epochs must be"),
        ({"classifier": "knn"}, "knn"),
    ],
)
def test_probe_refuses_bad_settings_before_work(gan_run, options, message):
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        generative.probe_discriminator(gan_run, **options)


def test_probe_command_line(cli, gan_run, trained_run, tmp_path):
    code, out, _ = cli("gan", "probe", gan_run, "--labels", "2", "--seeds", "1", "--epochs", "1", "--holdout", "0.1",
                       "--out", tmp_path / "p.json")  # fmt: skip
    assert code == 0 and "test accuracy" in out and "untrained D + linear" in out and (tmp_path / "p.json").exists()
    code, _, err = cli("gan", "probe", trained_run, "--labels", "2")
    assert code != 0 and "is a classification run, not a GAN run" in " ".join(err.split())
    with pytest.raises(SystemExit):  # argparse refuses it
        cli("gan", "probe", "no/such/run", "--labels", "2,x")


@pytest.mark.slow
def test_bench_gan_pairs_alternating_rounds_and_measures_both_sides(cli):
    from cnnlab.bench.gan import bench_gan

    result = bench_gan("digits", steps=2, rounds=2, device="cpu")
    assert result["rounds"] == len(result["ratios"]) == 2 and result["total_steps"] == 6
    assert result["engine_step_s"] > 0 and result["plain_step_s"] > 0
    for side in ("engine", "plain"):
        assert result["quality"][side]["frechet_pixels"] > result["frechet_floor"] >= 0
    code, out, _ = cli("bench", "gan", "--quick", "--device", "cpu")
    assert code == 0 and "pytorch/examples loop" in out and "Fréchet distance in pixels" in out


def test_an_ema_of_the_generator_is_sampled_saved_and_resumed(tmp_path):
    """--ema-decay: the grids, the collapse columns and `gan sample` use the averaged generator; training goes on
    from the raw weights; a resumed run is bit-identical, grids included."""
    torch.set_num_threads(1)
    given = {**GIVEN, "ema_decay": 0.9, "out": str(tmp_path / "run")}
    result = generative.train_gan(given, z_dim=16)
    averaged, raw = result.trainer.ema.module.state_dict(), result.trainer.model.state_dict()
    payload = load_checkpoint(tmp_path / "run")
    assert payload["config"]["ema_decay"] == 0.9 and payload["train_state"]["ema_updates"] == 12
    loaded = generative.load_gan(tmp_path / "run").generator.state_dict()
    for name, value in averaged.items():
        assert torch.equal(loaded[name], value), name
    assert not torch.equal(averaged["stages.output.0.weight"], raw["stages.output.0.weight"])
    grid = np.asarray(Image.open(tmp_path / "run" / "samples" / "epoch001.png"))
    task = result.trainer.task
    assert np.array_equal(grid, _grid_pixels(task.samples(result.trainer.ema.module), tmp_path / "ema.png"))
    assert not np.array_equal(grid, _grid_pixels(task.samples(result.trainer.model), tmp_path / "raw.png"))

    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy)
    resumed = generative.train_gan({**given, "out": str(copy)}, resume=str(copy / "checkpoints" / "step000000004.pt"))
    assert resumed.resumed_at == (0, 4)
    again = load_checkpoint(copy)
    for name, value in payload["model_state"].items():
        assert torch.equal(value, again["model_state"][name]), name
    assert np.array_equal(grid, np.asarray(Image.open(copy / "samples" / "epoch001.png")))


def _grid_pixels(images: torch.Tensor, path: Path) -> np.ndarray:
    from cnnlab.generative.runs import save_grid

    save_grid(images, path, (-1.0, 1.0))
    return np.asarray(Image.open(path))


# ---- class coverage during training (--coverage-run) -------------------------------------------------------------
def test_class_coverage_is_measured_every_epoch_and_recorded(gan_run, trained_run, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    result = generative.train_gan({**GIVEN, "out": str(out)}, z_dim=16, coverage_run=str(trained_run))
    row = result.history[-1]
    # measuring changes nothing in training: the same losses as the same run without --coverage-run
    same = ("train_d_loss", "train_g_loss", "sample_diversity")
    assert [row[k] for k in same] == [load_checkpoint(gan_run)["history"][-1][k] for k in same]
    assert row["classes_covered"] + row["classes_dropped"] == 10 and 0 <= row["rarest_share"] < 0.1
    # the same figures by hand: the task's 1,000 coverage noise vectors, through the generator and the classifier
    task = result.trainer.task
    features, classes = task.coverage
    images = (task.samples(result.trainer.eval_model, task.coverage_noise) + 1) / 2
    shares = generative.class_coverage(images.clamp(0, 1), features, classes).shares
    assert len(task.coverage_noise) == 1000 and row["rarest_share"] == min(shares)
    assert row["classes_covered"] == sum(s >= 0.05 for s in shares)
    assert "classes ≥ 5 %" in task.epoch_text(row)
    # the same samples' Fréchet distance to real test images, and its floor (real training images), by hand: the
    # run's images as the generator sees them, evenly spaced through each split, back in [0, 1]
    from cnnlab.generative.task import reference_images

    run = result.trainer.run
    test, train = ((reference_images(run, 1000, split) + 1) / 2 for split in ("test", "train"))
    assert row["frechet"] == pytest.approx(generative.frechet_distance(test, images.clamp(0, 1), features), rel=1e-9)
    assert row["frechet_floor"] == pytest.approx(generative.frechet_distance(test, train, features), rel=1e-9)
    assert row["frechet"] > row["frechet_floor"] > 0  # a 4-step generator is far from the data
    assert f"FD {row['frechet']:.1f} (floor" in task.epoch_text(row)
    payload = load_checkpoint(out)
    assert payload["gan"]["coverage_run"] == str(trained_run)
    assert "classes_covered" in (out / "metrics.csv").read_text().splitlines()[0]
    from cnnlab.inspect import write_report

    page = write_report(out).read_text()
    assert "Middle: classes the classifier finds in ≥ 5 % of the samples" in page
    assert "Right: the Fréchet distance of the same 1,000 samples" in page
    assert "frechet_floor" in (out / "metrics.csv").read_text().splitlines()[0]
    # a resumed run classifies with the classifier it recorded
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    resumed = generative.train_gan({**GIVEN, "out": str(copy)}, resume=str(copy / "checkpoints" / "step000000004.pt"))
    assert resumed.trainer.task.coverage is not None and resumed.history[-1]["rarest_share"] == row["rarest_share"]
    assert resumed.history[-1]["frechet"] == row["frechet"]  # the same z, weights and real images after resume


def test_a_generator_that_drops_classes_is_named(trained_run):
    """A generator that makes one real digit whatever z is: nine classes dropped, the failure named."""
    from cnnlab.data import load_dataset
    from cnnlab.generative.task import diagnose_coverage
    from cnnlab.workflows import open_run

    digits = load_dataset("digits")
    record, classifier, _ = open_run(trained_run, "cpu")
    features = generative.ClassifierFeatures(classifier, record.preprocessing)
    index = next(i for i in range(len(digits.test)) if digits.test.labels[i] == 3 and
                 features.logits(digits.test.images[i : i + 1].float() / 255).argmax() == 3)  # fmt: skip
    image = digits.test.images[index].float() / 255 * 2 - 1  # (1, 8, 8) in [-1, 1]

    class OneDigit(nn.Module):
        z_dim, output_range = 16, (-1.0, 1.0)

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, z):
            return (self.scale * image).expand(len(z), -1, -1, -1)

    generator = OneDigit()
    task = GANTask(generator, nn.Linear(1, 1), coverage=(features, list(record.classes)))
    row = task.class_coverage(generator)
    assert row == {"classes_covered": 1.0, "classes_dropped": 9.0, "rarest_class": 0.0, "rarest_share": 0.0}
    text = task.epoch_text({"train_d_loss": 0.5, "train_g_loss": 1.0, "train_d_real": 0.6, "train_d_fake": 0.4, **row})
    assert "[classes dropped: 9 of 10 classes under 5% of the coverage samples; the rarest, 0, at 0.0%]" in text
    assert diagnose_coverage({**row, "classes_covered": 10.0, "classes_dropped": 0.0}) is None


def test_a_coverage_classifier_of_other_data_is_refused_before_work(tmp_path):
    import cnnlab

    images, labels = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8), torch.arange(40) % 2
    cnnlab.train("lenet5", (images, labels), epochs=1, out=str(tmp_path / "two"), progress=False, holdout=0)
    with pytest.raises(ConfigError, match="2 classes.*10 classes.*Train one on the same data"):
        generative.train_gan({**GIVEN, "out": str(tmp_path / "gan")}, coverage_run=str(tmp_path / "two"))
    assert not (tmp_path / "gan").exists()
    with pytest.raises(CheckpointError):
        generative.train_gan({**GIVEN, "out": str(tmp_path / "gan")}, coverage_run=str(tmp_path / "nowhere"))


# ---- the run report (`cnnlab report RUN` on a GAN run) -----------------------------------------------------------
def test_the_report_of_a_gan_run(cli, gan_run, tmp_path):
    """One offline page: failures, losses, diversity/coverage, the grids over time, every epoch, the settings."""
    copy = tmp_path / "run"
    shutil.copytree(gan_run, copy)
    code, out, err = cli("report", copy)
    assert code == 0, err
    page = (copy / "report.html").read_text()
    titles = ["Failures", "Losses", "Diversity and coverage", "Samples over time", "Epochs", "Configuration"]
    assert all(f"<h2>{title}</h2>" in page for title in titles)
    assert page.count("data:image/png;base64,") == 3  # two figures and the one epoch's grid
    assert "after epoch 1" in page and "<script" not in page and "http" not in page
    assert "class coverage was not measured" in page  # this run was trained without --coverage-run


def test_the_report_names_every_epochs_failures():
    from cnnlab.generative.report import epoch_problems, health_figure, losses_figure

    fine = {"epoch": 1, "train_d_loss": 0.5, "train_g_loss": 1.5, "train_d_real": 0.7, "train_d_fake": 0.3,
            "sample_diversity": 0.9, "sample_twins": 0.0}  # fmt: skip
    wins = {**fine, "epoch": 2, "train_d_loss": 0.01, "train_g_loss": 7.0, "sample_diversity": 0.2, "sample_twins": 0.8,
            "classes_covered": 3.0, "classes_dropped": 7.0, "rarest_class": 4.0, "rarest_share": 0.0}  # fmt: skip
    assert epoch_problems(fine) == []
    problems = epoch_problems(wins, [str(c) for c in range(10)])
    assert [p.split(":")[0] for p in problems] == ["discriminator wins", "mode collapse", "classes dropped"]
    assert "the rarest, 4, at 0.0%" in problems[2]
    assert len(losses_figure([fine, wins]).axes) == 2 and len(health_figure([fine, wins]).axes) == 3


class _ClassOf(nn.Module):
    """A stand-in classifier: the class is written in the image's first pixel (class / 10); logits ``margin``·onehot."""

    def __init__(self, classes: int, margin: float):
        super().__init__()
        self.classes, self.margin = classes, margin

    def logits(self, images):
        return self.margin * F.one_hot((images[:, 0, 0, 0] * 10).round().long(), self.classes).float()


def test_classifier_score_against_the_formula():
    from torch.nn import functional as F_

    labels = torch.arange(500) % 5  # balanced over 5 classes
    images = (labels.float() / 10).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    confident = _ClassOf(5, 30.0)
    mean, sd = generative.classifier_score(images, confident, splits=1)
    assert (mean == pytest.approx(5.0, rel=1e-6) and sd != sd) or sd == 0  # one split: no spread
    assert generative.classifier_score(images, _ClassOf(5, 0.0), splits=1)[0] == pytest.approx(1.0)  # unsure
    assert generative.classifier_score(images[labels == 2], confident, splits=1)[0] == pytest.approx(1.0)  # one class
    # a softer classifier, against exp(mean KL(p(y|x) || p(y))) computed here, split by split
    soft = _ClassOf(5, 1.5)
    p = F_.softmax(soft.logits(images).double(), 1)
    expected = float(torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean()))
    assert generative.classifier_score(images, soft, splits=1)[0] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ConfigError, match="at least 10 images"):
        generative.classifier_score(images[:5], soft)


def test_nearest_training_images_and_copies():
    train = torch.rand(300, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    fresh = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    samples = torch.cat([train[[5, 17, 200, 299]], fresh])  # four exact copies, then new images
    distances, indices = generative.nearest_training_images(samples, train)
    brute = torch.cdist(samples.flatten(1).double(), train.flatten(1).double())  # the oracle
    torch.testing.assert_close(distances, brute.min(1).values, rtol=0, atol=1e-4)
    assert torch.equal(indices, brute.argmin(1)) and indices[:4].tolist() == [5, 17, 200, 299]
    real = generative.nearest_training_images(torch.rand(100, 1, 6, 6, generator=torch.Generator().manual_seed(2)),
                                              train)[0]  # fmt: skip
    copies = generative.NearestCopies(distances, indices, real)
    assert (
        copies.copies == pytest.approx(4 / 44, abs=0.03) and "samples are nearer to a training image" in copies.text()
    )
