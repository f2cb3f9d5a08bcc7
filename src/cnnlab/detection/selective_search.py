"""Class-agnostic region proposals by selective search (Uijlings et al. 2013, "Selective search for object
recognition"), the proposals of R-CNN and Fast R-CNN, computed by OpenCV contrib's
``cv2.ximgproc.segmentation`` (``pip install opencv-contrib-python-headless``).

How, in steps (:func:`selective_search`, one image):

1. The uint8 (C, H, W) image becomes an (H·s, W·s, 3) BGR array: grey images are repeated to 3 channels, RGB is
   reversed to OpenCV's BGR, and the image is enlarged ``upscale`` = s times (bilinear) — Felzenszwalb's graph
   segmentation, selective search's starting regions, merges thin strokes into the background on small images.
2. OpenCV's selective search, "fast" (2 colour spaces × 2 similarity strategies, starting segmentations with
   k = ``base_k`` and ``base_k + inc_k``) or "quality" (5 colour spaces × 4 strategies, k = ``base_k``,
   ``base_k + inc_k``, ``base_k + 2·inc_k``, ``base_k + 3·inc_k``), both with Gaussian smoothing ``sigma``.
   It returns (x, y, w, h) rectangles in its ranking order: each hierarchy's regions ranked by
   level × a random number (the paper's pseudo-random ranking), drawn from the C library's ``rand()``; it is
   seeded here with ``seed`` (``srand``) just before, so the same image and settings give the same list.
3. Rectangles become XYXY boxes on pixel edges of the original image (divided by s), those narrower or lower than
   ``min_size`` px are dropped, duplicates are dropped (the first, best-ranked, copy is kept), and the first
   ``max_proposals`` are returned in OpenCV's order.

:func:`propose_all` runs it over a whole split, in worker processes (threads would interleave their calls to
the one global ``rand()`` and lose the determinism of step 2), with an on-disk cache keyed by the images' bytes
and the settings.

**Measured** (2026-11-29, this project's 2-core CPU VM shared with other jobs — load average 8–9 during the run,
so the seconds are inflated: one canvas at OpenCV's defaults took 0.05 s at load 0.7, 0.13 s here —,
opencv-contrib-python-headless 5.0.0.93, torch 2.14.1):
``PYTHONPATH=src python -m cnnlab.detection.selective_search $CNNLAB_DATA`` (:func:`measure_recall`: the first 100
``mnist-detection`` test canvases, seed 0, 128×128 grey, the same 348 objects without and with ``clutter=8``; 2
worker processes). Recall = the fraction of ground-truth boxes with a proposal of IoU ≥ 0.5 / 0.7; proposals and
seconds are means per image (after ``min_size=2`` and de-duplication; no setting reached the 2000 cap, so the
best-ranked-200 columns the script also prints equal these). k is ``base_k`` (``inc_k`` the same unless given).

======= ============================== ========= ========== ========== =========
clutter setting                        proposals recall@0.5 recall@0.7 s / image
======= ============================== ========= ========== ========== =========
0       fast, ×1 (OpenCV's defaults)   15        0.874      0.618      0.13
0       fast, ×1.5 (**the default**)   28        0.983      0.891      0.30
0       fast, ×2                       44        0.994      0.966      0.42
0       fast, ×3                       68        1.000      0.989      0.84
0       fast, k=50, inc 100, σ=0.5     12        0.598      0.572      0.07
0       fast, k=50, inc 100, σ=0.5, ×2 56        0.997      0.960      0.35
0       fast, k=300, ×2                21        0.977      0.905      0.63
0       quality, ×1                    21        0.917      0.690      0.96
0       quality, ×2                    82        0.997      0.983      5.0
8       fast, ×1 (OpenCV's defaults)   18        0.822      0.629      0.21
8       fast, ×1.5 (**the default**)   41        0.980      0.885      0.64
8       fast, ×2                       71        0.991      0.963      1.3
8       fast, ×3                       114       1.000      0.983      3.2
8       fast, k=50, inc 100, σ=0.5     12        0.601      0.575      0.21
8       fast, k=50, inc 100, σ=0.5, ×2 70        0.997      0.960      1.1
8       fast, k=300, ×2                44        0.960      0.897      1.2
8       quality, ×1                    26        0.882      0.730      0.80
8       quality, ×2                    117       0.997      0.986      4.0
======= ============================== ========= ========== ========== =========

(×s = ``upscale``.) On these small grey canvases the image size, not the segmentation's k or σ, decides recall:
at its own size Felzenszwalb's segmentation merges thin, faint strokes into the black background. The default,
fast at ×1.5, reaches recall ≥ 0.95 at IoU 0.5 (0.98, with and without clutter) in the least time of the settings
that do, with the fewest proposals on cluttered canvases (41; 28 without clutter, where fast k=300 ×2 needs
only 21 but takes twice as long and 44 with clutter). R-CNN used ~2000 per image on Pascal VOC. Take
``upscale=2`` when the IoU-0.7 recall matters (0.97 for 1.6× the proposals). Every setting gives far fewer
than ``max_proposals``: the cap matters only for larger images.

**Time per image, threads or processes.** With the defaults, on 64 test canvases at load average ~10 on the 2
cores (2026-11-29): 0.27 s per canvas in-process, with or without clutter (30 and 43 proposals, recall@0.5 0.974
on these 64), and 0.24–0.28 s per canvas of wall time with 2 forked workers — no gain while the cores are
saturated by other jobs; on a free machine 2 workers should approach 2× (not measured). Worker processes rather
than threads, for determinism: the ranking's ``rand()`` is one global generator per process, so threads would
interleave their draws. Whether OpenCV releases the GIL during ``process()`` could not be settled on the loaded
machine (a pure-Python loop slowed the same beside a selective-search thread as beside control threads that
hold and that release the GIL); 2 threads were slower than 1 process on 32 canvases (10.7 s vs 8.4 s).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1  # bump when the proposals a setting gives change (a new step, another ranking)
MODES = ("fast", "quality")


@dataclass(frozen=True)
class SelectiveSearchSettings:
    """Everything that decides the proposals of an image; the cache key holds all of it.

    Defaults: chosen on the measurement in the module docstring (recall ≥ 0.95 at IoU 0.5 on 128×128 digit
    canvases with the fewest proposals).
    """

    mode: str = "fast"  # "fast" or "quality" (Uijlings et al.'s two diversification settings)
    base_k: int = 150  # Felzenszwalb's k of the first starting segmentation (larger: larger regions)
    inc_k: int = 150  # added to k for each further starting segmentation
    sigma: float = 0.8  # px (of the enlarged image): Gaussian smoothing before the graph segmentation
    upscale: float = 1.5  # enlarge the image this many times before segmenting (boxes come back in its pixels)
    max_proposals: int = 2000  # keep the best-ranked this many (R-CNN: ~2000 per image)
    min_size: float = 2.0  # px of the original image: drop boxes narrower or lower than this
    seed: int = 0  # of OpenCV's pseudo-random ranking

    def __post_init__(self) -> None:
        checks = (
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}"),
            (self.base_k > 0 and self.inc_k >= 0, "need base_k > 0 and inc_k ≥ 0"),
            (self.sigma >= 0, "sigma (px) must be ≥ 0"),
            (0 < self.upscale <= 8, "upscale must be in (0, 8]"),
            (self.max_proposals >= 1, "max_proposals must be ≥ 1"),
            (self.min_size >= 0, "min_size (px) must be ≥ 0"),
            (0 <= self.seed < 2**31, "seed must be in [0, 2³¹)"),
        )
        for ok, why in checks:
            if not ok:
                raise ConfigError(f"Selective search: {why} (got {self}).")

    @classmethod
    def from_options(cls, **options) -> SelectiveSearchSettings:
        """Settings from keyword options, refusing unknown names (so a typo is not silently ignored)."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"Selective search does not take {', '.join(unknown)}; it takes: {', '.join(names)}.")
        return cls(**options)


def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise ConfigError(
            "Selective search needs OpenCV with the contrib modules: pip install opencv-contrib-python-headless"
        ) from error
    if not hasattr(cv2, "ximgproc"):
        raise ConfigError(
            f"The installed OpenCV ({cv2.__version__}) lacks the contrib module ximgproc that selective search "
            "needs: pip uninstall opencv-python opencv-python-headless; pip install opencv-contrib-python-headless"
        )
    return cv2


@functools.cache
def _c_library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") or ctypes.util.find_library("msvcrt")  # runs ldconfig: once
    try:
        return ctypes.CDLL(name)
    except (OSError, TypeError):  # TypeError: CDLL(None) on Windows
        return None


def _seed_c_rand(seed: int) -> None:
    """Seed the C library's ``rand()``, which OpenCV's selective search draws its ranking from (the C runtime's
    global generator: ``cv2.setRNGSeed`` does not reach it). Without a loadable C library the ranking is not
    reproducible, but the proposals (as a set) are."""
    libc = _c_library()
    if libc is not None:
        libc.srand(ctypes.c_uint(seed))


def _check_image(image: torch.Tensor, what: str = "image") -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
        dtype = image.dtype if isinstance(image, torch.Tensor) else type(image).__name__
        raise DataError(f"Selective search takes a uint8 {what} (C, H, W) with values 0…255, got {dtype}.")
    if image.ndim != 3 or image.shape[0] not in (1, 3) or min(image.shape[1:]) < 2:
        raise DataError(
            f"Selective search takes one (C, H, W) {what} with C = 1 (grey) or 3 (RGB) and H, W ≥ 2, got shape "
            f"{tuple(image.shape)}."
        )


def _proposals_array(image: np.ndarray, settings: SelectiveSearchSettings) -> np.ndarray:
    """float32 (P, 4) XYXY boxes of one (H, W, 3) RGB uint8 array (steps 1–3 of the module docstring)."""
    cv2 = _cv2()
    height, width = image.shape[:2]
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    if settings.upscale != 1:
        size = (round(width * settings.upscale), round(height * settings.upscale))  # cv2 wants (W, H)
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    switch = search.switchToSelectiveSearchFast if settings.mode == "fast" else search.switchToSelectiveSearchQuality
    switch(settings.base_k, settings.inc_k, settings.sigma)
    _seed_c_rand(settings.seed)
    rects = search.process()  # (R, 4) int32 x, y, w, h, in ranking order
    if len(rects) == 0:
        return np.zeros((0, 4), np.float32)
    rects = np.asarray(rects, np.float64).reshape(-1, 4)
    scale_x, scale_y = bgr.shape[1] / width, bgr.shape[0] / height
    boxes = np.stack(
        [
            rects[:, 0] / scale_x,
            rects[:, 1] / scale_y,
            (rects[:, 0] + rects[:, 2]) / scale_x,
            (rects[:, 1] + rects[:, 3]) / scale_y,
        ],
        axis=1,
    )  # (R, 4) XYXY, original pixel edges
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= settings.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= settings.min_size)
    boxes = boxes[keep]
    _, first = np.unique(boxes, axis=0, return_index=True)  # the best-ranked copy of each distinct box
    boxes = boxes[np.sort(first)]
    return np.ascontiguousarray(boxes[: settings.max_proposals])


def _to_rgb_array(image: torch.Tensor) -> np.ndarray:
    array = image.detach().cpu().permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def selective_search(
    image: torch.Tensor,
    mode: str = SelectiveSearchSettings.mode,
    max_proposals: int = SelectiveSearchSettings.max_proposals,
    min_size: float = SelectiveSearchSettings.min_size,
    *,
    base_k: int = SelectiveSearchSettings.base_k,
    inc_k: int = SelectiveSearchSettings.inc_k,
    sigma: float = SelectiveSearchSettings.sigma,
    upscale: float = SelectiveSearchSettings.upscale,
    seed: int = SelectiveSearchSettings.seed,
) -> torch.Tensor:
    """Selective-search proposals of one image.

    Args:
        image: uint8 (C, H, W), C = 1 (grey, repeated to 3 channels) or 3 (RGB).
        mode: ``"fast"`` or ``"quality"``.
        max_proposals: keep at most this many, best-ranked first.
        min_size: px; boxes narrower or lower than this are dropped.
        base_k, inc_k, sigma, upscale, seed: see :class:`SelectiveSearchSettings`.

    Returns:
        float32 (P, 4) XYXY boxes in the image's pixels (edges), distinct, in OpenCV's ranking order.

    Raises:
        DataError: not a uint8 (C, H, W) image with 1 or 3 channels.
        ConfigError: a bad setting, or OpenCV contrib not installed.
    """
    settings = SelectiveSearchSettings(mode, base_k, inc_k, sigma, upscale, max_proposals, min_size, seed)
    _check_image(image)
    _cv2()
    return torch.from_numpy(_proposals_array(_to_rgb_array(image), settings))


# ---- a whole split: worker processes and the cache -----------------------------------------------------------------
def _worker_context():
    """``spawn``, everywhere. Forked workers (which start in milliseconds and need no ``if __name__ == "__main__"``
    guard) hung in the full test suite: a fork copies whatever locks the parent's other threads (torch's and
    OpenCV's pools, a server's) hold at that moment. Spawned workers start clean, at the cost of a second or two
    each and of that guard in a script that calls :func:`propose_all` with workers (cnnlab's commands have it)."""
    return get_context("spawn")


def _worker_init() -> None:
    _cv2().setNumThreads(1)  # one process per core: OpenCV's own thread pool would oversubscribe


def _propose_chunk(images: np.ndarray, settings_dict: dict) -> list[tuple[np.ndarray, float]]:
    """Proposals and seconds of each (H, W, 3) image of a chunk (runs in a worker process)."""
    settings = SelectiveSearchSettings(**settings_dict)
    out = []
    for image in images:
        start = time.perf_counter()
        boxes = _proposals_array(image, settings)
        out.append((boxes, time.perf_counter() - start))
    return out


@dataclass
class Proposals:
    """The proposals of N images; indexes and iterates like the list of per-image boxes.

    Attributes:
        boxes: one float32 (P_i, 4) XYXY tensor per image.
        seconds: float64 (N,), the time selective search took on each image (when it was computed; a cache hit
            returns the times measured then).
        settings: the settings they were computed with.
        from_cache: True when read from the cache.
    """

    boxes: list[torch.Tensor]
    seconds: torch.Tensor
    settings: SelectiveSearchSettings
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index):
        return self.boxes[index]

    def __iter__(self):
        return iter(self.boxes)


def cache_key(images: torch.Tensor, settings: SelectiveSearchSettings) -> str:
    """sha256 (hex, 32 characters) of the images' shape and bytes and the settings: the cache file's name."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"v": CACHE_FORMAT_VERSION, **asdict(settings)}, sort_keys=True).encode())
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _read_cache(path: Path, count: int, settings: SelectiveSearchSettings) -> Proposals | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        counts, boxes, seconds = payload["counts"], payload["boxes"], payload["seconds"]
        if payload.get("version") != CACHE_FORMAT_VERSION or len(counts) != count or int(counts.sum()) != len(boxes):
            raise ValueError("stale or inconsistent")
    except Exception as error:  # an unreadable or truncated file is recomputed and rewritten, not an error
        log.warning("Ignoring the proposal cache %s (%s); recomputing.", path, error)
        return None
    return Proposals(list(boxes.split(counts.tolist())), seconds, settings, from_cache=True)


def _write_cache(path: Path, proposals: Proposals) -> None:
    """Write atomically (a temporary file in the same folder, then a rename): a crash leaves no torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = torch.tensor([len(b) for b in proposals.boxes], dtype=torch.int64)
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "settings": asdict(proposals.settings),
        "counts": counts,  # (N,)
        "boxes": torch.cat(proposals.boxes) if proposals.boxes else torch.zeros(0, 4),  # (ΣP, 4)
        "seconds": proposals.seconds,  # (N,)
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_workers() -> int:
    """One worker process per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def propose_all(
    images: torch.Tensor,
    cache: str | Path | None = None,
    workers: int | None = None,
    chunk: int = 16,
    **settings,
) -> Proposals:
    """Selective-search proposals of every image, in worker processes, cached on disk.

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3.
        cache: a folder; the proposals are stored there in ``ss-<key>.pt`` (:func:`cache_key`: the images'
            bytes and the settings) and read back on the next call with the same images and settings. None: no
            cache.
        workers: worker processes (default: one per core); 0 or 1 computes in this process. They are spawned
            (see :func:`_worker_context`) and used only when there are at least ``2 × chunk`` images.
        chunk: images sent to a worker at a time.
        **settings: fields of :class:`SelectiveSearchSettings` (``mode``, ``max_proposals``, ``upscale``...).

    Returns:
        :class:`Proposals`: per-image float32 (P_i, 4) XYXY boxes and the seconds each image took.

    Raises:
        DataError: not a uint8 (N, C, H, W) tensor with 1 or 3 channels.
        ConfigError: an unknown or bad setting, a bad ``workers``, or OpenCV contrib not installed.
    """
    config = SelectiveSearchSettings.from_options(**settings)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"propose_all takes a uint8 (N, C, H, W) tensor of images, got {shape}.")
    if len(images):
        _check_image(images[0], "images'")
    workers = default_workers() if workers is None else workers
    if workers < 0 or chunk < 1:
        raise ConfigError(f"propose_all needs workers ≥ 0 and chunk ≥ 1, got workers={workers}, chunk={chunk}.")
    _cv2()
    path = Path(cache).expanduser() / f"ss-{cache_key(images, config)}.pt" if cache is not None else None
    if path is not None and path.is_file():
        cached = _read_cache(path, len(images), config)
        if cached is not None:
            return cached

    arrays = images.detach().cpu().permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    if arrays.shape[3] == 1:
        arrays = np.repeat(arrays, 3, axis=3)  # grey -> (N, H, W, 3)
    pieces = [arrays[i : i + chunk] for i in range(0, len(arrays), chunk)]
    if workers <= 1 or len(arrays) < 2 * chunk:
        results = [r for piece in pieces for r in _propose_chunk(piece, asdict(config))]
    else:
        with ProcessPoolExecutor(workers, mp_context=_worker_context(), initializer=_worker_init) as pool:
            results = [r for out in pool.map(_propose_chunk, pieces, [asdict(config)] * len(pieces)) for r in out]
    proposals = Proposals(
        [torch.from_numpy(boxes) for boxes, _ in results],
        torch.tensor([seconds for _, seconds in results], dtype=torch.float64),
        config,
    )
    if len(proposals):
        log.info(
            "Selective search: %d images, %.1f proposals and %.3f s per image (mean).",
            len(proposals),
            sum(len(b) for b in proposals.boxes) / len(proposals),
            float(proposals.seconds.mean()),
        )
    if path is not None:
        _write_cache(path, proposals)
    return proposals


def recall_at(proposals: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor], iou: float) -> float:
    """Fraction of ground-truth boxes (over all images) with a proposal of IoU ≥ ``iou``: how proposals are
    judged (Uijlings et al. 2013 report it at 0.5). Images without boxes count nothing."""
    from torchvision.ops import box_iou

    found = total = 0
    for boxes, truth in zip(proposals, gt_boxes, strict=True):
        total += len(truth)
        if len(truth) and len(boxes):
            found += int((box_iou(truth, boxes).amax(1) >= iou).sum())
    return found / total if total else float("nan")


# ---- measuring settings --------------------------------------------------------------------------------------------
MEASURED_SETTINGS: tuple[dict, ...] = (
    {"mode": "fast"},
    {"mode": "fast", "upscale": 1.5},
    {"mode": "fast", "upscale": 2.0},
    {"mode": "fast", "upscale": 3.0},
    {"mode": "fast", "base_k": 50, "inc_k": 100, "sigma": 0.5},
    {"mode": "fast", "base_k": 50, "inc_k": 100, "sigma": 0.5, "upscale": 2.0},
    {"mode": "fast", "base_k": 300, "inc_k": 300, "upscale": 2.0},
    {"mode": "quality"},
    {"mode": "quality", "upscale": 2.0},
)


def measure_recall(
    data_root: str | Path | None = None,
    count: int = 100,
    settings: Sequence[dict] = MEASURED_SETTINGS,
    clutters: Sequence[int] = (0, 8),
    workers: int | None = None,
) -> list[dict]:
    """Recall of selective search on the first ``count`` ``mnist-detection`` test canvases (seed 0), per setting
    and clutter: one row each with the mean proposals per image, recall at IoU 0.5 and 0.7 (all proposals, and
    the best-ranked 200), and the mean seconds per image."""
    from cnnlab.data.detection import load_detection_dataset

    rows = []
    for clutter in clutters:
        test = load_detection_dataset("mnist-detection", data_root, train_size=1, test_size=count, clutter=clutter).test
        truth = [boxes for boxes, _ in test.targets.to_lists()]
        for options in settings:
            found = propose_all(test.images, workers=workers, **options)
            top = [b[:200] for b in found]
            rows.append(
                {
                    "clutter": clutter,
                    "settings": options,
                    "objects": sum(len(t) for t in truth),
                    "proposals": sum(len(b) for b in found) / len(found),
                    "recall_50": recall_at(found, truth, 0.5),
                    "recall_70": recall_at(found, truth, 0.7),
                    "recall_50_top200": recall_at(top, truth, 0.5),
                    "recall_70_top200": recall_at(top, truth, 0.7),
                    "seconds": float(found.seconds.mean()),
                }
            )
    return rows


if __name__ == "__main__":  # python -m cnnlab.detection.selective_search [DATA_ROOT]: the docstring's table
    import sys

    for row in measure_recall(sys.argv[1] if len(sys.argv) > 1 else None):
        setting = ", ".join(f"{k}={v}" for k, v in row["settings"].items())
        print(
            f"| {row['clutter']} | {setting} | {row['proposals']:.0f} | {row['recall_50']:.3f} | "
            f"{row['recall_70']:.3f} | {row['recall_50_top200']:.3f} | {row['recall_70_top200']:.3f} | "
            f"{row['seconds']:.3f} |",
            flush=True,
        )
