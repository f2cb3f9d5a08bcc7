"""cnnlab: build, train, look inside, fool and reuse convolutional neural networks.

The one-liners (docs/python.md)::

    import cnnlab
    result = cnnlab.train("lenet5", "digits", epochs=5)          # or a folder, tensors, a torch Dataset
    cnnlab.load(result.run_dir).predict(["digit0_label7.png"])   # top classes with probabilities
    cnnlab.summary("resnet18")                                   # per-layer shapes, parameters, FLOPs, fields
    model = cnnlab.create("vgg16", pretrained=True)              # the zoo (aliases and torchvision weights)
    cnnlab.summary(model)                                        # any nn.Module (Keras' model.summary())

Nothing heavy is imported until used (``cnnlab --version`` answers without torch).
"""

import importlib
import sys
import types

from cnnlab.errors import CnnlabError

__version__ = "0.1.0"

__all__ = ["CnnlabError", "__version__", "create", "list_models", "load", "summary", "train"]

_LAZY = {
    "load": ("cnnlab.workflows", "load"),
    "summary": ("cnnlab.workflows", "summary"),
    "create": ("cnnlab.models", "create"),
    "list_models": ("cnnlab.models", "list_models"),
}


class _CallableTrain(types.ModuleType):
    """``cnnlab.train`` is the engine's package and also the one-liner ``cnnlab.train(model, data, **config)`` users
    know from Keras and Lightning (:func:`cnnlab.workflows.train`). A module cannot be called, so the package's
    class gains ``__call__``; the one-liner lives above the engine (it draws curves, attacks, ...), so the call is
    dispatched from here, the top of the library, not from the engine."""

    def __call__(self, *args, **kwargs):
        return importlib.import_module("cnnlab.workflows").train(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        if name == "train" and isinstance(value, types.ModuleType) and type(value) is types.ModuleType:
            value.__class__ = _CallableTrain  # the import system sets cnnlab.train when the subpackage loads
        super().__setattr__(name, value)


def __getattr__(name: str):
    if name == "train":
        return importlib.import_module("cnnlab.train")
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
