"""AlexNet-form SGD against torch.optim.SGD (the oracle) and against the paper's formula."""

import torch

from cnnlab.train import AlexNetSGD, make_scheduler


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(4, generator=g))]


def _grads(step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]


def test_equals_torch_sgd_at_constant_learning_rate():
    ours, theirs = _params(), _params()
    opt_a = AlexNetSGD(ours, lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_b = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(20):
        for p, q, g in zip(ours, theirs, _grads(step), strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_follows_the_paper_formula_when_the_rate_changes():
    (w,) = [torch.nn.Parameter(torch.tensor([1.0, -2.0]))]
    opt = AlexNetSGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    v = torch.zeros(2)
    expected = w.detach().clone()
    for step, lr in enumerate([0.1, 0.1, 0.01, 0.001]):
        opt.param_groups[0]["lr"] = lr
        grad = torch.tensor([0.5, 0.25]) * (step + 1)
        w.grad = grad.clone()
        v = 0.9 * v - 0.01 * lr * expected - lr * grad  # Δw ← 0.9·Δw − wd·η·w − η·∂E/∂w
        expected = expected + v
        opt.step()
        torch.testing.assert_close(w.detach(), expected)


def test_schedules():
    opt = AlexNetSGD(_params(), lr=1.0)
    cosine = make_scheduler(opt, "cosine", total_steps=10, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert lrs[0] == 1.0 and abs(lrs[5] - 0.5) < 1e-6 and opt.param_groups[0]["lr"] < 1e-9
    opt = AlexNetSGD(_params(), lr=1.0)
    step = make_scheduler(opt, "step", total_steps=100, steps_per_epoch=5, step_epochs=2, gamma=0.1)
    for _ in range(10):
        opt.step()
        step.step()
    assert abs(opt.param_groups[0]["lr"] - 0.1) < 1e-9
