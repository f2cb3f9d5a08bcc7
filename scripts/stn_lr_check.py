"""docs/stn.md's choice of the localisation network's learning rate, made on a validation split before the study:
ST-CNN on the first 15,000 RTS training images (10% held out for validation), 3 epochs, the study's recipe, with the
transformer's parameters at ×1, ×0.1 and ×0.01 the classifier's rate; and the CNN beside them. The test images
(the first 5,000 of RTS's test split) are only reported.

    python scripts/stn_lr_check.py            # about 2 minutes on 2 CPU cores; data root: $CNNLAB_DATA
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cnnlab
from cnnlab.data import load_dataset
from cnnlab.models.stn import DistortedMNISTNet

RECIPE = {"epochs": 3, "batch_size": 128, "lr": 0.02, "optimizer": "sgd", "weight_decay": 0.0, "augment": "none"}


def main() -> None:
    data = load_dataset("mnist-rts")
    train = (data.train.images[:15_000], data.train.labels[:15_000])
    test = (data.test.images[:5_000], data.test.labels[:5_000])
    default = dict(DistortedMNISTNet.lr_multipliers)
    with tempfile.TemporaryDirectory() as tmp:
        for model, factor in (("st-cnn", 1.0), ("st-cnn", 0.1), ("st-cnn", 0.01), ("dmnist-cnn", None)):
            if factor is not None:
                DistortedMNISTNet.lr_multipliers = {"features.transformer.": factor}
            out = Path(tmp) / f"{model}-{factor}"
            cnnlab.train(model, (train, test), out=str(out), progress=False, holdout=0.1, **RECIPE)
            best = json.loads((out / "summary.json").read_text())["best"]
            label = f"{model} (transformer ×{factor})" if factor is not None else model
            print(f"{label}: validation error {best['val_error']:.2%}, test error {best['test_error']:.2%}")
    DistortedMNISTNet.lr_multipliers = default


if __name__ == "__main__":
    main()
