"""LeNet-5 as in LeCun et al. 1998: per-layer parameter counts, the C3 table, shapes."""

import torch

from cnnlab import models
from cnnlab.inspect import summarize
from cnnlab.models.lenet import PAPER_PARAMS, lenet_c3_table

# Table I of the paper: rows are S2 maps 0–5, columns C3 maps 0–15, X = connected.
PAPER_TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def test_c3_table_is_the_papers_table_one():
    rows = [line for line in PAPER_TABLE_I.split() if line]
    paper = {(s2, c3) for s2, row in enumerate(rows) for c3, mark in enumerate(row) if mark == "X"}
    ours = {(s2, c3) for c3, inputs in enumerate(lenet_c3_table()) for s2 in inputs}
    assert ours == paper
    assert len(ours) == 60


def test_parameter_counts_per_layer_equal_the_papers():
    model = models.create("lenet5")
    counts = {name: sum(p.numel() for p in model.get_stage(name).parameters()) for name in model.stage_names}
    counts["f6"] = sum(p.numel() for p in model.f6.parameters())
    assert counts == PAPER_PARAMS
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 60_000
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 840  # the RBF codes


def test_shapes_through_the_stages():
    model = models.create("lenet5")
    x = torch.zeros(2, 1, 32, 32)
    shapes = {}
    for name in model.stage_names:
        x = model.get_stage(name)(x)
        shapes[name] = tuple(x.shape[1:])
    assert shapes == {"c1": (6, 28, 28), "s2": (6, 14, 14), "c3": (16, 10, 10), "s4": (16, 5, 5), "c5": (120, 1, 1)}


def test_rbf_logits_are_negated_distances_and_softmax_head_works():
    model = models.create("lenet5").eval()
    x = torch.randn(3, 1, 32, 32)
    f6 = model.forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(model(x), -torch.cdist(f6, model.output.codes).pow(2), atol=1e-3)
    soft = models.create("lenet5", head="softmax")
    assert sum(p.numel() for p in soft.parameters()) == 60_000 + 850


def test_initialisation_follows_the_paper():
    model = models.create("lenet5")
    c1 = model.features.c1.conv.weight
    assert c1.abs().max() <= 2.4 / 25 and c1.abs().max() > 2.4 / 25 * 0.9
    c5 = model.features.c5.conv.weight
    assert c5.abs().max() <= 2.4 / 400


def test_summary_macs_and_receptive_fields():
    summary = summarize(models.create("lenet5"), (1, 32, 32))
    rows = {r.name: r for r in summary.rows}
    assert rows["features.c1.conv"].macs == 28 * 28 * 6 * 25  # 117,600
    assert rows["features.c5.conv"].macs == 120 * 16 * 25
    assert rows["f6.fc"].macs == 120 * 84
    assert summary.flops == 2 * summary.macs
    fields = {n: (r.receptive_field.size, r.receptive_field.jump) for n, r in rows.items() if r.receptive_field}
    assert fields["features.c1.conv"] == (5, 1)
    assert fields["features.s2.pool"] == (6, 2)
    assert fields["features.c3.conv"] == (14, 2)
    assert fields["features.s4.pool"] == (16, 4)
    assert fields["features.c5.conv"] == (32, 4)  # C5 sees the whole 32×32 input
    assert summary.trainable == summary.paper_params == 60_000
