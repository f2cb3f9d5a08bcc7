"""The whole training step captured once as a CUDA graph and replayed (``--cuda-graphs``).

For small models the GPU finishes each kernel before Python has launched the next; a replayed graph launches
forward, backward, clipping, optimiser and EMA update as one unit. What makes capture safe here:

- static shapes: the trainer drops the last partial batch (``drop_last``) so every step sees one shape;
- no host syncs inside the step: no ``.item()``, no loss scaler (fp16 is refused, bf16 needs none), the
  learning rate and EMA decay live in device tensors that are filled *between* replays;
- static memory: inputs are copied into fixed buffers; gradients are allocated by the captured backward and
  rewritten (not accumulated) on every replay, as in PyTorch's "whole network capture" example;
- warm-up iterations (run on a side stream before capture, as CUDA graphs require for cuBLAS/cuDNN and the
  optimiser's lazily created state) would train the model: every parameter, buffer and optimiser tensor is
  snapshotted before them and restored after, and optimiser state created by them is zeroed, which equals
  "no state yet" for SGD momentum, AlexNetSGD's velocity and Adam's moments and step count.

Not done: DDP (refused: needs static-graph DDP), gradient accumulation (refused), torch.compile (refused: its
``mode="reduce-overhead"`` captures graphs itself). This module needs a CUDA device and has not been run in
this repository's CPU-only CI; see docs/training.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def _tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


class GraphedStep:
    """``step_fn(images, labels) -> tuple of tensors`` captured on example inputs, replayed by ``__call__``.

    Args:
        step_fn: one whole optimisation step on the given batch, with no host sync.
        images: an example batch of the shape and dtype every later batch has (copied, not kept).
        labels: its labels.
        modules: whose parameters and buffers the warm-up must not change (the model, the EMA copy).
        optimizer: whose state the warm-up must not change.
        extra_state: other tensors step_fn updates (accumulators); restored too.
        warmup: eager iterations before capture (PyTorch's examples use 3; 11 under DDP).
    """

    def __init__(
        self,
        step_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
        images: torch.Tensor,
        labels: torch.Tensor,
        modules: Iterable[torch.nn.Module],
        optimizer: torch.optim.Optimizer,
        extra_state: Iterable[torch.Tensor] = (),
        warmup: int = 3,
    ):
        if images.device.type != "cuda":
            raise RuntimeError("GraphedStep needs CUDA tensors.")
        self.static_images = torch.empty_like(images).copy_(images)  # keeps images' memory format
        self.static_labels = labels.clone()
        watched = [t for m in modules for t in (*m.parameters(), *m.buffers())] + list(extra_state)
        before = {id(t) for t in _tensors(optimizer)}
        snapshot = [(t, t.detach().clone()) for t in watched + _tensors(optimizer)]
        rng = torch.cuda.get_rng_state(images.device)

        side = torch.cuda.Stream(images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                optimizer.zero_grad(set_to_none=True)
                step_fn(self.static_images, self.static_labels)
        torch.cuda.current_stream(images.device).wait_stream(side)

        with torch.no_grad():  # undo the warm-up's training
            for tensor, saved in snapshot:
                tensor.copy_(saved)
            for tensor in _tensors(optimizer):
                if id(tensor) not in before:
                    tensor.zero_()
        torch.cuda.set_rng_state(rng, images.device)

        optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients (static)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = step_fn(self.static_images, self.static_labels)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the captured step on this batch; returns the step's (static) output tensors."""
        self.static_images.copy_(images)
        self.static_labels.copy_(labels)
        self.graph.replay()
        return self.outputs
