"""Exporting a model for use outside cnnlab: ONNX (a graph any runtime can execute) or safetensors (weights).

>>> from cnnlab import models
>>> from cnnlab.export import export_model
>>> export_model(models.create("resnet20"), "resnet20.onnx")            # doctest: +SKIP
>>> export_model(models.create("resnet20"), "resnet20.safetensors", format="safetensors")  # doctest: +SKIP

Optional dependencies: ``onnx`` and ``onnxscript`` (torch's ONNX exporter), ``onnxruntime`` (to check an
export), ``safetensors``. A missing one is reported with the command that installs it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import ConfigError

FORMATS = ("onnx", "safetensors")


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"Exporting needs {', '.join(missing)}: pip install {' '.join(missing)}")


def _input_shape(model: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    if input_shape is None:
        from cnnlab.models import get_model_info

        name = getattr(model, "model_name", None)
        if name is None:
            raise ConfigError("Give input_shape=(C, H, W): the model is not a registered cnnlab model.")
        input_shape = get_model_info(name).input_size
        input_shape = (getattr(model, "in_chans", input_shape[0]), *input_shape[1:])
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(f"input_shape must be (channels, height, width), got {input_shape}.")
    return tuple(int(s) for s in input_shape)  # type: ignore[return-value]


def export_model(
    model: nn.Module,
    path: str | Path,
    format: str = "onnx",
    input_shape: tuple[int, int, int] | None = None,
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` to ``path`` as ONNX or safetensors; returns the path.

    ONNX: the model in eval mode (dropout off, batch norm with its running statistics), traced with torch's
    exporter on a zero batch of shape (2, *input_shape); input ``"input"``, output ``"logits"``, the batch
    dimension left free unless ``dynamic_batch=False``. Spatial sizes are fixed at ``input_shape``.

    safetensors: the state dict (parameters and buffers), with metadata naming the cnnlab model, its classes,
    channels and input shape; read it with ``safetensors.torch.load_model(model, path)`` into the same model.

    Args:
        model: any ``nn.Module`` mapping (B, C, H, W) to logits; a cnnlab model knows its input shape.
        path: the file to write (parent folders are created).
        format: ``"onnx"`` or ``"safetensors"``.
        input_shape: (C, H, W); default: the registered model's input size.
        opset: ONNX opset version (default: the exporter's).
        dynamic_batch: let the ONNX graph take any batch size.

    Raises:
        ConfigError: unknown format, bad input shape, or a missing optional dependency.
        InputSizeError: the model cannot take ``input_shape``.
    """
    if format not in FORMATS:
        raise ConfigError(f"Unknown export format {format!r}; choose one of {', '.join(FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = _input_shape(model, input_shape)
    if hasattr(model, "model_name"):
        from cnnlab.models import check_input_shape

        check_input_shape(model, shape)  # names the layer if the shape does not fit, before any real work
    if format == "safetensors":
        _require("safetensors")
        from safetensors.torch import save_model

        metadata = {
            "cnnlab_model": str(getattr(model, "model_name", type(model).__name__)),
            "num_classes": str(getattr(model, "num_classes", "")),
            "in_chans": str(getattr(model, "in_chans", shape[0])),
            "input_shape": json.dumps(list(shape)),
        }
        save_model(model, str(path), metadata=metadata)
        return path
    _require("onnx", "onnxscript")
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        example = torch.zeros(2, *shape, device=device)
        dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
        with torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=dynamic,
                opset_version=opset,
                verbose=False,
            )
        program.save(str(path))
    finally:
        model.train(was_training)
    return path


def check_onnx(model: nn.Module, path: str | Path, batch_size: int = 3, seed: int = 0) -> float:
    """Run the ONNX file at ``path`` with onnxruntime and ``model`` (eval mode) on the same random batch.

    Returns the largest absolute difference between their outputs (float32 exports: ~1e-6).
    """
    _require("onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [batch_size, *spec.shape[1:]]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    (theirs,) = session.run(None, {spec.name: x.numpy()})
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        with torch.no_grad():
            ours = model(x.to(param.device if param is not None else "cpu")).cpu()
    finally:
        model.train(was_training)
    return float((ours - torch.from_numpy(theirs)).abs().max())


def export_spec(
    spec: str,
    out: str | Path,
    format: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    check: bool = False,
) -> tuple[Path, str, tuple[int, ...], float | None]:
    """Export a checkpoint's model (or a registered model, random weights) to ``out``; every argument is checked
    before anything is written. Returns (path, format, input shape, onnxruntime's largest difference or None)."""
    from cnnlab.outputs import output_file
    from cnnlab.train.record import saved_or_registered_model

    fmt = format or ("safetensors" if str(out).endswith(".safetensors") else "onnx")
    if check and fmt != "onnx":
        raise ConfigError("--check runs the exported ONNX file; it does not apply to safetensors. Leave it out.")
    model, shape = saved_or_registered_model(spec)
    shape = input_shape or shape
    output_file(out, "--out", None, f"{fmt} file")
    path = export_model(model, out, fmt, shape)
    return path, fmt, tuple(shape), check_onnx(model, path) if check else None
