"""Receptive fields of every layer, through branches and merges (residual additions, Inception concatenations).

:func:`cnnlab.inspect.summarize` applies ``ReceptiveField`` arithmetic along the leaf layers in the order they
run, which is exact for chains (LeNet, AlexNet, VGG) but composes parallel branches one after the other: a
ResNet's strided shortcut convolution runs before its block's strided 3×3, so the jump doubles twice per stage
and layer4's field comes out at 2,131 px instead of 483. Here the model is traced with ``torch.fx`` (leaf
modules kept whole), shapes are propagated on ``meta`` tensors, and the same arithmetic runs along the graph:
a windowed layer (convolution, pooling) applies ``ReceptiveField.after``; an element-wise layer, addition or
concatenation takes the union of its inputs' fields (same jump); strided slicing multiplies the jump; spatial
padding moves the start; a layer that changes the spatial size without a window (adaptive/global pooling,
flatten) sees the whole input (None).

A model ``torch.fx`` cannot trace (data-dependent Python control flow) falls back to the summary's chain
arithmetic, and :class:`FieldMap` says so (``exact=False``).
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnlab.layers import ReceptiveField
from cnnlab.layers.arithmetic import window_geometry
from cnnlab.models import check_input_shape, is_leaf


@dataclass
class FieldMap:
    """Receptive field of every module's output (qualified name -> field; None: the whole input).

    Attributes:
        fields: for every module the forward pass runs, leaves and containers alike (first call).
        shapes: output shape (without batch) of the same modules.
        exact: True when computed along the traced graph; False for the chain fallback.
        guessed: layers without a window attribute that shrink the map by a whole factor s; taken to be a
            1×1 subsampling at stride s (ResNet option-A shortcuts: ``x[:, :, ::2, ::2]``).
    """

    fields: dict[str, ReceptiveField | None]
    shapes: dict[str, tuple[int, ...] | None]
    exact: bool
    guessed: list[str] = field(default_factory=list)


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m)


def _union(fields: list[ReceptiveField]) -> ReceptiveField | None:
    if not fields:
        return ReceptiveField()
    if any(f.jump != fields[0].jump for f in fields):
        return None  # different grids cannot be added element-wise; never happens in valid models
    low = min(f.start - (f.size - 1) / 2 for f in fields)
    high = max(f.start + (f.size - 1) / 2 for f in fields)
    return ReceptiveField(size=round(high - low) + 1, jump=fields[0].jump, start=(low + high) / 2)


def _spatial(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return shape[2:] if shape is not None and len(shape) == 4 else None


def _first(value: object) -> int:
    return int(value[0]) if isinstance(value, tuple | list) else int(value)  # type: ignore[arg-type,index]


def _functionalwindow_geometry(node: fx.Node, shapes: dict[str, tuple | None]) -> tuple[int, int, int, int] | None:
    """(kernel, stride, padding, dilation) of F.conv2d / F.max_pool2d / F.avg_pool2d calls, else None."""
    args, kw = list(node.args), dict(node.kwargs)

    def arg(i: int, name: str, default: object) -> object:
        return args[i] if len(args) > i else kw.get(name, default)

    if node.target in (F.conv2d, torch.conv2d):
        weight = arg(1, "weight", None)
        shape = shapes.get(weight.name) if isinstance(weight, fx.Node) else None
        if shape is None:
            return None
        padding = arg(4, "padding", 0)
        return (
            shape[-1],
            _first(arg(3, "stride", 1)),
            0 if isinstance(padding, str) else _first(padding),
            _first(arg(5, "dilation", 1)),
        )
    if node.target in (F.max_pool2d, torch.max_pool2d, F.avg_pool2d):
        kernel = _first(arg(1, "kernel_size", 1))
        stride = arg(2, "stride", None)
        stride = kernel if stride in (None, (), []) else _first(stride)
        dilation = _first(arg(4, "dilation", 1)) if node.target is not F.avg_pool2d else 1
        return kernel, stride, _first(arg(3, "padding", 0)), dilation
    return None


def _slice_field(node: fx.Node, field: ReceptiveField) -> ReceptiveField | None:
    """x[:, :, a::s, a::s] (ResNet option-A shortcuts): jump × s, start + a·jump. None if not that pattern."""
    index = node.args[1] if len(node.args) > 1 else None
    if not isinstance(index, tuple) or len(index) != 4 or not all(isinstance(s, slice) for s in index):
        return None
    h, w = index[2], index[3]
    if (h.start or 0, h.step or 1) != (w.start or 0, w.step or 1) or h.stop is not None or w.stop is not None:
        return None
    start, step = h.start or 0, h.step or 1
    return ReceptiveField(size=field.size, jump=field.jump * step, start=field.start + start * field.jump)


def _node_field(
    node: fx.Node,
    modules: dict[str, nn.Module],
    shapes: dict[str, tuple[int, ...] | None],
    node_field: dict[str, ReceptiveField | None],
    guessed: list[str] | None = None,
) -> ReceptiveField | None:
    """The receptive field of one graph node's output, from its inputs' fields."""
    if node.op == "placeholder":
        return ReceptiveField()
    out_spatial = _spatial(shapes.get(node.name))
    if node.op in ("get_attr", "output") or out_spatial is None or not node.all_input_nodes:
        return None
    first = node.all_input_nodes[0]
    if _spatial(shapes.get(first.name)) is None or node_field.get(first.name) is None:
        return None  # built from something without a spatial layout: it sees the whole input
    if node.op == "call_module":
        window = window_geometry(modules[node.target])  # type: ignore[index]
    elif node.op == "call_function":
        window = _functionalwindow_geometry(node, shapes)
    else:
        window = None
    if window is not None:
        return node_field[first.name].after(*window)  # type: ignore[union-attr]
    maps = [a for a in node.all_input_nodes if a.op != "get_attr" and _spatial(shapes.get(a.name)) is not None]
    if all(_spatial(shapes[a.name]) == out_spatial for a in maps):  # element-wise, add, cat, activations...
        fields = [node_field.get(a.name) for a in maps]
        return None if any(f is None for f in fields) else _union(fields)  # type: ignore[arg-type]
    if node.op == "call_function" and node.target is operator.getitem:
        return _slice_field(node, node_field[first.name])  # type: ignore[arg-type]
    if node.op == "call_function" and node.target is F.pad:
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        left = int(pad[0]) if isinstance(pad, tuple | list) and len(pad) >= 2 else 0
        f0 = node_field[first.name]
        return ReceptiveField(f0.size, f0.jump, f0.start - left * f0.jump)  # type: ignore[union-attr]
    before, after = _spatial(shapes.get(first.name)), out_spatial
    ratio = before[0] // after[0] if after[0] else 0  # type: ignore[index]
    if (
        node.op == "call_module"
        and after[0] > 1
        and ratio > 1
        and all(  # type: ignore[index]
            -(-b // ratio) == a
            for b, a in zip(before, after, strict=True)  # type: ignore[arg-type]
        )
    ):
        if guessed is not None:
            guessed.append(str(node.target))
        return node_field[first.name].after(1, ratio)  # type: ignore[union-attr]
    return None  # the size changes without a window we understand (adaptive or global pooling...)


def _trace(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[fx.Graph, dict[str, tuple[int, ...] | None]]:
    """The model's fx graph (leaf modules whole) and every node's output shape, from a run on meta tensors."""
    graph = _LeafTracer().trace(model)
    gm = fx.GraphModule(model, graph)
    shapes: dict[str, tuple[int, ...] | None] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            result = super().run_node(n)
            shapes[n.name] = tuple(result.shape) if isinstance(result, torch.Tensor) else None
            return result

    class Runner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gm = gm

        def forward(self, x: torch.Tensor) -> object:
            return Recorder(self.gm).run(x)

    runner = Runner()
    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in itertools.chain(runner.named_parameters(), runner.named_buffers())
    }
    with torch.no_grad():
        torch.func.functional_call(runner, meta, (torch.empty(1, *input_shape, device="meta"),))
    return graph, shapes


def _graph_fields(model: nn.Module, graph: fx.Graph, shapes: dict[str, tuple[int, ...] | None]) -> FieldMap:
    modules = dict(model.named_modules())
    node_field: dict[str, ReceptiveField | None] = {}
    module_field: dict[str, ReceptiveField | None] = {}
    module_shape: dict[str, tuple[int, ...] | None] = {}
    guessed: list[str] = []
    for node in graph.nodes:
        rf = _node_field(node, modules, shapes, node_field, guessed)
        node_field[node.name] = rf
        if node.op == "call_module":
            module_field.setdefault(node.target, rf)  # type: ignore[arg-type]
            module_shape.setdefault(node.target, shapes.get(node.name))  # type: ignore[arg-type]
        # a container's output is its last node: every node inside it updates it, in graph order
        for name in node.meta.get("nn_module_stack", {}):
            if name != node.target:
                module_field[name] = rf
                module_shape[name] = shapes.get(node.name)
    shapes_out = {k: (v[1:] if v else None) for k, v in module_shape.items()}
    return FieldMap(module_field, shapes_out, exact=True, guessed=sorted(set(guessed)))


def chain_fields(traces: list) -> list[ReceptiveField | None]:
    """The chain arithmetic: each traced leaf's receptive field, stepping through the windowed layers in executed
    order (exact for chain networks only; None once the maps are flattened: every unit sees the whole input)."""
    field: ReceptiveField | None = ReceptiveField()
    out = []
    for trace in traces:
        if field is not None:
            window = window_geometry(trace.module)
            if trace.output_shape is None or len(trace.output_shape) != 4:
                field = None
            elif window is not None:
                field = field.after(*window)
        out.append(field)
    return out


def _chain_field_map(model: nn.Module, input_shape: tuple[int, int, int]) -> FieldMap:
    traces = check_input_shape(model, input_shape)
    fields: dict[str, ReceptiveField | None] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    for trace, rf in zip(traces, chain_fields(traces), strict=True):
        parts = trace.name.split(".")
        for i in range(1, len(parts) + 1):  # the leaf and every container around it: last one wins
            name = ".".join(parts[:i])
            if i == len(parts) and name in fields:
                continue  # a leaf called twice keeps its first call
            fields[name] = rf
            shapes[name] = trace.output_shape[1:] if trace.output_shape else None
    return FieldMap(fields, shapes, exact=False)


def receptive_fields(model: nn.Module, input_shape: tuple[int, int, int]) -> FieldMap:
    """Receptive field and output shape of every module of ``model`` for inputs of shape (C, H, W).

    Raises:
        InputSizeError: the model cannot take that input (from the fallback's shape check).
    """
    try:
        graph, shapes = _trace(model, tuple(input_shape))
    except Exception:  # fx cannot trace every model (Python control flow on values...): the chain arithmetic
        return _chain_field_map(model, input_shape)
    return _graph_fields(model, graph, shapes)
