"""``cnnlab bench detect``: detectors side by side on the same test images — mAP@0.5, COCO mAP, training time, and
per-image inference time split into proposals / CNN / heads / NMS, in alternating rounds (the machine is noisy).

The papers' story (R-CNN 47 s an image → Fast R-CNN 0.32 s → Faster R-CNN 0.2 s, VGG16 on a GPU) as measured ratios
here: R-CNN runs the CNN once per proposal, Fast R-CNN once per image, and Faster R-CNN also replaces selective
search (on the CPU, seconds per photo) by a small network on the same features.
"""

from __future__ import annotations

from pathlib import Path

import torch

STAGES = ("proposals", "cnn", "heads", "nms")


def _train_quick(method: str, root: str | None, out: Path) -> Path:
    from cnnlab.detection import train_detector

    given = {"epochs": 1, "batch_size": 4, "out": str(out / method), "data_root": root, "holdout": 0.25}
    result = train_detector(given, method=method, data_options={"train_size": 16, "test_size": 8}, overwrite=True)
    return result.run.run_dir.path


def time_inference(loaded, images: torch.Tensor, rounds: int) -> dict[str, float]:
    """Seconds per image in each stage, over ``rounds`` passes one image at a time (as the papers time it)."""
    from cnnlab.detection.rcnn_family import StageTimer

    timer = StageTimer()
    for _ in range(rounds):
        for image in images:
            loaded.detect(image.unsqueeze(0), timer=timer)
    n = rounds * len(images)
    return {stage: timer.seconds.get(stage, 0.0) / n for stage in STAGES}


def bench_detectors(
    runs: list[str], quick: bool = False, data_root: str | None = None, images: int = 20, rounds: int = 3
) -> list[str]:
    """The report lines of ``cnnlab bench detect RUN...`` (with ``quick`` and no runs: tiny detectors trained here,
    seconds, to check that it runs)."""
    import tempfile

    from cnnlab.detection import evaluate_detector, load_detector
    from cnnlab.detection.detectors import METHODS
    from cnnlab.errors import ConfigError

    if not runs and not quick:
        raise ConfigError(
            "`cnnlab bench detect` compares trained detectors: give their run directories (`cnnlab detect train "
            "--method M ...` for each of rcnn, fast-rcnn, faster-rcnn, overfeat), or --quick to train tiny ones."
        )
    scratch = tempfile.TemporaryDirectory(prefix="cnnlab-bench-detect-") if not runs else None
    if scratch is not None:
        runs = [str(_train_quick(m, data_root, Path(scratch.name))) for m in METHODS]
        images, rounds = 2, 1
    loaded = [load_detector(r) for r in runs]
    _check_comparable(runs, loaded)
    split = loaded[0].test_data(data_root).test
    sample = split.images[:images]
    timings = {i: {s: 0.0 for s in STAGES} for i in range(len(loaded))}
    for _ in range(rounds):  # alternate: every detector once per round
        for i, detector in enumerate(loaded):
            for stage, seconds in time_inference(detector, sample, 1).items():
                timings[i][stage] += seconds / rounds
    lines = [
        f"detectors on {loaded[0].data} test images ({len(split):,} for mAP, {len(sample)} timed one at a time,"
        f" {rounds} alternating rounds), {torch.get_num_threads()} threads",
        f"{'method':12} {'backbone':14} {'mAP@0.5':>8} {'COCO mAP':>9} {'train s':>8} "
        + " ".join(f"{s + ' ms':>13}" for s in STAGES)
        + f" {'total ms':>9}",
    ]
    totals = {}
    for i, detector in enumerate(loaded):
        scores = evaluate_detector(runs[i], data_root)
        trained = sum(row.get("seconds", 0.0) for row in _history(detector))
        total = sum(timings[i].values())
        totals[detector.spec["method"]] = (total, timings[i]["cnn"])
        lines.append(
            f"{detector.spec['method']:12} {detector.spec['backbone']:14} {scores.map50:8.3f} "
            f"{scores.map:9.3f} {trained:8.0f} "
            + " ".join(f"{timings[i][s] * 1000:13.2f}" for s in STAGES)
            + f" {total * 1000:9.2f}"
        )
    if "rcnn" in totals and "fast-rcnn" in totals:
        ratio = totals["rcnn"][1] / max(totals["fast-rcnn"][1], 1e-9)
        lines.append(f"CNN stage, R-CNN / Fast R-CNN: {ratio:.1f}× (the paper's goal here: ≥ 50×)")
    if "fast-rcnn" in totals and "faster-rcnn" in totals:
        ratio = totals["fast-rcnn"][0] / max(totals["faster-rcnn"][0], 1e-9)
        lines.append(f"end to end, Fast R-CNN with selective search / Faster R-CNN: {ratio:.1f}×")
    if scratch is not None:
        scratch.cleanup()
        lines.append("(--quick: detectors trained for seconds; the figures only show that it runs)")
    return lines


# The papers' setting for the CNN-stage comparison: R-CNN warps ~2,000 selective-search proposals of a photo to
# 227×227 for AlexNet (Girshick et al. 2014, section 2.1); Fast R-CNN runs the same network's convolutions once on
# the photo rescaled to a 600 px shorter side and RoI-pools conv5 to 6×6 for fc6 and fc7, 4,096 wide (Girshick 2015,
# sections 2.1 and 4.1). 600×800: a 4:3 photo; 20 object classes (PASCAL VOC).
PAPER_SCALE = {"backbone": "alexnet", "proposals": 2000, "image_size": (600, 800), "crop": 227, "num_classes": 20,
               "stage": "relu5", "pool_size": 6, "head_width": 4096}  # fmt: skip


def random_proposals(count: int, image_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``count`` boxes (XYXY, float) inside an image of ``image_size`` (H, W), sides 16 px to the whole image:
    stand-ins for selective search's, whose boxes (not their pixels) set the CNN stage's cost."""
    h, w = image_size
    g = torch.Generator().manual_seed(seed)
    widths = 16 + torch.rand(count, generator=g) * (w - 16)
    heights = 16 + torch.rand(count, generator=g) * (h - 16)
    sides = torch.stack([widths, heights], 1)
    corner = torch.rand(count, 2, generator=g) * (torch.tensor([w, h]) - sides)
    return torch.cat([corner, corner + sides], 1)


def paper_scale_detector(method: str, setting: dict | None = None) -> torch.nn.Module:
    """An untrained R-CNN (``rcnn``) or Fast R-CNN (``fast-rcnn``) of ``setting`` (default :data:`PAPER_SCALE`),
    in eval mode: the cost of a forward pass does not depend on the weights."""
    from cnnlab.detection.detectors import build_detector

    s = setting or PAPER_SCALE
    spec = {"backbone": s["backbone"], "num_classes": s["num_classes"], "in_chans": 3, "image_size": s["image_size"],
            "method": method}  # fmt: skip
    if method == "rcnn":
        spec["options"] = {"crop": s["crop"], "scorer": "softmax"}
    else:
        spec.update(stage=s["stage"], options={"pool_size": s["pool_size"], "head_width": s["head_width"]})
    return build_detector(spec).eval()


def time_stages(detectors: dict, setting: dict | None = None, rounds: int = 2, seed: int = 0) -> dict:
    """Milliseconds per image in each stage for each of ``detectors`` (name -> detector) on one random image and
    the same random proposals of ``setting``: a warm-up pass each (allocations, kernel choice), then ``rounds``
    alternating rounds, who goes first alternating too."""
    from cnnlab.detection.rcnn_family import StageTimer

    s = setting or PAPER_SCALE
    image = torch.randn(1, 3, *s["image_size"], generator=torch.Generator().manual_seed(seed))
    proposals = [random_proposals(s["proposals"], s["image_size"], seed)]
    timers = {name: StageTimer() for name in detectors}
    with torch.inference_mode():
        for detector in detectors.values():
            detector.detect(image, proposals)
        for r in range(rounds):
            for name in list(detectors)[:: 1 if r % 2 == 0 else -1]:
                detectors[name].detect(image, proposals, timer=timers[name])
    return {name: {stage: 1000 * t.seconds.get(stage, 0.0) / rounds for stage in STAGES} for name, t in timers.items()}


def bench_paper_scale(quick: bool = False, rounds: int = 2, seed: int = 0) -> dict:
    """R-CNN's and Fast R-CNN's inference stages on one photo-sized image at the papers' scale
    (:data:`PAPER_SCALE`), untrained, the same proposals for both, in alternating rounds. ``quick``: 16 proposals
    on a 160×200 image, one round.

    Returns milliseconds per image per stage for each method, and the CNN stage's ratio (R-CNN / Fast R-CNN).
    Selective search itself is not timed (the proposals are given): the detect runs' bench times it."""
    setting = dict(PAPER_SCALE)
    if quick:
        setting.update(proposals=16, image_size=(160, 200))
        rounds = 1
    torch.manual_seed(seed)
    detectors = {method: paper_scale_detector(method, setting) for method in ("rcnn", "fast-rcnn")}
    ms = time_stages(detectors, setting, rounds, seed)
    return {**setting, "rounds": rounds, "threads": torch.get_num_threads(), "ms": ms,
            "cnn_ratio": ms["rcnn"]["cnn"] / max(ms["fast-rcnn"]["cnn"], 1e-9)}  # fmt: skip


def paper_scale_lines(quick: bool = False) -> list[str]:
    """The report of ``cnnlab bench detect --paper-scale``."""
    r = bench_paper_scale(quick)
    h, w = r["image_size"]
    lines = [
        f"R-CNN vs Fast R-CNN at the papers' scale: {r['backbone']} (untrained), one {w}×{h} image, {r['proposals']:,} "
        f"proposals (R-CNN: each warped to {r['crop']}×{r['crop']}; Fast R-CNN: conv once to {r['stage']}, RoI pool "
        f"{r['pool_size']}×{r['pool_size']}, fc {r['head_width']}), {r['rounds']} alternating rounds, "
        f"{r['threads']} threads; ms per image",
        f"{'method':12} " + " ".join(f"{s:>10}" for s in STAGES if s != "proposals") + f" {'total':>10}",
    ]
    shown = [s for s in STAGES if s != "proposals"]
    for name, stages in r["ms"].items():
        lines.append(f"{name:12} " + " ".join(f"{stages[s]:10.1f}" for s in shown) + f" {sum(stages.values()):10.1f}")
    lines.append(f"CNN stage, R-CNN / Fast R-CNN: {r['cnn_ratio']:.0f}× (the issue's goal: ≥ 50×)")
    if quick:
        lines.append("(--quick: 16 proposals on a small image; the figures only show that it runs)")
    return lines


def _check_comparable(runs: list[str], loaded: list) -> None:
    """Side by side means the same data (name, options, seed: the same test canvases) and image size."""
    from cnnlab.errors import ConfigError

    def key(run) -> tuple:
        return (run.data, sorted(run.spec.get("data_options", {}).items()), run.config.get("seed"),
                tuple(run.spec["image_size"]))  # fmt: skip

    first = key(loaded[0])
    for path, run in zip(runs[1:], loaded[1:], strict=True):
        if key(run) != first:
            raise ConfigError(
                f"{path} was trained on other data than {runs[0]} ({key(run)} vs {first}): a side-by-side needs the "
                "same dataset, data options and seed, so every detector sees the same test images."
            )


def _history(loaded) -> list[dict]:
    from cnnlab.train.record import RunRecord

    return RunRecord.load(loaded.path).history
