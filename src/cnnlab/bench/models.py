"""Training throughput of our models and torchvision's same-named ones, measured side by side.

Each row times full training steps (forward, cross-entropy loss, backward, SGD step) of our model and of the
torchvision model of the same architecture on the same batch, precision and memory format, alternating
between the two in ``repeats`` rounds (and which of them goes first) so that a change in machine load hits
both. Models with auxiliary classifiers train with them, as the training objective does (GoogLeNet: ours
through ``forward_with_aux``, torchvision's through its training-mode output), each auxiliary loss weighted
by 0.3.

Images/s figures are medians over the rounds. Numbers from a machine that is busy with other work are noise:
each row records the load average before and after.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError, DeviceError
from cnnlab.train.objective import aux_heads

# Quick mode, for CI on two CPU cores: a tiny batch at the smallest input the model takes (≥ 32 px), a few steps.
QUICK = {"batch_size": 2, "steps": 2, "warmup": 1, "repeats": 1}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was asked for but is not available; use device='cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("MPS was asked for but is not available; use device='cpu'.")
    return device


def _sync(device: torch.device) -> None:
    """Sync point: wait for queued GPU work so the clock measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _quick_side(name: str) -> int:
    from cnnlab import models

    info = models.get_model_info(name)
    if info.fixed_input_size:
        return info.input_size[1]
    model = models.create(name, device="meta").eval()
    for side in (32, 64, 128, 256):
        try:
            models.trace(model, (info.input_size[0], side, side))
            return side
        except Exception:  # the probe's failure: this size is too small for some layer
            continue
    return info.input_size[1]


def _training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp):
    optimizer.zero_grad(set_to_none=True)
    with amp():
        if aux_heads(model):  # ours: GoogLeNet's auxiliary heads, through the model contract
            logits, aux = model.forward_with_aux(x)
            weight = model.aux_loss_weight
        else:
            out = model(x)
            if isinstance(out, tuple):  # torchvision's GoogLeNet in training: (logits, aux2, aux1)
                logits, aux, weight = out[0], [a for a in out[1:] if a is not None], 0.3
            else:
                logits, aux, weight = out, [], 0.0
        loss = F.cross_entropy(logits.float(), y)
        for a in aux:
            loss = loss + weight * F.cross_entropy(a.float(), y)
    loss.backward()
    optimizer.step()


def _time_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


def bench_models(
    names: Sequence[str],
    batch_size: int = 32,
    input_size: tuple[int, int, int] | int | None = None,
    device: str | torch.device = "cpu",
    steps: int = 10,
    warmup: int = 3,
    channels_last: bool = False,
    dtype: str = "float32",
    *,
    repeats: int = 3,
    quick: bool = False,
    seed: int = 0,
) -> list[dict]:
    """Training images/s of each named model, ours and torchvision's, side by side.

    Args:
        names: cnnlab model names or aliases.
        batch_size: images per step (both models, same batch).
        input_size: (C, H, W) or a side; default: each model's own input size.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        steps: timed training steps per model per round.
        warmup: untimed steps per model first (allocator, cuDNN autotuning, oneDNN primitive caches).
        channels_last: run both models and the batch in channels-last memory format.
        dtype: ``"float32"``, or ``"bfloat16"``/``"float16"`` run under ``torch.autocast`` (float32 weights).
        repeats: rounds, alternating ours and torchvision's; the reported figure is the median.
        quick: CI mode: overrides batch size, steps, warmup and repeats with :data:`QUICK` and, unless
            ``input_size`` is given, uses the smallest input side ≥ 32 px each model takes.
        seed: seeds the batch and both models' initialisation.

    Returns:
        One dict per model: ``model``, ``torchvision`` (its name, or None without a counterpart),
        ``ours_images_per_s``, ``torchvision_images_per_s`` (None without a counterpart), ``ratio`` (ours /
        torchvision's; > 1 means ours is faster), the per-round figures, and the settings, versions and load
        averages the measurement ran under.

    Raises:
        UnknownNameError: an unknown model name.
        ConfigError: bad settings.
        DeviceError: the device is not available.
    """
    from cnnlab import models

    if quick:
        batch_size, steps, warmup, repeats = (QUICK[k] for k in ("batch_size", "steps", "warmup", "repeats"))
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}.")
    for label, value, low in (
        ("batch_size", batch_size, 1),
        ("steps", steps, 1),
        ("warmup", warmup, 0),
        ("repeats", repeats, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{label} must be an integer ≥ {low}, got {value!r}.")
    dev = _device(device)
    infos = [models.get_model_info(n) for n in names]  # unknown names fail before any work
    torch_dtype = _DTYPES[dtype]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def amp():
        if torch_dtype is torch.float32:
            return torch.autocast(dev.type, enabled=False)
        return torch.autocast(dev.type, dtype=torch_dtype)

    shapes = []
    for info in infos:  # every shape is checked (on the meta device: free) before any model is timed
        if input_size is None:
            side = _quick_side(info.name) if quick else info.input_size[1]
            shape = (info.input_size[0], side, side)
        elif isinstance(input_size, int):
            shape = (info.input_size[0], input_size, input_size)
        else:
            shape = tuple(input_size)
        if min(shape) < 1:
            raise ConfigError(f"input_size must be positive, got {'×'.join(map(str, shape))}.")
        models.check_input_shape(models.create(info.name, device="meta", in_chans=shape[0]), shape)
        shapes.append(shape)
    rows = []
    for info, shape in zip(infos, shapes, strict=True):
        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        torch.manual_seed(seed)
        ours = models.create(info.name, num_classes=info.num_classes, in_chans=shape[0])
        contenders: dict[str, nn.Module] = {"ours": ours}
        if info.torchvision:
            import torchvision

            torch.manual_seed(seed)
            extra = {"init_weights": True} if info.torchvision == "googlenet" else {}
            contenders["torchvision"] = torchvision.models.get_model(
                info.torchvision, weights=None, num_classes=info.num_classes, **extra
            )
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, *shape, generator=generator).to(dev, memory_format=memory_format)
        y = torch.randint(0, info.num_classes, (batch_size,), generator=generator).to(dev)
        steppers = {}
        for key, model in contenders.items():
            model.to(dev, memory_format=memory_format).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            steppers[key] = functools.partial(_training_step, model, optimizer, x, y, amp)
        for step in steppers.values():
            for _ in range(warmup):
                step()
        runs: dict[str, list[float]] = {key: [] for key in steppers}
        for round_ in range(repeats):
            order = list(steppers.items())
            for key, step in order if round_ % 2 == 0 else order[::-1]:  # interleaved, first one alternating
                runs[key].append(batch_size * steps / _time_steps(step, steps, dev))
        ours_ips = statistics.median(runs["ours"])
        theirs_ips = statistics.median(runs["torchvision"]) if "torchvision" in runs else None
        rows.append(
            {
                "model": info.name,
                "torchvision": info.torchvision,
                "ours_images_per_s": ours_ips,
                "torchvision_images_per_s": theirs_ips,
                "ratio": ours_ips / theirs_ips if theirs_ips else None,
                "ours_runs": runs["ours"],
                "torchvision_runs": runs.get("torchvision"),
                "batch_size": batch_size,
                "input_size": shape,
                "device": str(dev),
                "dtype": dtype,
                "channels_last": channels_last,
                "steps": steps,
                "warmup": warmup,
                "repeats": repeats,
                "threads": torch.get_num_threads(),
                "torch_version": torch.__version__,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
            }
        )
        del contenders, steppers
    return rows
