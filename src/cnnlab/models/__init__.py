"""Architectures, a registry, and the model contract. Models know no data and no training loop.

>>> from cnnlab import models
>>> models.list_models("lenet*")
['lenet5', 'lenet5-modern']
>>> net = models.create("lenet5", num_classes=10)

Every family lives in its own module and registers its models on import: LeNet-5 (1998), AlexNet (2012),
ZFNet, Network In Network, maxout networks, the DropConnect paper's MLP, OverFeat (2013), VGG, GoogLeNet, the
dropout paper's MLP, fractional max pooling's small CNN (2014), ResNet and spatial transformer networks (2015);
and the discriminators of the 2014 GAN and of DCGAN (2015), whose generators :mod:`cnnlab.generative` builds.
"""

from cnnlab.models import (  # noqa: F401  (each registers its models)
    alexnet,
    dcgan,
    fractional,
    gan,
    googlenet,
    lenet,
    maxout,
    mlp,
    nin,
    overfeat,
    resnet,
    stn,
    vgg,
    zfnet,
)
from cnnlab.models._contract import ClassifierModel
from cnnlab.models._probe import LayerTrace, check_input_shape, is_leaf, smallest_input_size, trace
from cnnlab.models._registry import ModelInfo, create, get_model_info, list_models, register_model
from cnnlab.models._weights import PretrainedWeights, load_torchvision_state_dict, torchvision_models

__all__ = [
    "ClassifierModel",
    "LayerTrace",
    "ModelInfo",
    "PretrainedWeights",
    "check_input_shape",
    "create",
    "get_model_info",
    "is_leaf",
    "list_models",
    "load_torchvision_state_dict",
    "register_model",
    "smallest_input_size",
    "torchvision_models",
    "trace",
]
