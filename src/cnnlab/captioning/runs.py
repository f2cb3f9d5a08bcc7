"""Captioning workflows for the command line and for Python alike: train (``cnnlab caption train``), evaluate
(``cnnlab caption eval``) and caption images (``cnnlab caption predict``).

>>> result = train_captioner({"data": "captioned-scenes", "epochs": 12})
>>> evaluate_captioner(result.run.run_dir.path, beam=3).bleu["beam"][4]
>>> predict_captions(result.run.run_dir.path, ["scene.png"])[0].caption

A captioning run is a run directory like a classifier's (checkpoints, exact resume, metrics.csv, summary.json,
config.json); the checkpoint's ``captioner`` entry holds what rebuilds the model: its kind, encoder, sizes and
vocabulary.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.captioning import draw
from cnnlab.captioning.alignment import (
    AlignmentModel,
    alignment_scores,
    best_regions,
    region_mask,
    square_boxes,
    word_mask,
)
from cnnlab.captioning.metrics import cider_d, corpus_bleu, most_common_captions, sentence_bleu
from cnnlab.captioning.model import CaptionModel
from cnnlab.captioning.task import AlignmentTask, CaptionTask, evaluate_retrieval, split_tables
from cnnlab.data import DeviceTensorLoader, Preprocessing
from cnnlab.data.caption_scenes import named_object_accuracy
from cnnlab.data.captions import CaptionDataset, Vocabulary, load_caption_dataset
from cnnlab.errors import ConfigError, OutputError, UnknownNameError
from cnnlab.train.record import task_spec

KINDS = ("generation", "alignment")
# The generation model's recipe: Adam at 3e-3 per batch of 16 scenes (each with its 3–5 references), cosine to 0,
# 12 epochs (≈ 14 min on the 2-core CPU). Chosen on the validation scenes, one seed (docs/captioning.md): batches of
# 64 for 4 epochs (500 steps) reached a validation loss of 0.950 per word; batches of 16 reached 0.930 (lr 1e-3) and
# 0.914 (lr 3e-3) in 2 epochs (1,000 steps): the CNN, trained from scratch through the LSTM, needs steps more than
# large batches; 12 epochs beat 8 (loss 0.698 vs 0.766, greedy BLEU-4 0.475 vs 0.422). No augmentation (a flip
# would swap "left" and "right"), no weight decay. Three seeds (docs/captioning.md): test BLEU-4 0.461 ± 0.015 greedy,
# 0.478 ± 0.018 beam 3, 13.9 min of one core: short of the 0.5, because the captions name the digits at chance
# level (sizes and colours right); batches of 8 for as long were no better after one epoch.
CAPTION_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 3e-3,  # per step
    "momentum": 0.9,  # β1 of Adam
    "weight_decay": 0.0,
    "batch_size": 16,  # scenes per step
    "schedule": "cosine",
    "epochs": 12,
    "augment": "none",
    "holdout": 0.0,  # the scenes have their own validation split
    "data": "captioned-scenes",
}
CAPTION_FLAGS = (  # the TrainConfig fields `cnnlab caption train` offers
    "data", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "schedule", "clip_grad_norm", "seed", "device",
    "data_root", "out", "log_every", "checkpoint_every", "keep_last", "tensorboard",
)  # fmt: skip


@dataclass(frozen=True)
class CaptionOptions:
    """The model's settings (``cnnlab caption train``'s own flags); a checkpoint keeps them."""

    model: str = "generation"  # generation: CNN + LSTM; alignment: Karpathy & Fei-Fei's region–word model
    encoder: str = "dmnist-cnn"  # any zoo model; its pre-logits vector is the image (or region) feature
    freeze_encoder: bool = False  # keep the encoder's weights (e.g. with encoder_weights="torchvision")
    # "torchvision" (ImageNet weights through models.create), or a cnnlab classifier run of the same encoder model
    # whose weights are loaded (all but its output layer; e.g. dmnist-cnn trained on mnist-rts): see docs/captioning.md
    encoder_weights: str | None = None
    encoder_lr: float = 1.0  # factor on η for the encoder's weights (a pretrained encoder: well below 1)
    embed_dim: int = 128  # word embeddings (and the projected image, for generation)
    hidden_dim: int = 256  # the LSTM's state (generation); the shared region–word space (alignment)
    dropout: float = 0.0  # on the LSTM's outputs (generation)
    region_size: int = 32  # px, side of the alignment model's region crops
    min_count: int = 1  # training-caption occurrences for a word to enter the vocabulary
    data_options: dict = field(default_factory=dict)  # the caption dataset's options (e.g. train_size=2000)

    def __post_init__(self) -> None:
        from cnnlab import models

        if self.model not in KINDS:
            raise UnknownNameError("captioning model", self.model, KINDS)
        if self.encoder not in models.list_models(include_aliases=True):
            raise UnknownNameError("encoder model", self.encoder, models.list_models())
        for name in ("embed_dim", "hidden_dim", "region_size", "min_count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive whole number, got {value!r}.")
        if (
            isinstance(self.encoder_lr, bool)
            or not isinstance(self.encoder_lr, int | float)
            or not (0 < self.encoder_lr < float("inf"))
        ):
            raise ConfigError(f"encoder_lr (a factor on η) must be a positive number, got {self.encoder_lr!r}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}.")

    def check_encoder_weights(self) -> None:
        """Refuse an ``encoder_weights`` run that does not exist (a new run's check; a resumed one has its weights)."""
        weights = self.encoder_weights
        if weights not in (None, "torchvision") and not Path(str(weights)).expanduser().exists():
            raise ConfigError(
                f"--encoder-weights {weights}: no such run directory or checkpoint; give `torchvision` or a cnnlab "
                "classifier run of the encoder model (e.g. `cnnlab train --model dmnist-cnn --data mnist-rts`)."
            )


@dataclass
class CaptionTrainResult:
    """What :func:`train_captioner` did: the run, the engine, one row per epoch, wall seconds."""

    run: Any
    trainer: Any
    history: list[dict]
    seconds: float
    already_complete: bool = False


def build_captioner(
    options: CaptionOptions, input_shape: tuple[int, int, int], vocab_size: int, say=lambda text: None
) -> nn.Module:
    """The model ``options`` describe, for images (C, H, W) and a vocabulary of ``vocab_size`` tokens (seeded by
    the caller); ``say`` gets a note on the encoder's weights when they come from a run."""
    from cnnlab import models

    c, h, _ = input_shape
    side = h if options.model == "generation" else options.region_size
    info = models.get_model_info(options.encoder)
    if info.fixed_input_size and tuple(info.input_size[1:]) != (side, side):
        raise ConfigError(
            f"Encoder {options.encoder} only takes {info.input_size[1]}×{info.input_size[2]} images, but it would get "
            f"{side}×{side}; choose an encoder of any input size (e.g. dmnist-cnn, resnet20)."
        )
    extra = {"image_size": side} if "image_size" in info.options else {}
    from_run = options.encoder_weights not in (None, "torchvision")
    encoder = models.create(options.encoder, in_chans=c, weights=None if from_run else options.encoder_weights,
                            **extra)  # fmt: skip
    if from_run:
        from cnnlab.transfer import load_run_weights

        say(f"encoder: {load_run_weights(encoder, str(Path(str(options.encoder_weights)).expanduser()))}")
    if options.model == "generation":
        model: nn.Module = CaptionModel(encoder, input_shape, vocab_size, options.embed_dim, options.hidden_dim,
                                        options.dropout, options.freeze_encoder)  # fmt: skip
    else:
        if options.freeze_encoder:
            encoder.requires_grad_(False)
        model = AlignmentModel(encoder, c, vocab_size, options.region_size, options.hidden_dim, options.embed_dim)
    if options.encoder_lr != 1.0:  # the trainer makes a parameter group of each prefix (train/optim.py)
        model.lr_multipliers = {"encoder.": float(options.encoder_lr)}
    return model


def scene_preprocessing(channels: int, size: tuple[int, int]) -> Preprocessing:
    """Pixels scaled to [0, 1] (mean 0, std 1): black stays 0, so crops reaching past a scene's edge (zeros) look
    like its background."""
    return Preprocessing(channels, size, 0, (0.0,) * channels, (1.0,) * channels)


def _spec(options: CaptionOptions, input_shape, vocabulary: Vocabulary) -> dict:
    return {**asdict(options), "input_shape": list(input_shape), "vocabulary": vocabulary.to_list()}


def _options_of(spec: dict) -> CaptionOptions:
    return CaptionOptions(**{f.name: spec[f.name] for f in fields(CaptionOptions) if f.name in spec})


def build_caption_run(config, options: CaptionOptions, run_dir: str | Path | None, overwrite: bool,
                      vocabulary: Vocabulary | None = None, say=lambda text: None):  # fmt: skip
    """(the run, its task) from a resolved config: data, vocabulary, loaders, the model (seeded); every check runs
    before the run directory is opened. With ``vocabulary`` (a resumed run) the encoder's initial weights are not
    loaded again: the checkpoint's replace them."""
    from cnnlab.train import TrainingRun, resolve_device
    from cnnlab.train.rundir import RunDir, default_run_dir

    device = resolve_device(config.device)
    dataset = load_caption_dataset(config.data, config.data_root, **options.data_options)
    resuming = vocabulary is not None
    vocabulary = vocabulary or dataset.vocabulary(options.min_count)
    input_shape = dataset.image_shape
    pre = scene_preprocessing(input_shape[0], input_shape[1:])
    torch.manual_seed(config.seed)  # the model's initialisation
    built = replace(options, encoder_weights=None) if resuming else options
    model = build_captioner(built, input_shape, len(vocabulary), say)
    spec = _spec(options, input_shape, vocabulary)
    if options.model == "generation":
        targets = dataset.train.references(vocabulary)  # (N, R, T)
        task: Any = CaptionTask(model, vocabulary, dataset.val, spec)
    else:
        targets = torch.arange(len(dataset.train))  # scene indices: the task looks references and boxes up
        task = AlignmentTask(model, dataset.train, vocabulary, dataset.val, spec)
    train = DeviceTensorLoader(dataset.train.images, targets, pre, config.batch_size, shuffle=True, seed=config.seed,
                               device=device)  # fmt: skip
    test = DeviceTensorLoader(dataset.test.images, torch.arange(len(dataset.test)), pre, 250, device=device)
    path = run_dir or config.out or default_run_dir(config.model, config.data)
    opened = RunDir(path, new=run_dir is None, overwrite=overwrite, lock=True)
    return TrainingRun(config, device, model.to(device), dataset, pre, train, test, opened), task


def train_captioner(
    given: dict | None = None,
    options: CaptionOptions | None = None,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    reporter: Any = None,
    say=lambda text: None,
    command: list[str] | None = None,
) -> CaptionTrainResult:
    """Train (or continue) a captioning model by the engine, as ``cnnlab caption train`` does.

    Args:
        given: :class:`~cnnlab.train.TrainConfig` fields (of :data:`CAPTION_FLAGS`); unset: :data:`CAPTION_DEFAULTS`.
        options: the model (:class:`CaptionOptions`); default: generation with ``dmnist-cnn``.
        resume: a checkpoint, run directory or ``auto``; the run keeps its own model and vocabulary.
        overwrite: ``given["out"]`` may hold an earlier run, which is replaced.
        reporter, say, command: as for :func:`cnnlab.workflows.train_classifier`.

    Raises:
        ConfigError, UnknownNameError, DataError, CheckpointError: bad settings or data, before anything is written.
    """
    from cnnlab.train import Trainer
    from cnnlab.train.config import TrainConfig, resolve
    from cnnlab.train.record import write_run_config
    from cnnlab.train.session import find_task_resume, restore

    given = dict(given or {})
    resumed = find_task_resume(given, CAPTION_FLAGS, "cnnlab caption train", resume, overwrite, "captioner",
                               "captioning", say)  # fmt: skip
    vocabulary, run_path = None, None
    if resumed is not None:
        spec, run_path, config = resumed.spec, resumed.run_path, resumed.config
        options, vocabulary = _options_of(spec), Vocabulary(tuple(spec["vocabulary"]), int(spec["min_count"]))
    else:
        options = options or CaptionOptions()
        options.check_encoder_weights()
        name = f"caption-{options.model}-{options.encoder}"
        config = resolve(TrainConfig(**{**CAPTION_DEFAULTS, "model": name, **given}))
    run, task = build_caption_run(config, options, run_path, overwrite or resume == "auto", vocabulary, say)
    trainer = Trainer(run, task=task, reporter=reporter)
    if resumed is not None and restore(trainer, resumed.payload, say):
        return CaptionTrainResult(run, trainer, trainer.history, 0.0, already_complete=True)
    write_run_config(run, trainer.static_record, command if command is not None else sys.argv)
    words = len(task.vocabulary)
    say(f"Training the {options.model} model ({options.encoder} encoder) on {config.data} ({len(run.dataset.train):,}"
        f" scenes, {words} tokens) on {run.device} for {config.epochs} epochs")  # fmt: skip
    started = time.perf_counter()
    try:
        history = trainer.fit()
    finally:
        trainer.close()
    return CaptionTrainResult(run, trainer, history, time.perf_counter() - started)


# ---- using a trained model -------------------------------------------------------------------------------------
@dataclass
class Captioner:
    """A trained captioning model loaded from its run: ``model`` (eval mode), its ``options``, ``vocabulary``,
    ``preprocessing`` and ``data``."""

    path: Path
    model: nn.Module
    options: CaptionOptions
    vocabulary: Vocabulary
    preprocessing: Preprocessing
    data: str
    input_shape: tuple[int, int, int] = (3, 96, 96)  # (C, H, W) of the images it was trained on

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the model's float input."""
        pre = self.preprocessing
        mean = torch.tensor(pre.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(pre.std, device=self.device).view(1, -1, 1, 1)
        return (images.to(self.device).float() / 255 - mean) / std

    def caption(self, images: torch.Tensor, beam: int = 3, alpha: float = 1.0, batch: int = 250) -> list[str]:
        """Captions of uint8 (B, C, H, W) images (generation runs)."""
        if not isinstance(self.model, CaptionModel):
            raise ConfigError("This is an alignment run: it scores captions but writes none; train a generation "
                              "model (`cnnlab caption train --model generation`) to caption images.")  # fmt: skip
        out = []
        for start in range(0, len(images), batch):
            ids = self.model.caption(self.normalise(images[start : start + batch]), beam=beam, alpha=alpha)
            out += [self.vocabulary.decode(row) for row in ids.tolist()]
        return out


def load_captioner(run: str | Path, device: str = "cpu") -> Captioner:
    """The model of a captioning run (a run directory or checkpoint file), in eval mode on ``device``.

    Raises:
        CheckpointError: no such run, not a cnnlab checkpoint, or not a captioning run.
    """
    from cnnlab.train import resolve_device
    from cnnlab.train.checkpoint import load_checkpoint, resolve_checkpoint_path

    path = resolve_checkpoint_path(run)
    payload = load_checkpoint(path)
    spec = task_spec(payload, run, "captioner", "captioning", "cnnlab caption train")
    options = _options_of(spec)
    vocabulary = Vocabulary(tuple(spec["vocabulary"]), int(spec["min_count"]))
    model = build_captioner(replace(options, encoder_weights=None), tuple(spec["input_shape"]), len(vocabulary))
    model.load_state_dict(payload["model_state"])
    model.to(resolve_device(device)).eval()
    pre = Preprocessing.from_dict(payload["preprocessing"])
    return Captioner(path, model, options, vocabulary, pre, str(payload.get("data")), tuple(spec["input_shape"]))


@dataclass
class CaptionEvaluation:
    """What :func:`evaluate_captioner` measured on one split.

    Attributes:
        scenes: images evaluated.
        bleu: corpus BLEU-1…4 by decoder (``greedy``, ``beam``, ``baseline``: the most common caption for the
            scene's objects).
        objects: generated scenes: how often the objects the greedy captions name are in the scene, per
            attribute, with the chance level (:func:`~cnnlab.data.caption_scenes.named_object_accuracy`).
        cider: CIDEr-D by decoder (:func:`~cnnlab.captioning.metrics.cider_d`, × 10 scale: 10 is every caption
            equal to all its references).
        seconds: wall seconds of ``encode`` (the CNN over all images), and of captioning all of them ``greedy``
            and by ``beam`` (encoding included).
        best, worst: (scene index, caption, references, sentence BLEU-4) of the beam captions.
        retrieval: alignment runs: the :class:`~cnnlab.captioning.alignment.Retrieval` table.
        pictures: files written (samples, alignments).
    """

    split: str
    scenes: int
    beam: int
    bleu: dict[str, dict[int, float]] = field(default_factory=dict)
    cider: dict[str, float] = field(default_factory=dict)
    objects: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    best: list[tuple] = field(default_factory=list)
    worst: list[tuple] = field(default_factory=list)
    retrieval: Any = None
    pictures: list[Path] = field(default_factory=list)


def writable_folder(out: str | Path | None, default: Path, command: str) -> Path:
    """``out`` (``--out``), else ``default`` (a folder of the run), created and checked writable.

    Raises:
        OutputError: it cannot be written (a read-only run, say), naming ``--out`` as the way out.
    """
    from cnnlab.outputs import output_dir

    if out is not None:
        return output_dir(out)
    try:
        return output_dir(default, "the run's folder")
    except OutputError as error:
        raise OutputError(f"{error} `cnnlab caption {command}` writes its pictures there unless you give "
                          "--out FOLDER.") from None  # fmt: skip


def _timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def evaluate_captioner(
    run: str | Path,
    split: str = "test",
    beam: int = 3,
    limit: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    samples: int = 4,
    out: str | Path | None = None,
    regions: str = "boxes",
) -> CaptionEvaluation:
    """``cnnlab caption eval``: a run on its dataset's ``split`` (``val`` or ``test``), first ``limit`` scenes.

    Generation: corpus BLEU-1…4 and CIDEr-D greedy, with beam search and of the baseline; timings; the
    ``samples`` best and worst captions drawn to ``OUT/eval-<split>-samples.png``. Alignment: retrieval both ways
    and each word's best region for ``samples`` scenes (``OUT/eval-<split>-alignment.png``). Figures go to
    ``OUT/eval-<split>.json`` as well; OUT is the run's folder unless ``out`` is given. ``regions`` (alignment):
    ``boxes``, the scenes' ground-truth boxes, or ``proposals``, the whole image and each scene's
    :data:`PROPOSALS` best selective-search proposals (:func:`proposal_boxes`; ≈ 0.1–0.3 s per scene).

    Raises:
        ConfigError, CheckpointError, DataError; OutputError: OUT cannot be written (checked before any work).
    """
    if split not in ("val", "test"):
        raise ConfigError(f"--split must be val or test, got {split!r}.")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit must be a positive whole number, got {limit!r}.")
    if regions not in REGION_SOURCES:
        raise ConfigError(f"--regions must be one of {', '.join(REGION_SOURCES)}, got {regions!r}.")
    captioner = load_captioner(run, device)
    folder = writable_folder(out, captioner.path.parent, "eval")
    dataset = load_caption_dataset(captioner.data, data_root, **captioner.options.data_options)
    chosen = getattr(dataset, split)
    count = len(chosen) if limit is None else min(limit, len(chosen))
    result = CaptionEvaluation(split, count, beam)
    if isinstance(captioner.model, CaptionModel):
        _evaluate_generation(captioner, dataset, chosen, count, result, samples, folder)
    else:
        _evaluate_alignment(captioner, chosen, count, result, samples, folder, regions)
    record = {k: v for k, v in asdict(result).items() if k not in ("retrieval", "pictures")}
    if result.retrieval is not None:
        record["retrieval"] = {**asdict(result.retrieval), "chance_r1": result.retrieval.chance_r1}
    (folder / f"eval-{split}.json").write_text(json.dumps(record, indent=1, default=str))
    return result


def _evaluate_generation(captioner: Captioner, dataset: CaptionDataset, chosen, count: int,
                         result: CaptionEvaluation, samples: int, folder: Path) -> None:  # fmt: skip
    images, references = chosen.images[:count], chosen.captions[:count]

    def encode() -> None:  # the CNN alone, for the timing
        with torch.no_grad():
            for start in range(0, count, 250):
                captioner.model.image_inputs(captioner.normalise(images[start : start + 250]))

    _, result.seconds["encode"] = _timed(encode)
    greedy, result.seconds["greedy"] = _timed(captioner.caption, images, 1)
    beamed, result.seconds["beam"] = _timed(captioner.caption, images, result.beam)
    baseline = most_common_captions(dataset.train, chosen.labels[:count]) if chosen.labels is not None else None
    decoded = {"greedy": greedy, "beam": beamed, **({"baseline": baseline} if baseline is not None else {})}
    result.bleu = {name: corpus_bleu(captions, references) for name, captions in decoded.items()}
    result.cider = {name: cider_d(captions, references)[0] for name, captions in decoded.items()}
    if chosen.labels is not None:  # generated scenes: their first reference is the listing of every object
        result.objects = named_object_accuracy(greedy, [refs[0] for refs in references])
    ranked = sorted(range(count), key=lambda i: (sentence_bleu(beamed[i], references[i]), -i))
    row = lambda i: (i, beamed[i], references[i], round(sentence_bleu(beamed[i], references[i]), 4))  # noqa: E731
    result.best = [row(i) for i in reversed(ranked[-samples:])]
    result.worst = [row(i) for i in ranked[:samples]]
    pictures = []
    for k, (i, caption, refs, _) in enumerate(result.best + result.worst):
        label = "best" if k < len(result.best) else "worst"
        pictures.append(draw.captioned(images[i], [f"#{i} ({label}): {caption}", "references:", *refs]))
    path = folder / f"eval-{result.split}-samples.png"
    draw.grid(pictures, columns=samples).save(path)
    result.pictures.append(path)


def _evaluate_alignment(captioner: Captioner, chosen, count: int, result: CaptionEvaluation, samples: int,
                        folder: Path, regions: str = "boxes") -> None:  # fmt: skip
    model, vocabulary = captioner.model, captioner.vocabulary
    references, boxes, valid = split_tables(chosen, vocabulary)
    given = None
    if regions == "proposals":
        given, result.seconds["proposals"] = _timed(proposal_boxes, chosen.images[:count])
        boxes, valid = given
    result.retrieval, result.seconds["retrieval"] = _timed(
        evaluate_retrieval, model, chosen, vocabulary, captioner.preprocessing, captioner.device, count, given
    )
    pictures = []
    with torch.no_grad():
        for i in range(min(samples, count)):
            image = captioner.normalise(chosen.images[i : i + 1])
            regions = model.regions(image, boxes[i : i + 1].to(captioner.device), valid[i : i + 1].to(captioner.device))
            tokens = references[i, 1:2].to(captioner.device)  # the first relation caption (else the listing)
            if int(tokens[0, 0]) == 0:
                tokens = references[i, :1].to(captioner.device)
            mask = word_mask(tokens)[0]
            picks = best_regions(regions[0], region_mask(valid[i : i + 1].to(captioner.device))[0],
                                 model.words(tokens)[0][mask])  # fmt: skip
            words = [vocabulary.tokens[t] for t in tokens[0][mask].tolist()]
            shown = torch.cat([torch.zeros(1, 4), square_boxes(boxes[i]) if given is None else boxes[i]], 0)
            pictures.append(draw.aligned(chosen.images[i], shown, words, picks.tolist()))
    path = folder / f"eval-{result.split}-alignment.png"
    draw.grid(pictures, columns=samples).save(path)
    result.pictures.append(path)


@dataclass
class CaptionPrediction:
    """One image's caption and the picture written with it; for an alignment run, each word's best region as
    (word, region index (0: the whole image), its XYXY box in the image's pixels)."""

    image: Path
    caption: str
    picture: Path
    regions: list[tuple[str, int, tuple[float, ...]]] | None = None

    def region_lines(self) -> list[str]:
        """The words grouped by the region they chose, one line per region (empty for a generation run)."""
        groups: dict[int, list[str]] = {}
        boxes: dict[int, tuple[float, ...]] = {}
        for word, region, box in self.regions or []:
            groups.setdefault(region, []).append(word)
            boxes[region] = box
        return [f"  {'whole image' if r == 0 else f'region {r} {boxes[r]}'}: {' '.join(groups[r])}" for r in groups]


REGION_SOURCES = ("boxes", "proposals")  # an alignment run's regions in eval: ground truth or selective search
PROPOSALS = 19  # an alignment run's regions for an arbitrary image: the whole image and this many proposals
PROPOSAL_MIN_SIZE = 6.0  # px: smaller selective-search boxes are strokes, not objects (scenes' small objects: ≥ 10)
SENTENCE_CHUNK = 2000  # candidate sentences scored at a time by predict (memory: images · regions · chunk · words)


def read_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 (C, H, W) of an image file, converted to ``shape``'s channels and resized to its size."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2.functional import pil_to_tensor, resize

    from cnnlab.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Image {path} does not exist.")
    try:
        with Image.open(path) as image:
            tensor = pil_to_tensor(image.convert("L" if shape[0] == 1 else "RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"{path} cannot be read as an image ({error}).") from error
    if tuple(tensor.shape[1:]) != tuple(shape[1:]):
        tensor = resize(tensor, list(shape[1:]), antialias=True)
    return tensor


def predict_captions(run: str | Path, images: list[str | Path], beam: int = 3, out: str | Path | None = None,
                     device: str = "cpu", caption: str | None = None,
                     data_root: str | None = None) -> list[CaptionPrediction]:  # fmt: skip
    """``cnnlab caption predict``: caption image files.

    Generation runs: the caption by beam search (``beam``); each image is saved with it under it as
    ``OUT/<name>-caption.png``. Alignment runs (they write no captions; they score them): the caption is
    ``caption`` if given, else the run's training caption that scores highest with the image (image→sentence
    retrieval over the distinct training captions; the dataset is generated from ``data_root``); the regions are
    the whole image and its :data:`PROPOSALS` best-ranked selective-search proposals (an arbitrary image has no
    ground-truth boxes; the paper takes the top 19 R-CNN detections); each word's best region is returned and
    drawn, ``OUT/<name>-alignment.png``. Default OUT: ``RUN_DIR/predictions``.

    Raises:
        ConfigError: ``caption`` for a generation run, a caption without known words, a bad beam.
        DataError: a missing or unreadable image. CheckpointError; OutputError: OUT cannot be written (checked
            before any image is read).
    """
    if not images:
        raise ConfigError("Give at least one image file to caption.")
    captioner = load_captioner(run, device)
    generation = isinstance(captioner.model, CaptionModel)
    if caption is not None and generation:
        raise ConfigError("--caption gives an alignment run the sentence to align; a generation run writes its own "
                          "captions: leave it out.")  # fmt: skip
    folder = writable_folder(out, captioner.path.parent / "predictions", "predict")
    pixels = torch.stack([read_image(path, captioner.input_shape) for path in images])  # all read before writing
    if not generation:
        return _predict_alignments(captioner, images, pixels, folder, caption, data_root)
    results = []
    for path, image, text in zip(images, pixels, captioner.caption(pixels, beam=beam), strict=True):
        picture = folder / f"{Path(path).stem}-caption.png"
        draw.captioned(image, [text]).save(picture)
        results.append(CaptionPrediction(Path(path), text, picture))
    return results


def proposal_boxes(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The :data:`PROPOSALS` best-ranked selective-search proposals of uint8 (N, C, H, W) images (boxes under
    :data:`PROPOSAL_MIN_SIZE` px dropped): (boxes (N, M, 4) XYXY, valid (N, M)), padded to the most any image has."""
    from cnnlab.detection.selective_search import selective_search

    found = [selective_search(image, max_proposals=PROPOSALS, min_size=PROPOSAL_MIN_SIZE) for image in images]
    count = max(1, max((len(p) for p in found), default=0))
    boxes = torch.zeros(len(images), count, 4)  # (N, M, 4) XYXY, padded
    valid = torch.zeros(len(images), count, dtype=torch.bool)  # (N, M)
    for i, proposals in enumerate(found):
        boxes[i, : len(proposals)], valid[i, : len(proposals)] = proposals, True
    return boxes, valid


def _predict_alignments(captioner: Captioner, paths: list[str | Path], pixels: torch.Tensor, folder: Path,
                        caption: str | None, data_root: str | None) -> list[CaptionPrediction]:  # fmt: skip
    model, vocabulary, device = captioner.model, captioner.vocabulary, captioner.device
    if caption is not None:
        candidates = [caption]
        if not word_mask(vocabulary.encode(candidates)).any():
            raise ConfigError(f"--caption {caption!r} has no word; give a sentence to align (e.g. 'a small 3').")
    else:  # retrieval: the distinct training captions, in order of first appearance
        dataset = load_caption_dataset(captioner.data, data_root, **captioner.options.data_options)
        candidates = list(dict.fromkeys(c for refs in dataset.train.captions for c in refs))
    boxes, valid = proposal_boxes(pixels)
    with torch.no_grad():
        regions = model.regions(captioner.normalise(pixels), boxes.to(device), valid.to(device))  # (B, 1+M, D)
        present = region_mask(valid.to(device))
        best_score = torch.full((len(pixels),), float("-inf"), device=device)
        best = torch.zeros(len(pixels), dtype=torch.long)
        for start in range(0, len(candidates), SENTENCE_CHUNK):  # (B, chunk) scores at a time: bounded memory
            tokens = vocabulary.encode(candidates[start : start + SENTENCE_CHUNK]).to(device)
            scores = alignment_scores(regions, present, model.words(tokens), word_mask(tokens))
            top, where = scores.max(1)
            better = top > best_score
            best_score, best = (
                torch.where(better, top, best_score),
                torch.where(better.cpu(), where.cpu() + start, best),
            )
        results = []
        for i, (path, image) in enumerate(zip(paths, pixels, strict=True)):
            text = candidates[int(best[i])]
            tokens = vocabulary.encode([text]).to(device)
            mask = word_mask(tokens)[0]
            picks = best_regions(regions[i], present[i], model.words(tokens)[0][mask]).tolist()
            words = [vocabulary.tokens[t] for t in tokens[0][mask].tolist()]
            h, w = image.shape[1:]
            shown = torch.cat([torch.tensor([[0.0, 0.0, w, h]]), boxes[i]])  # region 0: the whole image
            picture = folder / f"{Path(path).stem}-alignment.png"
            draw.aligned(image, shown, words, picks).save(picture)
            chosen = [
                (word, r, tuple(round(float(v), 1) for v in shown[r])) for word, r in zip(words, picks, strict=True)
            ]
            results.append(CaptionPrediction(Path(path), text, picture, chosen))
    return results
