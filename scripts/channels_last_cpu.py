"""Training-step time of zoo models in NCHW and channels-last (NHWC) on the CPU, the two layouts alternating.

The figures behind ``ClassifierModel.cpu_channels_last`` (docs/benchmarks.md, training engine):

    python scripts/channels_last_cpu.py            # LeNets, resnet20, nin-cifar, maxout-cifar, resnet18, vgg-a-bn
    python scripts/channels_last_cpu.py resnet20   # chosen models

Per model: SGD with momentum on cross-entropy over one random batch at 32 px (64 images; 32 for resnet18 and
vgg-a-bn), two warm-up steps per layout, then three rounds timing each layout over the same number of steps;
the speed-up is the median of the rounds' NCHW/NHWC time ratios.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from cnnlab import models

# (name, input channels, batch, steps per round)
CASES = {
    "lenet5": (1, 64, 30),
    "lenet5-modern": (1, 64, 30),
    "resnet20": (3, 64, 5),
    "nin-cifar": (3, 64, 3),
    "maxout-cifar": (3, 64, 3),
    "resnet18": (3, 32, 5),
    "vgg-a-bn": (3, 32, 3),
}


def training_step(name: str, channels_last: bool, chans: int, batch: int):
    torch.manual_seed(0)
    model = models.create(name, in_chans=chans)
    x, y = torch.randn(batch, chans, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def main(names: list[str]) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in names:
        chans, batch, steps = CASES.get(name, (3, 32, 3))
        runs = {cl: training_step(name, cl, chans, batch) for cl in (False, True)}
        for step in runs.values():
            step(), step()
        ratios, seconds = [], {}
        for _ in range(3):
            for cl, step in runs.items():
                started = time.perf_counter()
                for _ in range(steps):
                    step()
                seconds[cl] = (time.perf_counter() - started) / steps
            ratios.append(seconds[False] / seconds[True])
        print(
            f"{name:14s} batch {batch}: NCHW {seconds[False] * 1e3:.1f} ms, NHWC {seconds[True] * 1e3:.1f} ms/step; "
            f"NHWC speed-up {statistics.median(ratios):.2f}× (rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
