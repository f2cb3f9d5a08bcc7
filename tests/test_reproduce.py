"""`cnnlab reproduce`, the cifar10-jpeg reader, fractional max pooling and the papers' MLPs (issue 21)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.data import load_dataset
from cnnlab.data.jpeg_tree import CIFAR10_CLASSES, load_jpeg_tree
from cnnlab.errors import ConfigError, DataError, UnknownNameError
from cnnlab.layers import FractionalMaxPool2d, average_over_pooling_draws
from cnnlab.layers.pooling import fractional_boundaries
from cnnlab.models import create
from cnnlab.reproduce import ENTRIES, Row, judge, list_entries, reproduce
from conftest import SHARED_DATASETS, write_jpeg, write_jpeg_tree

HAS_MNIST = (SHARED_DATASETS / "MNIST" / "raw").is_dir()
HAS_CIFAR_JPEG = (SHARED_DATASETS / "CIFAR10-JPEG").is_dir()


# ---- cifar10-jpeg ----------------------------------------------------------------------------------------------
@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cnnlab" / "decoded"


def test_jpeg_tree_decodes_once_and_is_cached_by_content(tmp_path, cache_home):
    tree = tmp_path / "CIFAR10-JPEG"
    write_jpeg_tree(tree)
    train, test, cached = load_jpeg_tree(tree, CIFAR10_CLASSES, "toy")
    assert not cached and train.images.shape == (30, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.tolist() == [c for c in range(10) for _ in range(3)]
    centre = train.images[:, :, 8:, 8:].float().mean((1, 2, 3))  # JPEG is lossy: within a few levels
    assert torch.allclose(centre, train.labels.float() * 20, atol=3)
    again_train, _, cached = load_jpeg_tree(tree, CIFAR10_CLASSES, "toy")
    assert cached and torch.equal(again_train.images, train.images)
    # a changed image (same name) is never served from the stale cache
    first = tree / "train" / "airplane" / "0000.jpg"
    write_jpeg(first, 200)
    os.utime(first, ns=(1, 1))
    changed, _, cached = load_jpeg_tree(tree, CIFAR10_CLASSES, "toy")
    assert not cached and changed.images[0].float().mean() > 190
    assert len(list(cache_home.glob("toy-*.pt"))) == 2


def test_jpeg_tree_errors_name_the_problem(tmp_path, cache_home):
    with pytest.raises(DataError, match="does not exist"):
        load_jpeg_tree(tmp_path / "nowhere", CIFAR10_CLASSES, "toy")
    tree = tmp_path / "tree"
    write_jpeg_tree(tree)
    with pytest.raises(DataError, match="train/cat/ has 3 images, expected 5000"):
        load_jpeg_tree(tree, CIFAR10_CLASSES, "toy", {"train": 5000, "test": 2})
    for path in (tree / "test" / "dog").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="test/dog/ has no .jpg files"):
        load_jpeg_tree(tree, CIFAR10_CLASSES, "toy")
    (tree / "test" / "dog" / "0000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"test/dog/0000.jpg is not a readable JPEG"):
        load_jpeg_tree(tree, CIFAR10_CLASSES, "toy")


def test_cifar10_jpeg_registered_with_a_clear_missing_message(tmp_path, cache_home):
    with pytest.raises(DataError, match="CIFAR10-JPEG"):
        load_dataset("cifar10-jpeg", tmp_path)
    with pytest.raises(DataError, match="nothing to download"):
        load_dataset("cifar10-jpeg", tmp_path, fetch=True)


@pytest.mark.skipif(not HAS_CIFAR_JPEG, reason="CIFAR10-JPEG not in ../shared/datasets")
def test_cifar10_jpeg_real_copy_loads():
    dataset = load_dataset("cifar10-jpeg", SHARED_DATASETS)
    assert dataset.train.images.shape == (50_000, 3, 32, 32) and dataset.test.images.shape == (10_000, 3, 32, 32)
    assert dataset.train.labels.bincount().tolist() == [5000] * 10 and dataset.classes == CIFAR10_CLASSES


# ---- fractional max pooling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("overlapping", [False, True])
@pytest.mark.parametrize("pseudo_random", [False, True])
def test_fractional_boundaries_follow_the_paper(overlapping, pseudo_random):
    generator = torch.Generator().manual_seed(0)
    for size, out in ((28, 20), (20, 14), (10, 7), (7, 5), (5, 4)):
        b = fractional_boundaries(size, out, overlapping, pseudo_random, generator)
        assert b[0] == 0 and b[-1] == (size - 1 if overlapping else size) and len(b) == out + 1
        assert set(b.diff().tolist()) <= {1, 2}


def test_fractional_pooling_matches_max_pooling_at_ratio_one_half_and_a_brute_force_oracle():
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(FractionalMaxPool2d(0.5, overlapping=False)(x), F.max_pool2d(x, 2))
    x9 = torch.randn(2, 3, 9, 9)
    assert torch.equal(FractionalMaxPool2d(0.5, overlapping=True)(x9), F.max_pool2d(x9, 3, 2))
    for overlapping in (False, True):
        layer = FractionalMaxPool2d(2**-0.5, overlapping=overlapping, pseudo_random=False)
        layer.generator = torch.Generator().manual_seed(3)
        x = torch.randn(1, 1, 28, 28)
        y = layer(x)
        replay = torch.Generator().manual_seed(3)
        rows = fractional_boundaries(28, 20, overlapping, False, replay)
        cols = fractional_boundaries(28, 20, overlapping, False, replay)
        assert torch.equal(y, _region_maxima(x, rows, cols, overlapping))


def _region_maxima(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, overlapping: bool) -> torch.Tensor:
    """The brute-force oracle: each drawn region sliced out and its max taken, (B, C, len(rows) − 1, len(cols) − 1)."""
    end = 1 if overlapping else 0
    return torch.stack(
        [
            torch.stack(
                [
                    x[:, :, rows[i] : rows[i + 1] + end, cols[j] : cols[j + 1] + end].amax((-2, -1))
                    for j in range(len(cols) - 1)
                ],
                -1,
            )
            for i in range(len(rows) - 1)
        ],
        -2,
    )


@pytest.mark.parametrize("overlapping", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fractional_pooling_values_and_gradients_equal_region_maxima_in_both_layouts(overlapping, channels_last):
    """The max_pool2d-over-picked-positions form against each region's max taken by slicing, values and gradients
    (random inputs have no ties, so the arg-max, and the gradient, is unique)."""
    layer = FractionalMaxPool2d(2**-0.5, overlapping=overlapping).double()
    layer.generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 17, 13, dtype=torch.double)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = layer(x)
    replay = torch.Generator().manual_seed(5)
    rows = fractional_boundaries(17, 12, overlapping, True, replay)
    cols = fractional_boundaries(13, 9, overlapping, True, replay)
    oracle = _region_maxima(x, rows, cols, overlapping)
    assert torch.equal(y, oracle)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last  # the layout is kept
    weights = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    (oracle_grad,) = torch.autograd.grad((oracle * weights).sum(), x)
    assert torch.allclose(grad, oracle_grad, rtol=0, atol=1e-12)  # the same arg-maxes; sums in another order
    assert torch.autograd.gradcheck(layer.eval(), (x,))


def test_fractional_pooling_gradients_eval_determinism_and_draw_averaging():
    layer = FractionalMaxPool2d(0.7).double().eval()
    x = torch.randn(1, 2, 10, 10, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.equal(layer(x), layer(x))  # eval: fixed regions
    layer.train()
    draws = {tuple(layer(x).flatten().tolist()) for _ in range(8)}
    assert len(draws) > 1  # training: new regions per call
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), FractionalMaxPool2d(), torch.nn.Flatten(), torch.nn.LazyLinear(3)
    )
    net(torch.randn(2, 1, 16, 16))
    probs = average_over_pooling_draws(net, torch.randn(5, 1, 16, 16), draws=6)
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(1), torch.ones(5))
    assert net.training and all(not m.resample_in_eval for m in net.modules() if isinstance(m, FractionalMaxPool2d))
    torch_kernel = FractionalMaxPool2d(backend="torch")
    assert torch_kernel(torch.randn(1, 1, 28, 28)).shape == (1, 1, 20, 20)
    with pytest.raises(ConfigError, match="output_ratio"):
        FractionalMaxPool2d(0.3)
    with pytest.raises(ConfigError, match="ratio must lie in"):
        FractionalMaxPool2d(0.9, overlapping=True)(torch.randn(1, 1, 2, 2))


# ---- the papers' MLPs and the plain ResNets ---------------------------------------------------------------------
def test_mlps_regularisers_and_max_norm():
    x = torch.randn(4, 1, 28, 28)
    for drop in ("none", "dropout", "dropconnect"):
        model = create("mlp-800", drop=drop, per_example=False, samples=10)
        assert model(x).shape == (4, 10) and model.forward_head(model.forward_features(x), pre_logits=True).shape == (
            4,
            800,
        )
    constrained = create("mlp-1024", max_norm=0.5)
    assert constrained.has_weight_constraints and not create("mlp-1024").has_weight_constraints
    constrained.apply_weight_constraints_()
    norms = [m.weight.norm(dim=1).max() for m in constrained.modules() if isinstance(m, torch.nn.Linear)]
    assert max(norms) <= 0.5 + 1e-6
    with pytest.raises(ConfigError, match="drop must be one of"):
        create("mlp-800", drop="sometimes")


def test_mlp_first_layer_has_its_own_max_norm():
    for max_norm in (1.75, None):  # fc1's bound alone, or beside the other layers'
        model = create("mlp-1024", max_norm=max_norm, max_norm_fc1=0.3)
        assert model.has_weight_constraints
        with torch.no_grad():
            for linear in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
                linear.weight.mul_(100)  # every row far outside any ball
        before = [m.weight.clone() for m in model.modules() if isinstance(m, torch.nn.Linear)]
        model.apply_weight_constraints_()
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert linears[0] is model.features.fc1.linear and linears[-1] is model.classifier.y
        torch.testing.assert_close(linears[0].weight.norm(dim=1), torch.full((1024,), 0.3))
        for linear, old in zip(linears[1:], before[1:], strict=True):
            if max_norm is None:
                assert torch.equal(linear.weight, old)  # unconstrained
            else:
                torch.testing.assert_close(linear.weight.norm(dim=1), torch.full((linear.out_features,), max_norm))
    with pytest.raises(ConfigError, match="max_norm_fc1 must be a positive norm bound"):
        create("mlp-1024", max_norm_fc1=0.0)


def test_plain_resnet_has_the_same_layers_without_shortcuts():
    plain, residual = create("resnet20", shortcut="none"), create("resnet20")
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in residual.parameters())
    residual.load_state_dict(plain.state_dict())  # same parameters, same names
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(plain.eval()(x), residual.eval()(x))


# ---- reproduce ----------------------------------------------------------------------------------------------------
def test_every_entry_is_well_formed():
    assert {e["name"] for e in list_entries()} >= {
        "lenet5-mnist",
        "dropconnect-mnist",
        "dropout-mnist",
        "maxout-mnist",
        "nin-mnist",
        "fgsm-adversarial-training",
        "resnet-degradation",
        "resnet-cifar",
        "nin-cifar",
        "maxout-cifar",
        "fractional-pooling",
    }
    for entry in ENTRIES.values():
        assert entry.arms and entry.paper and entry.goal and entry.differs and entry.quick
        for arm in entry.arms:
            create(arm.train["model"], **arm.model_options)  # every arm's model builds with its options


def _rows(errors_by_arm):
    return [Row(arm, "error", None, values, [1.0] * len(values)) for arm, values in errors_by_arm.items()]


def test_judges():
    entry = ENTRIES["dropout-mnist"]
    labels = [a.label for a in entry.arms]
    held = _rows(dict(zip(labels, ([1.6, 1.7], [1.3, 1.2], [1.1, 1.0]), strict=True)))
    assert judge(entry, held)[0] == "reproduced"
    broken = _rows(dict(zip(labels, ([1.6, 1.7], [1.3, 1.2], [1.4, 1.0]), strict=True)))
    verdict, why = judge(entry, broken)
    assert verdict == "not reproduced" and "seed(s) 0" in why
    lenet = ENTRIES["lenet5-mnist"]
    assert judge(lenet, [Row("LeNet-5", "error", 0.95, [0.94, 0.95], [1, 1])])[0] == "reproduced"
    assert judge(lenet, [Row("LeNet-5", "error", 0.95, [0.8, 0.82], [1, 1])])[0] == "beaten"
    assert judge(lenet, [Row("LeNet-5", "error", 0.95, [1.1, 1.2], [1, 1])])[0] == "not reproduced"
    degradation = ENTRIES["resnet-degradation"]
    rows = _rows({"plain-20": [9.0], "plain-56": [11.0], "ResNet-20": [8.5], "ResNet-56": [7.5]})
    assert judge(degradation, rows)[0] == "reproduced"


def test_bad_names_and_seeds_and_gpu_only_on_cpu(tmp_path):
    with pytest.raises(UnknownNameError):
        reproduce("lenet6-mnist")
    with pytest.raises(ConfigError, match="--seeds"):
        reproduce("lenet5-mnist", 0, out=tmp_path)
    with pytest.raises(ConfigError, match="GPU-sized"):
        reproduce("resnet-cifar", 1, device="cpu", out=tmp_path)


def test_expected_time_in_words_for_cpu_and_gpu_sized_entries(monkeypatch, tmp_path):
    """--list says what a seed costs: minutes, or for a GPU-sized entry the CPU hours that --cpu-anyway would take,
    and the refusal on a CPU names those hours."""
    from cnnlab.reproduce import run as reproduce_run

    lenet = ENTRIES["lenet5-mnist"]
    assert reproduce_run._cost_text(lenet) == f"CPU ~{lenet.cpu_minutes} min/seed, GPU ~{lenet.gpu_minutes} min/seed"
    big = dataclasses.replace(ENTRIES["resnet-cifar"], cpu_minutes=1860.0, gpu_minutes=None)
    assert reproduce_run._cost_text(big) == "GPU-sized (CPU ~31 h/seed with --cpu-anyway)"
    assert reproduce_run._cost_text(dataclasses.replace(big, cpu_minutes=150)) == (
        "GPU-sized (CPU ~2.5 h/seed with --cpu-anyway)"
    )
    assert reproduce_run._cost_text(dataclasses.replace(big, cpu_minutes=None)) == "GPU-sized (CPU time not measured)"
    monkeypatch.setitem(ENTRIES, "resnet-cifar", big)
    with pytest.raises(ConfigError, match="about 31 h a seed on a 2-core CPU"):
        reproduce("resnet-cifar", 1, device="cpu", out=tmp_path)
    listed = {e["name"]: e for e in list_entries()}["resnet-cifar"]
    assert listed["cost"] == "GPU-sized (CPU ~31 h/seed with --cpu-anyway)" and listed["cpu_minutes"] == 1860.0


def test_the_curves_figure_draws_every_arm_over_its_seeds():
    """He et al.'s figure: per arm the test error solid and the training error dashed, the mean over seeds, the
    range shaded; seeds of different lengths are drawn over the epochs they share."""
    from cnnlab.inspect.curves import arms_figure

    def run(*errors):
        return [{"epoch": e + 1, "train_error": t / 100, "test_error": v / 100} for e, (t, v) in enumerate(errors)]

    histories = {
        "plain-20": [run((30, 32), (20, 24), (10, 15)), run((32, 34), (22, 26))],  # the second seed stopped early
        "ResNet-20": [run((25, 28), (15, 20), (5, 10)), run((27, 30), (17, 22), (7, 12))],
    }
    ax = arms_figure(histories, "degradation").axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"plain-20, test", "plain-20, train", "ResNet-20, test", "ResNet-20, train"}
    assert list(lines["plain-20, test"].get_ydata()) == [33.0, 25.0]  # mean of the seeds over the shared 2 epochs
    assert list(lines["ResNet-20, train"].get_ydata()) == [26.0, 16.0, 6.0]
    assert lines["ResNet-20, train"].get_linestyle() == "--" and len(ax.collections) == 4  # a shaded range each
    # the final test errors (25, 11) are over a third of the highest point (34): the whole range is drawn
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 34 and "cut" not in ax.get_title()
    # MNIST-like arms: first epochs far above the final 1-2 %: the axis ends at 3x the highest final test error
    mnist = {"a": [run((14, 5), (1, 1.6), (0.2, 1.5))], "b": [run((11, 4), (2, 1.8), (0.5, 1.4))]}
    ax = arms_figure(mnist).axes[0]
    assert ax.get_ylim() == pytest.approx((0.0, 4.5)) and "cut at 3× the highest final test error" in ax.get_title()


def test_list_prints_every_entry(cli):
    code, out, _ = cli("reproduce", "--list")
    assert code == 0 and all(name in out for name in ENTRIES)
    # every entry says what a seed costs on the CPU, the GPU-sized ones what --cpu-anyway would take
    assert all(e["cpu_minutes"] for e in list_entries())
    assert "resnet-cifar" in out and "GPU-sized (CPU ~" in out and "CPU time not measured" not in out


@pytest.mark.skipif(not HAS_MNIST, reason="MNIST not in ../shared/datasets")
def test_quick_run_writes_its_table_and_resumes(cli, tmp_path, cache_home, monkeypatch):
    code, out, err = cli(
        "reproduce", "fractional-pooling", "--quick", "--seeds", "1", "--device", "cpu",
        "--data-root", SHARED_DATASETS, "--out", tmp_path / "fmp",
    )  # fmt: skip
    assert code == 0, err
    results = json.loads((tmp_path / "fmp" / "results.json").read_text())
    rows = {(r["arm"], r["metric"]): r for r in results["rows"]}
    assert set(rows) == {("2×2 max pooling", "error"), ("fractional max pooling", "error"),
                         ("fractional max pooling", "error_12_draws")}  # fmt: skip
    assert all(len(r["values"]) == 1 and all(0 <= v <= 100 for v in r["values"]) for r in rows.values())
    assert results["verdict"] in ("reproduced", "not reproduced") and "--quick" in out
    table = (tmp_path / "fmp" / "table.md").read_text()
    assert table.count("\n| ") == 4  # header + 3 rows
    assert "](curves.png)" in table and Image.open(tmp_path / "fmp" / "curves.png").size[0] > 300
    # the same command again reuses the finished runs (nothing retrained) and gives the same figures
    code, out, err = cli(
        "reproduce", "fractional-pooling", "--quick", "--seeds", "1", "--device", "cpu",
        "--data-root", SHARED_DATASETS, "--out", tmp_path / "fmp",
    )  # fmt: skip
    assert code == 0 and json.loads((tmp_path / "fmp" / "results.json").read_text())["rows"] == results["rows"]
    # runs of an earlier recipe of the entry (here: 1 epoch where it now asks 2) are refused before any training,
    # naming what changed, rather than stretched into runs of neither recipe
    entry = ENTRIES["fractional-pooling"]
    monkeypatch.setitem(ENTRIES, entry.name, dataclasses.replace(entry, quick={**entry.quick, "epochs": 2}))
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "fmp").rglob("*") if path.is_file()}
    code, out, err = cli(
        "reproduce", "fractional-pooling", "--quick", "--seeds", "1", "--device", "cpu",
        "--data-root", SHARED_DATASETS, "--out", tmp_path / "fmp",
    )  # fmt: skip
    assert code == 2 and "earlier recipe of fractional-pooling: epochs 1 (now 2)" in err and "--out NEW_FOLDER" in err
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "fmp").rglob("*") if path.is_file()} == written


@pytest.mark.slow  # ≈ 15 s: two spawned workers import torch
@pytest.mark.skipif(not HAS_MNIST, reason="MNIST not in ../shared/datasets")
def test_jobs_run_side_by_side_with_the_figures_of_one_thread_runs(tmp_path, cache_home):
    common = {"quick": True, "data_root": str(SHARED_DATASETS), "device": "cpu"}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what each of the two workers below gets
        alone = reproduce("dropout-mnist", 1, out=tmp_path / "alone", **common)
        torch.set_num_threads(2)
        said: list[str] = []
        together = reproduce("dropout-mnist", 1, out=tmp_path / "together", jobs=2, say=said.append, **common)
    finally:
        torch.set_num_threads(threads)
    assert [(r.arm, r.metric, r.values) for r in together.rows] == [(r.arm, r.metric, r.values) for r in alone.rows]
    assert together.verdict == alone.verdict and "1 thread(s) a run, 2 runs at a time" in together.device
    assert said == ["dropout-mnist: 3 runs, 2 at a time, 1 thread(s) each"]  # the workers print their own lines
    assert len([p for p in (tmp_path / "together").iterdir() if (p / "best.pt").is_file()]) == 3
    with pytest.raises(ConfigError, match="--jobs must be a positive whole number"):
        reproduce("dropout-mnist", 1, out=tmp_path / "x", jobs=0, **common)
    with pytest.raises(DataError):  # a worker's failure reaches the caller as itself
        reproduce("dropout-mnist", 1, quick=True, out=tmp_path / "y", data_root=str(tmp_path / "empty"), jobs=2)


QUICK_ENTRIES = [name for name in ENTRIES if name != "fractional-pooling"]


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK_ENTRIES)
def test_every_entry_quick(name, tmp_path, cache_home):
    data = {arm.train["data"] for arm in ENTRIES[name].arms}
    if ("mnist" in data and not HAS_MNIST) or ("cifar10-jpeg" in data and not HAS_CIFAR_JPEG):
        pytest.skip("dataset not in ../shared/datasets")
    result = reproduce(name, 1, quick=True, out=tmp_path / name, data_root=str(SHARED_DATASETS), device="cpu")
    entry = ENTRIES[name]
    assert len(result.rows) >= len(entry.arms) and result.verdict
    assert {r.arm for r in result.rows} == {a.label for a in entry.arms}
    assert (tmp_path / name / "table.md").is_file()


@pytest.mark.slow  # ~20 s: two interpreters, two short trainings
@pytest.mark.skipif(not HAS_MNIST, reason="MNIST not in ../shared/datasets")
def test_cpu_cost_script_times_an_entry_through_the_engine():
    """scripts/reproduce_cpu_cost.py (the CPU hours --list shows for GPU-sized entries) trains each arm two short
    epochs and scales its measured rates to the entry's epochs and sizes; an unknown entry is refused."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_cpu_cost.py"
    args = [sys.executable, str(script), "--per-class", "3", "--data-root", str(SHARED_DATASETS)]
    done = subprocess.run([*args, "nin-mnist"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    arm = next(line for line in done.stdout.splitlines() if line.startswith("| nin-mnist | NIN |"))
    train_rate, eval_rate, epochs, hours = (cell.strip() for cell in arm.strip("| \n").split("|")[2:])
    assert float(train_rate.replace(",", "")) > 0 and float(eval_rate.replace(",", "")) > 0
    assert int(epochs) == ENTRIES["nin-mnist"].arms[0].train["epochs"] and float(hours) > 0
    assert "**nin-mnist** | all 1 arms" in done.stdout
    refused = subprocess.run([*args, "lenet6-mnist"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "no entry named lenet6-mnist" in refused.stderr
