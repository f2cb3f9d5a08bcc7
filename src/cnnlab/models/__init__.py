"""Architectures, a registry, and the model contract. Models know no data and no training loop.

>>> from cnnlab import models
>>> models.list_models("lenet*")
['lenet5', 'lenet5-modern']
>>> net = models.create("lenet5", num_classes=10)
"""

from cnnlab.models import lenet  # noqa: F401  (registers its models)
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._probe import LayerTrace, check_input_shape, smallest_input_size, trace
from cnnlab.models._registry import ModelInfo, create, get_model_info, list_models, register_model

__all__ = [
    "ClassifierModel",
    "LayerTrace",
    "ModelInfo",
    "check_input_shape",
    "create",
    "get_model_info",
    "list_models",
    "register_model",
    "smallest_input_size",
    "trace",
]
