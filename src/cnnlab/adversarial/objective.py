"""Adversarial training objectives for the trainer (which takes an objective and never imports this)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.adversarial.attacks import check_epsilon, pgd
from cnnlab.train.objective import LOSS_FUNCTIONS, aux_heads


class AdversarialObjective:
    """Goodfellow et al. (2014): J̃(θ, x, y) = α·J(θ, x, y) + (1 − α)·J(θ, x + ε·sign(∇ₓJ(θ, x, y)), y).

    ``method="pgd"`` uses a PGD example instead (Madry et al. 2017; with α = 0 that is their objective). The
    adversarial example is built in pixel space [0, 1] — the trainer's batches are normalised, so they are
    mapped back with the run's mean/std — and is treated as a constant (no gradient through its construction).

    Args:
        mean, std: the run's per-channel normalisation.
        eps: ε, in pixel units (0.25 = a quarter of the range).
        alpha: weight of the clean loss (0.5 in the paper).
        method: "fgsm" or "pgd".
        pgd_steps: PGD iterations.
        loss: ``cross_entropy`` or ``mse`` (``--loss``), for both terms.
        label_smoothing: ε of both terms' targets in training (``--label-smoothing``).

    Evaluation (``model.training`` False, as for :class:`~cnnlab.train.ClassificationObjective`) is the plain
    loss of the clean images. Models with auxiliary classifiers (GoogLeNet) are refused: the paper's J̃ has no
    term for them, and training them on clean images only would be a different objective.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        eps: float = 0.25,
        alpha: float = 0.5,
        method: str = "fgsm",
        pgd_steps: int = 7,
        loss: str = "cross_entropy",
        label_smoothing: float = 0.0,
    ):
        from cnnlab.errors import ConfigError

        if loss not in LOSS_FUNCTIONS:
            raise ConfigError(f"--loss must be one of {sorted(LOSS_FUNCTIONS)}, got {loss!r}.")
        self.loss_fn, self.label_smoothing = LOSS_FUNCTIONS[loss], label_smoothing
        if method not in ("fgsm", "pgd"):
            raise ConfigError(f"--adversarial must be fgsm or pgd, got {method!r}.")
        if not 0 <= alpha <= 1:
            raise ConfigError(f"--adv-alpha must be in [0, 1], got {alpha}.")
        self.eps, self.alpha, self.method, self.pgd_steps = check_epsilon(eps), alpha, method, pgd_steps
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not model.training:  # evaluation: test metrics are the clean loss and predictions
            logits = model(images)
            return self.loss_fn(logits, labels), logits
        if aux_heads(model):
            from cnnlab.errors import ConfigError

            raise ConfigError(
                "--adversarial cannot train a model with auxiliary classifiers (GoogLeNet's aux heads): Goodfellow's "
                "objective has no term for them. Build it without them (--model-option aux_logits=false) or train "
                "without --adversarial."
            )
        smoothing = self.label_smoothing
        mean, std = self.mean.to(images.device, images.dtype), self.std.to(images.device, images.dtype)
        if self.method == "fgsm" and not _fp16_autocast(images.device.type):
            # One backward pass of the clean loss gives both ∇ₓJ (for the example) and ∇θJ (for the update);
            # the clean term handed back replays ∇θJ, so the trainer's backward runs only the adversarial graph:
            # 2 forward + 2 backward passes in all, where retaining the clean graph for the trainer costs 3.
            x = images.detach().requires_grad_(True)  # normalised; sign(∇pixels) = sign(∇x / std) = sign(∇x)
            with _InputConvTap(model, x) as tap:
                logits = model(x)
            clean = self.loss_fn(logits, labels, smoothing)
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(clean, [x, *tap.outputs, *params], allow_unused=True)
            grad = tap.input_gradient(grads[0], grads[1 : 1 + len(tap.outputs)])
            clean_term = _replay_gradients(clean, params, grads[1 + len(tap.outputs) :])
            pixels = (images * std + mean).detach()  # (B, C, H, W) in [0, 1]
            adversarial = (pixels + self.eps * grad.sign()).clamp(0, 1)
            adv_loss = self.loss_fn(model((adversarial - mean) / std), labels, smoothing)
            return self.alpha * clean_term + (1 - self.alpha) * adv_loss, logits
        pixels = (images * std + mean).detach().requires_grad_(True)  # (B, C, H, W) in [0, 1]
        logits = model((pixels - mean) / std)
        clean = self.loss_fn(logits, labels, smoothing)
        if self.method == "fgsm":
            # fp16: the clean backward above would run unscaled by the trainer's GradScaler and could underflow,
            # so keep the clean graph for the trainer's scaled backward instead (one more backward pass).
            (grad,) = torch.autograd.grad(clean, pixels, retain_graph=True)
            clean_term = clean
            adversarial = (pixels + self.eps * grad.sign()).clamp(0, 1).detach()
        else:

            def pixel_model(x: torch.Tensor) -> torch.Tensor:
                return model((x - mean) / std)

            clean_term = clean
            adversarial = pgd(pixel_model, pixels.detach().clamp(0, 1), labels, self.eps, steps=self.pgd_steps)
        adv_loss = self.loss_fn(model((adversarial - mean) / std), labels, smoothing)
        return self.alpha * clean_term + (1 - self.alpha) * adv_loss, logits


def _fp16_autocast(device_type: str) -> bool:
    return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16


def _replay_gradients(loss: torch.Tensor, params: list[torch.Tensor], grads) -> torch.Tensor:
    """A scalar equal to ``loss`` whose gradient with respect to each of ``params`` is the given (already
    computed) gradient, so a later ``backward()`` — scaled, weighted, synchronised by DDP — applies it without
    running the original graph again. One autograd node for all parameters (a foreach multiply in backward),
    not a few operations per parameter."""
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    if not pairs:
        return loss.detach()
    return _Replay.apply(loss.detach(), [g for _, g in pairs], *[p for p, _ in pairs])


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: torch.Tensor, grads: list[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return None, None, *torch._foreach_mul(ctx.grads, grad_output)


class _InputConvTap:
    """Computes ∇input of the convolutions that read the model's input outside autograd, on CPU.

    Why: oneDNN's convolution backward-to-input is slow for a first layer with few input channels (LeNet-5's C1
    at batch 128 on two threads: 6.5 ms, against 0.65 ms for its forward and 1.1 ms for the same product as a
    depthwise convolution; see :func:`_conv_input_gradient`), and torch has no per-call choice of kernel. So
    while the model runs, every ``nn.Conv2d`` called on the input tensor itself gets a detached copy (autograd
    then skips its input gradient), its output is kept, and :meth:`input_gradient` adds the transposed
    convolution of that output's gradient to whatever gradient reached the input by other paths. Exact: the
    same sum autograd would form.
    Off for other devices and for wrapped (DDP, compiled) models, where autograd's own path is used.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor):
        self.x, self.convs, self.outputs, self._handles = x, [], [], []
        self._pending: nn.Conv2d | None = None
        if x.device.type != "cpu" or not isinstance(model, nn.Module):
            return
        for module in model.modules():
            if type(module) is nn.Conv2d and module.padding_mode == "zeros" and isinstance(module.padding, tuple):
                self._handles.append(module.register_forward_pre_hook(self._detach_input))
                self._handles.append(module.register_forward_hook(self._keep_output))

    def _detach_input(self, module: nn.Conv2d, args: tuple) -> tuple | None:
        if args and args[0] is self.x:
            self._pending = module
            return (args[0].detach(), *args[1:])
        return None

    def _keep_output(self, module: nn.Conv2d, args: tuple, output: torch.Tensor) -> None:
        if self._pending is module:
            self.convs.append(module)
            self.outputs.append(output)
            self._pending = None

    def __enter__(self) -> _InputConvTap:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def input_gradient(self, direct: torch.Tensor | None, output_grads) -> torch.Tensor:
        """∇x = (gradient that reached x directly) + Σ conv_transpose(∇output) over the tapped convolutions."""
        from cnnlab.errors import ConfigError

        parts = [] if direct is None else [direct]
        for conv, grad in zip(self.convs, output_grads, strict=True):
            if grad is not None:
                parts.append(_conv_input_gradient(conv, grad, self.x.shape))
        if not parts:
            raise ConfigError(
                "The model's output does not depend on its input, so there is no input gradient for the "
                "adversarial example; adversarial training needs a model differentiable in its input."
            )
        return torch.stack(parts).sum(0) if len(parts) > 1 else parts[0]


def _conv_input_gradient(conv: nn.Conv2d, grad_output: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """∇input of ``conv`` (B, C_in, H, W) from ∇output (B, C_out, H', W'), by the fastest CPU route we measured.

    2 threads, batch 128 (ms): LeNet's 1→6 5×5 conv: oneDNN's backward 6.5, without oneDNN 3.9, as a depthwise
    convolution of the flipped kernels summed over output maps 1.1; a 3→64 3×3 CIFAR conv: 24 / 11 / 87; a
    1→32 5×5 conv: 12 / 5.1 / 12.7. So: depthwise for a grey input with few maps, otherwise torch's own
    transposed convolution with oneDNN off.
    """
    weight = conv.weight.detach().to(grad_output.dtype)  # (C_out, C_in / groups, kh, kw)
    out_channels, in_per_group, kh, kw = weight.shape
    (ph, pw), depthwise = conv.padding, conv.groups == 1 and in_per_group == 1 and out_channels <= 16
    with torch.no_grad():
        if depthwise and conv.stride == (1, 1) and conv.dilation == (1, 1) and ph < kh and pw < kw:
            # Σ_o conv_full(∇y_o, flip(w_o)): each output map convolved with its flipped kernel, then summed
            maps = F.conv2d(grad_output, weight.flip(2, 3), padding=(kh - 1 - ph, kw - 1 - pw), groups=out_channels)
            return maps.sum(1, keepdim=True)  # (B, C_out, H, W) -> (B, 1, H, W)
        with _onednn_disabled():
            return torch.nn.grad.conv2d_input(
                input_shape, weight, grad_output, conv.stride, conv.padding, conv.dilation, conv.groups
            )


@contextmanager
def _onednn_disabled():
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous
