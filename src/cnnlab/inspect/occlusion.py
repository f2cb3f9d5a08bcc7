"""The ``occlusion`` view (Zeiler & Fergus 2013, section 4.2): slide a grey square over the image and watch
the output.

Captum's ``Occlusion`` makes the occluded copies and batches them, ``perturbations_per_eval`` at a time, so
all positions go through the network in ⌈positions / batch_size⌉ forward passes. Its result is the attribution
map: for each pixel, the drop of the target's log-odds averaged over the positions whose square covers the
pixel. The forward function we give it also keeps every position's full probability vector, so the
per-position maps (log-odds and probability of the target class, most probable class and its probability)
come from the same forward passes; nothing runs twice.

Why log-odds, log(p / (1 − p)), and not the probability: a confident prediction (p = 0.99999) stays at p ≈ 1
under most squares, so a probability map is flat and shows nothing, while its log-odds fall from 11.5 to, say,
6 where the square hides something that matters. The log-odds are the target's logit minus the log-sum-exp of
the other logits, computed from the log-softmax (exact even where p rounds to 1 in float32).

Speed: ResNet-50 on a 224×224 image with a 32×32 square at stride 8 is 625 occluded copies. On the CPU they
run through :func:`inference_copy` (BatchNorm folded into the convolutions, channels-last weights) and, for
images of at least 112×112, through :class:`~cnnlab.inspect.incremental.IncrementalForward`, which computes
the early stages only where the square changes them: 16 s in float32 on two quiet cores, against 54 s for
Captum's ``Occlusion`` on the model as it is (`python -m cnnlab.bench.viz`). ``precision="bfloat16"`` runs the
network under autocast (CPUs with AVX-512 BF16 or AMX, and GPUs). Its error depends on the model: on a
trained lenet5-modern the probabilities moved by at most 0.016, on the faithful LeNet-5 by up to 0.12 (its
RBF output squares distances, which bfloat16 rounds coarsely), so the default stays float32; compare both
on one image before trusting bfloat16 maps of a new model.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect._errors import require_captum
from cnnlab.inspect.grid import new_figure, show_image
from cnnlab.inspect.incremental import IncrementalForward

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PRECISIONS = ("float32", "bfloat16")
INCREMENTAL_MIN_PIXELS = 112 * 112  # default incremental inference from this image area up (CPU)


@dataclass
class OcclusionMap:
    """Class probabilities as a grey square slides over one image.

    Attributes:
        target: the class the maps follow (the label if known, else the clean prediction).
        size: side of the square (pixels); ``stride``: step between positions (pixels).
        rows, cols: (nH,), (nW,) top and left pixel of the square at each position (the last square may be
            clipped by the image border, as Captum places it).
        clean_probs: (K,) probabilities of the unoccluded image.
        probs: (nH, nW, K) probabilities with the square at each position.
        clean_log_odds: log(p / (1 − p)) of the target for the unoccluded image.
        log_odds: (nH, nW) the target's log-odds with the square at each position.
        attribution: (H, W) Captum's occlusion attribution of the target's log-odds: the mean drop over the
            positions covering each pixel (positive: hiding the pixel hurts the target).
        seconds: wall time of the occlusion (all forward passes).
        precision: "float32" or "bfloat16".
    """

    target: int
    size: int
    stride: int
    rows: torch.Tensor
    cols: torch.Tensor
    clean_probs: torch.Tensor
    probs: torch.Tensor
    clean_log_odds: float
    log_odds: torch.Tensor
    attribution: torch.Tensor
    seconds: float
    precision: str

    @property
    def target_prob(self) -> torch.Tensor:
        """(nH, nW) probability of the target class per position."""
        return self.probs[..., self.target]

    @property
    def log_odds_drop(self) -> torch.Tensor:
        """(nH, nW) how much the square lowers the target's log-odds at each position (positive: it hurts)."""
        return self.clean_log_odds - self.log_odds

    @property
    def top_class(self) -> torch.Tensor:
        """(nH, nW) most probable class per position."""
        return self.probs.argmax(dim=-1)

    @property
    def top_prob(self) -> torch.Tensor:
        """(nH, nW) probability of the most probable class per position."""
        return self.probs.amax(dim=-1)


def default_window(height: int, width: int) -> tuple[int, int]:
    """(size, stride) for an image: a square of 1/7 of the shorter side (32 px at 224), stride a quarter of it."""
    size = max(1, round(min(height, width) / 7))
    return size, max(1, size // 4)


def positions(length: int, size: int, stride: int) -> torch.Tensor:
    """Top (or left) coordinates of the windows along one axis, as Captum's Occlusion places them."""
    count = -(-(length - size) // stride) + 1  # ⌈(L − size)/stride⌉ + 1
    return torch.arange(count) * stride


def log_odds(log_probs: torch.Tensor, target: int) -> torch.Tensor:
    """(N,) log(p / (1 − p)) of class ``target`` from (N, K) log-probabilities: log p_t − log Σ_{j≠t} p_j, exact
    where p_t rounds to 1."""
    others = log_probs.clone()
    others[:, target] = -torch.inf
    return log_probs[:, target] - others.logsumexp(dim=1)


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` for many forward passes on the CPU: each BatchNorm folded into the
    convolution before it (torch.fx's conv-BN fusion; same function, within float rounding) and the weights
    in channels-last order. ResNet-50 at batch 16 on two threads: 67 ms per image as it is, 56 ms fused. The
    model itself when it has no BatchNorm, cannot be traced, or is training (BatchNorm then uses batch
    statistics, which folding would freeze)."""
    if model.training or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model).to(memory_format=torch.channels_last)  # fuse() works on a deep copy
    except Exception:  # not traceable by torch.fx (data-dependent control flow): the model as it is
        return model


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    *,
    size: int | None = None,
    stride: int | None = None,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 32,
    precision: str = "float32",
    incremental: bool | None = None,
) -> OcclusionMap:
    """Occlude the normalised input ``x`` (C, H, W) with a square at every position; probabilities and the
    target's log-odds per position.

    Args:
        model: a classifier in eval mode returning logits.
        x: the input, normalised as the model expects.
        target: the class to follow (default: the clean image's prediction).
        size: side of the square in pixels (default: :func:`default_window`).
        stride: step in pixels (default: a quarter of ``size``); at most ``size`` so that no pixel is skipped.
        baseline: the square's value in normalised units, a number or per-channel (C,) values; grey in pixel
            units is ``(0.5 − mean)/std`` (what :func:`cnnlab.inspect.run_view` uses).
        batch_size: occluded copies per forward pass (Captum's ``perturbations_per_eval``).
        precision: "float32", or "bfloat16" (autocast; faster on CPUs with BF16 support, slightly less exact).
        incremental: compute the early stages only where the square changes them
            (:class:`~cnnlab.inspect.incremental.IncrementalForward`); default: on the CPU for images of at
            least 112×112 pixels (below that, planning costs more than it saves). The first batch
            is checked against plain forward passes; on a mismatch a warning says so and plain passes run.

    Raises:
        ConfigError: a square larger than the image, a bad stride, batch size, precision or target.
    """
    require_captum()
    from captum.attr import Occlusion

    c, h, w = x.shape
    size = default_window(h, w)[0] if size is None else size
    stride = max(1, size // 4) if stride is None else stride
    if not 1 <= size <= min(h, w):
        raise ConfigError(f"Occlusion square size {size} does not fit the {h}×{w} input; use 1 to {min(h, w)}.")
    if not 1 <= stride <= size:
        raise ConfigError(
            f"Occlusion stride {stride} must be between 1 and the square size {size} (a larger stride skips pixels)."
        )
    if batch_size < 1:
        raise ConfigError(f"Occlusion batch size must be a positive integer, got {batch_size}.")
    if precision not in PRECISIONS:
        raise ConfigError(f"Precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    autocast = (
        torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext()
    )
    memory_format = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
    network = inference_copy(model) if x.device.type == "cpu" else model
    recorded: list[torch.Tensor] = []
    follow = 0  # the target class, set after the clean pass
    if incremental is None:
        # Planning (tracing, one clean pass) takes ~0.3 s: worth it for large images. On a GPU the per-copy
        # crops would cost more kernel launches than they save.
        incremental = x.device.type == "cpu" and h * w >= INCREMENTAL_MIN_PIXELS
    runner = IncrementalForward(network, x.detach(), memory_format=memory_format) if incremental else None
    checked = False

    def log_probs_of(batch: torch.Tensor) -> torch.Tensor:  # (n, C, H, W) -> (n, K) log-probabilities
        nonlocal runner, checked
        if runner is not None and runner.enabled and not checked and (batch != x).any():
            checked = True  # the first batch with occluded copies: compare two copies with plain passes
            probe = batch[[0, -1]]
            if not runner.verify(probe):
                warnings.warn(
                    f"Incremental occlusion disagreed with plain forward passes for {type(model).__name__}; "
                    "using plain forward passes (report this model).",
                    stacklevel=3,
                )
                runner = None
        with autocast:
            logits = runner(batch) if runner is not None else network(batch.contiguous(memory_format=memory_format))
        return logits.float().log_softmax(dim=1)

    def forward(batch: torch.Tensor) -> torch.Tensor:  # (n, C, H, W) -> (n,) target log-odds; every row kept
        log_probs = log_probs_of(batch)
        recorded.append(log_probs)
        return log_odds(log_probs, follow)

    batch = x.unsqueeze(0).detach()
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    base = (base.view(-1, 1, 1) if base.ndim == 1 else base).expand(c, h, w).unsqueeze(0)
    started = time.perf_counter()
    with torch.no_grad():
        clean = log_probs_of(batch)
        if target is None:
            target = int(clean[0].argmax())
        elif not 0 <= target < clean.shape[1]:
            raise ConfigError(f"Class {target} is out of range: the model has {clean.shape[1]} classes.")
        follow = target
        attribution = Occlusion(forward).attribute(
            batch,
            sliding_window_shapes=(c, size, size),
            strides=(c, stride, stride),
            baselines=base,
            perturbations_per_eval=batch_size,
        )
    rows, cols = positions(h, size, stride), positions(w, size, stride)
    per_position = torch.cat(recorded[1:]).cpu()  # recorded[0]: Captum's own clean evaluation; the one sync
    if per_position.shape[0] != len(rows) * len(cols):
        raise RuntimeError(  # Captum changed how it orders or batches the perturbations: the maps would be wrong
            f"Captum's Occlusion ran {per_position.shape[0]} occluded copies, expected {len(rows)}×{len(cols)}."
        )
    # Captum numbers positions with the row index fastest (its shift counts are (C, nH, nW), first axis fastest).
    log_probs = per_position.view(len(cols), len(rows), -1).transpose(0, 1).contiguous()  # (nH, nW, K)
    clean = clean[0].cpu()
    return OcclusionMap(
        target=target,
        size=size,
        stride=stride,
        rows=rows,
        cols=cols,
        clean_probs=clean.exp(),
        probs=log_probs.exp(),
        clean_log_odds=float(log_odds(clean.unsqueeze(0), target)[0]),
        log_odds=log_odds(log_probs.flatten(0, 1), target).view(len(rows), len(cols)),
        attribution=attribution[0, 0].detach().float().cpu(),  # the square spans every channel: all equal
        seconds=time.perf_counter() - started,
        precision=precision,
    )


def render_occlusion(
    result: OcclusionMap, image: torch.Tensor, classes: list[str] | None = None, label: int | None = None
) -> Figure:
    """Four panels: input; drop of the target's log-odds per square position; most probable class per position;
    Captum's attribution (that drop spread over the pixels).

    Each map is drawn over the image at the square centres' positions (one cell per position). The log-odds
    log(p / (1 − p)), not p, because p stays ≈ 1 under every square for a confident prediction (see the module
    docstring); the figure says so in its footer.
    """
    import matplotlib

    def name(k: int) -> str:
        return classes[k] if classes and k < len(classes) else str(k)

    h, w = image.shape[1:]
    half = (result.size - 1) / 2
    step = result.stride
    extent = (
        float(result.cols[0]) + half - step / 2,
        float(result.cols[-1]) + half + step / 2,
        float(result.rows[-1]) + half + step / 2,
        float(result.rows[0]) + half - step / 2,
    )
    fig = new_figure(13, 3.6)
    axes = fig.subplots(1, 4)
    who = "true class" if label is not None and label == result.target else "predicted class"
    clean = float(result.clean_probs[result.target])
    show_image(
        axes[0], image, f"input ({who} {name(result.target)}:\np={clean:.4g}, log-odds {result.clean_log_odds:.2f})"
    )
    grey = image.float().mean(0).numpy()
    for ax in axes[1:3]:
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    drop = result.log_odds_drop
    bound = float(drop.abs().max()) or 1.0
    im = axes[1].imshow(
        drop.numpy(), extent=extent, cmap="RdBu_r", vmin=-bound, vmax=bound, alpha=0.8, interpolation="nearest"
    )
    axes[1].set_title(f"drop of log-odds({name(result.target)})\nwith the square here", fontsize=9)
    fig.colorbar(im, ax=axes[1], shrink=0.8).set_label("red: hiding hurts the class", fontsize=7)
    top = result.top_class.numpy()
    present = sorted(set(top.ravel().tolist()))
    cmap = matplotlib.colormaps["tab20"].resampled(max(len(present), 2))
    index = {k: i for i, k in enumerate(present)}
    coded = torch.tensor([[index[v] for v in row] for row in top.tolist()])
    axes[2].imshow(
        coded.numpy(), extent=extent, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, alpha=0.75, interpolation="nearest"
    )
    axes[2].set_title("most probable class", fontsize=9)
    from matplotlib.patches import Patch

    axes[2].legend(
        handles=[Patch(color=cmap(index[k]), label=name(k)) for k in present[:12]],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
    )
    bound = float(result.attribution.abs().max()) or 1.0
    im = axes[3].imshow(result.attribution.numpy(), cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    axes[3].set_title("Captum attribution:\nmean log-odds drop when hidden", fontsize=9)
    fig.colorbar(im, ax=axes[3], shrink=0.8).set_label("red: hiding hurts the class", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    fig.suptitle(
        f"occlusion: {result.size}×{result.size} grey square, stride {result.stride}, "
        f"{len(result.rows) * len(result.cols)} positions ({result.seconds:.1f} s, {result.precision})",
        fontsize=10,
    )
    fig.supxlabel(
        f"log-odds = log(p / (1 − p)) of {name(result.target)}, shown instead of p, which stays near 1 under "
        f"every square when the prediction is confident (p = {clean:.6g} here).",
        fontsize=8,
        color="#444",
    )
    return fig
