"""Detection workflows for the command line and for Python alike: train (``cnnlab detect train``), evaluate
(``cnnlab detect eval``) and predict (``cnnlab detect predict``).

>>> result = train_detector({"data": "mnist-detection", "epochs": 2}, method="faster-rcnn")
>>> evaluate_detector(result.run.run_dir.path).map50
0.9...

A detection run is a run directory like a classifier's (checkpoints, exact resume, metrics.csv, summary.json,
config.json, curves), and after training its report: ``report/detections.png`` (test images with predicted and
true boxes), ``report/pr_curves.png`` (precision–recall per class), ``report/misses.png`` (the images with the most
missed objects) and ``report/report.md``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data import DeviceTensorLoader, Preprocessing
from cnnlab.data.detection import DetectionDataset, DetectionSplit, load_detection_dataset
from cnnlab.detection.detectors import DEFAULT_BACKBONE, build_detector, check_method, resolve_options
from cnnlab.detection.task import DetectionTask, ProposalTargets, collect_detections, map_scores
from cnnlab.errors import ConfigError, NonFiniteLossError
from cnnlab.train.record import task_spec

# Girshick 2015 / Ren et al. 2015 train with SGD, momentum 0.9, weight decay 0.0005, 2 (Fast) or 1 (Faster) images
# per batch at lr 0.001 for a pretrained VGG16. Here the backbone starts from scratch on small canvases, so batches
# are larger and the rate higher. These are a first choice, not tuned: no search over them was run (docs/detection.md
# reports what they give).
DETECT_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.02,  # per step, at batch 8
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 8,  # images per step (× rois_per_image RoIs for the RoI heads)
    "schedule": "cosine",
    "warmup_epochs": 0.1,
    "epochs": 4,
    "augment": "none",
    "holdout": 0.1,  # the last tenth of the training canvases: validation (chooses best.pt)
    "data": "mnist-detection",
    "clip_grad_norm": 10.0,  # the first steps of a from-scratch RPN can spike
}
DETECT_FLAGS = (  # the TrainConfig fields `cnnlab detect train` offers
    "data",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "holdout",
    "seed",
    "device",
    "amp",
    "data_root",
    "out",
    "log_every",
    "checkpoint_every",
    "keep_last",
    "tensorboard",
    "clip_grad_norm",
)


@dataclass
class DetectTrainResult:
    """What :func:`train_detector` did: the run, the engine, one row per epoch, wall seconds, where it resumed."""

    run: Any
    trainer: Any
    history: list[dict]
    seconds: float
    resumed_at: tuple[int, int] | None
    already_complete: bool = False


def detection_preprocessing(data: DetectionDataset) -> Preprocessing:
    """Normalisation by the training images' own mean and std (per channel); images keep their size."""
    images = data.train.images[:2000].float().div(255)
    channels = images.shape[1]
    mean = tuple(float(m) for m in images.mean((0, 2, 3)))
    std = tuple(max(float(s), 1e-3) for s in images.std((0, 2, 3)))
    return Preprocessing(channels, tuple(data.train.images.shape[-2:]), 0, mean, std)


def proposal_cache() -> Path:
    """Where selective-search proposals are cached: ``$XDG_CACHE_HOME/cnnlab/proposals`` (default
    ``~/.cache/cnnlab/proposals``), never the data root (which may be read-only or shared)."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab" / "proposals"


def _proposal_targets(split: DetectionSplit, say: Callable[[str], None]) -> ProposalTargets:
    from cnnlab.detection.selective_search import propose_all

    started = time.perf_counter()
    proposals = propose_all(split.images, cache=proposal_cache())
    how = "read from the cache" if proposals.from_cache else f"{float(proposals.seconds.mean()) * 1000:.0f} ms an image"
    say(f"selective search: {len(split):,} images, {time.perf_counter() - started:.1f} s ({how})")
    return ProposalTargets.attach(split.targets, list(proposals))


def build_detection_run(config, spec: dict, run_dir: str | Path | None, overwrite: bool, say=lambda text: None):
    """(the run, its detection task) from a resolved config and a detector spec; the data, proposals and the
    detector (seeded) are made before the run directory is opened."""
    from cnnlab.train import TrainingRun, resolve_device
    from cnnlab.train.rundir import RunDir, default_run_dir

    device = resolve_device(config.device)
    data = load_detection_dataset(config.data, config.data_root, seed=config.seed, **spec.get("data_options", {}))
    data = data.with_holdout(config.holdout)
    spec = {
        **spec,
        "num_classes": data.num_classes,
        "in_chans": data.image_shape[0],
        "image_size": list(data.image_shape[1:]),
    }
    if spec["method"] == "faster-rcnn":
        spec["options"] = _anchor_options(spec["options"], data)
    torch.manual_seed(config.seed)  # the detector's initialisation
    detector = build_detector(spec)
    if spec["method"] == "overfeat":
        _check_windows(detector, data)
    pre = detection_preprocessing(data)
    splits = {"train": data.train, "val": data.val, "test": data.test}
    targets = {name: split.targets for name, split in splits.items() if split is not None}
    if detector.needs_proposals:
        targets = {name: _proposal_targets(splits[name], say) for name in targets}
    common = {"device": device}
    train = DeviceTensorLoader(
        data.train.images, targets["train"], pre, config.batch_size, shuffle=True, seed=config.seed, **common
    )
    test = DeviceTensorLoader(data.test.images, targets["test"], pre, 32, **common)
    val = DeviceTensorLoader(data.val.images, targets["val"], pre, 32, **common) if data.val is not None else None
    path = run_dir or config.out or default_run_dir(config.model, config.data)
    opened = RunDir(path, new=run_dir is None, overwrite=overwrite, lock=True)
    run = TrainingRun(config, device, detector.to(device), data, pre, train, test, opened, val)
    return run, DetectionTask(detector, detector.loss_names, validation=val is not None)


def _check_windows(detector: nn.Module, data: DetectionDataset) -> None:
    """OverFeat learns an object only at a scale where its larger side spans a quarter to all of a window: refuse
    settings under which most training objects fall outside every scale (they would train as nothing)."""
    boxes = data.train.targets.boxes[data.train.targets.valid]
    sides = (boxes[:, 2:] - boxes[:, :2]).amax(1)
    window = detector.window
    covered = torch.zeros(len(sides), dtype=torch.bool)
    for scale in detector.scales:
        covered |= (sides * scale >= window / 4) & (sides * scale <= window)
    if len(sides) and float(covered.float().mean()) < 0.9:
        low, high = float(sides.min()), float(sides.max())
        raise ConfigError(
            f"OverFeat's windows are {window} px (8 cells of the backbone's stride {detector.backbone.stride}) and "
            f"cover objects of {window / 4:g}–{window:g} px at each scale; at scales {list(detector.scales)} only "
            f"{float(covered.float().mean()):.0%} of this data's objects ({low:.0f}–{high:.0f} px) fall in one. Pass "
            "--option scales=[...] that bring them into range, or a backbone with a smaller stride."
        )


def _anchor_options(options: dict, data: DetectionDataset) -> dict:
    from cnnlab.detection.rcnn_family import anchors_for

    if options.get("anchor_sizes") and options.get("aspect_ratios"):
        return options
    boxes = data.train.targets.boxes[data.train.targets.valid]
    sizes, ratios = anchors_for(boxes)
    return {
        **options,
        "anchor_sizes": options.get("anchor_sizes") or sizes,
        "aspect_ratios": options.get("aspect_ratios") or ratios,
    }


def train_detector(
    given: dict | None = None,
    *,
    method: str = "faster-rcnn",
    backbone: str = DEFAULT_BACKBONE,
    stage: str | None = None,
    options: dict | None = None,
    data_options: dict | None = None,
    resume: str | None = None,
    overwrite: bool = False,
    reporter: Any = None,
    say: Callable[[str], None] = lambda text: None,
    command: list[str] | None = None,
) -> DetectTrainResult:
    """Train (or continue) a detector as ``cnnlab detect train`` does.

    Args:
        given: :class:`~cnnlab.train.TrainConfig` fields (of :data:`DETECT_FLAGS`); unset: :data:`DETECT_DEFAULTS`.
        method: ``rcnn``, ``fast-rcnn``, ``faster-rcnn`` or ``overfeat`` (:mod:`cnnlab.detection.detectors`).
        backbone: a zoo model (``cnnlab models``): its stages become the detector's trunk.
        stage: the backbone's last stage kept (default: its last).
        options: the method's own options (:data:`~cnnlab.detection.detectors.OPTIONS`).
        data_options: the dataset's options, e.g. ``{"train_size": 2000, "clutter": 8}`` for generated canvases.
        resume: a checkpoint, run directory or ``auto``; the run keeps its own detector and data.
        overwrite: ``given["out"]`` may hold an earlier run, which is replaced.
        reporter, say, command: progress display, a function for one-line messages, the command line recorded.

    Raises:
        ConfigError, UnknownNameError, DataError, CheckpointError: bad settings or data, before anything is written.
        NonFiniteLossError: a loss became NaN/inf (the last checkpoint is kept).
        TrainingInterrupted: SIGINT/SIGTERM (a resumable checkpoint is kept).
    """
    from cnnlab import models
    from cnnlab.train import Trainer
    from cnnlab.train.config import TrainConfig, resolve
    from cnnlab.train.distributed import rank_and_world_size
    from cnnlab.train.record import write_run_config
    from cnnlab.train.session import find_task_resume, restore

    if rank_and_world_size()[1] > 1:
        raise ConfigError(
            "`cnnlab detect train` trains in one process: its evaluation (mAP over whole splits) and R-CNN's SVMs are "
            "not sharded over torchrun's processes yet. Run it without torchrun (one GPU or the CPU)."
        )
    given = dict(given or {})
    check_method(method)
    models.get_model_info(backbone)  # an unknown name fails here, with suggestions
    resumed = find_task_resume(given, DETECT_FLAGS, "cnnlab detect train", resume, overwrite, "detector",
                               "detection", say)  # fmt: skip
    run_path = None
    if resumed is not None:
        spec, run_path, config = resumed.spec, resumed.run_path, resumed.config
    else:
        spec = {
            "method": method,
            "backbone": backbone,
            "stage": stage,
            "options": resolve_options(method, dict(options or {})),
            "data_options": dict(data_options or {}),
        }
        config = resolve(TrainConfig(**{**DETECT_DEFAULTS, "model": f"{method}-{backbone}", **given}))
    run, task = build_detection_run(config, spec, run_path, overwrite or resume == "auto", say)
    trainer = Trainer(run, task=task, reporter=reporter)
    resumed_at = None
    if resumed is not None:
        complete = restore(trainer, resumed.payload, say)
        resumed_at = (trainer.epoch, trainer.batch)
        if complete:
            return DetectTrainResult(run, trainer, trainer.history, 0.0, resumed_at, already_complete=True)
    write_run_config(run, trainer.static_record, command if command is not None else sys.argv)
    held = f" / {len(run.dataset.val):,} validation" if run.dataset.val is not None else ""
    say(
        f"Training {spec['method']} on {spec['backbone']} with {config.data} ({len(run.dataset.train):,} train{held} / "
        f"{len(run.dataset.test):,} test images) on {run.device} for {config.epochs} epochs; "
        f"run directory {run.run_dir.path}"
    )
    started = time.perf_counter()
    try:
        history = trainer.fit()
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{error} A detector that diverges usually needs a lower --lr.") from None
    finally:
        trainer.close()
    seconds = time.perf_counter() - started
    write_report(run.run_dir.path, say=say)
    return DetectTrainResult(run, trainer, history, seconds, resumed_at)


# ---- using a trained detector -----------------------------------------------------------------------------------
@dataclass
class DetectorRun:
    """A trained detector loaded from a run: the module (eval mode), its spec, preprocessing and class names."""

    path: Path
    run_dir: Path
    detector: nn.Module
    spec: dict
    preprocessing: Preprocessing
    classes: list[str]
    data: str
    config: dict

    def test_data(self, data_root: str | Path | None = None) -> DetectionDataset:
        """The run's dataset (same name, seed and options), for evaluation on its test split."""
        root = data_root if data_root is not None else self.config.get("data_root")
        return load_detection_dataset(
            self.data, root, seed=int(self.config.get("seed", 0)), **self.spec.get("data_options", {})
        )

    def loader(self, split: DetectionSplit, batch_size: int = 32, say=lambda text: None) -> DeviceTensorLoader:
        targets = split.targets
        if self.detector.needs_proposals:
            targets = _proposal_targets(split, say)
        device = next(self.detector.parameters()).device
        return DeviceTensorLoader(split.images, targets, self.preprocessing, batch_size, device=device)

    def detect(self, images: torch.Tensor, say=lambda text: None, timer=None) -> list[dict[str, torch.Tensor]]:
        """Detections for uint8 images (N, C, H, W) of the run's size: boxes, scores, labels (0 … K − 1)."""
        proposals = None
        if self.detector.needs_proposals:
            from cnnlab.detection.selective_search import propose_all

            with timer("proposals") if timer else nullcontext():
                proposals = list(propose_all(images, workers=0))
        device = next(self.detector.parameters()).device
        inputs = self.preprocessing.normalize(images.to(device))
        with torch.no_grad():
            found = self.detector.detect(inputs, proposals, timer=timer)
        return [{k: v.detach().cpu() for k, v in d.items()} for d in found]


def load_detector(run: str | Path, device: str = "cpu", svd_rank: int | None = None) -> DetectorRun:
    """The detector of a detection run (a run directory or checkpoint file), in eval mode on ``device``; with
    ``svd_rank``, a Fast/Faster R-CNN's two FC layers replaced by their truncated SVD (Fast R-CNN section 3.1: a
    trained network compressed for test time).

    Raises:
        CheckpointError: no such run, not a cnnlab checkpoint, or not a detection run.
    """
    from cnnlab.train import resolve_device
    from cnnlab.train.record import RunRecord

    record = RunRecord.load(run)
    payload = record.training_payload()
    spec = task_spec(payload, run, "detector", "detection", "cnnlab detect train")
    detector = build_detector(spec)
    detector.load_state_dict(record.weights())
    if svd_rank:
        if not hasattr(detector, "roi_heads"):
            raise ConfigError(
                f"--svd-rank compresses Fast and Faster R-CNN's FC layers; this is a {spec['method']} run."
            )
        from cnnlab.detection.rcnn_family import compress_fc

        compress_fc(detector.roi_heads, svd_rank)
    detector.to(resolve_device(device)).eval()
    return DetectorRun(
        record.path,
        record.run_dir,
        detector,
        spec,
        record.preprocessing,
        record.classes,
        str(record.data),
        record.config,
    )


@dataclass
class DetectEvalResult:
    """mAP of a detection run on a test split: COCO mAP@[.5:.95], mAP@0.5, AP@0.5 per class (VOC all-point)."""

    map: float
    map50: float
    per_class: dict[str, float]
    images: int
    seconds_per_image: float


def evaluate_detector(
    run: str | Path,
    data_root: str | Path | None = None,
    device: str = "cpu",
    say=lambda text: None,
    svd_rank: int | None = None,
) -> DetectEvalResult:
    """``cnnlab detect eval``: the run's detector on its dataset's test split (mAP by torchmetrics; per-class AP by
    :mod:`cnnlab.detection.ap`)."""
    from cnnlab.detection.ap import average_precision_per_class

    loaded = load_detector(run, device, svd_rank=svd_rank)
    split = loaded.test_data(data_root).test
    loader = loaded.loader(split, say=say)
    started = time.perf_counter()
    found, truth = collect_detections(loaded.detector, loader)
    seconds = (time.perf_counter() - started) / max(len(split), 1)
    scores = map_scores(found, truth)
    per_class = average_precision_per_class(found, truth, iou_threshold=0.5, num_classes=len(loaded.classes)).ap
    named = {loaded.classes[k]: float(v) for k, v in enumerate(per_class)}
    return DetectEvalResult(float(scores["map"]), float(scores["map_50"]), named, len(split), seconds)


def predict_images(
    run: str | Path,
    images: Sequence[str | Path],
    out: str | Path | None = None,
    threshold: float = 0.5,
    device: str = "cpu",
) -> list[tuple[Path, dict]]:
    """``cnnlab detect predict``: each image file through the detector; a PNG with the labelled boxes and scores
    above ``threshold`` beside each (``<name>-detections.png``, or in folder ``out``).

    Raises:
        ConfigError: ``threshold`` outside [0, 1]; DataError: an image that cannot be read;
        CheckpointError: no detection run there.
    """
    from cnnlab.detection.report import draw_detections, read_image

    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold must be a score in [0, 1], got {threshold!r}.")
    loaded = load_detector(run, device)
    size = tuple(loaded.spec["image_size"])
    written = []
    for name in images:
        image = read_image(name, loaded.preprocessing.in_chans, size)
        found = loaded.detect(image.unsqueeze(0))[0]
        keep = found["scores"] >= threshold
        found = {k: v[keep] for k, v in found.items()}
        target = (
            Path(out) / f"{Path(name).stem}-detections.png"
            if out
            else Path(name).with_name(f"{Path(name).stem}-detections.png")
        )
        draw_detections(image, found, loaded.classes, target)
        written.append((target, found))
    return written


def write_report(
    run: str | Path,
    count: int = 12,
    say: Callable[[str], None] = lambda text: None,
    data_root: str | Path | None = None,
) -> Path:
    """``RUN_DIR/report/``: ``detections.png`` (the first ``count`` test images, true boxes green, detections
    ≥ 0.5 red), ``pr_curves.png``, ``misses.png`` (the ``count`` test images with the most missed objects) and
    ``report.md`` (mAP, AP per class, the run's settings)."""
    from cnnlab.detection.ap import average_precision_per_class
    from cnnlab.detection.report import grid, misses, plot_pr_curves, render

    loaded = load_detector(run)
    split = loaded.test_data(data_root).test
    found, truth = collect_detections(loaded.detector, loaded.loader(split, say=say))
    folder = loaded.run_dir / "report"
    folder.mkdir(exist_ok=True)
    shown = [{k: v[d["scores"] >= 0.5] for k, v in d.items()} for d in found]
    classes = loaded.classes
    pictures = [render(split.images[i], shown[i], classes, truth[i]) for i in range(min(count, len(split)))]
    grid(pictures, 4, folder / "detections.png")
    missed = misses(found, truth)
    worst = missed.argsort(descending=True, stable=True)[:count].tolist()
    grid([render(split.images[i], shown[i], classes, truth[i]) for i in worst], 4, folder / "misses.png")
    result = average_precision_per_class(found, truth, iou_threshold=0.5, num_classes=len(classes))
    title = f"{loaded.spec['method']} on {loaded.spec['backbone']}: {loaded.data} test"
    curves = list(zip(result.recall, result.precision, strict=True))
    plot_pr_curves(curves, classes, [float(a) for a in result.ap], folder / "pr_curves.png", title)
    scores = map_scores(found, truth)
    lines = [
        f"# {title}",
        "",
        f"- test images: {len(split):,}; objects missed at score ≥ 0.5: {int(missed.sum()):,} of "
        f"{sum(len(t['boxes']) for t in truth):,}",
        f"- mAP@0.5 (torchmetrics, COCO 101-point): {float(scores['map_50']):.4f}",
        f"- mAP@[.5:.95] (COCO): {float(scores['map']):.4f}",
        f"- mAP@0.5 (VOC all-point, cnnlab.detection.ap): {float(result.ap.mean()):.4f}",
        "",
        "| class | AP@0.5 |",
        "|---|---|",
        *[f"| {name} | {float(a):.4f} |" for name, a in zip(classes, result.ap, strict=True)],
        "",
        "![detections](detections.png)",
        "",
        "![precision-recall](pr_curves.png)",
        "",
        "The test images with the most missed objects:",
        "",
        "![misses](misses.png)",
    ]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    say(f"Report: {folder / 'report.md'} (test mAP@0.5 {float(scores['map_50']):.3f})")
    return folder
