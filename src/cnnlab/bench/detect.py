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
