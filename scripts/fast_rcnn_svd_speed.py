"""Fast R-CNN at the papers' scale (untrained AlexNet to conv5, an 800×600 image, 2,000 RoIs, fc6 9,216 → 4,096 and
fc7 4,096 → 4,096) with and without the truncated SVD of its fc layers (Girshick 2015, section 3.1; the same rank t
for both), in alternating rounds after a warm-up pass each; prints ms per image by stage. The mAP side of the
trade-off needs trained weights: docs/detection.md measures it on the canvases' detectors.

    OMP_NUM_THREADS=1 python scripts/fast_rcnn_svd_speed.py
"""

import copy

import torch

from cnnlab.bench.detect import PAPER_SCALE, random_proposals
from cnnlab.detection.detectors import build_detector
from cnnlab.detection.rcnn_family import StageTimer, compress_fc

s = PAPER_SCALE
torch.manual_seed(0)
spec = {
    "method": "fast-rcnn",
    "backbone": s["backbone"],
    "num_classes": s["num_classes"],
    "in_chans": 3,
    "image_size": s["image_size"],
    "stage": s["stage"],
    "options": {"pool_size": s["pool_size"], "head_width": s["head_width"]},
}
base = build_detector(spec).eval()
image = torch.randn(1, 3, *s["image_size"], generator=torch.Generator().manual_seed(0))
proposals = [random_proposals(s["proposals"], s["image_size"], 0)]
sides = {"none": base}
for rank in (1024, 256):
    d = copy.deepcopy(base)
    compress_fc(d.roi_heads, rank)
    sides[f"t={rank}"] = d
timers = {k: StageTimer() for k in sides}
rounds = 3
with torch.inference_mode():
    for d in sides.values():
        d.detect(image, proposals)
    for r in range(rounds):
        for k in list(sides)[:: 1 if r % 2 == 0 else -1]:
            sides[k].detect(image, proposals, timer=timers[k])
for k, t in timers.items():
    ms = {st: 1000 * t.seconds.get(st, 0.0) / rounds for st in ("cnn", "heads", "nms")}
    print(k, {st: round(v, 1) for st, v in ms.items()}, "total", round(sum(ms.values()), 1))
