"""cnnlab: build, train, look inside, fool and reuse convolutional neural networks."""

from cnnlab.errors import CnnlabError

__version__ = "0.1.0"

__all__ = ["CnnlabError", "__version__"]
