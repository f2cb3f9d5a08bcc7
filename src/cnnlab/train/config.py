"""The training configuration: one typed dataclass, passed whole, resolved before training starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from cnnlab.errors import ConfigError, UnknownNameError

SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle")
LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("alexnet-sgd", "sgd", "adam", "adamw")
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` means "the recipe's default for this model and data".

    Precedence when resolving: a value given here > the paper recipe named by ``recipe`` > the model's recipe
    in :data:`RECIPES` > the defaults for every model (``RECIPES["*"]``).
    """

    model: str = "lenet5"
    data: str = "digits"
    model_options: dict = field(default_factory=dict)  # the model's own keyword options, e.g. {"head": "softmax"}
    recipe: str | None = None  # a paper's training recipe (PAPER_RECIPES), e.g. "alexnet-2012"
    epochs: int | None = None  # passes over the training split
    batch_size: int | None = None  # images per optimisation step, over all processes (the *global* batch)
    lr: float | None = None  # η, learning rate per step (not scaled with the batch size)
    optimizer: str | None = None  # alexnet-sgd (the 2012 paper's form) | sgd | adam | adamw (torch's)
    momentum: float | None = None  # μ in Δw ← μ·Δw − wd·η·w − η·∂E/∂w; β1 for adam/adamw (default 0.9)
    weight_decay: float | None = None  # wd in the same formula (AlexNet: 0.0005); decoupled for adamw
    decay_norm_and_bias: bool = True  # False: no weight decay on biases and normalisation layers (own group)
    schedule: str | None = None  # constant | step | multistep | cosine (to 0) | onecycle (default: cosine)
    step_epochs: int | None = None  # step schedule: epochs between decays (default 10)
    gamma: float | None = None  # step/multistep schedules: factor per decay (default 0.1)
    milestones: list[int] | None = None  # multistep: optimisation steps at which η ×= gamma (ResNet: 32k, 48k)
    warmup_epochs: float | None = None  # linear warm-up from ~0 to η over this many epochs (default 0: none)
    label_smoothing: float = 0.0  # ε: targets (1 − ε)·one-hot + ε/K (Szegedy et al. 2016 used 0.1)
    clip_grad_norm: float = 0.0  # clip the global L2 norm of the gradient to this (0: no clipping)
    accumulate_steps: int = 1  # split each batch into this many micro-batches (memory); same gradient
    ema_decay: float | None = None  # keep and evaluate an EMA of the weights, e.g. 0.999 per step (0: off)
    augment: str | None = None  # augmentation preset(s), e.g. pad-crop-flip or crop+flip+pca (default: the dataset's)
    adversarial: str | None = None  # fgsm | pgd: train on Goodfellow's J̃ = α·J(x) + (1 − α)·J(x_adv) (None: plain)
    adv_eps: float = 0.25  # ε of the training attack, in pixel units (the pixel range is [0, 1])
    adv_alpha: float = 0.5  # α: weight of the clean loss in J̃ (0.5 in Goodfellow et al. 2014)
    adv_steps: int = 7  # pgd: iterations of the training attack
    weight_constraints: bool = True  # apply the paper's rule after each step where a model has one (ZF, maxout)
    loss: str = "cross_entropy"  # cross_entropy | mse (½·Σ(softmax − one-hot)², as in the beginner's guide)
    seed: int = 0  # model init, data order and dropout; same seed on CPU -> bit-identical run
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # ---- speed (none of these changes what is computed beyond float rounding) ----
    amp: str = "auto"  # auto (bf16 on CUDA; fp16 on GPUs without bf16; off on CPU/MPS) | bf16 | fp16 | off
    channels_last: bool | None = None  # NHWC layout (None: on CUDA; on the CPU where the model gains from it)
    compile: bool = False  # torch.compile the model (minutes of compile time; pays off on long GPU runs)
    cuda_graphs: bool = False  # capture the whole step as one CUDA graph (small models on CUDA; drops last batch)
    cudnn_benchmark: bool = True  # on CUDA, let cuDNN time its algorithms once per input shape and keep the fastest
    sync_bn: bool = False  # with several processes: BatchNorm statistics over the global batch (SyncBatchNorm)
    # ---- files and monitoring ----
    data_root: str | None = None  # where datasets live (default: $CNNLAB_DATA, else ~/.cache/cnnlab)
    labels_per_class: int | None = None  # train on this many images per class only (few-label transfer); None: all
    val_split: float = 0.2  # folder:PATH without train/ and val/ sub-folders: fraction of images held out to test
    num_workers: int = 2  # streamed photo datasets: decoding processes (0: decode in the training process)
    strict: bool = False  # streamed photos: an undecodable file is an error (False: skipped, and listed)
    out: str | None = None  # run directory (default: runs/<model>-<data>-<time>)
    log_every: int = 10  # steps between host syncs (progress bar, NaN check); no sync in between
    checkpoint_every: int = 0  # also checkpoint every this many optimisation steps (0: at epoch ends only)
    keep_last: int = 2  # step checkpoints kept in checkpoints/ (>= 2 lets a corrupt latest fall back)
    tensorboard: bool = False  # write TensorBoard event files to <run dir>/tensorboard (needs `tensorboard`)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {unknown}; valid options: {sorted(known)}.")
        return cls(**d)


# Defaults per model name ("*": all; "<model>@<data>": that dataset only; "<model>:<option>=<value>": that option).
# Chosen by measurement: `make run` (lenet5 on digits) must reach >= 97% test accuracy in under a minute on 2 cores.
RECIPES: dict[str, dict] = {
    "*": {
        "epochs": 30,
        "batch_size": 32,
        "lr": 0.05,
        "weight_decay": 5e-4,
        "optimizer": "alexnet-sgd",
        "momentum": 0.9,
        "schedule": "cosine",
        "step_epochs": 10,
        "gamma": 0.1,
        "milestones": [],
        "warmup_epochs": 0.0,
        "ema_decay": 0.0,
    },
    # The RBF output's squared distances give large gradients: η two orders below the softmax variant's.
    # (augmentation is the dataset's preset unless --augment says otherwise: digits and MNIST get LeNet's distortions)
    "lenet5": {"epochs": 30, "batch_size": 32, "lr": 0.003, "weight_decay": 0.0},
    # `make run`: on the 1,437 digits, 40 epochs of batch 16 gave 97.5–98.9% test accuracy over seeds 0–4 (30
    # epochs of 32: 96.7–97.8%), in ~20 s on 2 CPU cores. "<model>@<data>" keys apply to that dataset only.
    "lenet5@digits": {"epochs": 40, "batch_size": 16},
    "lenet5-modern": {"epochs": 30, "batch_size": 32, "lr": 0.05, "weight_decay": 5e-4},
    # The paper's ±2.4/F init leaves small activations; a softmax head needs a larger η than the RBF one to move them.
    "lenet5:head=softmax": {"lr": 0.1},
}

# The optimisation settings each paper states, section by section; what a paper leaves out is said, and either
# left to the model's recipe or filled with the value of the paper's reference implementation. Architecture
# (dropout, auxiliary-loss weights) belongs to the model and augmentation to the data, so neither is here.
# "Divide by 10 when the validation error stops improving" becomes a fixed step schedule, placed so the
# number of divisions matches the paper's: a run should not depend on a held-out split to be reproducible.
PAPER_RECIPES: dict[str, dict] = {
    # Krizhevsky, Sutskever & Hinton 2012, section 5: batch 128, momentum 0.9, weight decay 0.0005, η = 0.01
    # divided by 10 when validation error stopped improving, three times, over "roughly 90 cycles".
    # Their update is the one AlexNetSGD implements. Three divisions in 90 epochs: every 22 epochs.
    "alexnet-2012": {
        "optimizer": "alexnet-sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "schedule": "step",
        "step_epochs": 22,
        "gamma": 0.1,
        "epochs": 90,
    },
    # Simonyan & Zisserman 2014, section 3.1: batch 256, momentum 0.9, weight decay 5·10⁻⁴, η = 10⁻² divided
    # by 10 when validation accuracy stopped improving, 3 times; stopped after 370K iterations (74 epochs).
    "vgg-2014": {
        "optimizer": "alexnet-sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 256,
        "schedule": "step",
        "step_epochs": 18,
        "gamma": 0.1,
        "epochs": 74,
    },
    # Szegedy et al. 2014, section 6: momentum 0.9, η decreased by 4% every 8 epochs, Polyak averaging of the
    # weights for the final model (here: an EMA, see ema_decay). Not in the paper: η, batch, weight decay and
    # epochs. η = 0.01 and weight decay 2·10⁻⁴ are those of the BVLC Caffe reproduction; batch 128 as AlexNet's;
    # epochs come from the model's recipe. (Auxiliary classifiers ×0.3, section 5, are the model's.)
    "googlenet-2014": {
        "optimizer": "alexnet-sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 2e-4,
        "batch_size": 128,
        "schedule": "step",
        "step_epochs": 8,
        "gamma": 0.96,
        "ema_decay": 0.9999,
    },
    # He, Zhang, Ren & Sun 2015, section 3.4 (ImageNet): batch 256, momentum 0.9, weight decay 10⁻⁴, η = 0.1
    # divided by 10 when the error plateaus, up to 60·10⁴ iterations (120 epochs of 1.28M images): every 30.
    "resnet-2015": {
        "optimizer": "alexnet-sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "batch_size": 256,
        "schedule": "step",
        "step_epochs": 30,
        "gamma": 0.1,
        "epochs": 120,
    },
    # The same paper, section 4.2 (CIFAR-10): batch 128, momentum 0.9, weight decay 10⁻⁴, η = 0.1 divided by
    # 10 at 32k and 48k iterations, stopped at 64k (164 epochs of 50k images at 391 steps each).
    "resnet-2015-cifar": {
        "optimizer": "alexnet-sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "batch_size": 128,
        "schedule": "multistep",
        "milestones": [32_000, 48_000],
        "gamma": 0.1,
        "epochs": 164,
    },
}

# Squared error on softmax outputs has gradients about p·(1 − p) times those of cross-entropy, so when the
# learning rate comes from the recipe it is multiplied by this for `--loss mse` (measured on LeNet-5 / digits).
MSE_LR_FACTOR = 10.0


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill ``None`` fields from the recipes (see :class:`TrainConfig` for the order) and validate every value."""
    recipe = {**RECIPES["*"], **RECIPES.get(config.model, {}), **RECIPES.get(f"{config.model}@{config.data}", {})}
    for key, value in sorted(config.model_options.items()):
        recipe.update(RECIPES.get(f"{config.model}:{key}={value}", {}))
    if config.recipe is not None:
        if config.recipe not in PAPER_RECIPES:
            raise UnknownNameError("recipe", str(config.recipe), PAPER_RECIPES)
        recipe.update(PAPER_RECIPES[config.recipe])
    if config.loss == "mse":
        recipe["lr"] = recipe["lr"] * MSE_LR_FACTOR
    fill = {k: list(v) if isinstance(v, list | tuple) else v for k, v in recipe.items() if getattr(config, k) is None}
    resolved = replace(config, **fill)  # lists copied: a run never shares (or changes) the recipe's own list
    if isinstance(resolved.milestones, tuple):
        resolved = replace(resolved, milestones=list(resolved.milestones))
    validate(resolved)
    return resolved


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(config: TrainConfig) -> None:
    """Raise :class:`ConfigError` for values that cannot work, saying which and what would."""

    def positive_int(name: str, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{_flag(name)} must be a positive whole number, got {value!r}.")

    def number(name: str, value: object, low: float, high: float, hint: str, high_open: bool = True) -> None:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and low <= value and (value < high if high_open else value <= high)
        if not ok:
            raise ConfigError(f"{_flag(name)} must be {hint}, got {value!r}.")

    def boolean(name: str) -> None:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}.")

    positive_int("epochs", config.epochs)
    positive_int("batch_size", config.batch_size)
    positive_int("step_epochs", config.step_epochs)
    positive_int("log_every", config.log_every)
    positive_int("accumulate_steps", config.accumulate_steps)
    positive_int("keep_last", config.keep_last)
    if not isinstance(config.lr, int | float) or not math.isfinite(config.lr) or config.lr <= 0:
        raise ConfigError(f"--lr must be a positive number (e.g. 0.01), got {config.lr!r}.")
    number("momentum", config.momentum, 0, 1, "in [0, 1) (0.9 is usual)")
    if not isinstance(config.weight_decay, int | float) or not math.isfinite(config.weight_decay):
        raise ConfigError(f"--weight-decay must be >= 0 (AlexNet used 0.0005), got {config.weight_decay!r}.")
    if config.weight_decay < 0:
        raise ConfigError(f"--weight-decay must be >= 0 (AlexNet used 0.0005), got {config.weight_decay!r}.")
    if not isinstance(config.gamma, int | float) or not 0 < config.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {config.gamma!r}.")
    if config.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}.")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}.")
    milestones = config.milestones
    if not isinstance(milestones, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones):
        raise ConfigError(f"--milestones must be whole numbers of steps, e.g. 32000,48000; got {milestones!r}.")
    if any(m < 1 for m in milestones) or milestones != sorted(set(milestones)):
        raise ConfigError(f"--milestones must be positive step counts in increasing order, got {milestones!r}.")
    if config.schedule == "multistep" and not milestones:
        raise ConfigError("--schedule multistep needs --milestones (optimisation steps, e.g. 32000,48000).")
    number("warmup_epochs", config.warmup_epochs, 0, config.epochs, f"in [0, {config.epochs}) (the run's epochs)")
    number("label_smoothing", config.label_smoothing, 0, 1, "in [0, 1) (0.1 is usual)")
    number("clip_grad_norm", config.clip_grad_norm, 0, math.inf, "a norm >= 0 (0 turns clipping off; 1.0 is usual)")
    number("ema_decay", config.ema_decay, 0, 1, "in [0, 1): 0 turns the EMA off, 0.999 averages ~1000 steps")
    if config.accumulate_steps > config.batch_size:
        raise ConfigError(
            f"--accumulate-steps {config.accumulate_steps} splits each batch into more micro-batches than the "
            f"{config.batch_size} images it holds; use at most {config.batch_size}."
        )
    if not isinstance(config.checkpoint_every, int) or isinstance(config.checkpoint_every, bool):
        raise ConfigError(f"--checkpoint-every must be a whole number of steps, got {config.checkpoint_every!r}.")
    if config.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0 (0: at epoch ends only), got {config.checkpoint_every}.")
    if config.amp not in AMP_MODES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_MODES)}, got {config.amp!r}.")
    if config.channels_last is not None and not isinstance(config.channels_last, bool):
        raise ConfigError(f"channels_last must be true, false or None (auto), got {config.channels_last!r}.")
    for name in (
        "decay_norm_and_bias",
        "compile",
        "cuda_graphs",
        "cudnn_benchmark",
        "sync_bn",
        "tensorboard",
        "strict",
    ):
        boolean(name)
    if config.labels_per_class is not None:
        positive_int("labels_per_class", config.labels_per_class)
    number("val_split", config.val_split, 0, 1, "a fraction in (0, 1) (0.2 holds out a fifth)")
    if config.val_split == 0:
        raise ConfigError("--val-split must be a fraction in (0, 1) (0.2 holds out a fifth), got 0.")
    if not isinstance(config.num_workers, int) or isinstance(config.num_workers, bool) or config.num_workers < 0:
        raise ConfigError(f"--num-workers must be a whole number >= 0, got {config.num_workers!r}.")
    if config.cuda_graphs:
        _check_cuda_graphs(config)
    if config.tensorboard:
        from cnnlab.train.tensorboard import check_tensorboard

        check_tensorboard()  # before any file is written: says how to install it
    if config.augment not in (None, "auto"):  # None/auto: the dataset's preset, chosen in build_run
        from cnnlab.data.augment import validate_augmentation

        validate_augmentation(config.augment)  # unknown preset -> UnknownNameError listing the valid ones
    if config.loss not in LOSSES:
        raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {config.loss!r}.")
    if config.adversarial not in (None, "fgsm", "pgd"):
        raise ConfigError(f"--adversarial must be fgsm or pgd, got {config.adversarial!r}.")
    if config.adversarial is not None:
        if not isinstance(config.adv_eps, int | float) or not 0 <= config.adv_eps <= 1:
            raise ConfigError(f"--adv-eps must be in [0, 1] (pixel units), got {config.adv_eps!r}.")
        if not 0 <= config.adv_alpha <= 1:
            raise ConfigError(f"--adv-alpha must be in [0, 1], got {config.adv_alpha!r}.")
        positive_int("adv_steps", config.adv_steps)


def _check_cuda_graphs(config: TrainConfig) -> None:
    """CUDA graphs replay one fixed sequence of kernels: refuse every setting that would break that."""
    import torch

    device = str(config.device)
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not on_cuda:
        where = "this machine has no CUDA GPU" if device == "auto" else f"--device is {device}"
        raise ConfigError(f"--cuda-graphs needs a CUDA device, but {where}. Leave --cuda-graphs off.")
    reasons = {
        "--amp fp16": config.amp == "fp16",  # the gradient scaler reads found-inf on the host every step
        "--compile": config.compile,  # torch.compile(mode='reduce-overhead') does its own graph capture
        "--accumulate-steps > 1": config.accumulate_steps > 1,
    }
    bad = [name for name, hit in reasons.items() if hit]
    if bad:
        raise ConfigError(
            f"--cuda-graphs cannot be combined with {', '.join(bad)}: the captured step must be one fixed "
            "sequence of kernels without host synchronisation. Drop one of them (bf16 needs no scaler)."
        )
