"""The ``saliency`` and ``guided-backprop`` views, computed by Captum.

- Saliency (Simonyan, Vedaldi & Zisserman 2013): |∂ score_c / ∂ pixel|, the largest over colour channels:
  which pixels would change the class score most.
- Guided backpropagation (Springenberg et al. 2014): the gradient of the class score with every ReLU's
  backward pass letting through only positive gradients at positive inputs. It needs ``nn.ReLU`` modules
  (not in-place, not functional); models without ReLUs get the plain gradient, and a note says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.inspect._errors import require_captum
from cnnlab.inspect.grid import minmax, new_figure, show_image, show_signed
from cnnlab.inspect.hooks import check_relus_hookable

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Attribution:
    """A per-pixel attribution map for one image and one class.

    Attributes:
        method: "saliency" or "guided-backprop".
        target: the class explained; ``probability``: the model's probability for it.
        values: (C, H, W) raw attribution, on the CPU.
        notes: caveats for this model.
    """

    method: str
    target: int
    probability: float
    values: torch.Tensor
    notes: list[str] = field(default_factory=list)

    @property
    def heat(self) -> torch.Tensor:
        """(H, W) for display: saliency's max over channels of |values|; guided backprop's channel sum."""
        return self.values.abs().amax(0) if self.method == "saliency" else self.values.sum(0)


def _target(model: nn.Module, batch: torch.Tensor, target: int | None) -> tuple[int, float]:
    with torch.no_grad():
        probs = model(batch).softmax(dim=1)[0]
    if target is None:
        target = int(probs.argmax())
    elif not 0 <= target < probs.shape[0]:
        raise ConfigError(
            f"Class {target} is out of range: the model has {probs.shape[0]} classes (0 to {probs.shape[0] - 1})."
        )
    return target, float(probs[target])


def saliency(model: nn.Module, x: torch.Tensor, target: int | None = None) -> Attribution:
    """Gradient of the class score (logit) ``target`` (default: the predicted class) w.r.t. the input (C, H, W)."""
    require_captum()
    from captum.attr import Saliency

    batch = x.unsqueeze(0)
    target, probability = _target(model, batch, target)
    grads = Saliency(model).attribute(batch.detach().clone().requires_grad_(), target=target, abs=False)
    return Attribution("saliency", target, probability, grads[0].detach().float().cpu())


def guided_backprop(model: nn.Module, x: torch.Tensor, target: int | None = None) -> Attribution:
    """Guided backpropagation of the class score ``target`` (default: the predicted class) to the input.

    Raises:
        UnsupportedModelError: in-place or functional ReLUs, which the hooks cannot handle.
    """
    require_captum()
    from captum.attr import GuidedBackprop

    batch = x.unsqueeze(0)
    check_relus_hookable(model, batch, "Guided backpropagation")
    target, probability = _target(model, batch, target)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        values = GuidedBackprop(model).attribute(batch.detach().clone().requires_grad_(), target=target)
    notes = []
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        notes.append("The model has no nn.ReLU, so guided backpropagation is the plain gradient (same as saliency).")
    return Attribution("guided-backprop", target, probability, values[0].detach().float().cpu(), notes)


def render_attributions(
    results: list[Attribution], image: torch.Tensor, classes: list[str] | None = None, title: str = ""
) -> Figure:
    """The input, then each attribution: saliency as a heat map, guided backprop signed (grey) or as an image (RGB)."""
    fig = new_figure(3.4 * (1 + len(results)), 3.4)
    axes = fig.subplots(1, 1 + len(results))
    show_image(axes[0], image, "input")
    for ax, result in zip(axes[1:], results, strict=True):
        name = classes[result.target] if classes else str(result.target)
        label = f"{result.method}: class {name} (p={result.probability:.2f})"
        if result.method == "saliency":
            im = ax.imshow(result.heat.numpy(), cmap="hot", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8)
        elif result.values.shape[0] == 3:
            show_image(ax, minmax(result.values), label)
        else:
            show_signed(ax, result.heat, label)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
