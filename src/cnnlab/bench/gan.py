"""``cnnlab bench gan``: the engine's GAN step against the plain PyTorch way, side by side in one run.

The plain way is the training loop of ``pytorch/examples`` (``dcgan/main.py``), with the data on the device as ours
(the same uint8 images, shuffled and scaled to [-1, 1] per batch), so the comparison is of the loops, not of input
pipelines: per iteration, D on a real batch (backward), G on fresh noise, D on the generated batch detached
(backward), D's Adam step; then D on the *same* generated batch, G's loss, backward, G's Adam step; ``.item()`` of
the losses and D's outputs every iteration (the example prints them every iteration; here they are read, not
printed). The example's D ends in a sigmoid and uses ``BCELoss``; ours gives a logit, so the plain loop uses
``BCEWithLogitsLoss`` (the same loss, numerically safer).

The engine (:class:`cnnlab.generative.GANTask` by the :class:`~cnnlab.train.Trainer`) runs the same algorithm:
``reuse_fakes=True`` (``cnnlab gan train --reuse-fakes``), its generator step scoring the images of the
discriminator's step. Its default instead draws new noise and runs G again for the generator step (Goodfellow et
al.'s algorithm 1 samples a minibatch of noise for each of the two updates): one more G forward pass per step,
about a tenth of a step at 28 px, which is the algorithm's cost, not the engine's. Same nets
(``dcgan-generator-28`` / ``dcgan-discriminator-28``, the same initial weights), batch 128, Adam 2e-4, β1 0.5,
float32.

Rounds alternate (which goes first alternates too) after one warm-up round each, ``steps`` per round; the ratio
is the median of the per-round ratios (this shared machine's speed drifts over minutes). After the same number of
steps both generators are measured alike: the Fréchet distance to real test images in pixel space (no classifier
needed; comparable only between the two sides of one run) and :func:`cnnlab.generative.sample_diversity`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

QUALITY_SAMPLES = 2000  # generated and real test images per Fréchet distance


class _Pixels(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> their pixels as features (B, C·H·W): a Fréchet distance without a network."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).double()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_gan(
    data: str = "mnist",
    steps: int = 25,
    rounds: int = 5,
    batch_size: int = 128,
    device: str = "cpu",
    data_root: str | None = None,
    seed: int = 0,
) -> dict:
    """Seconds per step of the engine and of the pytorch/examples loop, ``rounds`` alternating rounds of ``steps``
    steps each after a warm-up round, and both generators' quality after the same ``(rounds + 1) · steps`` steps.

    Returns a dict: ``engine_step_s`` and ``plain_step_s`` (medians), ``ratios`` (per round, plain step time over
    the engine's: above 1 means the engine is faster) and ``ratio`` (their median), ``quality`` per side
    (``frechet_pixels``, ``diversity``, ``twins``), the real-vs-real Fréchet floor, and the setting."""
    from cnnlab.data import DeviceTensorLoader
    from cnnlab.generative import GAN_DEFAULTS, build_gan, frechet_distance, sample_diversity
    from cnnlab.generative.runs import build_gan_run
    from cnnlab.train import TrainConfig, Trainer, resolve

    torch_device = torch.device(device)
    config = resolve(
        TrainConfig(
            **{
                **GAN_DEFAULTS,
                "model": "dcgan-generator-28",
                "data": data,
                "epochs": rounds + 1,
                "batch_size": batch_size,
                "device": device,
                "data_root": data_root,
                "seed": seed,
                "log_every": steps,
                "keep_last": 1,
            }
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        engine_config = replace(config, out=str(Path(tmp) / "engine"))
        run, task = build_gan_run(engine_config, "dcgan", 28, 100, None, False, reuse_fakes=True)
        pre = run.preprocessing
        images = pre.to_stored_size(run.dataset.train.images[: steps * batch_size]).to(torch_device)  # uint8
        labels = run.dataset.train.labels[: steps * batch_size]
        if len(images) < steps * batch_size:  # a small set (the bundled digits): repeat it to fill a round
            repeat = -(-steps * batch_size // len(images))
            images, labels = images.repeat(repeat, 1, 1, 1), labels.repeat(repeat)
        # one epoch = one round of `steps` steps, on the device
        run.train_loader = DeviceTensorLoader(images, labels, pre, batch_size, shuffle=True, seed=seed,
                                              device=torch_device)  # fmt: skip

        # ---- the plain way (pytorch/examples dcgan/main.py), same initial weights --------------------------------
        torch.manual_seed(seed)  # what build_gan_run does before building its nets: the same initialisation
        net_g, net_d = build_gan("dcgan", 28, pre.in_chans, device=torch_device)
        criterion = nn.BCEWithLogitsLoss()
        opt_d = torch.optim.Adam(net_d.parameters(), lr=config.lr, betas=(config.momentum, 0.999))
        opt_g = torch.optim.Adam(net_g.parameters(), lr=config.lr, betas=(config.momentum, 0.999))
        plain_epochs = iter(range(10**9))

        def plain_round() -> float:
            epoch = next(plain_epochs)
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + epoch)).to(torch_device)
            _sync(torch_device)
            start = time.perf_counter()
            for i in range(steps):
                real = (images[order[i * batch_size : (i + 1) * batch_size]].float() / 255 - 0.5) / 0.5  # [-1, 1]
                b = real.shape[0]
                label = torch.full((b,), 1.0, device=torch_device)
                net_d.zero_grad()
                output = net_d(real).view(-1)
                err_d_real = criterion(output, label)
                err_d_real.backward()
                d_x = torch.sigmoid(output).mean().item()
                noise = torch.randn(b, 100, 1, 1, device=torch_device)
                fake = net_g(noise)
                label.fill_(0.0)
                output = net_d(fake.detach()).view(-1)
                err_d_fake = criterion(output, label)
                err_d_fake.backward()
                d_g_z1 = torch.sigmoid(output).mean().item()
                err_d = err_d_real + err_d_fake
                opt_d.step()
                net_g.zero_grad()
                label.fill_(1.0)
                output = net_d(fake).view(-1)
                err_g = criterion(output, label)
                err_g.backward()
                d_g_z2 = torch.sigmoid(output).mean().item()
                opt_g.step()
                _ = (err_d.item(), err_g.item(), d_x, d_g_z1, d_g_z2)  # what the example prints every iteration
            _sync(torch_device)
            return (time.perf_counter() - start) / steps

        # ---- the engine; the plain rounds between its epochs in the order E P P E E P P E ... (round r pairs the
        # engine's epoch r + 1 with the plain loop's round r, and who goes first alternates)
        plain: list[float] = [plain_round()]  # the plain loop's warm-up round (the engine's: its epoch 1)

        def plain_rounds(trainer, row: dict) -> None:
            if row["epoch"] % 2 == 0:
                for _ in range(min(2, rounds + 1 - len(plain))):
                    plain.append(plain_round())

        trainer = Trainer(run, task=task, epoch_hooks=(plain_rounds,))
        try:
            trainer.fit()
        finally:
            trainer.close()
            run.run_dir.release()
        engine = [row["seconds"] / steps for row in trainer.history]  # training only: evaluation is after it
        pairs = list(zip(engine[1:], plain[1:], strict=True))

        # ---- equal quality at equal steps ------------------------------------------------------------------------
        test = run.dataset.test.images
        pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:QUALITY_SAMPLES]
        real = pre.to_stored_size(test[pick]).float() / 255  # (N, C, 28, 28) in [0, 1]
        train_pick = torch.randperm(len(run.dataset.train.images), generator=torch.Generator().manual_seed(seed + 1))
        real_train = pre.to_stored_size(run.dataset.train.images[train_pick[:QUALITY_SAMPLES]]).float() / 255
        features = _Pixels(real[0].numel())
        z = torch.randn(QUALITY_SAMPLES, 100, generator=torch.Generator().manual_seed(seed + 2)).to(torch_device)
        quality = {}
        for side, generator in (("engine", task.models["generator"]), ("plain", net_g)):
            generator.eval()
            with torch.no_grad():
                made = torch.cat(
                    [generator(chunk).float().cpu() for chunk in z.split(500)]
                )  # (N, C, 28, 28) in [-1, 1]
            diversity, twins = sample_diversity(made[:64], real[:64] * 2 - 1)
            quality[side] = {
                "frechet_pixels": frechet_distance(real, (made + 1) / 2, features),
                "diversity": diversity,
                "twins": twins,
            }
        floor = frechet_distance(real, real_train, features)
    ratios = [p / e for e, p in pairs]
    return {
        "data": data,
        "device": str(torch_device),
        "threads": torch.get_num_threads(),
        "steps_per_round": steps,
        "rounds": len(pairs),
        "batch_size": batch_size,
        "total_steps": steps * (rounds + 1),
        "engine_step_s": statistics.median(e for e, _ in pairs),
        "plain_step_s": statistics.median(p for _, p in pairs),
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "quality": quality,
        "frechet_floor": floor,
    }


def run(quick: bool = False, device: str = "cpu", data_root: str | None = None) -> list[str]:
    """``cnnlab bench gan``: MNIST from ``data_root`` (quick: the bundled digits, 3 steps, 1 round)."""
    result = (
        bench_gan("digits", steps=3, rounds=1, device=device)
        if quick
        else bench_gan("mnist", device=device, data_root=data_root)
    )
    r, q = result, result["quality"]
    rounds = ", ".join(f"{x:.2f}×" for x in r["ratios"])
    return [
        f"DCGAN 28 px on {r['data']}, batch {r['batch_size']}, {r['device']} ({r['threads']} threads): seconds per "
        f"step (median of {r['rounds']} alternating rounds of {r['steps_per_round']} steps)",
        f"  engine (GANTask, reuse_fakes, + Trainer) {r['engine_step_s']:.3f} s, pytorch/examples loop "
        f"{r['plain_step_s']:.3f} s; "
        f"engine speed / plain speed {r['ratio']:.2f}× (rounds: {rounds})",
        f"after {r['total_steps']} steps each, {QUALITY_SAMPLES:,} samples vs real test images: Fréchet distance in "
        f"pixels engine {q['engine']['frechet_pixels']:.1f}, plain {q['plain']['frechet_pixels']:.1f} (real train vs "
        f"test: {r['frechet_floor']:.1f}); diversity engine {q['engine']['diversity']:.2f}, plain "
        f"{q['plain']['diversity']:.2f}; twins engine {q['engine']['twins']:.2f}, plain {q['plain']['twins']:.2f}",
    ]
