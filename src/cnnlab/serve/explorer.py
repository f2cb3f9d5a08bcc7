"""One trained run, loaded once, answering the explorer's views with plain data (numbers, class names, PNGs).

:class:`RunExplorer` knows no HTTP: the web app (``app.py``), the latency measurement (``measure.py``) and the
tests call the same methods. Every view is the library's own: the run record rebuilds the model
(:class:`~cnnlab.train.record.RunRecord`), feature maps, occlusion, deconvnet, guided backpropagation, the
spatial transformer and the confusion matrix come from :mod:`cnnlab.inspect`, FGSM from
:mod:`cnnlab.adversarial`.

Lanes: the checkpoint is read once, and its model is held in three copies, used by four *lanes*, each behind its
own lock. ``fast`` (prediction, FGSM) uses a copy that never carries a hook; ``maps`` (feature maps, the
transformer's output) one that carries forward hooks for one pass at a time; ``slow`` (occlusion, deconvnet,
guided backpropagation) one whose ReLUs carry backward hooks; ``record`` (the confusion matrix over the test
split, seconds, once) shares the hook-free copy, since inference without hooks can run in two threads at once.
A running occlusion therefore never delays the prediction of the next stroke, and a hook set by one view is never
seen by another view's forward pass in another thread. (For LeNet-5 the three copies are 3 × 240 kB, plus a
fourth for occlusion in models with BatchNorm, folded; for a large model the memory is the price of that
independence.)

One thing lanes cannot separate: torch.fx, which the deconvnet uses for receptive fields, patches
``nn.Module.__call__`` for the whole process while it traces, so a forward pass in another thread at that moment
fails. The deconvnet therefore runs alone (:data:`GATE`, exclusive), every other view alongside any other
(shared); the wait it can cause is one deconvnet (75 ms for LeNet-5). Occlusion, which would trace too (to fold
BatchNorm, and for incremental passes on large images), gets a model folded once at start-up and plain passes.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import ConfigError

LANES = ("fast", "maps", "slow", "record")
MAX_FEATURE_MAPS = 64  # channels sent for one layer: a 512-channel layer would be 512 PNGs per stroke
MAX_CONFUSION_IMAGES = 10_000  # test images classified for the confusion matrix (all of MNIST's test split)
MAX_EPSILON = 0.5  # the slider's range: beyond it FGSM images are mostly noise


class Gate:
    """Many holders at once (``shared``) or one alone (``exclusive``). Shared holders do not wait for a waiting
    exclusive one: a deconvnet may wait for a pause in the predictions, but a prediction never waits for a queue."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._exclusive)
            self._shared += 1
        try:
            yield
        finally:
            with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._exclusive and not self._shared)
            self._exclusive = True
        try:
            yield
        finally:
            with self._changed:
                self._exclusive = False
                self._changed.notify_all()


GATE = Gate()  # one per process: torch.fx's patch is process-wide, across every run served


@dataclass
class Lane:
    """A copy of the model and the lock that gives it to one view at a time."""

    model: nn.Module
    lock: threading.Lock


def _class_list(probabilities: torch.Tensor, classes: list[str], top_k: int) -> list[dict]:
    """The ``top_k`` most probable classes of (K,) probabilities, most likely first."""
    top = probabilities.topk(min(top_k, len(classes)))
    return [
        {"index": i, "class": classes[i], "probability": p}
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


class RunExplorer:
    """A trained classification run, ready to be explored.

    Args:
        run_dir: a run directory or checkpoint file (read through :class:`~cnnlab.train.record.RunRecord`).
        run_id: the name the web app gives it (URLs use it, never a path).
        device: ``auto``, ``cpu``, ``cuda``...

    Raises:
        CheckpointError: not a cnnlab classification checkpoint (a GAN run, a corrupt file...).
    """

    def __init__(self, run_dir: str | Path, run_id: str, device: str = "auto"):
        from cnnlab.inspect.hooks import default_spatial_layer, spatial_layers, without_inplace_relu
        from cnnlab.inspect.occlusion import inference_copy
        from cnnlab.inspect.transformer import find_transformer
        from cnnlab.workflows import open_run

        self.run_id = run_id
        self.record, model, self.device = open_run(run_dir, device)
        self.preprocessing = self.record.preprocessing
        self.classes = list(self.record.classes)
        slow, changed = without_inplace_relu(model)  # backward hooks cannot see in-place ReLUs
        self.hook_notes = (
            [f"{len(changed)} nn.ReLU(inplace=True) module(s) were switched to inplace=False for the backward hooks; "
             "the results are the same."]
            if changed
            else []
        )  # fmt: skip
        self.lanes = {
            "fast": Lane(model, threading.Lock()),
            "maps": Lane(copy.deepcopy(model), threading.Lock()),
            "slow": Lane(slow, threading.Lock()),
            "record": Lane(model, threading.Lock()),  # the fast lane's copy: inference without hooks is reentrant
        }
        self.layers = spatial_layers(model, self.preprocessing.input_size)  # traced once, here, not per request
        self.default_layer = default_spatial_layer(model, self.preprocessing.input_size) if self.layers else None
        # BatchNorm folded once (torch.fx) for occlusion's many passes; the model itself when it has none
        self.occlusion_model = inference_copy(slow) if self.device.type == "cpu" else slow
        try:
            self.transformer = find_transformer(self.lanes["maps"].model)  # used in that lane only
        except ConfigError:
            self.transformer = None
        self._confusion: dict | None = None

    # ---- what the page needs to lay itself out ---------------------------------------------------------------
    def describe(self) -> dict:
        """The run as the page lists it: names, classes, input, the layers with feature maps, and which views
        apply (``views``: the page shows a panel per entry; a detector would add ``boxes``)."""
        last = self.record.history[-1] if self.record.history else {}
        views = ["predict", "features", "occlusion", "deconv", "guided-backprop", "fgsm", "curves", "confusion"]
        if self.transformer is not None:
            views.append("transformer")
        return {
            "id": self.run_id,
            "name": self.record.run_dir.name,
            "task": self.record.task,
            "model": self.record.model_name,
            "data": self.record.data,
            "adversarial": self.record.config.get("adversarial"),
            "classes": self.classes,
            "input_size": list(self.preprocessing.input_size),
            "layers": self.layers,
            "default_layer": self.default_layer,
            "epochs": int(last.get("epoch", 0)),
            "test_error": last.get("test_error"),
            "views": views,
        }

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) at the model's input size -> the normalised (C, H, W) model input on the device."""
        expected = tuple(self.preprocessing.input_size)
        if tuple(pixels.shape) != expected:
            raise ConfigError(f"Expected an image of {expected} (C, H, W), got {tuple(pixels.shape)}.")
        return self.preprocessing.normalize(pixels.unsqueeze(0).to(self.device))[0]

    # ---- the fast lane ---------------------------------------------------------------------------------------
    def predict(self, pixels: torch.Tensor, top_k: int = 5) -> dict:
        """The ``top_k`` classes of an image (uint8 (C, H, W), fitted), and the input as the model sees it."""
        from cnnlab.serve.images import image_url

        if not 1 <= top_k <= 100:
            raise ConfigError(f"top_k must be between 1 and 100, got {top_k}.")
        x = self._input(pixels)
        lane = self.lanes["fast"]
        with lane.lock, GATE.shared(), torch.no_grad():
            probabilities = lane.model(x.unsqueeze(0)).float().softmax(dim=1)[0].cpu()  # (K,) the one sync
        return {"top": _class_list(probabilities, self.classes, top_k), "input": image_url(pixels.float() / 255)}

    def fgsm(self, pixels: torch.Tensor, eps: float) -> dict:
        """FGSM (Goodfellow et al. 2014) at ``eps`` (pixel units, 0…:data:`MAX_EPSILON`) away from the clean
        prediction (a drawing has no true label): the adversarial image, the perturbation and the new top 5."""
        from cnnlab.adversarial import PixelModel, check_epsilon, fgsm
        from cnnlab.serve.images import image_url, signed_url

        eps = check_epsilon(eps)
        if eps > MAX_EPSILON:
            raise ConfigError(f"ε = {eps:g} is beyond the explorer's range 0…{MAX_EPSILON:g}.")
        images = pixels.unsqueeze(0).to(self.device).float() / 255  # (1, C, H, W) in [0, 1]
        lane = self.lanes["fast"]
        with lane.lock, GATE.shared():
            wrapped = PixelModel(lane.model, self.preprocessing.mean, self.preprocessing.std).to(self.device)
            with torch.no_grad():
                clean = int(wrapped(images).argmax(dim=1)[0])
            adversarial = fgsm(wrapped, images, torch.tensor([clean], device=self.device), eps)
            with torch.no_grad():
                probabilities = wrapped(adversarial).float().softmax(dim=1)[0].cpu()
        adversarial = adversarial[0].cpu()
        return {
            "eps": eps,
            "attacked_class": self.classes[clean],
            "image": image_url(adversarial),
            "perturbation": signed_url((adversarial - images[0].cpu()).sum(0)),
            "top": _class_list(probabilities, self.classes, 5),
        }

    # ---- the maps lane ---------------------------------------------------------------------------------------
    def features(self, pixels: torch.Tensor, layer: str) -> dict:
        """Every feature map of ``layer`` (the first :data:`MAX_FEATURE_MAPS`) as grey PNGs on one shared scale."""
        from cnnlab.inspect.activations import activations
        from cnnlab.serve.images import grey_url

        x = self._input(pixels)
        lane = self.lanes["maps"]
        with lane.lock, GATE.shared():
            (found,) = activations(lane.model, x, [layer])
        values = found.values  # (C, h, w), or (n,) for a layer without spatial layout
        if values.ndim == 1:
            values = values.view(1, 1, -1)  # one strip of units
        elif values.ndim != 3:
            values = values.reshape(values.shape[0], 1, -1)
        low, high = float(values.min()), float(values.max())
        shown = values[:MAX_FEATURE_MAPS]
        return {
            "layer": layer,
            "qualified": found.qualified,
            "shape": list(found.shape),
            "range": [low, high],
            "channels": int(values.shape[0]),
            "maps": [grey_url(channel, low, high) for channel in shown],
        }

    def transformer_output(self, pixels: torch.Tensor) -> dict:
        """What a spatial transformer hands the classifier: its output image and the region of the input it
        sampled (a closed polyline in input pixels; Jaderberg et al. 2015, Figure 1)."""
        from cnnlab.inspect.transformer import sampled_outline
        from cnnlab.serve.images import image_url

        if self.transformer is None:
            raise ConfigError(f"{self.record.model_name} has no spatial transformer, so there is no output to show.")
        x = self._input(pixels).unsqueeze(0)
        lane = self.lanes["maps"]
        with lane.lock, GATE.shared(), torch.no_grad():
            transformer = self.transformer
            params = transformer.transform_params(x)
            output = transformer(x)[0].cpu()  # (C, h, w) normalised
            outline = sampled_outline(transformer, params, tuple(x.shape[-2:]))[0].cpu()
        mean = torch.tensor(self.preprocessing.mean).view(-1, 1, 1)
        std = torch.tensor(self.preprocessing.std).view(-1, 1, 1)
        return {
            "output": image_url(output * std + mean),
            "output_size": list(output.shape[1:]),
            "outline": [[round(float(px), 2), round(float(py), 2)] for px, py in outline],
            "transform": transformer.transform,
        }

    # ---- the slow lane ---------------------------------------------------------------------------------------
    def occlusion(self, pixels: torch.Tensor, size: int | None = None, stride: int | None = None) -> dict:
        """Zeiler & Fergus's occlusion map of the top class: a grey square slid over the image."""
        from cnnlab.inspect.occlusion import occlusion
        from cnnlab.serve.images import signed_url

        x = self._input(pixels)
        pre = self.preprocessing
        grey = torch.tensor([(0.5 - m) / s for m, s in zip(pre.mean, pre.std, strict=True)], device=self.device)
        lane = self.lanes["slow"]
        with lane.lock, GATE.shared():  # plain passes (incremental=False) on the folded copy: no tracing here
            window = {"size": size, "stride": stride, "baseline": grey}
            result = occlusion(self.occlusion_model, x, None, **window, batch_size=256, incremental=False)
        return {
            "target": result.target,
            "class": self.classes[result.target],
            "probability": float(result.clean_probs[result.target]),
            "size": result.size,
            "stride": result.stride,
            "attribution": signed_url(result.attribution),  # red: hiding this pixel lowers the class's log-odds
            "seconds": result.seconds,
        }

    def deconv(self, pixels: torch.Tensor, layer: str) -> dict:
        """Zeiler & Fergus's deconvnet: the strongest unit of ``layer`` projected back to pixels."""
        from cnnlab.inspect.deconv import deconvnet

        x = self._input(pixels)
        lane = self.lanes["slow"]
        with lane.lock, GATE.exclusive():  # it traces the model with torch.fx (receptive fields)
            result = deconvnet(lane.model, x, layer)
        return {
            "layer": layer,
            "channel": result.channel,
            "position": list(result.position),
            "activation": result.activation,
            "box": list(result.box),
            "image": self._attribution_image(result.projection),
            "notes": result.notes + self.hook_notes,
        }

    def guided_backprop(self, pixels: torch.Tensor) -> dict:
        """Guided backpropagation (Springenberg et al. 2014) of the top class to the pixels, via Captum."""
        from cnnlab.inspect.attribution import guided_backprop

        x = self._input(pixels)
        lane = self.lanes["slow"]
        with lane.lock, GATE.shared():
            result = guided_backprop(lane.model, x, None)
        return {
            "target": result.target,
            "class": self.classes[result.target],
            "probability": result.probability,
            "image": self._attribution_image(result.values),
            "notes": result.notes + self.hook_notes,
        }

    @staticmethod
    def _attribution_image(values: torch.Tensor) -> str:
        """(C, H, W) signed values: grey inputs as a diverging map (red positive), colour ones min–max scaled."""
        from cnnlab.inspect.grid import minmax
        from cnnlab.serve.images import image_url, signed_url

        return image_url(minmax(values)) if values.shape[0] == 3 else signed_url(values.sum(0))

    def confusion(self) -> dict:
        """The confusion matrix on the run's own test split (computed once, then kept)."""
        from cnnlab.inspect.mistakes import confusion_matrix, predict

        lane = self.lanes["record"]
        with lane.lock, GATE.shared():
            if self._confusion is None:
                dataset = self.record.dataset()
                self.record.check_classes(dataset)
                images, labels = dataset.test.model_inputs(self.preprocessing, MAX_CONFUSION_IMAGES)
                predictions = predict(lane.model, images, labels, self.preprocessing, device=self.device)
                self._confusion = {
                    "data": dataset.name,
                    "split": "test",
                    "samples": len(labels),
                    "error": predictions.error,
                    "classes": self.classes,
                    "matrix": confusion_matrix(predictions, len(self.classes)).tolist(),
                }
        return self._confusion

    # ---- from the record alone -------------------------------------------------------------------------------
    def curves(self) -> dict:
        """Loss and error per epoch (train, validation when held out, test), from the checkpoint's history."""
        keys = ("epoch", "train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error")
        return {"rows": [{k: row[k] for k in keys if k in row} for row in self.record.history]}
