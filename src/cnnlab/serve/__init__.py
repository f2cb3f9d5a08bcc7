"""``cnnlab serve``: a local web explorer for trained runs: draw or drop an image and watch the network's
prediction, feature maps, occlusion, deconvnet and guided-backprop images, FGSM at any ε, training curves and
confusion matrix, for several runs side by side (docs/serve.md).

>>> from cnnlab.serve import create_app, load_explorers
>>> app = create_app(load_explorers(["runs/lenet5-mnist"]))   # an ASGI app: uvicorn, or Starlette's TestClient
"""

from cnnlab.serve.app import create_app
from cnnlab.serve.explorer import RunExplorer
from cnnlab.serve.images import Limits
from cnnlab.serve.server import load_explorers, serve

__all__ = ["Limits", "RunExplorer", "create_app", "load_explorers", "serve"]
