"""Off-the-shelf features (Razavian et al. 2014; DeCAF, Donahue et al. 2013): stream a dataset through a
trained network on the device and keep each image's pooled activation of one stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import ConfigError, DataError, UnknownNameError
from cnnlab.models import ClassifierModel

PRE_LOGITS = "pre-logits"


def feature_layers(model: ClassifierModel) -> list[str]:
    """Where features can be taken: every stage, then the penultimate vector (``pre-logits``)."""
    return [*model.stage_names, PRE_LOGITS]


@torch.no_grad()
def stage_features(model: ClassifierModel, images: torch.Tensor, layer: str) -> torch.Tensor:
    """(B, D) features of ``layer``: a stage's maps global-average-pooled, or the pre-logits vector."""
    if layer == PRE_LOGITS:
        return model.forward_head(model.forward_features(images), pre_logits=True).flatten(1)
    if layer not in model.stage_names:
        raise UnknownNameError("layer", layer, feature_layers(model))
    x = images
    for name, stage in model.features.named_children():
        x = stage(x)
        if name == layer:
            return F.adaptive_avg_pool2d(x, 1).flatten(1) if x.ndim == 4 else x.flatten(1)
    raise AssertionError("unreachable")


@torch.no_grad()
def extract_features(model: ClassifierModel, loader, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every sample of ``loader`` (in its order); one host copy per batch."""
    model.eval()
    feats, labels = [], []
    for images, y in loader.batches():
        feats.append(stage_features(model, images, layer).float().cpu())
        labels.append(y.cpu())
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def save_features(path: str | Path, train: tuple, test: tuple, meta: dict) -> Path:
    """An .npz with train_x, train_y, test_x, test_y and a JSON-able ``meta`` (source, layer, classes)."""
    import json

    path = Path(path)
    if path.suffix != ".npz":  # numpy would append .npz, and the file written would not be the one named
        raise ConfigError(f"The features file must end in .npz, got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, train_x=train[0], train_y=train[1], test_x=test[0], test_y=test[1], meta=np.array(json.dumps(meta))
    )
    return path


def load_features(path: str | Path) -> dict:
    """Read a features file written by :func:`save_features`, checking that it has what a probe needs."""
    import json

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder; give the .npz file written by `cnnlab features`.")
    if not path.is_file():
        raise DataError(f"Features file {str(path)!r} does not exist; write one with `cnnlab features`.")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head != b"PK\x03\x04":  # an .npz is a zip archive
        what = "empty (0 bytes)" if not head else "not a zip archive"
        raise DataError(f"{path} is not an .npz features file ({what}); write one with `cnnlab features`.")
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError) as error:
        raise DataError(
            f"{path} is a damaged .npz features file ({type(error).__name__}: {error}); write it again with "
            "`cnnlab features`."
        ) from None
    missing = {"train_x", "train_y", "test_x", "test_y"} - set(content)
    if missing:
        raise DataError(f"{path} lacks {sorted(missing)}: it was not written by `cnnlab features`.")
    for split in ("train", "test"):
        x, y = content[f"{split}_x"], content[f"{split}_y"]
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{path}: {split}_x must be (N, D) and {split}_y (N,), got {x.shape} and {y.shape}.")
    if content["train_x"].shape[1] != content["test_x"].shape[1]:
        raise DataError(f"{path}: train and test features have different widths; they come from different layers.")
    if len(np.unique(content["train_y"])) < 2:
        raise ConfigError(f"{path}: the training features hold one class only; a classifier needs at least 2.")
    content["meta"] = json.loads(str(content["meta"])) if "meta" in content else {}
    return content
