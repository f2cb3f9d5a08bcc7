"""The ``cnnlab`` command. Thin: parses arguments, calls the library, prints results and clear errors."""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
import textwrap
import time
from pathlib import Path

from cnnlab.errors import (
    CheckpointError,
    CnnlabError,
    ConfigError,
    DataError,
    NonFiniteLossError,
    TrainingInterrupted,
)

EXAMPLES = {
    "train": """
examples:
  cnnlab train                                   # LeNet-5 on the bundled digits, the paper's model
  cnnlab train --model lenet5-modern --epochs 10 --lr 0.05
  cnnlab train --model lenet5 --model-option head=softmax   # softmax output instead of the RBF
  cnnlab train --resume runs/lenet5-digits-20261122-101500   # continue an interrupted run exactly
""",
    "eval": """
examples:
  cnnlab eval runs/lenet5-digits-20261122-101500            # the run's own test split
  cnnlab eval runs/lenet5-digits-20261122-101500/checkpoint.pt --data digits
""",
    "predict": """
examples:
  cnnlab predict runs/lenet5-digits-20261122-101500 seven.png three.jpg
  cnnlab predict runs/lenet5-digits-20261122-101500 photo.png --invert   # dark ink on light paper
""",
    "summary": """
examples:
  cnnlab summary lenet5
  cnnlab summary lenet5-modern --input 3x32x32
  cnnlab summary runs/lenet5-digits-20261122-101500/checkpoint.pt
""",
    "models": """
examples:
  cnnlab models
  cnnlab models 'lenet*'
""",
    "data": """
examples:
  cnnlab data list
  cnnlab data info mnist --data-root ../shared/datasets
  cnnlab data get cifar10                      # downloads where the network allows (checksums verified)
  cnnlab data preview digits --augment lenet-distortions --out digits.png
  cnnlab data preview folder:~/photos --augment alexnet-2012
""",
    "attack": """
examples:
  cnnlab attack runs/mnist-lenet --eps 0,0.05,0.1,0.2,0.25,0.3
  cnnlab attack runs/mnist-lenet --method pgd --eps 0.1,0.3 --steps 20
  cnnlab attack runs/mnist-lenet --method fgsm --eps 0.2 --target 3      # drive every prediction to class 3
  cnnlab attack runs/mnist-lenet --method lbfgs --target 3 --limit 20    # Szegedy's smallest perturbation
  cnnlab attack runs/mnist-normal runs/mnist-adversarial --out robustness/   # both curves on one plot
""",
    "fool": """
examples:
  cnnlab fool runs/mnist-lenet --class 7
""",
    "viz": """examples:
  cnnlab viz filters runs/lenet5-digits
  cnnlab viz activations runs/lenet5-digits digit.png --layer c1 --layer c3
  cnnlab viz deconv runs/lenet5-digits --layer c3
  cnnlab viz top-patches runs/lenet5-digits --layer c3 --channel 5
  cnnlab viz occlusion runs/lenet5-digits --size 8 --stride 2
""",
    "report": """
examples:
  cnnlab report runs/lenet5-digits     # writes runs/lenet5-digits/report.html
""",
    "finetune": """
examples:
  cnnlab finetune runs/mnist-lenet --data fashion-mnist --freeze c3 --epochs 5
  cnnlab finetune runs/mnist-lenet --data fashion-mnist --train-from c5 --lr-head 0.05 --lr-body 0.005
  cnnlab finetune runs/mnist-lenet --data fashion-mnist --labels-per-class 100 --freeze c5 --unfreeze-at 3
  cnnlab finetune resnet18:torchvision --data folder:~/photos --freeze layer3     # needs the network once
""",
    "features": """
examples:
  cnnlab features runs/mnist-lenet --data fashion-mnist --layer c5 --out fm-c5.npz
""",
    "linear-probe": """
examples:
  cnnlab linear-probe fm-c5.npz --classifier svm
""",
    "bench": """
examples:
  cnnlab bench data            # input pipeline: cnnlab vs the usual torchvision way, side by side
  cnnlab bench data --quick    # seconds; checks that it runs
  cnnlab bench models resnet18 vgg11 --batch-size 16 --input-size 64   # ours vs torchvision, training images/s
  cnnlab bench train --data-root ../shared/datasets   # engine vs a plain loop; time to 99% on MNIST
  cnnlab bench adversarial     # FGSM over 10,000 images; adversarial vs normal epoch
  cnnlab bench transfer        # features of 70,000 images; linear probes on 60,000 vectors
  cnnlab bench viz --data-root ../shared/datasets   # occlusion and top-patches timings
""",
    "export": """
examples:
  cnnlab export runs/lenet5-digits --out lenet5.onnx --check
  cnnlab export runs/lenet5-digits --out lenet5.safetensors
  cnnlab export resnet20 --out resnet20.onnx --input 3x32x32
""",
}


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=110)


def build_parser() -> argparse.ArgumentParser:
    from cnnlab import __version__
    from cnnlab.train.config import AMP_MODES, LOSSES, OPTIMIZERS, PAPER_RECIPES, SCHEDULES

    parser = argparse.ArgumentParser(
        prog="cnnlab",
        description="Build, train, look inside, fool and reuse convolutional neural networks.",
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-paragraph errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_text, description=help_text, epilog=EXAMPLES.get(name), formatter_class=_formatter
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        return p

    t = command("train", "Train a model; writes a run directory with checkpoint, config, metrics and curves.")
    t.add_argument("--model", help="registered model name (default: lenet5; see `cnnlab models`)")
    t.add_argument("--data", help="dataset name (default: digits, the 1,797 digits bundled with scikit-learn)")
    t.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model's own option, repeatable (e.g. head=softmax for lenet5)",
    )
    t.add_argument("--epochs", type=int, help="passes over the training set (default: the recipe's; digits 40)")
    t.add_argument("--batch-size", type=int, help="images per step (default: the recipe's; digits 16, else 32)")
    t.add_argument(
        "--lr",
        type=float,
        help="learning rate η per step (default: the recipe: lenet5 0.003, head=softmax 0.1, others 0.05; ×10 for mse)",
    )
    t.add_argument("--momentum", type=float, help="μ in Δw ← μΔw − wd·η·w − η·∂E/∂w (default: 0.9)")
    t.add_argument("--weight-decay", type=float, help="wd in the same update (default: lenet5 0, others 5e-4)")
    t.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule, stepped per batch (default: cosine)")
    t.add_argument("--step-epochs", type=int, help="step schedule: epochs between decays (default: 10)")
    t.add_argument("--gamma", type=float, help="step schedule: factor per decay (default: 0.1)")
    t.add_argument("--loss", choices=LOSSES, help="cross_entropy, or mse: ½Σ(softmax − one-hot)² (default: ce)")
    t.add_argument(
        "--augment", help="augmentation preset(s), e.g. none, pad-crop-flip, crop+flip+pca (default: the dataset's)"
    )
    t.add_argument(
        "--adversarial", choices=("fgsm", "pgd"), help="adversarial training: α·J(x) + (1 − α)·J(x + ε·sign ∇ₓJ)"
    )
    t.add_argument("--adv-eps", type=float, help="ε of the training attack, pixel units in [0, 1] (default: 0.25)")
    t.add_argument("--adv-alpha", type=float, help="α, weight of the clean loss (default: 0.5, as Goodfellow et al.)")
    t.add_argument("--adv-steps", type=int, help="pgd: iterations of the training attack (default: 7)")
    t.add_argument("--labels-per-class", type=int, help="train on only N labelled images per class (seeded)")
    t.add_argument("--val-split", type=float, help="folder:PATH without train/ and val/: test fraction (default 0.2)")
    t.add_argument("--strict", action="store_true", default=None, help="photo folders: fail on unreadable files")
    t.add_argument("--num-workers", type=int, help="photo folders: decoding processes (default: 2)")
    t.add_argument(
        "--seed", type=int, help="seed of init, data order, augmentation (default: 0); CPU runs repeat bit for bit"
    )
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    t.add_argument("--data-root", help="where datasets live (default: $CNNLAB_DATA, else ~/.cache/cnnlab)")
    t.add_argument("--out", help="run directory (default: runs/<model>-<data>-<date>-<time>)")
    t.add_argument(
        "--resume",
        metavar="CHECKPOINT|RUN_DIR|auto",
        help="continue a run exactly: a checkpoint, a run directory (its newest readable checkpoint), or auto "
        "(the newest in --out if there is one, else start there: re-run the same command after a preemption)",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="--out holds a run: delete its checkpoints, metrics and summary and start afresh (default: refuse)",
    )
    t.add_argument("--recipe", choices=sorted(PAPER_RECIPES), help="a paper's optimisation settings; flags still win")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help="alexnet-sgd (default, the 2012 paper's form) | torch's")
    t.add_argument("--milestones", type=_int_list, help="multistep schedule: steps where η ×= gamma, e.g. 32000,48000")
    t.add_argument("--warmup-epochs", type=float, help="linear warm-up of η over this many epochs (default: 0)")
    t.add_argument("--label-smoothing", type=float, help="ε: targets (1 − ε)·one-hot + ε/K (default: 0)")
    t.add_argument("--clip-grad-norm", type=float, help="clip the gradient's global L2 norm to this (default: off)")
    t.add_argument("--accumulate-steps", type=int, help="split each batch into N micro-batches: same gradient")
    t.add_argument("--ema-decay", type=float, help="evaluate and save an EMA of the weights, e.g. 0.999 (default: off)")
    t.add_argument(
        "--no-decay-norm-and-bias",
        dest="decay_norm_and_bias",
        action="store_false",
        default=None,
        help="no weight decay on biases and normalisation layers",
    )
    t.add_argument(
        "--no-weight-constraints",
        dest="weight_constraints",
        action="store_false",
        default=None,
        help="skip the paper's per-step weight rule (ZF Net filter RMS 0.1, maxout max-norm)",
    )
    t.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: auto = bf16 on CUDA, off on CPU)")
    t.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="NHWC memory layout (default: on CUDA; on the CPU for the models that gain from it, all but maxout)",
    )
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    t.add_argument("--cuda-graphs", action="store_true", default=None, help="replay each step as a CUDA graph")
    t.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false", default=None)
    t.add_argument("--sync-bn", action="store_true", default=None, help="several GPUs: BatchNorm over the global batch")
    t.add_argument("--log-every", type=int, help="steps between progress updates (host syncs) (default: 10)")
    t.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps (default: at epoch ends)")
    t.add_argument("--keep-last", type=int, help="step checkpoints kept in <run>/checkpoints (default: 2)")
    t.add_argument("--tensorboard", action="store_true", default=None, help="TensorBoard events in <run>/tensorboard")

    e = command("eval", "Top-1 and top-k error (k = min(5, classes)) of a checkpoint on a dataset's test split.")
    e.add_argument("checkpoint", help="checkpoint file or run directory")
    e.add_argument("--data", help="dataset (default: the one the checkpoint was trained on)")
    e.add_argument("--data-root", help="where datasets live")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    e.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    e.add_argument(
        "--tta",
        choices=("flip", "10crop", "multiscale"),
        help="test-time augmentation: average softmax over the image and its mirror, the ten crops (corners, "
        "centre, mirrored), or three scales; mirrors and corners only if training flipped and cropped",
    )

    p = command("predict", "Top-k classes with probabilities for image files (PNG, JPEG, any mode).")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files; converted and resized as in training")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to show per image (default: 5)")
    p.add_argument(
        "--invert",
        action="store_true",
        help="invert grey levels first (the bundled digits and MNIST are light ink on black)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")

    s = command("summary", "Per layer: output shape, parameters, MACs/FLOPs and receptive field.")
    s.add_argument("model", metavar="NAME", help="registered model name, or a checkpoint file / run directory")
    s.add_argument("--input", metavar="CxHxW", help="input shape (default: the model's, e.g. 1x32x32)")
    s.add_argument("--num-classes", type=int, help="number of classes (default: the model's)")

    m = command("models", "List registered models with paper, year, default input size and parameter count.")
    m.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'lenet*'")

    a = command("attack", "Adversarial examples against a checkpoint: accuracy, confidence and perturbation per ε.")
    a.add_argument("checkpoint", nargs="+", help="checkpoint file(s) or run director(ies); several: one curve each")
    a.add_argument("--data", help="dataset (default: the checkpoint's); its test split is attacked")
    a.add_argument("--data-root", help="where datasets live")
    a.add_argument("--method", choices=("fgsm", "pgd", "lbfgs"), default="fgsm", help="attack (default: fgsm)")
    a.add_argument("--eps", default="0,0.05,0.1,0.15,0.2,0.25,0.3", help="comma-separated ε in pixel units [0, 1]")
    a.add_argument("--target", type=int, help="targeted attack: drive predictions to this class index")
    a.add_argument("--norm", choices=("linf", "l2"), help="pgd: the ε-ball's norm (default: linf)")
    a.add_argument("--steps", type=int, default=10, help="pgd: iterations (default: 10)")
    a.add_argument("--limit", type=int, help="attack only the first N test images (lbfgs is slow: default 100)")
    a.add_argument("--batch-size", type=int, default=500, help="images per batch (default: 500)")
    a.add_argument("--out", help="folder for robustness.png and examples.png (default: RUN_DIR/attack-METHOD)")
    a.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")

    f = command("fool", "Fooling images: noise the network calls a chosen class with high confidence.")
    f.add_argument("checkpoint", help="checkpoint file or run directory")
    f.add_argument("--class", dest="target_class", type=int, required=True, help="class index to fool into")
    f.add_argument("--count", type=int, default=8, help="how many images (default: 8)")
    f.add_argument("--steps", type=int, default=200, help="gradient-ascent steps at most (default: 200)")
    f.add_argument("--out", help="PNG path (default: RUN_DIR/fooling-class-K.png)")
    f.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")

    from cnnlab.inspect.views import add_view_arguments, view_list

    v = command(
        "viz", "Draw one view of a trained model as PNGs: filters, activations, deconv, top patches, occlusion..."
    )
    v.epilog = "views:\n" + view_list() + "\n" + EXAMPLES["viz"]
    v.add_argument("kind", metavar="KIND", help="which view (listed below)")
    v.add_argument("checkpoint", help="checkpoint file or run directory")
    v.add_argument(
        "images", nargs="*", metavar="IMAGE", help="image files (default: the first --count test images of its dataset)"
    )
    v.add_argument(
        "--layer", action="append", metavar="NAME", help="module (features.c1.conv) or stage (c1); repeatable"
    )
    v.add_argument("--channel", type=int, metavar="N", help="channel of the layer (default: the strongest / all)")
    v.add_argument("--out", default="viz", metavar="DIR", help="where the PNGs go (default: viz)")
    v.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    add_view_arguments(v)

    r = command("report", "Write RUN_DIR/report.html: config, summary, curves, confusion, filters, activations, ...")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `cnnlab train`")
    r.add_argument("--device", default="cpu", help="cpu | cuda | ... (default: cpu)")
    r.add_argument("--data-root", help="where datasets live")
    r.add_argument("--images", type=int, default=3, help="test images with activations and occlusion (default: 3)")
    r.add_argument("--units", type=int, default=8, help="units shown with top patches (default: 8)")
    r.add_argument("--mistakes", type=int, default=16, help="confident mistakes shown (default: 16)")

    ft = command("finetune", "Reuse a trained network on a new dataset: new head, frozen stages, own learning rates.")
    ft.add_argument("source", help="a cnnlab checkpoint / run directory, or MODEL:torchvision for ImageNet weights")
    ft.add_argument("--data", required=True, help="the new dataset")
    ft.add_argument("--data-root", help="where datasets live")
    group = ft.add_mutually_exclusive_group()
    group.add_argument("--freeze", metavar="STAGE", help="freeze the stages up to and including STAGE")
    group.add_argument("--train-from", metavar="STAGE", help="train STAGE and everything after it; freeze the rest")
    ft.add_argument("--train-bn", action="store_true", help="let frozen stages' batch-norm statistics adapt")
    ft.add_argument("--lr-head", type=float, help="learning rate of the new head (default: the recipe's η)")
    ft.add_argument("--lr-body", type=float, help="learning rate of the trainable stages (default: η/10)")
    ft.add_argument("--unfreeze-at", type=int, metavar="EPOCH", help="unfreeze every stage after this epoch")
    ft.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    ft.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    ft.add_argument("--labels-per-class", type=int, help="train on only N labelled images per class (seeded)")
    ft.add_argument("--augment", help="augmentation preset (default: the dataset's)")
    ft.add_argument("--seed", type=int, help="seed (default: 0)")
    ft.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    ft.add_argument("--out", help="run directory (default: runs/<model>-<data>-finetune-<time>)")
    ft.add_argument(
        "--overwrite", action="store_true", help="--out holds a run: delete its checkpoints, metrics and summary first"
    )

    fe = command("features", "Off-the-shelf features: pooled activations of one stage for every image, to a .npz.")
    fe.add_argument("source", help="checkpoint file or run directory")
    fe.add_argument("--data", required=True, help="dataset to describe")
    fe.add_argument("--data-root", help="where datasets live")
    fe.add_argument("--layer", required=True, help="stage name (see `cnnlab summary`), or pre-logits")
    fe.add_argument("--out", required=True, help="the .npz to write")
    fe.add_argument("--labels-per-class", type=int, help="keep only N training images per class (seeded)")
    fe.add_argument("--batch-size", type=int, default=1000, help="images per batch (default: 1000)")
    fe.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")

    lp = command("linear-probe", "Fit a linear classifier (scikit-learn) on a features file; print the test error.")
    lp.add_argument("features", help="a .npz written by `cnnlab features`")
    lp.add_argument("--classifier", choices=("svm", "logreg"), default="svm", help="linear SVM or logistic regression")
    lp.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength C (default: 1)")

    d = command("data", "Datasets: list them, show what is in one, download one, preview its augmentation.")
    d.add_argument("action", choices=("list", "info", "get", "preview"), help="what to do")
    d.add_argument("name", nargs="?", help="dataset name, or folder:PATH for your own images")
    d.add_argument("--data-root", help="where datasets live (default: $CNNLAB_DATA, else ~/.cache/cnnlab)")
    d.add_argument("--augment", help="preview: augmentation preset(s), e.g. pad-crop-flip or crop+flip+pca")
    d.add_argument("--out", help="preview: PNG path (default: <name>-<augment>.png)")
    d.add_argument("--count", type=int, default=8, help="preview: images per row, 1-64 (default: 8)")
    d.add_argument("--val-split", type=float, default=0.2, help="folder:PATH without train/ and val/: test fraction")

    b = command("bench", "Benchmarks, measured side by side against the plain PyTorch/torchvision way.")
    b.add_argument(
        "kind",
        choices=("data", "models", "train", "adversarial", "transfer", "viz"),
        help="what to measure (see docs/benchmarks.md)",
    )
    b.add_argument("--data-root", help="train, viz: where real MNIST is (default: $CNNLAB_DATA, ~/.cache/cnnlab)")
    b.add_argument("names", nargs="*", metavar="MODEL", help="models: which (default: lenet5-modern resnet20 vgg11)")
    b.add_argument("--quick", action="store_true", help="a few seconds: checks that it runs, not its speed")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    b.add_argument("--batch-size", type=int, default=32, help="models: images per step (default: 32)")
    b.add_argument("--input-size", type=int, help="models: square input side (default: the model's)")
    b.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="models: precision")
    b.add_argument("--channels-last", action="store_true", help="models: NHWC memory format for both")
    b.add_argument("--repeats", type=int, default=3, help="models: alternating rounds, medians reported (default: 3)")

    ex = command("export", "Export a checkpoint's model (or a registered model) to ONNX or safetensors.")
    ex.add_argument("model", help="checkpoint file / run directory, or a registered model name (random weights)")
    ex.add_argument("--out", required=True, help="file to write (.onnx or .safetensors)")
    ex.add_argument("--format", choices=("onnx", "safetensors"), help="default: from the --out suffix")
    ex.add_argument("--input", metavar="CxHxW", help="input shape (default: the checkpoint's or the model's)")
    ex.add_argument("--check", action="store_true", help="onnx: run it with onnxruntime and compare with PyTorch")
    return parser


# ---- train ---------------------------------------------------------------------------------------------------
TRAIN_FIELDS = (
    "adversarial",
    "adv_eps",
    "adv_alpha",
    "adv_steps",
    "labels_per_class",
    "val_split",
    "strict",
    "num_workers",
    "model",
    "data",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "step_epochs",
    "gamma",
    "loss",
    "augment",
    "seed",
    "device",
    "data_root",
    "out",
    "recipe",
    "optimizer",
    "milestones",
    "warmup_epochs",
    "label_smoothing",
    "clip_grad_norm",
    "accumulate_steps",
    "ema_decay",
    "decay_norm_and_bias",
    "weight_constraints",
    "amp",
    "channels_last",
    "compile",
    "cuda_graphs",
    "cudnn_benchmark",
    "sync_bn",
    "log_every",
    "checkpoint_every",
    "keep_last",
    "tensorboard",
)
# How fast and where a run goes may change when it resumes; what it computes may not.
RESUME_MAY_CHANGE = {
    "epochs",
    "device",
    "data_root",
    "amp",
    "channels_last",
    "compile",
    "cuda_graphs",
    "cudnn_benchmark",
    "log_every",
    "checkpoint_every",
    "keep_last",
    "tensorboard",
}


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def _parse_model_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--model-option {pair!r} must look like KEY=VALUE, e.g. head=softmax.")
        key, raw = pair.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word is a string
        options[key.strip().replace("-", "_")] = value
    return options


def _cmd_train(args: argparse.Namespace) -> int:
    from cnnlab.train.distributed import distributed_session
    from cnnlab.train.progress import log_console

    explicit = {f: getattr(args, f) for f in TRAIN_FIELDS if getattr(args, f) is not None}
    with distributed_session(explicit.get("device", "auto")) as context:  # None unless started by torchrun
        return _train(args, explicit, context, log_console())


def _train(args: argparse.Namespace, explicit: dict, context, console) -> int:
    from dataclasses import replace

    from cnnlab.inspect import plot_curves
    from cnnlab.train import TrainConfig, Trainer, build_run, find_resume_checkpoint, resolve
    from cnnlab.train.distributed import per_process_config
    from cnnlab.train.progress import QuietReporter, RichReporter

    main = context is None or context.is_main  # rank 0 alone prints and writes files
    say = console.print if main else (lambda *a, **k: None)
    if args.overwrite and args.resume:
        raise ConfigError("--overwrite starts a run afresh and --resume continues one; give one of them.")
    found = find_resume_checkpoint(args.resume, explicit.get("out"), warn=say) if args.resume else None
    options = _parse_model_options(args.model_option)
    if found is not None:
        payload, run_path = found
        saved = TrainConfig.from_dict(payload["config"])
        # The same command line can be re-run (--resume auto): only values that differ from the run's are refused.
        given = {k: v for k, v in explicit.items() if k not in RESUME_MAY_CHANGE and k != "out"}
        fixed = sorted(k for k, v in given.items() if v != getattr(saved, k))
        fixed += ["model_option"] if options and options != saved.model_options else []
        if fixed:
            flags = ", ".join("--" + f.replace("_", "-") for f in fixed)
            raise ConfigError(
                f"--resume continues a run with its own settings; {flags} cannot change. Only --epochs (to train "
                "longer), --device, --data-root and the speed, checkpoint and logging flags may be given."
            )
        config = resolve(replace(saved, **{k: v for k, v in explicit.items() if k in RESUME_MAY_CHANGE}))
        done = payload["train_state"]["epoch"]
        if config.epochs < done:
            raise ConfigError(f"--epochs {config.epochs} is fewer than the {done} epochs this run has completed.")
        run = build_run(per_process_config(config, context), run_dir=run_path)
    else:
        config = per_process_config(resolve(TrainConfig(**explicit, model_options=options)), context)
        # --resume auto with nothing to resume starts the run there, whatever an earlier attempt left
        run = build_run(config, overwrite=args.overwrite or args.resume == "auto")
        payload = None
    if run.run_dir.removed_orphans:
        say(f"note: removed {len(run.run_dir.removed_orphans)} unfinished *.tmp file(s) of writes a kill cut short")

    last_plot = [0.0]

    def curves(trainer: Trainer, row: dict) -> None:  # matplotlib is slow: at most every 20 s, and at the end
        if trainer.epoch == trainer.config.epochs or time.monotonic() - last_plot[0] > 20:
            plot_curves(trainer.history, run.run_dir.curves, f"{config.model} on {config.data}")
            last_plot[0] = time.monotonic()

    top_k = min(5, run.dataset.num_classes)  # what evaluate() measures as the "top5" error
    reporter = RichReporter(console) if main else QuietReporter()
    watch = _LearningWatch(say)
    objective = None
    if config.adversarial:
        from cnnlab.adversarial import AdversarialObjective

        objective = AdversarialObjective(
            run.preprocessing.mean,
            run.preprocessing.std,
            config.adv_eps,
            config.adv_alpha,
            config.adversarial,
            config.adv_steps,
            loss=config.loss,
            label_smoothing=config.label_smoothing,
        )
    trainer = Trainer(run, objective=objective, reporter=reporter, callbacks=(curves, watch))
    if payload is not None:
        trainer.load_state_dict(payload)
        say(f"Resuming {run.run_dir.path} at epoch {trainer.epoch + 1}, batch {trainer.batch}.")
        if trainer.epoch >= config.epochs:
            say(f"This run already completed {trainer.epoch} epochs; pass --epochs N (> {trainer.epoch}) to go on.")
            _complete_run_records(run, trainer, config)
            return 0
    if main:
        _write_run_config(run, trainer)
    processes = f" × {context.world_size} processes" if context is not None else ""
    say(
        f"Training {config.model} on {config.data} ({len(run.dataset.train):,} train / {len(run.dataset.test):,} test "
        f"images, input {'×'.join(map(str, run.preprocessing.input_size))}) on {run.device}{processes} "
        f"({trainer.fast.describe()}) for {config.epochs} epochs; run directory {run.run_dir.path}"
    )
    started = time.perf_counter()
    try:
        history = trainer.fit()
    except (TrainingInterrupted, NonFiniteLossError):
        if trainer.history and main:
            plot_curves(trainer.history, run.run_dir.curves, f"{config.model} on {config.data}")
        raise
    finally:
        trainer.close()
    if main:
        final = history[-1]
        print(
            f"final test error {final['test_error']:.2%} (accuracy {1 - final['test_error']:.2%}), "
            f"top-{top_k} error {final['test_top5_error']:.2%}, after {final['epoch']} epochs "
            f"({time.perf_counter() - started:.1f} s wall, training and evaluation)"
        )
        if config.adversarial:
            _robustness_after_training(run, trainer, config, say)
        print(f"run directory: {run.run_dir.path}")
    return 0


class _LearningWatch:
    """Epoch callback: warns (once) when training diverges without NaN: the training error is still at chance
    level after ``patience_steps`` steps, or the loss grows tenfold over its lowest value."""

    patience_steps = 100  # LeNet-5 on the digits is well below chance after 100 steps at any sane rate

    def __init__(self, say) -> None:
        self.say, self.warned, self.lowest = say, False, math.inf

    def __call__(self, trainer, row: dict) -> None:
        if self.warned:
            return
        classes = trainer.model.num_classes
        chance = 1 - 1 / classes
        loss, error, epoch = row["train_loss"], row["train_error"], row["epoch"]
        at_chance = error >= chance - 0.02 and trainer.step >= self.patience_steps
        exploded = loss > 10 * self.lowest and loss - self.lowest > 1
        self.lowest = min(self.lowest, loss)
        if not (at_chance or exploded):
            return
        self.warned = True
        lr = trainer.config.lr
        what = (
            f"the training error is {error:.1%}, at chance for {classes} classes ({chance:.0%}): the network is not "
            "learning"
            if at_chance
            else f"the training loss rose to {loss:.4g} from {self.lowest:.4g}: training is diverging"
        )
        self.say(
            f"warning: after epoch {epoch}, {what}. The learning rate --lr {lr:g} is probably too high; "
            f"try --lr {lr / 10:g}."
        )


def _complete_run_records(run, trainer, config) -> None:
    """Write what a kill after the last checkpoint left unwritten: metrics.csv, curves.png, summary.json."""
    from cnnlab.inspect import plot_curves

    if not trainer.is_main or not trainer.history:
        return
    run.run_dir.write_metrics(trainer.history)  # the full history, from the checkpoint
    if not run.run_dir.curves.exists():
        plot_curves(trainer.history, run.run_dir.curves, f"{config.model} on {config.data}")
    if not run.run_dir.summary.exists():
        trainer.fit()  # no epochs are left: it only writes summary.json
        print(f"wrote the missing {run.run_dir.summary}")


ROBUSTNESS_IMAGES = 10_000  # test images attacked for the curve written after adversarial training


def _robustness_after_training(run, trainer, config, say) -> None:
    """FGSM accuracy against ε on the test split, saved as <run>/robustness.{json,png} for the report."""
    from cnnlab.adversarial import robustness_curve, save_robustness

    eps_values = sorted({round(0.05 * i, 2) for i in range(7)} | {config.adv_eps})
    started = time.perf_counter()
    rows = robustness_curve(
        trainer.eval_model, run.preprocessing, run.test_loader, eps_values, "fgsm", limit=ROBUSTNESS_IMAGES
    )
    table, figure = save_robustness(
        rows, "fgsm", run.run_dir.path, f"{config.model}, --adversarial {config.adversarial}"
    )
    at = next(r for r in rows if r.eps == config.adv_eps)
    say(
        f"robustness (FGSM on {rows[0].samples:,} test images, {time.perf_counter() - started:.1f} s): accuracy "
        f"{rows[0].accuracy:.2%} clean, {at.accuracy:.2%} at ε = {config.adv_eps:g}; {table.name}, {figure.name}"
    )


def _write_run_config(run, trainer) -> None:
    from cnnlab import models

    info = models.get_model_info(run.config.model)
    record = {
        "config": run.config.to_dict(),
        "model": {**trainer.static_record["model"], "paper": info.paper, "year": info.year},
        "preprocessing": run.preprocessing.to_dict(),
        "data": {
            "name": run.config.data,
            "source": run.dataset.source,
            "train_samples": len(run.dataset.train),
            "test_samples": len(run.dataset.test),
            "classes": run.dataset.classes,
        },
        "device": str(run.device),
        "versions": trainer.static_record["versions"],
        "git": trainer.static_record["git"],
        "command": sys.argv,
    }
    run.run_dir.write_json("config.json", record)


# ---- eval / predict ------------------------------------------------------------------------------------------
def _checkpoint_model(path: str, device_name: str):
    from cnnlab.data import Preprocessing
    from cnnlab.train import load_checkpoint, model_from_checkpoint, resolve_device

    payload = load_checkpoint(path)
    device = resolve_device(device_name)
    return payload, model_from_checkpoint(payload, device), Preprocessing.from_dict(payload["preprocessing"]), device


def _test_loader(payload: dict, model, preprocessing, data_name: str | None, data_root, batch_size: int, device):
    """The test split of ``data_name`` (default: the checkpoint's), fitted with the checkpoint's preprocessing."""
    from cnnlab.data import DeviceTensorLoader
    from cnnlab.data.streaming import StreamingLoader
    from cnnlab.train.setup import dataset_from_checkpoint

    data_name = data_name or payload["data"]
    dataset = dataset_from_checkpoint(payload, data_name, data_root)  # the run's own root and held-out split
    if dataset.image_shape[0] != preprocessing.in_chans:
        raise DataError(
            f"Dataset {data_name!r} has {dataset.image_shape[0]}-channel images but the checkpoint's model takes "
            f"{preprocessing.in_chans}; use a dataset of the same kind."
        )
    if dataset.num_classes != model.num_classes:
        raise DataError(
            f"Dataset {data_name!r} has {dataset.num_classes} classes but the checkpoint's model predicts "
            f"{model.num_classes}; fine-tune it for the new classes first."
        )
    if data_name != payload["data"]:
        print(
            f"warning: the model was trained on {payload['data']!r}, not {data_name!r}: the shapes fit, but its "
            "classes may not mean the same there, so read the figures as a transfer test.",
            file=sys.stderr,
        )
    if dataset.streaming:
        loader = StreamingLoader(dataset.test.paths, dataset.test.labels, preprocessing, batch_size, device=device)
    else:
        images = preprocessing.fit(dataset.test.images)
        loader = DeviceTensorLoader(images, dataset.test.labels, preprocessing, batch_size, device=device)
    return data_name, dataset, loader


def _cmd_eval(args: argparse.Namespace) -> int:
    from cnnlab.train import ClassificationObjective, evaluate

    _require_positive("--batch-size", args.batch_size)
    payload, model, preprocessing, device = _checkpoint_model(args.checkpoint, args.device)
    data_name, _, loader = _test_loader(
        payload, model, preprocessing, args.data, args.data_root, args.batch_size, device
    )
    if args.tta:
        from cnnlab.data.tta import evaluate_tta, plan_tta

        plan = plan_tta(args.tta, (payload.get("config") or {}).get("augment"))  # only views training covered
        if plan.note:
            print(f"note: {plan.note}", file=sys.stderr)
        result = evaluate_tta(model, loader, preprocessing, plan)
    else:
        result = evaluate(model, loader, ClassificationObjective("cross_entropy"))
    k = min(5, payload["model"]["num_classes"])
    tta = f", test-time augmentation {args.tta}" if args.tta else ""
    print(f"{payload['model']['name']} on {data_name} test split ({result['samples']:,} images{tta})")
    print(f"top-1 error {result['top1_error']:.2%}  (accuracy {1 - result['top1_error']:.2%})")
    print(f"top-{k} error {result['top5_error']:.2%}")
    print(f"cross-entropy {result['loss']:.4f}")
    return 0


def _parse_eps(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--eps {text!r} must be comma-separated numbers, e.g. 0,0.1,0.25.") from None
    if not values:
        raise ConfigError("--eps needs at least one value.")
    return values


def _cmd_attack(args: argparse.Namespace) -> int:
    from cnnlab.adversarial import PixelModel, check_epsilon, plot_examples, plot_robustness, robustness_curve
    from cnnlab.adversarial.evaluate import attack_batch, test_split_pixels
    from cnnlab.outputs import output_dir

    if args.norm is not None and args.method != "pgd":
        raise ConfigError(
            f"--norm {args.norm} applies to pgd only: {args.method} is an "
            f"{'L∞ (sign-gradient)' if args.method == 'fgsm' else 'L2 (smallest perturbation)'} attack by "
            "definition. Use --method pgd --norm l2, or leave --norm out."
        )
    norm = args.norm or "linf"
    eps_values = [check_epsilon(e, norm) for e in _parse_eps(args.eps)]
    for flag in ("limit", "steps", "batch_size"):
        _require_positive("--" + flag.replace("_", "-"), getattr(args, flag))
    # Every checkpoint, dataset, target and output folder is checked before the first attack starts.
    jobs = []
    for checkpoint in args.checkpoint:
        payload, model, preprocessing, device = _checkpoint_model(checkpoint, args.device)
        data_name, _, loader = _test_loader(
            payload, model, preprocessing, args.data, args.data_root, args.batch_size, device
        )
        if args.target is not None and not 0 <= args.target < model.num_classes:
            raise ConfigError(
                f"--target {args.target} is out of range: the model has classes 0..{model.num_classes - 1}."
            )
        run_dir = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
        out = Path(args.out) if args.out else run_dir / f"attack-{args.method}"
        jobs.append((checkpoint, payload, model, preprocessing, device, data_name, loader, out))
    for job in jobs:
        output_dir(job[-1])
    curves = {}
    for index, (checkpoint, payload, model, preprocessing, device, data_name, loader, out) in enumerate(jobs):
        pixel_model = PixelModel(model, preprocessing.mean, preprocessing.std).to(device).eval()
        limit = args.limit if args.limit is not None else (100 if args.method == "lbfgs" else None)
        options = {"steps": args.steps, "norm": norm, "num_classes": model.num_classes}
        eps_run = [0.0] if args.method == "lbfgs" else eps_values
        rows = robustness_curve(
            model, preprocessing, loader, eps_run, args.method, target=args.target, limit=limit, **options
        )
        what = f"{args.method}{' targeted at class ' + str(args.target) if args.target is not None else ''}"
        print(
            f"{checkpoint}: {payload['model']['name']} on {data_name} test split ({rows[0].samples:,} images), {what}"
        )
        header = f"{'eps':>6} {'accuracy':>9} {'confidence':>11} {'mean L∞':>8} {'mean L2':>8}"
        print(header + ("  target hit" if args.target is not None else ""))
        for r in rows:
            line = f"{r.eps:6.3f} {r.accuracy:9.2%} {r.confidence:11.2%} {r.linf:8.4f} {r.l2:8.4f}"
            print(line + (f"  {r.target_rate:10.2%}" if r.target_rate is not None else ""))
        curves[Path(checkpoint).name if Path(checkpoint).is_dir() else str(checkpoint)] = rows
        pixels, labels = next(test_split_pixels(loader, preprocessing))
        pixels, labels = pixels[:6], labels[:6]
        show_eps = max(eps_values)
        goal = None if args.target is None else labels.new_full(labels.shape, args.target)
        adversarial = attack_batch(pixel_model, pixels, labels, args.method, show_eps, target=goal, **options)
        suffix = f"-{index + 1}" if len(args.checkpoint) > 1 else ""
        plot_examples(pixel_model, pixels, adversarial, payload["classes"], out / f"examples{suffix}.png", show_eps)
        print(f"figure: {out / f'examples{suffix}.png'}")
    if args.method != "lbfgs":
        plot_robustness(curves, out / "robustness.png", f"{args.method} on {data_name}")
        print(f"figure: {out / 'robustness.png'}")
    return 0


def _cmd_fool(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import save_image

    from cnnlab.adversarial import PixelModel, fooling_image_batches
    from cnnlab.adversarial.attacks import FOOLING_BATCH
    from cnnlab.outputs import image_suffixes, output_file

    _require_positive("--count", args.count)
    _require_positive("--steps", args.steps)
    payload, model, preprocessing, device = _checkpoint_model(args.checkpoint, args.device)
    if not 0 <= args.target_class < model.num_classes:
        raise ConfigError(
            f"--class {args.target_class} is out of range: the model has classes 0..{model.num_classes - 1}."
        )
    run_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
    out = Path(args.out) if args.out else run_dir / f"fooling-class-{args.target_class}.png"
    output_file(out, "--out", image_suffixes(), "image")
    pixel_model = PixelModel(model, preprocessing.mean, preprocessing.std).to(device).eval()
    batches = fooling_image_batches(
        pixel_model,
        args.target_class,
        preprocessing.input_size,
        count=args.count,
        steps=args.steps,
        generator=torch.Generator().manual_seed(0),
        device=device,
    )
    confidences, written = [], []
    for index, (images, confidence) in enumerate(batches):  # one image file per batch: memory stays bounded
        path = out if args.count <= FOOLING_BATCH else out.with_name(f"{out.stem}-{index + 1:05d}{out.suffix}")
        scale = max(1, 96 // images.shape[-1])
        grid = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        save_image(grid, path, nrow=min(len(images), 16))
        confidences += confidence.tolist()
        written.append(path)
    name = payload["classes"][args.target_class]
    if len(confidences) <= 16:
        summary = ", ".join(f"{c:.1%}" for c in confidences)
    else:
        ranked = sorted(confidences)
        summary = f"min {ranked[0]:.1%}, median {ranked[len(ranked) // 2]:.1%}, max {ranked[-1]:.1%}"
    print(f"{args.count} noise images grown towards {name!r}: confidence {summary}")
    missed = sum(c < 0.5 for c in confidences)
    if missed:
        print(
            f"warning: {missed} of {args.count} images are not called {name!r} with confidence ≥ 50% after "
            f"{args.steps} steps; give more --steps.",
            file=sys.stderr,
        )
    print(f"wrote {written[0]}" + (f" ... {written[-1]} ({len(written)} files)" if len(written) > 1 else ""))
    return 0


def _require_positive(flag: str, value: float | None, whole: bool = True) -> None:
    """A flag that must be a positive number (a whole one if ``whole``): a ConfigError naming it otherwise."""
    import math

    if value is None:
        return
    if not (math.isfinite(value) and value > 0):
        kind = "whole number" if whole else "number"
        raise ConfigError(f"{flag} must be a positive {kind}, got {value:g}.")


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch

    payload, model, preprocessing, device = _checkpoint_model(args.checkpoint, args.device)
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}.")
    images = [preprocessing.load_image(path) for path in args.images]  # every file checked before any output
    batch = torch.stack(images).to(device)  # (N, C, H, W) uint8
    if args.invert:
        batch = 255 - batch
    with torch.no_grad():
        probabilities = model(preprocessing.normalize(batch)).softmax(dim=1).cpu()
    classes = payload["classes"]
    k = min(args.top_k, len(classes))
    for path, probs in zip(args.images, probabilities, strict=True):
        top = probs.topk(k)
        ranked = ", ".join(
            f"{classes[i]} {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        )
        print(f"{path}: {ranked}")
    return 0


# ---- summary / models ----------------------------------------------------------------------------------------
def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input {text!r} must be CxHxW with positive whole numbers, e.g. 1x32x32 or 3x224x224.")
    return shape  # type: ignore[return-value]


def _saved_or_registered_model(spec: str, **create_options: object):
    """(model, its input shape): a checkpoint's (or run directory's) model with its stored preprocessing, or a
    registered model name built with ``create_options`` (e.g. ``device="meta"`` for shapes only)."""
    from cnnlab import models

    path = Path(spec)
    if not path.exists() and (path.suffix in (".pt", ".pth") or "/" in spec or "\\" in spec):
        raise CheckpointError(
            f"Checkpoint {spec!r} does not exist. Give a checkpoint file, a run directory, or a model name "
            "(`cnnlab models` lists them)."
        )
    if path.exists():
        from cnnlab.data import Preprocessing
        from cnnlab.train import load_checkpoint, model_from_checkpoint

        payload = load_checkpoint(spec)
        return model_from_checkpoint(payload), Preprocessing.from_dict(payload["preprocessing"]).input_size
    info = models.get_model_info(spec)
    return models.create(spec, **create_options), info.input_size


def _cmd_summary(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cnnlab.inspect import render_summary, summarize

    requested = _parse_shape(args.input) if args.input else None
    options = {"device": "meta", "num_classes": args.num_classes, "in_chans": requested[0] if requested else None}
    model, default_shape = _saved_or_registered_model(args.model, **options)
    render_summary(summarize(model, requested or default_shape), Console(width=max(Console().width, 132)))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnnlab import models

    names = models.list_models(args.pattern)
    if not names:
        raise ConfigError(f"No model matches {args.pattern!r}; `cnnlab models` lists them all.")
    table = Table(title="cnnlab models", title_justify="left")
    for column in ("name", "paper", "year", "input", "params", "description"):
        table.add_column(column, justify="right" if column in ("year", "params") else "left")
    for name in names:
        info = models.get_model_info(name)
        model = models.create(name, device="meta")  # shapes only: free even for large models
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        table.add_row(
            name, info.paper, str(info.year), "×".join(map(str, info.input_size)), f"{params:,}", info.description
        )
    Console(width=max(Console().width, 160)).print(table)
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from cnnlab.train.distributed import distributed_session
    from cnnlab.train.progress import log_console

    with distributed_session(args.device or "auto") as context:  # None unless started by torchrun
        return _finetune(args, context, log_console())


def _finetune(args: argparse.Namespace, context, console) -> int:
    from cnnlab.inspect import plot_curves
    from cnnlab.train import TrainConfig, Trainer, build_run, load_checkpoint, model_from_checkpoint, resolve
    from cnnlab.train.distributed import broadcast_object, per_process_config
    from cnnlab.train.progress import QuietReporter, RichReporter
    from cnnlab.train.rundir import default_run_dir
    from cnnlab.transfer import adapt_input_channels, freeze, frozen_stages, head_and_body_parameters, unfreeze

    main = context is None or context.is_main  # rank 0 alone prints and writes files
    say = console.print if main else (lambda *a, **k: None)
    _require_positive("--lr-head", args.lr_head, whole=False)
    _require_positive("--lr-body", args.lr_body, whole=False)
    _require_positive("--unfreeze-at", args.unfreeze_at)
    if args.unfreeze_at is not None and not (args.freeze or args.train_from):
        raise ConfigError("--unfreeze-at unfreezes the stages --freeze or --train-from froze; give one of them.")
    if args.source.endswith(":torchvision"):
        from cnnlab import models

        name = args.source.split(":", 1)[0]
        source_model = models.create(name, weights="torchvision")
        source = {"name": name, "options": {}, "weights": "torchvision"}
    else:
        payload = load_checkpoint(args.source)
        source_model = model_from_checkpoint(payload)
        source = {
            "name": payload["model"]["name"],
            "options": payload["model"].get("options", {}),
            "weights": str(args.source),
        }
    explicit = {
        k: getattr(args, k)
        for k in ("epochs", "batch_size", "augment", "seed", "device", "data_root")
        if getattr(args, k) is not None
    }
    out = args.out or (str(default_run_dir(source["name"], args.data + "-finetune")) if main else None)
    if context is not None:
        out = broadcast_object(out)  # rank 0's time stamp: one run directory
    config = resolve(
        TrainConfig(
            model=source["name"],
            data=args.data,
            model_options=dict(source["options"]),
            out=out,
            labels_per_class=args.labels_per_class,
            **explicit,
        )
    )
    if args.unfreeze_at is not None and args.unfreeze_at >= config.epochs:
        raise ConfigError(
            f"--unfreeze-at {args.unfreeze_at} is not before the last of the {config.epochs} epochs, so nothing "
            f"would train unfrozen; give 1..{config.epochs - 1}, or more --epochs."
        )
    # new data, preprocessing and loaders; its fresh model is replaced by the source's
    run = build_run(per_process_config(config, context), overwrite=args.overwrite)
    note = adapt_input_channels(source_model, run.dataset.image_shape[0])
    if note:
        say(note)
    source_model.reset_classifier(run.dataset.num_classes)
    run.model = source_model.to(run.device)
    stages = frozen_stages(run.model, args.freeze, args.train_from)
    freeze(run.model, stages, train_bn=args.train_bn)
    lr_head = args.lr_head if args.lr_head is not None else config.lr
    lr_body = args.lr_body if args.lr_body is not None else lr_head / 10
    head, body = head_and_body_parameters(run.model)
    groups = [{"params": head, "lr": lr_head}, {"params": body, "lr": lr_body}]

    def gradual_unfreeze(trainer: Trainer, row: dict) -> None:  # in every process
        if args.unfreeze_at is not None and trainer.epoch == args.unfreeze_at and stages:
            unfreeze(trainer.model, stages)
            trainer.trainable_parameters_changed()  # DDP re-registers what it synchronises
            say(f"epoch {trainer.epoch}: unfroze {', '.join(stages)}")

    def curves(trainer: Trainer, row: dict) -> None:
        if trainer.epoch == trainer.config.epochs:
            plot_curves(trainer.history, run.run_dir.curves, f"{source['name']} fine-tuned on {args.data}")

    trainer = Trainer(
        run,
        reporter=RichReporter(console) if main else QuietReporter(),
        callbacks=(curves,),
        epoch_hooks=(gradual_unfreeze,),
        param_groups=groups,
    )
    trainer.static_record["transfer"] = {
        "source": source,
        "frozen_stages": stages,
        "train_bn": args.train_bn,
        "lr_head": lr_head,
        "lr_body": lr_body,
        "unfreeze_at": args.unfreeze_at,
        "labels_per_class": args.labels_per_class,
    }
    if main:
        _write_run_config(run, trainer)
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    say(
        f"Fine-tuning {source['name']} from {source['weights']} on {args.data} "
        f"({run.train_loader.num_samples:,} training images); frozen: {', '.join(stages) or 'none'}; "
        f"{trainable:,} trainable parameters; η head {lr_head:g}, body {lr_body:g}"
    )
    try:
        history = trainer.fit()
    finally:
        trainer.close()
    if main:
        final = history[-1]
        accuracy = 1 - final["test_error"]
        print(f"final test error {final['test_error']:.2%} (accuracy {accuracy:.2%}) after {final['epoch']} epochs")
        print(f"run directory: {run.run_dir.path}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    import time

    from cnnlab.data import DeviceTensorLoader, Preprocessing, load_dataset
    from cnnlab.outputs import output_file
    from cnnlab.train import load_checkpoint, model_from_checkpoint, resolve_device
    from cnnlab.train.setup import subset_per_class
    from cnnlab.transfer import adapt_input_channels, extract_features, feature_layers, save_features

    _require_positive("--batch-size", args.batch_size)
    _require_positive("--labels-per-class", args.labels_per_class)
    payload = load_checkpoint(args.source)
    device = resolve_device(args.device)
    model = model_from_checkpoint(payload, device)
    output_file(args.out, "--out", {".npz"}, "features file (NumPy .npz)")
    if args.layer not in feature_layers(model):
        from cnnlab.errors import UnknownNameError

        raise UnknownNameError("layer", args.layer, feature_layers(model))
    source_pre = Preprocessing.from_dict(payload["preprocessing"])
    dataset = load_dataset(args.data, args.data_root)
    if dataset.streaming:
        raise ConfigError("`cnnlab features` streams in-memory datasets; for photo folders use `cnnlab finetune`.")
    note = adapt_input_channels(model, dataset.image_shape[0])
    if note:
        print(note)
    c = dataset.image_shape[0]
    pre = (
        Preprocessing(
            c,
            source_pre.resize,
            source_pre.pad,
            source_pre.mean[:1] * c,
            source_pre.std[:1] * c,
            source_pre.keep_aspect,
            source_pre.crop,
        )
        if c != source_pre.in_chans
        else source_pre
    )
    start = time.perf_counter()
    splits = []
    train = (
        dataset.train if args.labels_per_class is None else subset_per_class(dataset.train, args.labels_per_class, 0)
    )
    for split in (train, dataset.test):
        loader = DeviceTensorLoader(pre.fit(split.images), split.labels, pre, args.batch_size, device=device)
        splits.append(extract_features(model, loader, args.layer))
    seconds = time.perf_counter() - start
    meta = {"source": str(args.source), "layer": args.layer, "data": args.data, "classes": dataset.classes}
    path = save_features(args.out, splits[0], splits[1], meta)
    n = len(splits[0][1]) + len(splits[1][1])
    print(f"{n:,} images -> {splits[0][0].shape[1]}-d features of {args.layer!r} in {seconds:.1f} s; wrote {path}")
    return 0


def _cmd_linear_probe(args: argparse.Namespace) -> int:
    from cnnlab.transfer import linear_probe, load_features

    _require_positive("--c", args.c, whole=False)
    features = load_features(args.features)
    result = linear_probe(features, args.classifier, args.c)
    meta = features.get("meta", {})
    print(
        f"{args.classifier} on {result['train_samples']:,} × {result['dim']}-d features "
        f"({meta.get('layer', '?')} of {meta.get('source', '?')}, data {meta.get('data', '?')}): "
        f"test error {result['test_error']:.2%} (train {result['train_error']:.2%}), fit {result['fit_seconds']:.1f} s"
    )
    return 0


def _cmd_viz(args: argparse.Namespace) -> int:
    from cnnlab.errors import UnknownNameError
    from cnnlab.inspect.views import VIEWS, options_from_args, run_view
    from cnnlab.outputs import output_dir

    if args.kind not in VIEWS:
        raise UnknownNameError("view", args.kind, VIEWS)
    output_dir(args.out)
    result = run_view(
        args.kind,
        args.checkpoint,
        args.images,
        layer=args.layer,
        channel=args.channel,
        out_dir=args.out,
        device=args.device,
        **options_from_args(args),
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for path in result.paths:
        print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cnnlab.inspect import write_report
    from cnnlab.train import load_checkpoint

    given = Path(args.run_dir)
    if given.is_file():  # a checkpoint file stands for its run directory only if it is that run's checkpoint.pt
        load_checkpoint(given)
        latest = given.parent / "checkpoint.pt"
        if not (latest.is_file() and os.path.samefile(given, latest)):
            raise ConfigError(
                f"`cnnlab report` describes a whole run directory, and {given} is not its checkpoint.pt; give the "
                f"run directory ({given.parent}), or look at this one checkpoint with `cnnlab viz`."
            )
    path = write_report(
        args.run_dir,
        device=args.device,
        data_root=args.data_root,
        images=args.images,
        units=args.units,
        mistakes=args.mistakes,
    )
    print(path)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.export import check_onnx, export_model
    from cnnlab.outputs import output_file

    fmt = args.format or ("safetensors" if str(args.out).endswith(".safetensors") else "onnx")
    if args.check and fmt != "onnx":
        raise ConfigError("--check runs the exported ONNX file; it does not apply to safetensors. Leave it out.")
    requested = _parse_shape(args.input) if args.input else None
    model, shape = _saved_or_registered_model(args.model)
    shape = requested or shape
    output_file(args.out, "--out", None, f"{fmt} file")
    path = export_model(model, args.out, fmt, shape)
    print(f"wrote {path} ({fmt}, input {'×'.join(map(str, shape))})")
    if args.check:
        print(f"onnxruntime vs PyTorch: largest absolute difference {check_onnx(model, path):.2e}")
    return 0


PREVIEW_MAX_COUNT = 64  # images per row of a preview: a figure, not a dump (memory stays bounded)


def _cmd_data(args: argparse.Namespace) -> int:
    from cnnlab.data import channel_stats, get_dataset_info, list_datasets, load_dataset

    if args.action == "list":
        for name in list_datasets():
            info = get_dataset_info(name)
            print(f"{name:14} {info.description}  [--augment default: {info.augment}]")
        print(f"{'folder:PATH':14} your own images, one sub-folder per class (PATH/train and PATH/val if present)")
        return 0
    if not args.name:
        raise ConfigError(f"`cnnlab data {args.action}` needs a dataset name; `cnnlab data list` shows them.")
    info = get_dataset_info(args.name)
    if args.action == "preview":
        from cnnlab.outputs import image_suffixes, output_file

        if not 1 <= args.count <= PREVIEW_MAX_COUNT:
            raise ConfigError(f"--count must be between 1 and {PREVIEW_MAX_COUNT} images per row, got {args.count}.")
        spec = args.augment or info.augment
        out = args.out or f"{args.name.replace(':', '_').replace('/', '_')}-{spec.replace('+', '_')}.png"
        output_file(out, "--out", image_suffixes(), "image")
    dataset = load_dataset(args.name, args.data_root, fetch=args.action == "get", val_split=args.val_split)
    if args.action == "preview":
        from cnnlab.data.preview import preview_grid

        print(f"wrote {preview_grid(dataset, spec, out, count=args.count)} (row 1: as stored; rows 2-4: {spec})")
        return 0
    c, h, w = dataset.image_shape
    print(f"{dataset.name}: {info.description}")
    print(f"  files:    {dataset.source}")
    print(f"  train:    {len(dataset.train):,} images   test: {len(dataset.test):,} images")
    more = " ..." if dataset.num_classes > 12 else ""
    print(f"  classes:  {dataset.num_classes}: {', '.join(dataset.classes[:12])}{more}")
    if dataset.streaming:
        print(f"  images:   {c} channels, sizes vary (photos; resized and cropped to the model's input)")
    else:
        mean, std = channel_stats(dataset.train.images)
        print(f"  images:   {c}×{h}×{w} uint8")
        mean_text, std_text = ", ".join(f"{m:.4f}" for m in mean), ", ".join(f"{s:.4f}" for s in std)
        print(f"  mean/std: {mean_text} / {std_text} (train, [0, 1] scale)")
    print(f"  augment:  {info.augment} (the default --augment)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from cnnlab.train import resolve_device

    if args.names and args.kind != "models":
        raise ConfigError(
            f"`cnnlab bench {args.kind}` takes no model names ({', '.join(args.names)}); they are for "
            "`cnnlab bench models MODEL ...`."
        )
    for flag in ("batch_size", "repeats", "input_size"):
        _require_positive("--" + flag.replace("_", "-"), getattr(args, flag))
    device = resolve_device(args.device)
    if args.kind == "models":
        from cnnlab.bench.models import bench_models

        names = args.names or ["lenet5-modern", "resnet20", "vgg11"]
        rows = bench_models(
            names,
            args.batch_size,
            args.input_size,
            str(device),
            dtype=args.dtype,
            channels_last=args.channels_last,
            repeats=args.repeats,
            quick=args.quick,
        )
        print(f"training images/s on {device}, {args.dtype}, ours vs torchvision's model of the same name")
        print(f"{'model':16} {'cnnlab':>10} {'torchvision':>12} {'ratio':>7}")
        for row in rows:
            tv = row.get("torchvision_images_per_s")
            ratio = f"{row['ratio']:6.2f}×" if row.get("ratio") else "   n/a"
            tv_text = f"{tv:12,.0f}" if tv else f"{'(none)':>12}"
            print(f"{row['model']:16} {row['ours_images_per_s']:10,.0f} {tv_text} {ratio}")
        return 0
    if args.kind == "train":
        from cnnlab.bench import train as bench_train

        print(bench_train.run(quick=args.quick, device=str(device), mnist_root=args.data_root))
        return 0
    if args.kind == "viz":
        from cnnlab.bench import viz

        print(viz.format_rows(viz.run(quick=args.quick, device=str(device), data_root=args.data_root)))
        return 0
    if args.kind == "adversarial":
        from cnnlab.bench import adversarial

        attack, epoch = adversarial.run(quick=args.quick, device=str(device))
        print(
            f"FGSM (ε = 0.25) over {attack['images']:,} images, {attack['model']} on {device}: "
            f"cnnlab {attack['cnnlab_s']:.2f} s, usual loop {attack['usual_s']:.2f} s"
        )
        print(
            f"one epoch of {epoch['images']:,} images (median of {len(epoch['ratios'])} alternating rounds): normal "
            f"{epoch['normal_s']:.2f} s, adversarial (FGSM, α = 0.5) {epoch['adversarial_s']:.2f} s; "
            f"ratio {epoch['ratio']:.2f}× (median of the rounds: "
            + ", ".join(f"{r:.2f}×" for r in epoch["ratios"])
            + ")"
        )
        return 0
    if args.kind == "transfer":
        from cnnlab.bench import transfer

        features, probes = transfer.run(quick=args.quick, device=str(device))
        print(
            f"LeNet-5 c5 features of {features['images']:,} images on {device}: cnnlab {features['cnnlab_s']:.2f} s, "
            f"usual DataLoader way {features['usual_s']:.2f} s ({features['usual_s'] / features['cnnlab_s']:.1f}×; "
            f"same features: {features['same_features']})"
        )
        for p in probes:
            print(
                f"linear probe ({p['classifier']}) on {p['samples']:,} × {p['dim']}-d vectors: fit {p['fit_s']:.1f} s"
            )
        return 0
    if args.kind == "data":
        from cnnlab.bench.data import run

        print(f"input pipeline, images/s on {device} (shuffled, augmented, normalised batches of 512 on the device)")
        print(f"{'data':12} {'images':>8} {'cnnlab':>10} {'usual way':>10} {'ratio':>7}")
        for row in run(quick=args.quick, device=str(device)):
            ours, usual = row.cnnlab_images_per_s, row.usual_images_per_s
            print(f"{row.shape:12} {row.images:8,} {ours:10,.0f} {usual:10,.0f} {row.ratio:6.1f}×")
        print("usual way: PIL images + torchvision.transforms.v2 per sample + DataLoader(num_workers=2)")
    return 0


COMMANDS = {
    "viz": _cmd_viz,
    "report": _cmd_report,
    "export": _cmd_export,
    "finetune": _cmd_finetune,
    "features": _cmd_features,
    "linear-probe": _cmd_linear_probe,
    "attack": _cmd_attack,
    "fool": _cmd_fool,
    "data": _cmd_data,
    "bench": _cmd_bench,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "predict": _cmd_predict,
    "summary": _cmd_summary,
    "models": _cmd_models,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cnnlab`` command; returns the exit status."""
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:  # answered before the parser imports torch
        from cnnlab import __version__

        print(f"cnnlab {__version__}")
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["train", *([] if argv is None else argv)])  # `cnnlab` alone = the main job
    debug = getattr(args, "debug", False)
    try:
        return COMMANDS[args.command](args)
    except CnnlabError as error:
        if debug:
            raise
        kind = type(error).__name__
        print(textwrap.fill(f"error ({kind}): {error}", width=110, break_on_hyphens=False), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
