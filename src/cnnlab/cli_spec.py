"""What the ``cnnlab`` command offers, as data: each command's one-line help, its arguments (argparse's keyword
arguments) and the examples shown under its ``--help``. ``cli.py`` builds the parser from these tables; the
``train`` flags come from :class:`~cnnlab.train.TrainConfig`'s field metadata and the ``viz`` options from
``VIEWS``, so neither is listed here."""

from __future__ import annotations

import argparse
from typing import NamedTuple

from cnnlab.bench.command import KINDS


class Arg(NamedTuple):
    """One argument: its flags or name, argparse's keywords, and whether it is in the command's exclusive group."""

    flags: tuple[str, ...]
    options: dict
    exclusive: bool = False


class CommandSpec(NamedTuple):
    """One command: help line, arguments, ``--device`` default (None: no such flag; "config": the recipe's) and
    whether it takes ``--data-root``."""

    help: str
    arguments: tuple[Arg, ...]
    device: str | None = "auto"
    data_root: bool = False


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


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
  cnnlab data info mnist                       # from $CNNLAB_DATA, else ~/.cache/cnnlab
  cnnlab data get cifar10                      # downloads where the network allows (checksums verified)
  cnnlab data preview digits --augment lenet-distortions --out digits.png
  cnnlab data preview folder:~/photos --augment alexnet-2012
  cnnlab data samples digits --count 2          # digit0_label7.png digit1_label6.png, to try `cnnlab predict` on
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
  cnnlab bench train           # engine vs a plain loop; time to 99% on MNIST (minutes)
  cnnlab bench adversarial     # FGSM over 10,000 images; adversarial vs normal epoch
  cnnlab bench transfer        # features of 70,000 images; linear probes on 60,000 vectors
  cnnlab bench viz             # occlusion and top-patches timings
  cnnlab bench detect runs/rcnn runs/fast-rcnn runs/faster-rcnn runs/overfeat   # detectors side by side
  cnnlab bench detect --paper-scale   # R-CNN vs Fast R-CNN's CNN stage, AlexNet, 2,000 proposals (minutes)
  cnnlab bench gan             # GAN step: engine vs the pytorch/examples DCGAN loop; quality at equal steps
""",
    "gan": """
examples:
  cnnlab gan train --data mnist --epochs 5   # DCGAN, 28 px
  cnnlab gan train --data mnist --arch mlp                # the 2014 paper's fully connected nets
  cnnlab gan train --data mnist --ema-decay 0.999 --coverage-run runs/mnist-lenet   # classes per epoch
  cnnlab gan train --data cifar10 --size 32
  cnnlab gan train --data folder:~/faces --size 64
  cnnlab gan train --resume runs/dcgan-generator-28-mnist-20261129-201500
  cnnlab gan sample runs/dcgan-generator-28-mnist-20261129-201500 -n 64 --out samples.png
  cnnlab gan interpolate runs/dcgan-generator-28-mnist-20261129-201500 --steps 10
  cnnlab gan measure runs/dcgan-generator-28-mnist-20261129-201500 runs/mnist-lenet
  cnnlab gan probe runs/dcgan-generator-28-fashion-mnist-20261130-020800 --labels 10,100,1000 --seeds 3
""",
    "detect": """
examples:
  cnnlab detect train --method faster-rcnn --data mnist-detection --epochs 4
  cnnlab detect train --method fast-rcnn --backbone lenet5-modern --data-option train_size=2000
  cnnlab detect train --method rcnn --data-option train_size=2000
  cnnlab detect train --method overfeat --data mnist-detection --data-option clutter=8
  cnnlab detect train --resume runs/faster-rcnn-lenet5-modern-mnist-detection-20261130-001500
  cnnlab detect eval runs/faster-rcnn-lenet5-modern-mnist-detection-20261130-001500
  cnnlab detect predict runs/faster-rcnn-lenet5-modern-mnist-detection-20261130-001500 canvas.png
  cnnlab detect explain runs/faster-rcnn-lenet5-modern-mnist-detection-20261130-001500 test:0 --view occlusion
""",
    "reproduce": """
examples:
  cnnlab reproduce --list                          # what exists, the paper's figures, expected time on CPU and GPU
  cnnlab reproduce lenet5-mnist                    # LeNet-5 on MNIST, 3 seeds, beside LeCun et al.'s 0.95%
  cnnlab reproduce dropout-mnist --seeds 5
  cnnlab reproduce resnet-degradation --quick      # a short check that it runs (not a measurement)
""",
    "serve": """
examples:
  cnnlab serve runs/latest                                   # then open the address it prints
  cnnlab serve runs/mnist-normal runs/mnist-adversarial --port 8001   # two runs side by side
""",
    "caption": """
examples:
  cnnlab caption train                                             # CNN + LSTM on captioned-scenes
  cnnlab caption train --model alignment --epochs 2 --batch-size 64 --lr 0.002   # Karpathy & Fei-Fei's alignment
  cnnlab caption train --data captioned-fashion-scenes --data-option train_size=2000
  cnnlab caption train --resume runs/caption-generation-dmnist-cnn-captioned-scenes-20261129-231500
  cnnlab caption eval runs/caption-generation-dmnist-cnn-captioned-scenes-20261129-231500 --beam 3
  cnnlab caption predict runs/caption-generation-dmnist-cnn-captioned-scenes-20261129-231500 scene.png
""",
    "export": """
examples:
  cnnlab export runs/lenet5-digits --out lenet5.onnx --check
  cnnlab export runs/lenet5-digits --out lenet5.safetensors
  cnnlab export resnet20 --out resnet20.onnx --input 3x32x32
""",
}

GAN_HELP = {  # `cnnlab gan train`'s help for the TrainConfig flags whose defaults differ from a classifier's
    "data": "mnist, fashion-mnist, cifar10, digits... or folder:PATH (default: mnist)",
    "epochs": "passes over the training images (default: 5)",
    "batch_size": "real images per step (default: 128, Radford et al.; --arch mlp: 100, the 2014 file)",
    "optimizer": "both nets' optimiser (default: adam, Radford et al.; --arch mlp: sgd, the 2014 file)",
    "lr": "learning rate of both nets (default: 0.0002, Radford et al.; --arch mlp: 0.1, the 2014 file)",
    "momentum": "Adam's β1 (default: 0.5, Radford et al.) or SGD's momentum (--arch mlp: 0.5, the 2014 file)",
}
_RUN = Arg(("run",), {"metavar": "RUN", "help": "a GAN run directory (or its checkpoint file)"})
_SEED = Arg(("--seed",), {"type": int, "default": 0, "help": "seed of the noise (default: 0): same seed, same images"})
# `cnnlab gan ACTION`: each action's arguments; `train` also offers GAN_FLAGS, generated from TrainConfig.
GAN_ACTIONS: dict[str, CommandSpec] = {
    "train": CommandSpec(
        "Train a GAN (DCGAN or the 2014 MLP) by the engine; a sample grid per epoch in RUN_DIR/samples.",
        (
            Arg(
                ("--arch",), {"choices": ("dcgan", "mlp"), "default": "dcgan", "help": "architecture (default: dcgan)"}
            ),
            Arg(
                ("--size",),
                {"type": int, "help": "image side: 28, 32 or 64 for dcgan, 28 for mlp (default: the data's, else 64)"},
            ),
            Arg(("--z-dim",), {"type": int, "default": 100, "help": "noise dimensions (default: 100)"}),
            Arg(
                ("--reuse-fakes",),
                {
                    "action": argparse.BooleanOptionalAction,
                    "default": None,
                    "help": "G's step reuses D's generated images (pytorch/examples and the 2014 file; one G pass a "
                    "step) instead of new noise (the GAN paper's algorithm 1) (default: no for dcgan, yes for mlp)",
                },
            ),
            Arg(
                ("--coverage-run",),
                {
                    "metavar": "CLASSIFIER_RUN",
                    "help": "a classifier run of the same data: class coverage of 1,000 samples after every epoch, "
                    "classes under 5%% named",
                },
            ),
            Arg(("--resume",), {"metavar": "CHECKPOINT|RUN_DIR|auto", "help": "continue a GAN run exactly"}),
            Arg(("--overwrite",), {"action": "store_true", "help": "--out holds a run: replace it"}),
        ),
        device=None,
    ),
    "sample": CommandSpec(
        "Draw samples of a GAN run's generator as one PNG grid.",
        (
            _RUN,
            Arg(("-n",), {"type": int, "default": 64, "help": "how many images (default: 64)"}),
            Arg(("--out",), {"help": "image file (default: RUN/samples-N-seedS.png)"}),
            _SEED,
        ),
        device="cpu",
    ),
    "interpolate": CommandSpec(
        "A latent walk: rows of images between two noise vectors, as one PNG.",
        (
            _RUN,
            Arg(("--steps",), {"type": int, "default": 10, "help": "images per row (default: 10)"}),
            Arg(("--rows",), {"type": int, "default": 8, "help": "walks, one per row (default: 8)"}),
            Arg(("--spherical",), {"action": "store_true", "help": "along the great circle instead of the line"}),
            Arg(("--out",), {"help": "image file (default: RUN/interpolation-seedS.png)"}),
            _SEED,
        ),
        device="cpu",
    ),
    "measure": CommandSpec(
        "Class coverage, Fréchet distance and classifier score of a GAN's samples in a cnnlab classifier's space; "
        "nearest-neighbour copies of training images.",
        (
            _RUN,
            Arg(("classifier",), {"help": "a classifier run trained on the same data (`cnnlab train`)"}),
            Arg(("-n",), {"type": int, "default": 10_000, "help": "samples and real images per set (default: 10,000)"}),
            _SEED,
        ),
        device="cpu",
        data_root=True,
    ),
    "probe": CommandSpec(
        "The frozen discriminator as features (linear L2-SVM) against the same net trained from scratch, few labels.",
        (
            _RUN,
            Arg(
                ("--labels",),
                {
                    "type": int_list,
                    "default": [10, 100, 1000],
                    "metavar": "N,N,...",
                    "help": "labelled training images per class (default: 10,100,1000)",
                },
            ),
            Arg(
                ("--seeds",), {"type": int, "default": 3, "help": "labelled subsets per count, seeds 0.. (default: 3)"}
            ),
            Arg(
                ("--features",),
                {
                    "choices": ("paper", "pre-logits"),
                    "default": "paper",
                    "help": "paper (default): every layer max-pooled to 4×4 (section 5.1); pre-logits: the last maps",
                },
            ),
            Arg(
                ("--holdout",),
                {
                    "type": float,
                    "default": 0.02,
                    "help": "training images held out to choose C and the scratch epoch (default: 0.02)",
                },
            ),
            Arg(
                ("--classifier",),
                {
                    "choices": ("ridge", "svm", "logreg"),
                    "default": "ridge",
                    "help": "the linear probe: ridge (default; seconds), svm (the paper's L2-SVM; minutes), logreg",
                },
            ),
            Arg(("--epochs",), {"type": int, "help": "scratch training epochs (default: ~1000 steps, 10 to 60)"}),
            Arg(("--out",), {"help": "JSON file of the figures (default: RUN/probe-FEATURES.json)"}),
        ),
        device="cpu",
        data_root=True,
    ),
}

DETECT_HELP = {  # `cnnlab detect train`'s help for the TrainConfig flags whose defaults differ from a classifier's
    "data": "mnist-detection, fashion-detection, voc:PATH or coco:PATH (default: mnist-detection)",
    "epochs": "passes over the training images (default: 4)",
    "batch_size": "images per step (default: 8)",
    "lr": "SGD's learning rate at batch 8 (default: 0.02)",
    "holdout": "fraction of the training images held out to choose best.pt (default: 0.1)",
}
_DETECT_RUN = Arg(("run",), {"metavar": "RUN", "help": "a detection run directory (or its checkpoint file)"})
# `cnnlab detect ACTION`: each action's arguments; `train` also offers DETECT_FLAGS, generated from TrainConfig.
DETECT_ACTIONS: dict[str, CommandSpec] = {
    "train": CommandSpec(
        "Train a detector (R-CNN, Fast R-CNN, Faster R-CNN or OverFeat) on a zoo backbone by the engine.",
        (
            Arg(
                ("--method",),
                {
                    "choices": ("rcnn", "fast-rcnn", "faster-rcnn", "overfeat"),
                    "default": "faster-rcnn",
                    "help": "the detector (default: faster-rcnn)",
                },
            ),
            Arg(("--backbone",), {"default": "lenet5-modern", "help": "a zoo model (default: lenet5-modern)"}),
            Arg(("--backbone-stage",), {"help": "the backbone's last stage kept (default: its last)"}),
            Arg(
                ("--option",),
                {
                    "action": "append",
                    "default": [],
                    "metavar": "NAME=VALUE",
                    "help": "a method option, e.g. rois_per_image=128 (repeatable; see docs/detection.md)",
                },
            ),
            Arg(
                ("--data-option",),
                {
                    "action": "append",
                    "default": [],
                    "metavar": "NAME=VALUE",
                    "help": "a dataset option, e.g. train_size=2000 or clutter=8 (repeatable)",
                },
            ),
            Arg(("--resume",), {"metavar": "CHECKPOINT|RUN_DIR|auto", "help": "continue a detection run exactly"}),
            Arg(("--overwrite",), {"action": "store_true", "help": "--out holds a run: replace it"}),
        ),
        device=None,
    ),
    "eval": CommandSpec(
        "mAP of a detection run on its test split: COCO mAP, mAP@0.5, AP per class; writes RUN/report/.",
        (
            _DETECT_RUN,
            Arg(("--svd-rank",), {"type": int, "help": "Fast/Faster R-CNN: FC layers compressed by truncated SVD"}),
        ),
        device="cpu",
        data_root=True,
    ),
    "predict": CommandSpec(
        "Detect objects in image files; writes each with its labelled boxes as <name>-detections.png.",
        (
            _DETECT_RUN,
            Arg(("images",), {"nargs": "+", "metavar": "IMAGE", "help": "image files"}),
            Arg(("--threshold",), {"type": float, "default": 0.5, "help": "smallest score drawn (default: 0.5)"}),
            Arg(("--out",), {"help": "folder for the pictures (default: beside each image)"}),
        ),
        device="cpu",
    ),
    "explain": CommandSpec(
        "What made the detector fire on one box: occlusion, deconvnet or guided backprop of that detection.",
        (
            _DETECT_RUN,
            Arg(("image",), {"help": "an image file, or test:N for the run's test image N"}),
            Arg(
                ("--detection",),
                {"type": int, "default": 0, "help": "which detection, by score (default: 0, the best)"},
            ),
            Arg(
                ("--view",),
                {
                    "action": "append",
                    "choices": ("occlusion", "deconvnet", "guided-backprop"),
                    "help": "repeatable (default: occlusion and deconvnet)",
                },
            ),
            Arg(("--out",), {"help": "folder for the pictures (default: RUN/report)"}),
        ),
        device=None,
        data_root=True,
    ),
}

CAPTION_HELP = {  # `cnnlab caption train`'s help for the TrainConfig flags whose defaults differ from a classifier's
    "data": "captioned-scenes or captioned-fashion-scenes (default: captioned-scenes)",
    "epochs": "passes over the training scenes (default: 12)",
    "batch_size": "scenes per step, each with all its references (default: 16)",
    "lr": "Adam's learning rate per step (default: 0.003)",
}
_CAPTION_RUN = Arg(("run",), {"metavar": "RUN", "help": "a captioning run directory (or its checkpoint file)"})
_BEAM = Arg(("--beam",), {"type": int, "default": 3, "help": "beam width; 1 is greedy (default: 3)"})
# `cnnlab caption ACTION`; `train` also offers CAPTION_FLAGS, generated from TrainConfig.
CAPTION_ACTIONS: dict[str, CommandSpec] = {
    "train": CommandSpec(
        "Train a captioning model by the engine: generation (CNN + LSTM) or alignment (regions and words).",
        (
            Arg(
                ("--model",),
                {"choices": ("generation", "alignment"), "default": "generation", "help": "default: generation"},
            ),
            Arg(("--encoder",), {"default": "dmnist-cnn", "help": "zoo model encoding images (default: dmnist-cnn)"}),
            Arg(("--freeze-encoder",), {"action": "store_true", "help": "train the decoder only"}),
            Arg(
                ("--encoder-weights",),
                {
                    "metavar": "torchvision|RUN",
                    "help": "the encoder's initial weights: torchvision's, or a cnnlab classifier run of the same "
                    "model (e.g. dmnist-cnn trained on mnist-rts); default: random",
                },
            ),
            Arg(
                ("--encoder-lr",),
                {
                    "type": float,
                    "default": 1.0,
                    "metavar": "FACTOR",
                    "help": "factor on --lr for the encoder's weights, e.g. 0.03 for a pretrained one (default: 1)",
                },
            ),
            Arg(("--embed-dim",), {"type": int, "default": 128, "help": "word embedding width (default: 128)"}),
            Arg(("--hidden-dim",), {"type": int, "default": 256, "help": "LSTM / alignment space (default: 256)"}),
            Arg(("--dropout",), {"type": float, "default": 0.0, "help": "on the LSTM outputs (default: 0)"}),
            Arg(("--region-size",), {"type": int, "default": 32, "help": "alignment region crops, px (default: 32)"}),
            Arg(("--min-count",), {"type": int, "default": 1, "help": "vocabulary: least word count (default: 1)"}),
            Arg(
                ("--data-option",),
                {"action": "append", "default": [], "metavar": "KEY=VALUE", "help": "e.g. train_size=2000"},
            ),
            Arg(("--resume",), {"metavar": "CHECKPOINT|RUN_DIR|auto", "help": "continue a captioning run exactly"}),
            Arg(("--overwrite",), {"action": "store_true", "help": "--out holds a run: replace it"}),
        ),
        device=None,
    ),
    "eval": CommandSpec(
        "BLEU-1…4 and CIDEr-D greedy, by beam search and of the most-common-caption baseline (generation), or "
        "retrieval R@1/5/10 and median rank (alignment); best and worst samples drawn in RUN_DIR (or --out).",
        (
            _CAPTION_RUN,
            _BEAM,
            Arg(("--split",), {"choices": ("val", "test"), "default": "test", "help": "scenes (default: test)"}),
            Arg(("--limit",), {"type": int, "help": "the first N scenes only (default: all)"}),
            Arg(("--samples",), {"type": int, "default": 4, "help": "best and worst shown (default: 4)"}),
            Arg(("--out",), {"help": "folder for the figures and pictures (default: the run's folder)"}),
            Arg(
                ("--regions",),
                {
                    "choices": ("boxes", "proposals"),
                    "default": "boxes",
                    "help": "alignment runs: ground-truth boxes or selective-search proposals (default: boxes)",
                },
            ),
        ),
        device="cpu",
        data_root=True,
    ),
    "predict": CommandSpec(
        "Caption image files; prints each caption and saves the image with it under it. An alignment run: the "
        "best-scoring training caption (or --caption) and each word's best region among selective-search "
        "proposals, boxed on the image.",
        (
            _CAPTION_RUN,
            Arg(("images",), {"nargs": "+", "metavar": "IMAGE", "help": "image files"}),
            _BEAM,
            Arg(("--out",), {"help": "folder for the captioned images (default: RUN/predictions)"}),
            Arg(
                ("--caption",),
                {
                    "metavar": "TEXT",
                    "help": "alignment runs: the sentence to align (default: the training caption that scores highest)",
                },
            ),
        ),
        device="cpu",
        data_root=True,
    ),
}

COMMANDS: dict[str, CommandSpec] = {
    "train": CommandSpec(
        "Train a model; writes a run directory with checkpoint, config, metrics and curves.",
        (
            Arg(
                ("--model-option",),
                {
                    "action": "append",
                    "default": [],
                    "metavar": "KEY=VALUE",
                    "help": "a model's own option, repeatable (e.g. head=softmax for lenet5)",
                },
            ),
            Arg(
                ("--resume",),
                {
                    "metavar": "CHECKPOINT|RUN_DIR|auto",
                    "help": "continue a run exactly: a checkpoint, a run directory (its newest readable checkpoint), "
                    "or auto (the newest in --out if there is one, else start there: re-run the same command after a "
                    "preemption)",
                },
            ),
            Arg(
                ("--overwrite",),
                {
                    "action": "store_true",
                    "help": "--out holds a run: delete its checkpoints, metrics and summary first",
                },
            ),
        ),
        device=None,
    ),
    "eval": CommandSpec(
        "Top-1 and top-k error (k = min(5, classes)) of a checkpoint on a dataset's test split.",
        (
            Arg(("checkpoint",), {"help": "checkpoint file or run directory"}),
            Arg(("--data",), {"help": "dataset (default: the one the checkpoint was trained on)"}),
            Arg(("--batch-size",), {"type": int, "default": 256, "help": "images per batch (default: 256)"}),
            Arg(
                ("--tta",),
                {
                    "choices": ("flip", "10crop", "multiscale"),
                    "help": "test-time augmentation: average softmax over the image and its mirror, the ten crops "
                    "(corners, centre, mirrored), or three scales; mirrors and corners only if training flipped and "
                    "cropped",
                },
            ),
        ),
        data_root=True,
    ),
    "predict": CommandSpec(
        "Top-k classes with probabilities for image files (PNG, JPEG, any mode).",
        (
            Arg(("checkpoint",), {"help": "checkpoint file or run directory"}),
            Arg(
                ("images",),
                {"nargs": "+", "metavar": "IMAGE", "help": "image files; converted and resized as in training"},
            ),
            Arg(("--top-k",), {"type": int, "default": 5, "help": "how many classes to show per image (default: 5)"}),
            Arg(
                ("--invert",),
                {
                    "action": "store_true",
                    "help": "invert grey levels first (the bundled digits and MNIST are light ink on black)",
                },
            ),
        ),
    ),
    "summary": CommandSpec(
        "Per layer: output shape, parameters, MACs/FLOPs and receptive field.",
        (
            Arg(("model",), {"metavar": "NAME", "help": "registered model name, or a checkpoint file / run directory"}),
            Arg(("--input",), {"metavar": "CxHxW", "help": "input shape (default: the model's, e.g. 1x32x32)"}),
            Arg(("--num-classes",), {"type": int, "help": "number of classes (default: the model's)"}),
        ),
        device=None,
    ),
    "models": CommandSpec(
        "List registered models with paper, year, default input size and parameter count.",
        (Arg(("pattern",), {"nargs": "?", "default": "*", "help": "shell-style filter, e.g. 'lenet*'"}),),
        device=None,
    ),
    "attack": CommandSpec(
        "Adversarial examples against a checkpoint: accuracy, confidence and perturbation per ε.",
        (
            Arg(
                ("checkpoint",),
                {"nargs": "+", "help": "checkpoint file(s) or run director(ies); several: one curve each"},
            ),
            Arg(("--data",), {"help": "dataset (default: the checkpoint's); its test split is attacked"}),
            Arg(
                ("--method",),
                {"choices": ("fgsm", "pgd", "lbfgs"), "default": "fgsm", "help": "attack (default: fgsm)"},
            ),
            Arg(
                ("--eps",),
                {"default": "0,0.05,0.1,0.15,0.2,0.25,0.3", "help": "comma-separated ε in pixel units [0, 1]"},
            ),
            Arg(("--target",), {"type": int, "help": "targeted attack: drive predictions to this class index"}),
            Arg(("--norm",), {"choices": ("linf", "l2"), "help": "pgd: the ε-ball's norm (default: linf)"}),
            Arg(("--steps",), {"type": int, "default": 10, "help": "pgd: iterations (default: 10)"}),
            Arg(
                ("--limit",), {"type": int, "help": "attack only the first N test images (lbfgs is slow: default 100)"}
            ),
            Arg(("--batch-size",), {"type": int, "default": 500, "help": "images per batch (default: 500)"}),
            Arg(("--out",), {"help": "folder for robustness.png and examples.png (default: RUN_DIR/attack-METHOD)"}),
        ),
        data_root=True,
    ),
    "fool": CommandSpec(
        "Fooling images: noise the network calls a chosen class with high confidence.",
        (
            Arg(("checkpoint",), {"help": "checkpoint file or run directory"}),
            Arg(
                ("--class",),
                {"dest": "target_class", "type": int, "required": True, "help": "class index to fool into"},
            ),
            Arg(("--count",), {"type": int, "default": 8, "help": "how many images (default: 8)"}),
            Arg(("--steps",), {"type": int, "default": 200, "help": "gradient-ascent steps at most (default: 200)"}),
            Arg(("--out",), {"help": "PNG path (default: RUN_DIR/fooling-class-K.png)"}),
        ),
    ),
    "viz": CommandSpec(
        "Draw one view of a trained model as PNGs: filters, activations, deconv, top patches, occlusion...",
        (
            Arg(("kind",), {"metavar": "KIND", "help": "which view (listed below)"}),
            Arg(("checkpoint",), {"help": "checkpoint file or run directory"}),
            Arg(
                ("images",),
                {
                    "nargs": "*",
                    "metavar": "IMAGE",
                    "help": "image files (default: the first --count test images of its dataset)",
                },
            ),
            Arg(
                ("--layer",),
                {"action": "append", "metavar": "NAME", "help": "module (features.c1.conv) or stage (c1); repeatable"},
            ),
            Arg(
                ("--channel",),
                {"type": int, "metavar": "N", "help": "channel of the layer (default: the strongest / all)"},
            ),
            Arg(("--out",), {"metavar": "DIR", "help": "where the PNGs go (default: RUN_DIR/viz)"}),
        ),
    ),
    "report": CommandSpec(
        "Write RUN_DIR/report.html: config, summary, curves, confusion, filters, activations, ...",
        (
            Arg(("run_dir",), {"metavar": "RUN_DIR", "help": "a run directory written by `cnnlab train`"}),
            Arg(
                ("--images",),
                {"type": int, "default": 3, "help": "test images with activations and occlusion (default: 3)"},
            ),
            Arg(("--units",), {"type": int, "default": 8, "help": "units shown with top patches (default: 8)"}),
            Arg(("--mistakes",), {"type": int, "default": 16, "help": "confident mistakes shown (default: 16)"}),
        ),
        device="cpu",
        data_root=True,
    ),
    "finetune": CommandSpec(
        "Reuse a trained network on a new dataset: new head, frozen stages, own learning rates.",
        (
            Arg(
                ("source",), {"help": "a cnnlab checkpoint / run directory, or MODEL:torchvision for ImageNet weights"}
            ),
            Arg(("--data",), {"required": True, "help": "the new dataset"}),
            Arg(
                ("--freeze",),
                {"metavar": "STAGE", "help": "freeze the stages up to and including STAGE"},
                exclusive=True,
            ),
            Arg(
                ("--train-from",),
                {"metavar": "STAGE", "help": "train STAGE and everything after it; freeze the rest"},
                exclusive=True,
            ),
            Arg(("--train-bn",), {"action": "store_true", "help": "let frozen stages' batch-norm statistics adapt"}),
            Arg(("--lr-head",), {"type": float, "help": "learning rate of the new head (default: the recipe's η)"}),
            Arg(("--lr-body",), {"type": float, "help": "learning rate of the trainable stages (default: η/10)"}),
            Arg(("--unfreeze-at",), {"type": int, "metavar": "EPOCH", "help": "unfreeze every stage after this epoch"}),
            Arg(("--epochs",), {"type": int, "help": "epochs (default: the recipe's)"}),
            Arg(("--batch-size",), {"type": int, "help": "images per step (default: the recipe's)"}),
            Arg(("--labels-per-class",), {"type": int, "help": "train on only N labelled images per class (seeded)"}),
            Arg(("--augment",), {"help": "augmentation preset (default: the dataset's)"}),
            Arg(("--seed",), {"type": int, "help": "seed (default: 0)"}),
            Arg(("--out",), {"help": "run directory (default: runs/<model>-<data>-finetune-<time>)"}),
            Arg(
                ("--overwrite",),
                {
                    "action": "store_true",
                    "help": "--out holds a run: delete its checkpoints, metrics and summary first",
                },
            ),
        ),
        device="config",
        data_root=True,
    ),
    "features": CommandSpec(
        "Off-the-shelf features: pooled activations of one stage for every image, to a .npz.",
        (
            Arg(("source",), {"help": "checkpoint file or run directory"}),
            Arg(("--data",), {"required": True, "help": "dataset to describe"}),
            Arg(("--layer",), {"required": True, "help": "stage name (see `cnnlab summary`), or pre-logits"}),
            Arg(("--out",), {"required": True, "help": "the .npz to write"}),
            Arg(("--labels-per-class",), {"type": int, "help": "keep only N training images per class (seeded)"}),
            Arg(("--batch-size",), {"type": int, "default": 1000, "help": "images per batch (default: 1000)"}),
        ),
        data_root=True,
    ),
    "linear-probe": CommandSpec(
        "Fit a linear classifier (scikit-learn) on a features file; print the test error.",
        (
            Arg(("features",), {"help": "a .npz written by `cnnlab features`"}),
            Arg(
                ("--classifier",),
                {
                    "choices": ("svm", "logreg", "ridge"),
                    "default": "svm",
                    "help": "linear SVM, logistic regression or ridge",
                },
            ),
            Arg(("--c",), {"type": float, "default": 1.0, "help": "inverse regularisation strength C (default: 1)"}),
        ),
        device=None,
    ),
    "data": CommandSpec(
        "Datasets: list them, show what is in one, download one, preview its augmentation.",
        (
            Arg(
                ("action",),
                {
                    "choices": ("list", "info", "get", "preview", "samples"),
                    "help": "what to do: samples writes test images as PNG files to try `cnnlab predict` on",
                },
            ),
            Arg(("name",), {"nargs": "?", "help": "dataset name, or folder:PATH for your own images"}),
            Arg(("--augment",), {"help": "preview: augmentation preset(s), e.g. pad-crop-flip or crop+flip+pca"}),
            Arg(
                ("--out",), {"help": "preview: PNG path (default: <name>-<augment>.png); samples: folder (default: .)"}
            ),
            Arg(
                ("--count",),
                {"type": int, "default": 8, "help": "preview: images per row; samples: images; 1-64 (default: 8)"},
            ),
            Arg(
                ("--val-split",),
                {"type": float, "default": 0.2, "help": "folder:PATH without train/ and val/: test fraction"},
            ),
        ),
        device=None,
        data_root=True,
    ),
    "bench": CommandSpec(
        "Benchmarks, measured side by side against the plain PyTorch/torchvision way.",
        (
            Arg(
                ("kind",),
                {
                    "choices": KINDS,
                    "help": "what to measure (docs/benchmarks.md); train, viz, gan read real MNIST from --data-root",
                },
            ),
            Arg(
                ("names",),
                {
                    "nargs": "*",
                    "metavar": "MODEL|RUN",
                    "help": "models: which (default: lenet5-modern resnet20 vgg11); detect: detection run directories",
                },
            ),
            Arg(("--quick",), {"action": "store_true", "help": "a few seconds: checks that it runs, not its speed"}),
            Arg(
                ("--paper-scale",),
                {
                    "action": "store_true",
                    "help": "detect: R-CNN vs Fast R-CNN's CNN stage with AlexNet, 2,000 proposals, a 600×800 image",
                },
            ),
            Arg(("--batch-size",), {"type": int, "default": 32, "help": "models: images per step (default: 32)"}),
            Arg(("--input-size",), {"type": int, "help": "models: square input side (default: the model's)"}),
            Arg(
                ("--dtype",),
                {"choices": ("float32", "bfloat16", "float16"), "default": "float32", "help": "models: precision"},
            ),
            Arg(("--channels-last",), {"action": "store_true", "help": "models: NHWC memory format for both"}),
            Arg(
                ("--repeats",),
                {"type": int, "default": 3, "help": "models: alternating rounds, medians reported (default: 3)"},
            ),
        ),
        data_root=True,
    ),
    "gan": CommandSpec("Generative adversarial networks: train, sample, interpolate, measure, probe.", (), device=None),
    "detect": CommandSpec(
        "Object detection: train, eval, predict (R-CNN, Fast/Faster R-CNN, OverFeat).", (), device=None
    ),
    "caption": CommandSpec(
        "Image captioning: train, eval, predict (CNN + LSTM; region–word alignment).", (), device=None
    ),
    "export": CommandSpec(
        "Export a checkpoint's model (or a registered model) to ONNX or safetensors.",
        (
            Arg(("model",), {"help": "checkpoint file / run directory, or a registered model name (random weights)"}),
            Arg(("--out",), {"required": True, "help": "file to write (.onnx or .safetensors)"}),
            Arg(("--format",), {"choices": ("onnx", "safetensors"), "help": "default: from the --out suffix"}),
            Arg(("--input",), {"metavar": "CxHxW", "help": "input shape (default: the checkpoint's or the model's)"}),
            Arg(
                ("--check",), {"action": "store_true", "help": "onnx: run it with onnxruntime and compare with PyTorch"}
            ),
        ),
        device=None,
    ),
    "reproduce": CommandSpec(
        "Run a paper's experiment over seeds and put ours beside its figures (docs/reproductions.md).",
        (
            Arg(("name",), {"nargs": "?", "metavar": "NAME", "help": "the experiment (see --list)"}),
            Arg(("--list",), {"action": "store_true", "help": "list the experiments, their figures and times"}),
            Arg(("--seeds",), {"type": int, "help": "number of seeds, 0..N-1 (default: the entry's, 3 or 5)"}),
            Arg(
                ("--quick",), {"action": "store_true", "help": "a short version (1 epoch, few images): checks it runs"}
            ),
            Arg(("--out",), {"help": "folder of its runs and table (default: runs/reproduce-NAME)"}),
            Arg(("--cpu-anyway",), {"action": "store_true", "help": "run a GPU-sized entry on the CPU all the same"}),
            Arg(
                ("--jobs",),
                {"type": int, "default": 1, "help": "runs at a time on the CPU, its threads shared out (default 1)"},
            ),
        ),
        data_root=True,
    ),
    "serve": CommandSpec(
        "Explore runs in the browser: draw a digit, watch predictions, feature maps, occlusion, FGSM (docs/serve.md).",
        (
            Arg(("run_dirs",), {"nargs": "+", "metavar": "RUN_DIR", "help": "run directories (or checkpoint files)"}),
            Arg(("--port",), {"type": int, "default": 8000, "help": "TCP port (default: 8000; 0: any free port)"}),
            Arg(
                ("--host",),
                {
                    "default": "127.0.0.1",
                    "help": "address to listen on (default: 127.0.0.1, this machine only; any other is warned about: "
                    "the explorer has no login)",
                },
            ),
        ),
    ),
}
