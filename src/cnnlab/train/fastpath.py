"""The speed settings of a run, decided once per device: precision, memory layout, compilation, CUDA graphs.

None of them changes what is computed beyond float rounding, and each has a config flag to turn it off.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class FastPath:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast to this (bf16/fp16) in forward and loss; None: full float32
    channels_last: bool  # NHWC model weights and inputs
    compile: bool  # torch.compile the training forward
    cuda_graphs: bool  # capture the whole step once and replay it
    cudnn_benchmark: bool

    @property
    def uses_scaler(self) -> bool:
        """fp16 needs loss scaling (its range underflows small gradients); bf16 has float32's range."""
        return self.amp_dtype == torch.float16

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        amp = {None: "float32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + loss scaling"}
        parts = [amp[self.amp_dtype]]
        parts += [name for name, on in (("channels_last", self.channels_last), ("compiled", self.compile)) if on]
        parts += ["CUDA graphs"] if self.cuda_graphs else []
        return ", ".join(parts)

    def apply_global_settings(self) -> None:
        """Process-wide switches: cuDNN autotuning (its choice is cached per input shape)."""
        if self.device.type == "cuda" and self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True


def resolve_fast_path(config, device: torch.device, model: torch.nn.Module | None = None) -> FastPath:
    """The settings ``config`` asks for on ``device`` ("auto" and None decided here).

    Channels-last, when the config leaves it to us (None): on CUDA always; on the CPU where ``model`` says
    it gains from it (``cpu_channels_last``, true for most of the zoo; unknown models stay NCHW).

    Raises:
        ConfigError: a setting the device cannot do (CUDA graphs off CUDA).
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}.get(config.amp)
    if config.amp == "auto" and device.type == "cuda":  # pre-Ampere GPUs have no fast bf16: fp16 there
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # auto elsewhere: None. CPU bf16 autocast works but is slower than float32 on most CPUs.
    channels_last = config.channels_last
    if channels_last is None:
        channels_last = device.type == "cuda" or (device.type == "cpu" and getattr(model, "cpu_channels_last", False))
    if config.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"--cuda-graphs needs a CUDA device; this run is on {device}. Leave --cuda-graphs off.")
    if config.cuda_graphs and dtype == torch.float16:
        raise ConfigError("--cuda-graphs cannot use fp16 (its loss scaler syncs every step); use --amp bf16 or off.")
    return FastPath(device, dtype, channels_last, config.compile, config.cuda_graphs, config.cudnn_benchmark)
