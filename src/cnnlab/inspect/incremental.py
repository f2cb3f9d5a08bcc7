"""Incremental inference: forward many copies of one image that differ from it only in a small region.

Occlusion (Zeiler & Fergus 2013) runs hundreds of copies of one image, each with a grey square somewhere. In
the early stages of a CNN a square changes only the activations whose receptive field it touches; everything
else equals the clean image's activations. :class:`IncrementalForward` computes those early stages only
where they change (the idea of "incremental inference" for occlusion, as in Nakandala et al., "Incremental
and approximate inference for faster occlusion-based deep CNN explanations", SIGMOD 2019), then runs the rest
of the network on whole maps once the changed region covers most of them. For ResNet-50 on 224×224 with a
32×32 square, the stem, layer1 and layer2 shrink to a fraction of their cost; layer3 and layer4 run whole.

Written by hand because neither torch nor Captum offers it (Captum's Occlusion runs every copy whole). How:

1. The model is traced with torch.fx and cut at its *articulation points*: values through which everything
   downstream flows (a block's output, a pooling layer's output). Consecutive cuts bound a segment.
2. Each segment's spatial geometry is derived from its operations (convolutions, poolings, strided slices,
   and element-wise operations that keep positions): output position j depends on input positions
   [j·S + lo, j·S + hi] per axis. A segment with anything else (flatten, global pooling, an unknown function)
   ends the incremental part.
3. The clean image runs once, keeping every cut's activation map. For a batch of copies, each copy's changed
   box comes from comparing it with the clean image. Per segment, every copy's affected output box follows
   from the geometry; the segment runs on a fixed-size crop of its input around that box (clean map plus the
   copy's changed values), stacked for the whole batch. Only outputs whose whole dependency lies inside the
   crop (or whose dependency leaves the crop only where the crop meets the map's border, so padding matches)
   are kept; the crop is chosen so the affected box is among them. Crops start at multiples of the
   segment's stride so the output grid lines up.
4. When a segment's crop would cover most of its input (``full_fraction``), the copies' maps are assembled
   whole and the remaining network runs as usual.

Results equal the plain forward within float rounding (the convolution library may pick a different
algorithm for a smaller map); :meth:`IncrementalForward.verify` checks that on real copies and the occlusion
view falls back to plain forward passes if it ever fails.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

# Modules and functions that act on each spatial position separately (channel mixing is fine).
_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.LocalResponseNorm,  # normalises across channels at each position
    nn.modules.batchnorm._BatchNorm,  # eval mode: a per-channel affine map
)
_POINTWISE_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.itruediv,
    operator.neg,
    operator.pow,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.neg,
    torch.pow,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    torch.exp,
    torch.clamp,
    torch.clip,
    torch.maximum,
    torch.minimum,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.hardtanh,
    F.sigmoid,
    F.tanh,
    F.dropout,
    F.dropout2d,
    F.local_response_norm,
    F.batch_norm,
}
_POINTWISE_METHODS = {
    "relu",
    "relu_",
    "tanh",
    "sigmoid",
    "add",
    "add_",
    "sub",
    "mul",
    "mul_",
    "div",
    "clamp",
    "clamp_",
    "neg",
    "pow",
    "contiguous",
    "float",
    "to",
    "type_as",
}


@dataclass(frozen=True)
class AxisGeometry:
    """Along one axis, output position j depends on input positions [j·stride + lo, j·stride + hi].

    Not :class:`cnnlab.layers.ReceptiveField` (or :mod:`cnnlab.inspect.fields`): those describe square windows
    by a float centre for display and treat any shape-keeping operation as element-wise; cropping needs integer
    bounds per axis and must refuse what it does not know, or the crops would be silently wrong."""

    stride: int = 1
    lo: int = 0
    hi: int = 0

    def window(self, kernel: int, stride: int, padding: int, dilation: int = 1) -> AxisGeometry:
        """The geometry after a sliding window (convolution or pooling) applied to this one's output."""
        return AxisGeometry(
            self.stride * stride,
            self.lo - padding * self.stride,
            self.hi + (dilation * (kernel - 1) - padding) * self.stride,
        )

    def hull(self, other: AxisGeometry) -> AxisGeometry | None:
        if self.stride != other.stride:
            return None
        return AxisGeometry(self.stride, min(self.lo, other.lo), max(self.hi, other.hi))


Geometry = tuple[AxisGeometry, AxisGeometry]  # (rows, columns)
_IDENTITY: Geometry = (AxisGeometry(), AxisGeometry())  # position j depends on position j only


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


# The argument lists of the functional windows, to read a traced call's arguments by name.
def _conv2d_args(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> dict:
    return locals()


def _max_pool2d_args(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
) -> dict:
    return locals()


def _avg_pool2d_args(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
) -> dict:
    return locals()


def _window_geometry(g: Geometry, kernel, stride, padding, dilation=1) -> Geometry:
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        else:  # "same" (stride 1): PyTorch pads (total // 2) before
            kernel_hw, dilation_hw = _pair(kernel), _pair(dilation)
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel_hw, dilation_hw, strict=True))
    kernel, stride, padding, dilation = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
    return tuple(axis.window(k, s, p, d) for axis, k, s, p, d in zip(g, kernel, stride, padding, dilation, strict=True))


def _shape(node: fx.Node) -> torch.Size | None:
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)


class _Unsupported(Exception):
    """An operation whose spatial geometry this module does not know."""


def _node_geometry(node: fx.Node, root: nn.Module, geometries: dict[fx.Node, Geometry | None]) -> Geometry | None:
    """The geometry of ``node`` relative to its segment's input; None for values that do not depend on it."""
    dependent = [a for a in node.all_input_nodes if geometries.get(a) is not None]
    if not dependent:
        return None
    first = geometries[dependent[0]]

    def pointwise() -> Geometry:
        result = first
        for other in dependent[1:]:
            g = geometries[other]
            rows, cols = result[0].hull(g[0]), result[1].hull(g[1])
            if rows is None or cols is None:
                raise _Unsupported(f"{node.name}: inputs at different strides")
            result = (rows, cols)
        shape = _shape(node)
        if shape is None or len(shape) != 4:
            raise _Unsupported(f"{node.name}: not a 4-d map")
        return result

    if node.op == "call_module":
        module = root.get_submodule(node.target)
        if isinstance(module, nn.Conv2d):
            if module.padding_mode == "circular":
                raise _Unsupported(f"{node.name}: circular padding wraps around the image")
            return _window_geometry(first, module.kernel_size, module.stride, module.padding, module.dilation)
        if isinstance(module, nn.MaxPool2d):
            return _window_geometry(
                first, module.kernel_size, module.stride or module.kernel_size, module.padding, module.dilation
            )
        if isinstance(module, nn.AvgPool2d | nn.LPPool2d):
            return _window_geometry(
                first, module.kernel_size, module.stride or module.kernel_size, getattr(module, "padding", 0)
            )
        if isinstance(module, _POINTWISE_MODULES):
            return pointwise()
        raise _Unsupported(f"{node.name}: module {type(module).__name__}")
    if node.op == "call_function":
        target = node.target
        if target in (F.conv2d, torch.conv2d):
            a = _conv2d_args(*node.args, **node.kwargs)
            if geometries.get(a["input"]) is None or len(dependent) != 1:
                raise _Unsupported(f"{node.name}: convolution weights depend on the input")
            weight_shape = _shape(a["weight"]) if isinstance(a["weight"], fx.Node) else a["weight"].shape
            return _window_geometry(first, tuple(weight_shape[2:]), a["stride"], a["padding"], a["dilation"])
        if target in (F.max_pool2d, torch.max_pool2d):
            a = _max_pool2d_args(*node.args, **node.kwargs)
            if a["return_indices"]:
                raise _Unsupported(f"{node.name}: pooling indices")
            return _window_geometry(
                first, a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"], a["dilation"]
            )
        if target is F.avg_pool2d:
            a = _avg_pool2d_args(*node.args, **node.kwargs)
            return _window_geometry(first, a["kernel_size"], a["stride"] or a["kernel_size"], a["padding"])
        if target is torch.cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if dim not in (1, -3):
                raise _Unsupported(f"{node.name}: concatenation along dimension {dim}")
            return pointwise()
        if target is F.pad:
            pad = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
            if any(pad[:4]):
                raise _Unsupported(f"{node.name}: spatial padding")
            return pointwise()  # channel padding (ResNet's option-A shortcut)
        if target is operator.getitem:
            return _getitem_geometry(node, first)
        if target in _POINTWISE_FUNCTIONS:
            return pointwise()
        raise _Unsupported(f"{node.name}: function {getattr(target, '__name__', target)}")
    if node.op == "call_method" and node.target in _POINTWISE_METHODS:
        return pointwise()
    raise _Unsupported(f"{node.name}: {node.op} {node.target}")


def _getitem_geometry(node: fx.Node, g: Geometry) -> Geometry:
    """x[:, :, ::s, ::s] (ResNet's option-A shortcut subsamples this way)."""
    index = node.args[1]
    if not isinstance(index, tuple) or len(index) != 4 or not all(isinstance(i, slice) for i in index):
        raise _Unsupported(f"{node.name}: indexing {index!r}")
    if any(i != slice(None) for i in index[:2]):
        raise _Unsupported(f"{node.name}: indexing batch or channels")
    axes = []
    for axis, i in zip(g, index[2:], strict=True):
        if i.start not in (None, 0) or i.stop is not None:
            raise _Unsupported(f"{node.name}: cropping slice {i}")
        step = i.step or 1
        axes.append(AxisGeometry(axis.stride * step, axis.lo, axis.hi))
    return tuple(axes)


@dataclass
class _Segment:
    """A piece of the network between two cuts: ``module`` maps the first cut's value to the second's."""

    module: fx.GraphModule
    geometry: Geometry | None  # None: not spatially local (runs on whole maps)
    in_size: tuple[int, int]
    out_size: tuple[int, int]


def _cuts(graph: fx.Graph) -> list[fx.Node]:
    """Nodes through which every later input-dependent value flows, in order (the input first)."""
    nodes = list(graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    dependent: set[fx.Node] = set(placeholders)
    for n in nodes:
        if n.op != "placeholder" and any(a in dependent for a in n.all_input_nodes):
            dependent.add(n)
    last_use = {n: max((order[u] for u in n.users), default=order[n]) for n in dependent}
    cuts = []
    live: set[fx.Node] = set()
    for n in nodes:
        live = {m for m in live if last_use[m] > order[n]}
        if n in dependent and n.op != "output":
            if last_use[n] > order[n]:
                live.add(n)
            if live == {n}:
                cuts.append(n)
    return cuts


def _extract(root: fx.GraphModule, nodes: list[fx.Node], start: fx.Node, end: fx.Node) -> fx.GraphModule:
    """A GraphModule computing ``end`` from ``start``; constant inputs (get_attr etc.) are copied along."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {start: graph.placeholder("x")}

    def lookup(n: fx.Node) -> fx.Node:
        if n not in env:
            if n.op == "placeholder":
                raise _Unsupported(f"{n.name}: a second input")
            env[n] = graph.node_copy(n, lookup)  # a constant computed earlier (no input dependency)
        return env[n]

    begin = nodes.index(start) + 1
    for n in nodes[begin : nodes.index(end) + 1]:
        env[n] = graph.node_copy(n, lookup)
    graph.output(env[end])
    return fx.GraphModule(root, graph)


class IncrementalForward:
    """Forward passes of copies of ``image`` that differ from it in small regions, computing early stages
    only where they change.

    Args:
        model: an eval-mode network traceable by torch.fx (not traceable: :attr:`enabled` is False and
            calls run the model whole).
        image: the clean input (C, H, W), as the model expects it.
        full_fraction: a segment whose crop would cover at least this fraction of its input map, and every
            later one, runs on whole maps.
        memory_format: the layout of the stacked crops (channels-last is faster for oneDNN on the CPU).

    Call it with a batch (n, C, H, W) of copies; returns the model's output for the batch.
    """

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        *,
        full_fraction: float = 0.7,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.model, self.image, self.full_fraction, self.memory_format = model, image, full_fraction, memory_format
        self.reason = ""
        self.segments: list[_Segment] = []
        self.clean_maps: list[torch.Tensor] = []
        try:
            self._plan()
        except (_Unsupported, fx.proxy.TraceError, TypeError, NotImplementedError, RuntimeError) as error:
            self.segments, self.reason = [], str(error) or type(error).__name__
        self.enabled = any(s.geometry is not None for s in self.segments)
        if not self.enabled and not self.reason:
            self.reason = "no spatially local stage before the first global operation"

    def _plan(self) -> None:
        from torch.fx.passes.shape_prop import ShapeProp

        if self.model.training:  # batch-statistics BatchNorm and dropout would differ between crops and copies
            raise _Unsupported("the model is in training mode; call .eval() first")
        traced = self.model if isinstance(self.model, fx.GraphModule) else fx.symbolic_trace(self.model)
        placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise _Unsupported(f"the model takes {len(placeholders)} inputs")
        batch = self.image.unsqueeze(0).contiguous(memory_format=self.memory_format)
        with torch.no_grad():
            ShapeProp(traced).propagate(batch)
        nodes = list(traced.graph.nodes)
        output = next(n for n in nodes if n.op == "output").args[0]
        if not isinstance(output, fx.Node):
            raise _Unsupported("the model returns several values")
        cuts = _cuts(traced.graph)
        if cuts[-1] is not output:
            cuts.append(output)

        # Geometry of each segment between consecutive cuts; stop at the first that is not spatially local.
        pieces: list[tuple[fx.Node, fx.Node, Geometry | None]] = []
        local = True
        for start, end in itertools.pairwise(cuts):
            geometry = None
            if local:
                geometries: dict[fx.Node, Geometry | None] = {start: _IDENTITY}
                try:
                    for n in nodes[nodes.index(start) + 1 : nodes.index(end) + 1]:
                        geometries[n] = _node_geometry(n, traced, geometries)
                    geometry = geometries[end]
                except _Unsupported as error:
                    self.reason = f"incremental up to {start.name}; {error}"
                    local = False
            pieces.append((start, end, geometry))
        # Merge element-wise pieces (identity geometry) into the piece before: a ReLU after a convolution is one
        # segment, and so is everything after the last spatially local piece.
        merged: list[list] = []
        for start, end, geometry in pieces:
            previous = merged[-1][2] if merged else _IDENTITY
            element_wise = previous is not None and geometry == _IDENTITY
            if merged and (element_wise or previous is geometry is None):
                merged[-1][1] = end  # the composite keeps the earlier piece's geometry
            else:
                merged.append([start, end, geometry])
        for start, end, geometry in merged:
            in_shape, out_shape = _shape(start), _shape(end)
            module = _extract(traced, nodes, start, end)
            if geometry is not None and (len(in_shape) != 4 or len(out_shape) != 4):
                geometry = None
            sizes = (tuple(in_shape[2:]), tuple(out_shape[2:])) if geometry is not None else ((0, 0), (0, 0))
            self.segments.append(_Segment(module, geometry, sizes[0], sizes[1]))
        # The clean image's map at every cut.
        with torch.no_grad():
            value = batch
            self.clean_maps = [value]
            for segment in self.segments:
                value = segment.module(value)
                self.clean_maps.append(value)

    @torch.no_grad()
    def plain(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch.contiguous(memory_format=self.memory_format))

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.plain(batch)
        n = batch.shape[0]
        changed = (batch != self.image.unsqueeze(0)).any(dim=1)  # (n, H, W)
        rows, cols = changed.any(dim=2), changed.any(dim=1)  # (n, H), (n, W)
        boxes: list[tuple[int, int, int, int] | None] = []
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if not any(r):
                boxes.append(None)  # identical to the clean image
                continue
            r0, c0 = r.index(True), c.index(True)
            boxes.append((r0, len(r) - 1 - r[::-1].index(True), c0, len(c) - 1 - c[::-1].index(True)))
        # values[i]: copy i's map inside its box (rows r0..r1, columns c0..c1) at the current cut.
        values = [batch[i, :, b[0] : b[1] + 1, b[2] : b[3] + 1] if b else None for i, b in enumerate(boxes)]
        for k, segment in enumerate(self.segments):
            if segment.geometry is None:
                return self._finish(k, n, boxes, values)
            crop = self._crop_plan(segment, boxes)
            if crop is None:
                return self._finish(k, n, boxes, values)
            boxes, values = self._run_segment(k, segment, crop, boxes, values)
        raise AssertionError("the last segment is the network's output and is never spatially local")

    def _crop_plan(self, segment: _Segment, boxes) -> tuple[list, tuple[int, int]] | None:
        """Per copy: the affected output box and the crop's origin; the common crop size. None: run whole."""
        per_copy, lengths = [], [0, 0]
        for box in boxes:
            if box is None:
                per_copy.append(None)
                continue
            entry = []
            for axis, (a, b), n_in, n_out in zip(
                segment.geometry, (box[:2], box[2:]), segment.in_size, segment.out_size, strict=True
            ):
                j0 = max(0, -((axis.hi - a) // axis.stride))  # ⌈(a − hi)/S⌉
                j1 = min(n_out - 1, (b - axis.lo) // axis.stride)
                if j0 > j1:
                    entry = None
                    break
                need0, need1 = max(0, j0 * axis.stride + axis.lo), min(n_in - 1, j1 * axis.stride + axis.hi)
                start = need0 // axis.stride * axis.stride
                entry.append((j0, j1, start, need1))
            per_copy.append(entry)
            if entry:
                for d in range(2):
                    lengths[d] = max(lengths[d], entry[d][3] - entry[d][2] + 1)
        if not any(per_copy):
            return per_copy, (0, 0)
        size = []
        for d in range(2):
            n_in, stride = segment.in_size[d], segment.geometry[d].stride
            # Crop length L ≡ n_in (mod S) so a crop ending at the border also starts on the stride grid.
            slack = (n_in - lengths[d]) // stride * stride
            size.append(n_in - max(0, slack))
        if size[0] * size[1] >= self.full_fraction * segment.in_size[0] * segment.in_size[1]:
            return None
        return per_copy, tuple(size)

    def _run_segment(self, k: int, segment: _Segment, crop, boxes, values):
        per_copy, (height, width) = crop
        active = [i for i, entry in enumerate(per_copy) if entry]
        if not active:
            return [None] * len(boxes), [None] * len(boxes)
        clean = self.clean_maps[k][0]  # (C, H, W)
        stack = torch.empty(  # (active copies, C, crop height, crop width)
            (len(active), clean.shape[0], height, width),
            dtype=clean.dtype,
            device=clean.device,
            memory_format=self.memory_format,
        )
        origins = []
        for slot, i in enumerate(active):
            (_, _, y0, _), (_, _, x0, _) = per_copy[i]
            y0, x0 = min(y0, segment.in_size[0] - height), min(x0, segment.in_size[1] - width)
            origins.append((y0, x0))
            stack[slot].copy_(clean[:, y0 : y0 + height, x0 : x0 + width])
            r0, r1, c0, c1 = boxes[i]
            # The copy's changed values that fall inside the crop.
            a0, a1, b0, b1 = max(r0, y0), min(r1, y0 + height - 1), max(c0, x0), min(c1, x0 + width - 1)
            if a0 <= a1 and b0 <= b1:
                stack[slot, :, a0 - y0 : a1 - y0 + 1, b0 - x0 : b1 - x0 + 1].copy_(
                    values[i][:, a0 - r0 : a1 - r0 + 1, b0 - c0 : b1 - c0 + 1]
                )
        out = segment.module(stack)
        new_boxes: list = [None] * len(boxes)
        new_values: list = [None] * len(boxes)
        s_rows, s_cols = segment.geometry[0].stride, segment.geometry[1].stride
        for slot, i in enumerate(active):
            (j0, j1, _, _), (l0, l1, _, _) = per_copy[i]
            y0, x0 = origins[slot]
            oy, ox = y0 // s_rows, x0 // s_cols
            new_boxes[i] = (j0, j1, l0, l1)
            new_values[i] = out[slot, :, j0 - oy : j1 - oy + 1, l0 - ox : l1 - ox + 1]
        return new_boxes, new_values

    def _finish(self, k: int, n: int, boxes, values) -> torch.Tensor:
        """Assemble whole maps at cut k and run the remaining segments as usual."""
        clean = self.clean_maps[k]
        value = clean.expand(n, *clean.shape[1:]).contiguous(memory_format=self.memory_format)
        for i, box in enumerate(boxes):
            if box is not None:
                value[i, :, box[0] : box[1] + 1, box[2] : box[3] + 1].copy_(values[i])
        for segment in self.segments[k:]:
            value = segment.module(value)
        return value

    def verify(self, batch: torch.Tensor, tolerance: float = 1e-4) -> bool:
        """Whether the incremental output equals the plain forward on ``batch`` within float rounding:
        max |difference| ≤ ``tolerance`` × (1 + max |plain output|)."""
        if not self.enabled:
            return True
        fast, plain = self(batch).float(), self.plain(batch).float()
        return bool((fast - plain).abs().max() <= tolerance * (1 + plain.abs().max()))

    def describe(self) -> str:
        """Which segments run on crops, in words."""
        if not self.enabled:
            return f"plain forward passes ({self.reason})"
        local = [s for s in self.segments if s.geometry is not None]
        return f"{len(local)} of {len(self.segments)} segments on crops" + (f" ({self.reason})" if self.reason else "")


__all__ = ["AxisGeometry", "IncrementalForward"]
