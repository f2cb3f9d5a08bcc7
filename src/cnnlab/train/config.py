"""The training configuration: one typed dataclass, passed whole, resolved before training starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from cnnlab.errors import ConfigError, UnknownNameError

SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle")
LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("alexnet-sgd", "sgd", "adam", "adamw")
AMP_MODES = ("auto", "bf16", "fp16", "off")


def option(default, help: str, *, choices=None, flag: str | None = None, resume: bool = False, cli: bool = True):
    """A :class:`TrainConfig` field with what the command line needs to offer it (the ``train`` flags are
    generated from these, as the ``viz`` flags are from :data:`~cnnlab.inspect.views.VIEWS`).

    Args:
        default: the field's default (``None``: the recipe's).
        help: the flag's help text (say the unit and the default).
        choices: the allowed values, if a closed set (or a function returning them, for tables defined later).
        flag: how a boolean is set: ``"on"`` (``--name`` sets True), ``"off"`` (``--no-name`` sets False) or
            ``"both"`` (``--name``/``--no-name``); other types take a value.
        resume: ``--resume`` may change it (speed, devices, logging, length); every other field is the run's own.
        cli: offered as a ``train`` flag (``model_options`` has its own repeatable ``--model-option``).
    """
    metadata = {"help": help, "choices": choices, "flag": flag, "resume": resume, "cli": cli}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` means "the recipe's default for this model and data".

    Precedence when resolving: a value given here > the paper recipe named by ``recipe`` > the model's recipe
    in :data:`RECIPES` > the defaults for every model (``RECIPES["*"]``).
    """

    model: str = option("lenet5", "registered model name (default: lenet5; see `cnnlab models`)")
    data: str = option("digits", "dataset name (default: digits, the 1,797 digits bundled with scikit-learn)")
    # the model's own keyword options, e.g. {"head": "softmax"}
    model_options: dict = option({}, "a model's own option", cli=False)  # noqa: RUF009 (a field() with metadata)
    # a paper's training recipe (PAPER_RECIPES), e.g. "alexnet-2012"
    recipe: str | None = option(
        None, "a paper's optimisation settings; flags still win", choices=lambda: sorted(PAPER_RECIPES)
    )
    # passes over the training split
    epochs: int | None = option(None, "passes over the training set (default: the recipe's; digits 40)", resume=True)
    # images per optimisation step, over all processes (the *global* batch)
    batch_size: int | None = option(None, "images per step (default: the recipe's; digits 16, else 32)")
    # η, learning rate per step (not scaled with the batch size)
    lr: float | None = option(
        None, "learning rate η per step (default: the recipe: lenet5 0.003, head=softmax 0.1, others 0.05; ×10 for mse)"
    )
    # alexnet-sgd (the 2012 paper's form) | sgd | adam | adamw (torch's)
    optimizer: str | None = option(None, "alexnet-sgd (default, the 2012 paper's form) | torch's", choices=OPTIMIZERS)
    # μ in Δw ← μ·Δw − wd·η·w − η·∂E/∂w; β1 for adam/adamw (default 0.9)
    momentum: float | None = option(None, "μ in Δw ← μΔw − wd·η·w − η·∂E/∂w; β1 for adam/adamw (default: 0.9)")
    # μ at the first step, rising linearly to --momentum over --momentum-ramp-epochs (Hinton et al. 2012: 0.5)
    momentum_start: float | None = option(
        None, "μ at the first step, rising linearly to --momentum over --momentum-ramp-epochs (sgd, alexnet-sgd)"
    )
    # epochs over which μ rises from --momentum-start to --momentum, then stays (0: constant μ)
    momentum_ramp_epochs: float = option(0.0, "epochs over which μ rises to --momentum (default: 0, constant μ)")
    # wd in the same formula (AlexNet: 0.0005); decoupled for adamw
    weight_decay: float | None = option(None, "wd in the same update (default: lenet5 0, others 5e-4)")
    # False: no weight decay on biases and normalisation layers (own group)
    decay_norm_and_bias: bool = option(True, "no weight decay on biases and normalisation layers", flag="off")
    # constant | step | multistep | cosine (to 0) | onecycle (default: cosine)
    schedule: str | None = option(
        None, "learning-rate schedule, stepped per batch (default: cosine)", choices=SCHEDULES
    )
    # step schedule: epochs between decays (default 10)
    step_epochs: int | None = option(None, "step schedule: epochs between decays (default: 10)")
    # step/multistep schedules: factor per decay (default 0.1)
    gamma: float | None = option(None, "step schedule: factor per decay (default: 0.1)")
    # multistep: optimisation steps at which η ×= gamma (ResNet: 32k, 48k)
    milestones: list[int] | None = option(  # noqa: RUF009 (a field() with metadata)
        None, "multistep schedule: steps where η ×= gamma, e.g. 32000,48000"
    )
    # linear warm-up from ~0 to η over this many epochs (default 0: none)
    warmup_epochs: float | None = option(None, "linear warm-up of η over this many epochs (default: 0)")
    # ε: targets (1 − ε)·one-hot + ε/K (Szegedy et al. 2016 used 0.1)
    label_smoothing: float = option(0.0, "ε: targets (1 − ε)·one-hot + ε/K (default: 0)")
    # clip the global L2 norm of the gradient to this (0: no clipping)
    clip_grad_norm: float = option(0.0, "clip the gradient's global L2 norm to this (default: off)")
    # split each batch into this many micro-batches (memory); same gradient
    accumulate_steps: int = option(1, "split each batch into N micro-batches: same gradient")
    # keep and evaluate an EMA of the weights, e.g. 0.999 per step (0: off)
    ema_decay: float | None = option(None, "evaluate and save an EMA of the weights, e.g. 0.999 (default: off)")
    # augmentation preset(s), e.g. pad-crop-flip or crop+flip+pca (default: the dataset's)
    augment: str | None = option(
        None, "augmentation preset(s), e.g. none, pad-crop-flip, crop+flip+pca (default: the dataset's)"
    )
    # generated datasets (the distorted MNIST sets, MNIST addition): distort the training digits afresh every epoch
    # (epoch 1 trains on the dataset's fixed draw); validation and test stay the fixed draw
    redraw: bool = option(
        False, "generated datasets (mnist-rts, mnist-addition...): new distortions every epoch", flag="on"
    )
    # fgsm | pgd: train on Goodfellow's J̃ = α·J(x) + (1 − α)·J(x_adv) (None: plain)
    adversarial: str | None = option(
        None, "adversarial training: α·J(x) + (1 − α)·J(x + ε·sign ∇ₓJ)", choices=("fgsm", "pgd")
    )
    # ε of the training attack, in pixel units (the pixel range is [0, 1])
    adv_eps: float = option(0.25, "ε of the training attack, pixel units in [0, 1] (default: 0.25)")
    # α: weight of the clean loss in J̃ (0.5 in Goodfellow et al. 2014)
    adv_alpha: float = option(0.5, "α, weight of the clean loss (default: 0.5, as Goodfellow et al.)")
    # pgd: iterations of the training attack
    adv_steps: int = option(7, "pgd: iterations of the training attack (default: 7)")
    # apply the paper's rule after each step where a model has one (ZF, maxout)
    weight_constraints: bool = option(
        True, "skip the paper's per-step weight rule (ZF Net filter RMS 0.1, maxout max-norm)", flag="off"
    )
    # cross_entropy | mse (½·Σ(softmax − one-hot)², as in the beginner's guide)
    loss: str = option("cross_entropy", "cross_entropy, or mse: ½Σ(softmax − one-hot)² (default: ce)", choices=LOSSES)
    # model init, data order and dropout; same seed on CPU -> bit-identical run
    seed: int = option(0, "seed of init, data order, augmentation (default: 0); CPU runs repeat bit for bit")
    # auto | cpu | cuda | cuda:N | mps
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps (default: auto)", resume=True)
    # ---- speed (none of these changes what is computed beyond float rounding) ----
    # auto (bf16 on CUDA; fp16 on GPUs without bf16; off on CPU/MPS) | bf16 | fp16 | off
    amp: str = option(
        "auto", "mixed precision (default: auto = bf16 on CUDA, off on CPU)", choices=AMP_MODES, resume=True
    )
    # NHWC layout (None: on CUDA; on the CPU where the model gains from it)
    channels_last: bool | None = option(
        None,
        "NHWC memory layout (default: on CUDA; on the CPU for the models that gain from it, all but maxout)",
        flag="both",
        resume=True,
    )
    # torch.compile the model (minutes of compile time; pays off on long GPU runs)
    compile: bool = option(False, "torch.compile the model", flag="on", resume=True)
    # capture the whole step as one CUDA graph (small models on CUDA; drops last batch)
    cuda_graphs: bool = option(False, "replay each step as a CUDA graph", flag="on", resume=True)
    # on CUDA, let cuDNN time its algorithms once per input shape and keep the fastest
    cudnn_benchmark: bool = option(
        True, "on CUDA, do not let cuDNN time its algorithms per input shape", flag="off", resume=True
    )
    # with several processes: BatchNorm statistics over the global batch (SyncBatchNorm)
    sync_bn: bool = option(False, "several GPUs: BatchNorm over the global batch", flag="on")
    # ---- files and monitoring ----
    # where datasets live (default: $CNNLAB_DATA, else ~/.cache/cnnlab)
    data_root: str | None = option(
        None, "where datasets live (default: $CNNLAB_DATA, else ~/.cache/cnnlab)", resume=True
    )
    # train on this many images per class only (few-label transfer); None: all
    labels_per_class: int | None = option(None, "train on only N labelled images per class (seeded)")
    # evaluate on N images per class of the validation and test splits only (the same ones for every seed): quick
    # checks such as `cnnlab reproduce --quick`, whose figures are not the paper's test set; None: all
    eval_per_class: int | None = option(None, "evaluate on only N images per class of val and test (quick checks)")
    # fraction of the training images held out for validation (stratified, seeded): best.pt and the summary's best
    # epoch are chosen on it, never on the test split (which is only reported); 0: none, and no best.pt
    holdout: float = option(
        0.1, "training images held out to choose the best epoch on (stratified, seeded; default 0.1; 0: none)"
    )
    # folder:PATH without train/ and val/ sub-folders: fraction of images held out to test
    val_split: float = option(0.2, "folder:PATH without train/ and val/: test fraction (default 0.2)")
    # streamed photo datasets: decoding processes (0: decode in the training process)
    num_workers: int = option(2, "photo folders: decoding processes (default: 2)", resume=True)
    # streamed photos: an undecodable file is an error (False: skipped, and listed)
    strict: bool = option(False, "photo folders: fail on unreadable files", flag="on")
    # run directory (default: runs/<model>-<data>-<time>)
    out: str | None = option(None, "run directory (default: runs/<model>-<data>-<date>-<time>)")
    # steps between host syncs (progress bar, NaN check); no sync in between
    log_every: int = option(10, "steps between progress updates (host syncs) (default: 10)", resume=True)
    # also checkpoint every this many optimisation steps (0: at epoch ends only)
    checkpoint_every: int = option(0, "also checkpoint every N steps (default: at epoch ends)", resume=True)
    # step checkpoints kept in checkpoints/ (>= 2 lets a corrupt latest fall back)
    keep_last: int = option(2, "step checkpoints kept in <run>/checkpoints (default: 2)", resume=True)
    # write TensorBoard event files to <run dir>/tensorboard (needs `tensorboard`)
    tensorboard: bool = option(False, "TensorBoard events in <run>/tensorboard", flag="on", resume=True)

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
    number("momentum_ramp_epochs", config.momentum_ramp_epochs, 0, math.inf, "a number of epochs >= 0 (0: no ramp)")
    if config.momentum_ramp_epochs > 0:
        if config.momentum_start is None:
            raise ConfigError(
                "--momentum-ramp-epochs needs --momentum-start: the μ to start from (Hinton et al. 2012: 0.5)."
            )
        number("momentum_start", config.momentum_start, 0, 1, "in [0, 1) (Hinton et al. 2012 start at 0.5)")
        if config.optimizer not in ("sgd", "alexnet-sgd"):
            raise ConfigError(
                f"--momentum-ramp-epochs changes SGD's μ; --optimizer is {config.optimizer}, whose β1 it does not "
                "ramp. Use --optimizer sgd or alexnet-sgd, or drop the ramp."
            )
    elif config.momentum_start is not None:
        raise ConfigError(
            "--momentum-start does nothing without --momentum-ramp-epochs (the epochs over which μ rises from it "
            "to --momentum); give both, or neither."
        )
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
    if config.eval_per_class is not None:
        positive_int("eval_per_class", config.eval_per_class)
    number("holdout", config.holdout, 0, 1, "a fraction in [0, 1) (0.1 holds out a tenth; 0: none)")
    if config.holdout >= 1:
        raise ConfigError(f"--holdout must be below 1 (some images must be left to train on), got {config.holdout}.")
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
    if config.redraw:
        from cnnlab.data.distorted import REDRAWABLE

        if config.data not in REDRAWABLE:  # checked by name: before anything is loaded or written
            raise ConfigError(
                f"--redraw draws a generated dataset's distortions afresh every epoch, but {config.data!r} is stored "
                f"images with nothing to draw again; use it on {', '.join(REDRAWABLE)}, or leave --redraw out."
            )
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
        "--momentum-ramp-epochs": config.momentum_ramp_epochs > 0,  # a captured step replays a fixed μ
    }
    bad = [name for name, hit in reasons.items() if hit]
    if bad:
        raise ConfigError(
            f"--cuda-graphs cannot be combined with {', '.join(bad)}: the captured step must be one fixed "
            "sequence of kernels without host synchronisation. Drop one of them (bf16 needs no scaler)."
        )


def fixed_settings_changed(
    saved: TrainConfig, given: dict, model_options: dict | None = None, *, also_fixed: tuple[str, ...] = ()
) -> list[tuple[str, object, object]]:
    """The settings of ``given`` that a run fixed and that differ from the run's own, as (name, the run's value,
    the given value); model options are named ``"model_option KEY"``.

    Fixed: every field whose metadata does not say ``resume`` (``out`` aside), and ``also_fixed`` (``cnnlab
    reproduce`` adds ``epochs``: a run of an entry's recipe must keep its length).
    """
    may_change = {f.name for f in fields(TrainConfig) if f.metadata.get("resume")} - set(also_fixed)
    changed = [
        (k, getattr(saved, k), v)
        for k, v in given.items()
        if k not in may_change and k != "out" and v != getattr(saved, k)
    ]
    # only the options given are compared: the saved ones also hold what the build added (an MLP's image_size),
    # so a whole-dict comparison refused the very command that made the run (cnnlab reproduce run again)
    missing = object()
    for k, v in (model_options or {}).items():
        if saved.model_options.get(k, missing) != v:
            changed.append((f"model_option {k}", saved.model_options.get(k, "(unset)"), v))
    return changed


def resume_config(saved: TrainConfig, given: dict, model_options: dict | None = None) -> TrainConfig:
    """The config a resumed run continues with: the run's own, with only what ``--resume`` may change taken from
    ``given`` (fields whose metadata says ``resume``: length, devices, speed, checkpoints, logging).

    The same command line can be re-run (``--resume auto``): a value equal to the run's own is accepted.

    Raises:
        ConfigError: ``given`` changes a field the run fixed (named as flags), or asks for fewer epochs than done.
    """
    changed = fixed_settings_changed(saved, given, model_options)
    fixed = sorted(name for name, _, _ in changed if not name.startswith("model_option "))
    fixed += ["model_option"] if len(fixed) < len(changed) else []
    if fixed:
        flags = ", ".join("--" + f.replace("_", "-") for f in fixed)
        raise ConfigError(
            f"--resume continues a run with its own settings; {flags} cannot change. Only --epochs (to train "
            "longer), --device, --data-root and the speed, checkpoint and logging flags may be given."
        )
    may_change = {f.name for f in fields(TrainConfig) if f.metadata.get("resume")}
    return resolve(replace(saved, **{k: v for k, v in given.items() if k in may_change}))
