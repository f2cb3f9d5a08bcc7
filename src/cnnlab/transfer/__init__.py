"""Transfer learning: fine-tuning with frozen stages, off-the-shelf features, linear probes."""

from cnnlab.transfer.features import (
    PRE_LOGITS,
    extract_features,
    feature_layers,
    load_features,
    save_features,
    stage_features,
)
from cnnlab.transfer.finetune import adapt_input_channels, freeze, frozen_stages, head_and_body_parameters, unfreeze
from cnnlab.transfer.probe import linear_probe

__all__ = [
    "PRE_LOGITS",
    "adapt_input_channels",
    "extract_features",
    "feature_layers",
    "freeze",
    "frozen_stages",
    "head_and_body_parameters",
    "linear_probe",
    "load_features",
    "save_features",
    "stage_features",
    "unfreeze",
]
