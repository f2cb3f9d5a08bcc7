"""Fast R-CNN at the papers' scale (untrained AlexNet to conv5, an 800×600 image, 2,000 RoIs, fc6 9,216 → 4,096 and
fc7 4,096 → 4,096) with and without the truncated SVD of its fc layers (Girshick 2015, section 3.1; the same rank t
for both), in alternating rounds after a warm-up pass each; prints ms per image by stage. The mAP side of the
trade-off needs trained weights: docs/detection.md measures it on the canvases' detectors.

    OMP_NUM_THREADS=1 python scripts/fast_rcnn_svd_speed.py
"""

import copy

import torch

from cnnlab.bench.detect import paper_scale_detector, time_stages
from cnnlab.detection.rcnn_family import compress_fc

torch.manual_seed(0)
full = paper_scale_detector("fast-rcnn")
sides = {"none": full}
for rank in (1024, 256):
    compressed = copy.deepcopy(full)
    compress_fc(compressed.roi_heads, rank)
    sides[f"t={rank}"] = compressed
for name, ms in time_stages(sides, rounds=3).items():
    shown = {stage: round(ms[stage], 1) for stage in ("cnn", "heads", "nms")}
    print(name, shown, "total", round(sum(ms.values()), 1))
