"""Per-layer model summary: output shape, parameters, MACs/FLOPs and receptive field.

FLOPs come from ``torch.utils.flop_counter`` (it counts convolutions and matrix products: 2 FLOPs per
multiply-add), run on ``meta`` tensors so even large models cost nothing. MACs = FLOPs / 2. Receptive fields
use the convolution arithmetic of :mod:`cnnlab.layers.arithmetic` along the traced graph (branches merged).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.inspect.fields import chain_fields, receptive_fields
from cnnlab.layers.arithmetic import ReceptiveField
from cnnlab.models import check_input_shape


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...] | None  # without the batch dimension
    trainable: int
    fixed: int
    macs: int
    receptive_field: ReceptiveField | None  # None once the spatial layout is gone (after flatten)


@dataclass
class ModelSummary:
    model_name: str
    input_shape: tuple[int, int, int]
    rows: list[LayerRow]
    paper_params: int | None  # the registry's expected trainable count at default options
    paper_statement: str = ""  # the figure as the paper states it ("60 million"), if it states one
    # Trainable parameters of modules this forward pass does not run (GoogLeNet's auxiliary heads, used only in
    # training), by top-level module; the rows leave them out, the registry's expected count includes them.
    not_run: dict[str, int] = field(default_factory=dict)
    default_shape: bool = True  # built with the registry's default classes and input channels

    @property
    def all_trainable(self) -> int:
        """Every trainable parameter of the model: the rows' and those of modules the forward pass skips."""
        return self.trainable + sum(self.not_run.values())

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows)

    @property
    def fixed(self) -> int:
        return sum(r.fixed for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def _flops_by_module(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    meta = {
        n: torch.empty_like(t, device="meta")
        for n, t in itertools.chain(model.named_parameters(), model.named_buffers())
    }
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # batch norm in training mode refuses a batch of one at 1×1; the FLOPs are the same
    try:
        with FlopCounterMode(display=False) as counter:
            torch.func.functional_call(model, meta, (torch.empty(1, *input_shape, device="meta"),))
    finally:
        for module, training in modes:
            module.training = training
    prefix = type(model).__name__ + "."
    return {
        name[len(prefix) :]: int(sum(ops.values()))
        for name, ops in counter.get_flop_counts().items()
        if name.startswith(prefix)
    }


def default_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """The input a summary assumes when none is given: the registry's size for a zoo model (with the model's own
    channels), else the smallest square input every layer accepts (at least 32 px), with the first layer's
    channels."""
    from cnnlab import models
    from cnnlab.errors import InputSizeError

    name = getattr(model, "model_name", "")
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)), None)
    channels = getattr(model, "in_chans", None) or (first.in_channels if isinstance(first, nn.Conv2d) else 1)
    if name and name in models.list_models(include_aliases=True):
        return (channels, *models.get_model_info(name).input_size[1:])
    side = models.smallest_input_size(model, channels)
    if side is None:
        raise InputSizeError(f"No square input fits {type(model).__name__}; give the input shape (C, H, W).")
    return (channels, max(side, 32), max(side, 32))


def summarize(
    model: nn.Module, input_shape: tuple[int, int, int] | None = None, graph_fields: bool = True
) -> ModelSummary:
    """Summarise ``model`` for one input of shape (C, H, W) (default: :func:`default_input_shape`), layer by layer
    (leaf modules, executed order).

    Receptive fields follow the traced graph (:mod:`cnnlab.inspect.fields`), so residual and inception branches
    merge correctly; ``graph_fields=False`` (or a model torch.fx cannot trace) uses the chain arithmetic, exact
    for chain networks only.

    Raises:
        InputSizeError: if the model cannot take that input (naming the layer and the size that would work).
    """
    input_shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    traces = check_input_shape(model, input_shape)
    flops = _flops_by_module(model, input_shape)
    graph = None
    if graph_fields:
        field_map = receptive_fields(model, input_shape)
        graph = field_map.fields if field_map.exact else None
    chain = chain_fields(traces)
    rows: list[LayerRow] = []
    counted: set[str] = set()
    for trace, chained in zip(traces, chain, strict=True):
        module = trace.module
        first_call = trace.name not in counted  # a module called twice has its parameters counted once
        counted.add(trace.name)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad) if first_call else 0
        fixed = sum(p.numel() for p in module.parameters() if not p.requires_grad) if first_call else 0
        field = graph.get(trace.name) if graph is not None else chained
        rows.append(
            LayerRow(
                name=trace.name,
                kind=type(module).__name__,
                output_shape=trace.output_shape[1:] if trace.output_shape else None,
                trainable=trainable,
                fixed=fixed,
                macs=flops.get(trace.name, 0) // 2 if first_call else 0,
                receptive_field=field,
            )
        )
    from cnnlab import models

    name = getattr(model, "model_name", type(model).__name__)
    info = models.get_model_info(name) if name in models.list_models() else None
    seen = {id(p) for trace in traces for p in trace.module.parameters()}
    not_run: dict[str, int] = {}
    for param_name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:
            top = param_name.split(".")[0]
            not_run[top] = not_run.get(top, 0) + param.numel()
    default_shape = info is not None and (
        getattr(model, "num_classes", info.num_classes) == info.num_classes
        and getattr(model, "in_chans", info.input_size[0]) == info.input_size[0]
    )
    return ModelSummary(
        name,
        tuple(input_shape),
        rows,
        info.param_count if info else None,
        getattr(info, "paper_params", "") if info else "",
        not_run,
        default_shape,
    )


def parameter_verdict(summary: ModelSummary) -> list[str]:
    """Sentences comparing the trainable count with the registry's expected one and the paper's statement."""
    lines = []
    total = summary.all_trainable
    if summary.not_run:
        modules = ", ".join(summary.not_run)
        lines.append(
            f"Not run by this forward pass and not in the rows: {sum(summary.not_run.values()):,} trainable "
            f"parameters in {modules} (used only in training); {total:,} in all."
        )
    if summary.paper_params is None:
        return lines
    statement = summary.paper_statement.strip()
    if not summary.default_shape:
        lines.append(
            f"Trainable parameters {total:,} for this model's classes and input channels; the registry's "
            f"{summary.paper_params:,} is for its defaults, so the two are not compared."
        )
        return lines
    verdict = "matches" if summary.paper_params == total else "differs from"
    leading = re.match(r"[\d,]+", statement)
    if leading and leading.group().replace(",", "") == str(summary.paper_params):
        lines.append(f"Trainable parameters {total:,} {verdict} the paper's {summary.paper_params:,}.")
        return lines
    if not statement or statement.startswith("—"):  # not the paper's model: nothing the paper could state
        stated = ""
    elif statement.startswith("not"):  # "not stated (states 1.8×10⁹ multiply-adds)", "not in the paper"
        aside = re.search(r"\((?:states )?(.*)\)", statement)
        stated = "; the paper states no parameter count" + (f" (only {aside.group(1)})" if aside else "")
    else:
        stated = f"; the paper states {statement}"
    lines.append(
        f"Trainable parameters {total:,} {verdict} the expected {summary.paper_params:,}{stated} (see docs/models.md)."
    )
    return lines


def render_summary(summary: ModelSummary, console: object | None = None) -> None:
    """Print ``summary`` as a table with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    shape = "×".join(map(str, summary.input_shape))
    table = Table(title=f"{summary.model_name} — input {shape}", title_justify="left")
    table.add_column("layer", no_wrap=True)
    table.add_column("type", no_wrap=True)
    for header in ("output", "trainable", "fixed", "MACs", "FLOPs", "RF size", "RF jump", "RF start"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in summary.rows:
        rf = r.receptive_field
        table.add_row(
            r.name,
            r.kind,
            "×".join(map(str, r.output_shape)) if r.output_shape else "-",
            f"{r.trainable:,}",
            f"{r.fixed:,}" if r.fixed else "",
            f"{r.macs:,}" if r.macs else "",
            f"{2 * r.macs:,}" if r.macs else "",
            str(rf.size) if rf else "all",
            str(rf.jump) if rf else "",
            f"{rf.start:g}" if rf else "",
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        "",
        f"{summary.trainable:,}",
        f"{summary.fixed:,}" if summary.fixed else "",
        f"{summary.macs:,}",
        f"{summary.flops:,}",
    )
    console.print(table)  # type: ignore[attr-defined]
    lines = [
        "trainable / fixed = parameters updated by training / held constant (e.g. LeNet-5's RBF class codes).",
        "MACs = multiply-adds per image (from torch.utils.flop_counter: convolutions and matrix products); "
        "FLOPs = 2 × MACs.",
        "RF = receptive field in input pixels: size, jump (stride product), start (centre of the first unit's "
        "field, pixel i has centre i); 'all' after flattening.",
    ]
    lines += parameter_verdict(summary)
    for line in lines:
        console.print(line, markup=False)  # type: ignore[attr-defined]


def models_table(pattern: str = "*"):
    """A rich Table of the registered models matching ``pattern``: paper, year, input size, parameters."""
    from rich.table import Table

    from cnnlab import models
    from cnnlab.errors import ConfigError

    names = models.list_models(pattern)
    if not names and not any(c in pattern for c in "*?["):  # a plain word: an alias, or part of names
        aliased = models.list_models(include_aliases=True)
        names = [models.get_model_info(pattern).name] if pattern in aliased else models.list_models(f"*{pattern}*")
    if not names:
        raise ConfigError(f"No model matches {pattern!r}; `cnnlab models` lists them all.")
    table = Table(title="cnnlab models", title_justify="left")
    for column in ("name", "paper", "year", "input", "params", "description"):
        table.add_column(column, justify="right" if column in ("year", "params") else "left")
    for name in names:
        info = models.get_model_info(name)
        model = models.create(name, device="meta")  # shapes only: free even for large models
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        table.add_row(
            name, info.paper, str(info.year), "×".join(map(str, info.input_size)), f"{params:,}", info.description
        )
    return table
