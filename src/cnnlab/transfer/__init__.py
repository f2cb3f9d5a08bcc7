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
from cnnlab.transfer.recipe import FinetuneConfig, FinetuneResult, features_of_run, finetune, load_run_weights

__all__ = [
    "PRE_LOGITS",
    "FinetuneConfig",
    "FinetuneResult",
    "adapt_input_channels",
    "extract_features",
    "feature_layers",
    "features_of_run",
    "finetune",
    "freeze",
    "frozen_stages",
    "head_and_body_parameters",
    "linear_probe",
    "load_features",
    "load_run_weights",
    "save_features",
    "stage_features",
    "unfreeze",
]
