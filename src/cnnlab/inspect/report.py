"""``write_report(run_dir)``: one self-contained HTML page about a training run.

Results come first: the final metrics, the training curves, the confusion matrix, the most confident mistakes (and
the robustness curves of attacked runs); then the filters, activations and occlusion maps of a few test images and
the top patches of a few units; last the model summary (shapes, parameters, MACs, receptive fields) and the
configuration, folded (``<details>``) since it is long. Every picture is embedded as a base64 PNG data URI and the
page has no scripts and no links to fetch, so it opens offline, from e-mail, anywhere.

A section whose inputs are missing (no metrics.csv, dataset not available, Captum not installed...) is
replaced by a visible note saying which section and why; the rest of the report is still written.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cnnlab.errors import CheckpointError, CnnlabError, ConfigError
from cnnlab.inspect.page import REPORT_NAME, write_page
from cnnlab.inspect.page import figure as _figure
from cnnlab.inspect.page import img as _img
from cnnlab.inspect.page import png_file as _png_file
from cnnlab.inspect.page import table as _table


class _Skip(Exception):
    """A section that cannot be made; the message says why."""


class _Report:
    """The run, its model and data, loaded once and shared by the sections."""

    def __init__(self, run_dir: Path, device: str | torch.device, data_root: str | None, record=None):
        from cnnlab.inspect.views import ViewContext

        self.run_dir = run_dir
        self.ctx = ViewContext(record if record is not None else run_dir, device, run_dir)
        self.data_root = data_root
        self._data: tuple | None = None
        self.predictions = None  # test-split predictions: made by the confusion section, reused for mistakes

    def test_split(self):
        """(dataset, fitted uint8 test images, labels); raises _Skip if the dataset cannot be loaded."""
        if self._data is None:
            try:
                dataset = self.ctx.dataset(None, self.data_root)
                self.ctx.check_classes(dataset)
            except CnnlabError as error:
                raise _Skip(f"the dataset {self.ctx.record.data!r} is not available here ({error})") from None
            self._data = (dataset, *dataset.test.model_inputs(self.ctx.preprocessing))
        return self._data


# ---- sections -------------------------------------------------------------------------------------------------
def _section_config(r: _Report) -> str:
    path = r.run_dir / "config.json"
    if path.is_file():
        record = json.loads(path.read_text())
        source = "config.json"
    else:
        kept = r.ctx.record.as_dict()
        record = {k: kept.get(k) for k in ("config", "model", "preprocessing", "versions", "git")}
        source = "the checkpoint (no config.json in the run directory)"
    config = record.get("config") or {}
    rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in config.items()]
    out = [
        f'<p class="note">From {html.escape(source)}.</p>',
        f"<details><summary>{len(rows)} settings</summary>{_table(['setting', 'value'], rows, left=2)}</details>",
    ]
    extra = []
    for key in ("model", "preprocessing", "data", "versions", "git", "device"):
        if record.get(key) is not None:
            value = record[key]
            extra.append([key, json.dumps(value) if not isinstance(value, str) else value])
    if extra:
        keys = ", ".join(row[0] for row in extra)
        out.append(f"<details><summary>the run record ({keys})</summary>")
        out.append(_table(["record", "value"], extra, left=2) + "</details>")
    return "".join(out)


def _section_results(r: _Report) -> str:
    """The last epoch's metrics beside the best epoch's — chosen on the validation split, as best.pt is (on the
    test error only for runs from before validation splits) — from the checkpoint's history."""
    history = r.ctx.record.history
    if not history:
        raise _Skip("the checkpoint holds no training history")
    last = history[-1]
    chosen_on = "val_error" if all("val_error" in row for row in history) else "test_error"
    best = min(history, key=lambda row: row.get(chosen_on, float("inf")))
    names = [
        ("val_error", "validation error", True),
        ("test_error", "test error", True),
        ("test_top5_error", "test top-k error", True),
        ("test_loss", "test loss", False),
        ("train_error", "train error", True),
        ("train_loss", "train loss", False),
    ]

    def shown(row: dict, key: str, percent: bool) -> str:
        value = row.get(key)
        return "" if value is None else f"{value:.2%}" if percent else f"{value:.4f}"

    rows = [[label, shown(last, key, pct), shown(best, key, pct)] for key, label, pct in names if key in last]
    chosen = "validation" if chosen_on == "val_error" else "test"
    headers = ["", f"last epoch ({int(last['epoch'])})", f"best {chosen} epoch ({int(best['epoch'])})"]
    seconds = sum(row.get("seconds", 0.0) for row in history)
    return _table(headers, rows) + f'<p class="note">{len(history)} epochs, {seconds:.1f} s of training.</p>'


def _section_summary(r: _Report) -> str:
    from cnnlab.inspect.fields import receptive_fields
    from cnnlab.inspect.summary import summarize

    summary = summarize(r.ctx.model, r.ctx.preprocessing.input_size)
    graph = receptive_fields(r.ctx.model, r.ctx.preprocessing.input_size)  # branches merged, not chained
    rows = []
    for row in summary.rows:
        rf = graph.fields.get(row.name, row.receptive_field) if graph.exact else row.receptive_field
        rows.append(
            [
                row.name,
                row.kind,
                "×".join(map(str, row.output_shape)) if row.output_shape else "-",
                f"{row.trainable:,}",
                f"{row.fixed:,}" if row.fixed else "",
                f"{row.macs:,}" if row.macs else "",
                str(rf.size) if rf else "all",
                str(rf.jump) if rf else "",
                f"{rf.start:g}" if rf else "",
            ]
        )
    rows.append(["total", "", "", f"{summary.trainable:,}", f"{summary.fixed:,}", f"{summary.macs:,}", "", "", ""])
    headers = ["layer", "type", "output", "params", "fixed", "MACs", "RF size", "RF jump", "RF start"]
    shape = "×".join(map(str, summary.input_shape))
    how = (
        "along the model's traced graph (parallel branches merged)"
        if graph.exact
        else "by chain arithmetic along the layers in the order they run (torch.fx could not trace the model)"
    )
    return (
        f'<p class="note">Input {shape}. MACs: multiply-adds per image; RF: receptive field in input pixels '
        f"(size, jump = stride product, start = centre of the first unit's field), computed {how}.</p>"
        + _table(headers, rows, left=2)
    )


def _section_curves(r: _Report) -> str:
    from cnnlab.inspect.curves import curves_figure
    from cnnlab.train.rundir import read_metrics

    metrics = r.run_dir / "metrics.csv"
    if metrics.is_file():
        rows, source = read_metrics(metrics), "metrics.csv"
    else:
        rows, source = list(r.ctx.record.history), "the checkpoint's history (no metrics.csv)"
    if not rows:
        raise _Skip("the run has no metrics.csv and its checkpoint holds no training history")
    image = _img(curves_figure(rows, f"{r.ctx.model_name} on {r.ctx.record.data or '?'}"), "training curves")
    last = rows[-1]
    text = (
        f"After {int(last['epoch'])} epochs: test error {last['test_error']:.2%}, train error "
        f"{last['train_error']:.2%} (from {source})."
    )
    return f"<figure>{image}<figcaption>{html.escape(text)}</figcaption></figure>"


def _section_robustness(r: _Report) -> str:
    """The curves already in the run directory: robustness.json/png (written after ``--adversarial`` training)
    and the figures of ``cnnlab attack RUN`` (attack-METHOD/robustness.png). Read, not recomputed."""
    import json

    parts = []
    table = r.run_dir / "robustness.json"
    if table.is_file():
        try:
            record = json.loads(table.read_text())
            method, entries = str(record["method"]), record["rows"]
            rows = [
                [f"{e['eps']:.3f}", f"{e['accuracy']:.2%}", f"{e['confidence']:.2%}", f"{e['linf']:.4f}"]
                for e in entries
            ]
        except (ValueError, KeyError, TypeError) as error:  # not what save_robustness writes
            raise _Skip(f"{table} is not a robustness table written by cnnlab ({error!r})") from None
        samples = entries[0].get("samples", 0) if entries else 0
        parts.append(_table(["ε", "accuracy", "mean confidence", "mean L∞"], rows))
        parts.append(f'<p class="note">{html.escape(method.upper())} on {samples:,} test images.</p>')
        if (r.run_dir / "robustness.png").is_file():
            parts.append(f"<figure>{_png_file(r.run_dir / 'robustness.png', 'robustness')}</figure>")
    for figure in sorted(r.run_dir.glob("attack-*/robustness.png")):
        caption = f"cnnlab attack ({figure.parent.name.removeprefix('attack-')})"
        parts.append(f"<figure>{_png_file(figure, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    if not parts:
        raise _Skip(
            "no robustness curve in the run directory: train with --adversarial, or run `cnnlab attack RUN_DIR`"
        )
    return "".join(parts)


def _section_confusion(r: _Report) -> str:
    from cnnlab.inspect.mistakes import confusion_matrix, predict, render_confusion

    dataset, images, labels = r.test_split()
    predictions = predict(r.ctx.model, images, labels, r.ctx.preprocessing)
    r.predictions = predictions
    matrix = confusion_matrix(predictions, len(r.ctx.classes))
    caption = f"{dataset.name} test split, {len(labels):,} images: {predictions.error:.2%} error."
    return _figure(render_confusion(matrix, r.ctx.classes), caption)


def _section_filters(r: _Report) -> str:
    from cnnlab.inspect.filters import filters, kernel_layers, render_filters

    layers = kernel_layers(r.ctx.model)
    if not layers:
        raise _Skip("the model has no convolution layers")
    out = []
    for i, layer in enumerate(layers[:4]):
        view = filters(r.ctx.model, layer)
        o, c, kh, kw = view.kernels.shape
        if view.mode == "norms":
            caption = f"{layer}: {o}×{c} kernels of {kh}×{kw}; L2 norm of each (output map, input map) kernel."
        else:
            caption = (
                f"{layer}: {o} kernels of {c}×{kh}×{kw}, each pixel one weight, min–max scaled per kernel "
                "(black = min, white = max)."
            )
        picture = render_filters(view, max_side=400 if i == 0 else 600, title=f"{r.ctx.model_name} {layer}")
        out.append(_figure(picture, caption))
    if len(layers) > 4:
        out.append(f'<p class="note">{len(layers) - 4} deeper convolution layers not shown.</p>')
    return "".join(out)


def _inputs(r: _Report, count: int):
    dataset, images, labels = r.test_split()
    count = min(count, len(labels))
    pixels = images[:count]
    x = r.ctx.preprocessing.normalize(pixels.to(r.ctx.device))
    return dataset, [(i, pixels[i], x[i], int(labels[i])) for i in range(count)]


def _section_activations(r: _Report, count: int) -> str:
    from cnnlab.inspect.activations import activations, render_activations

    dataset, items = _inputs(r, count)
    out = []
    for i, pixels, x, label in items:
        maps = activations(r.ctx.model, x)
        caption = f"{dataset.name} test image {i} (class {r.ctx.classes[label]}): every stage's output."
        out.append(_figure(render_activations(maps, pixels.float() / 255, max_channels=32), caption))
    return "".join(out)


def _section_transformer(r: _Report) -> str:
    from cnnlab.inspect.transformer import find_transformer, render_theta_history, render_transformer

    pre, transformer = r.ctx.preprocessing, find_transformer(r.ctx.model)
    _, items = _inputs(r, 8)
    inputs = torch.stack([x for _, _, x, _ in items])
    labels = [label for *_, label in items]
    out = [
        _figure(
            render_transformer(r.ctx.model, inputs, pre.mean, pre.std, r.ctx.classes, labels),
            "The first test images, each beside the spatial transformer's output (what the classifier sees), with "
            "the region of the input it samples outlined (Jaderberg et al. 2015, Figure 1).",
        )
    ]
    state = r.ctx.record.task_state()
    if "theta_history" in state:
        history = render_theta_history(transformer, state["theta_images"], state["theta_history"], pre.mean, pre.std)
        out.append(_figure(history, "The sampled region of the same validation images after every epoch."))
    return "".join(out)


def _section_occlusion(r: _Report, count: int, size: int | None, stride: int | None) -> str:
    from cnnlab.inspect._errors import MissingDependencyError
    from cnnlab.inspect.occlusion import occlusion, render_occlusion

    dataset, items = _inputs(r, count)
    out = []
    try:
        for i, pixels, x, label in items:
            result = occlusion(r.ctx.model, x, label, size=size, stride=stride, baseline=r.ctx.grey_baseline())
            caption = (
                f"{dataset.name} test image {i} (class {r.ctx.classes[label]}): a grey {result.size}×{result.size} "
                f"square at stride {result.stride}."
            )
            out.append(_figure(render_occlusion(result, pixels.float() / 255, r.ctx.classes, label), caption))
    except MissingDependencyError as error:
        raise _Skip(str(error)) from None
    return "".join(out)


def _section_patches(r: _Report, units: int) -> str:
    from cnnlab.inspect.hooks import default_spatial_layer
    from cnnlab.inspect.patches import render_top_patches, top_patches
    from cnnlab.inspect.views import searchable_split

    dataset, _, _ = r.test_split()
    layer = default_spatial_layer(r.ctx.model, r.ctx.preprocessing.input_size)
    images, _ = searchable_split(dataset, "train", []).model_inputs(r.ctx.preprocessing)
    result = top_patches(r.ctx.model, images, r.ctx.preprocessing, layer)
    caption = (
        f"Layer {layer}: for each of the first {min(units, len(result.channels))} of {len(result.channels)} channels, "
        f"the 9 {dataset.name} training images (of {result.images_seen:,}) that activate it most, cropped to the "
        f"unit's {result.receptive_field.size}×{result.receptive_field.size} receptive field."
    )
    return _figure(render_top_patches(result, max_units=units), caption)


def _section_mistakes(r: _Report, count: int) -> str:
    from cnnlab.inspect.mistakes import confident_mistakes, predict, render_mistakes

    dataset, images, labels = r.test_split()
    predictions = r.predictions or predict(r.ctx.model, images, labels, r.ctx.preprocessing)
    worst = confident_mistakes(predictions, count)
    if len(worst) == 0:
        return f'<p class="note">No mistakes on the {len(labels):,} test images.</p>'
    caption = f"The {len(worst)} wrong predictions with the highest probability, {dataset.name} test split."
    return _figure(render_mistakes(images, predictions, worst, r.ctx.classes), caption)


# ---- the page -------------------------------------------------------------------------------------------------
def write_report(
    run_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    data_root: str | None = None,
    images: int = 3,
    units: int = 8,
    mistakes: int = 16,
    occlusion_size: int | None = None,
    occlusion_stride: int | None = None,
    progress: Callable[[str], None] = lambda text: None,
) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path.

    Args:
        run_dir: a run directory written by ``cnnlab train`` (a checkpoint file's folder also works), or by
            ``cnnlab gan train`` (then :func:`cnnlab.generative.report.write_gan_report` writes the page).
        device: where to compute (``cpu``, ``auto``, ``cuda``...).
        data_root: where datasets live (default: ``$CNNLAB_DATA``, else ``~/.cache/cnnlab``).
        images: test images shown with activations and occlusion maps.
        units: units (channels) shown with their top patches.
        mistakes: confident mistakes shown.
        occlusion_size: occluder side in pixels (default: 1/7 of the image side); ``occlusion_stride``: its step.
        progress: called with a short line before each step ("confusion matrix (3/10)"); the CLI shows them.

    Raises:
        CheckpointError: the run directory has no readable checkpoint. ConfigError: a count below 1.
        Sections that lack their data are skipped with a note in the page, not raised.
    """
    for label, value, most in (("images", images, 32), ("units", units, 64), ("mistakes", mistakes, 256)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"The report's {label} must be a positive whole number, got {value!r}.")
        if value > most:  # one self-contained page: every picture is embedded in it
            raise ConfigError(f"The report shows at most {most} {label} (--{label}), got {value}.")
    run_dir = Path(run_dir)
    if run_dir.is_file():  # a checkpoint file stands for its run directory only if it is that run's checkpoint.pt
        from cnnlab.train import RunRecord

        RunRecord.load(run_dir)  # a clear error for a file that is no checkpoint
        latest = run_dir.parent / "checkpoint.pt"
        if not (latest.is_file() and os.path.samefile(run_dir, latest)):
            raise ConfigError(
                f"`cnnlab report` describes a whole run directory, and {run_dir} is not its checkpoint.pt; give the "
                f"run directory ({run_dir.parent}), or look at this one checkpoint with `cnnlab viz`."
            )
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise CheckpointError(
            f"Run directory {str(run_dir)!r} does not exist; give a folder written by `cnnlab train`."
        )
    from cnnlab.train import RunRecord

    started = time.perf_counter()
    progress(f"loading {run_dir}")
    record = RunRecord.load(run_dir)  # read once, for either kind of page
    if record.task == "gan":  # a GAN run's page: its losses, failures and sample grids over time
        from cnnlab.generative.report import write_gan_report

        return write_gan_report(record, progress)
    r = _Report(run_dir, device, data_root, record)
    torch.manual_seed(0)  # nothing here is random today; fixed anyway so a report never varies between runs
    sections: list[tuple[str, Callable[[], str]]] = [
        ("Final metrics", lambda: _section_results(r)),
        ("Training curves", lambda: _section_curves(r)),
        ("Confusion matrix", lambda: _section_confusion(r)),
        ("Most confident mistakes", lambda: _section_mistakes(r, mistakes)),
        ("Filters", lambda: _section_filters(r)),
        ("Activations", lambda: _section_activations(r, images)),
        ("Occlusion", lambda: _section_occlusion(r, images, occlusion_size, occlusion_stride)),
        ("Top patches", lambda: _section_patches(r, units)),
        ("Model summary", lambda: _section_summary(r)),
        ("Configuration", lambda: _section_config(r)),
    ]
    adversarial = r.ctx.record.config.get("adversarial")
    if adversarial or (run_dir / "robustness.json").is_file() or any(run_dir.glob("attack-*/robustness.png")):
        # only runs that were attacked or trained so; a result, so beside the others
        sections.insert(4, ("Robustness", lambda: _section_robustness(r)))
    if "transformer" in r.ctx.model.stage_names:  # spatial transformer networks: what the transformer does
        sections.insert(4, ("Spatial transformer", lambda: _section_transformer(r)))
    body, skipped = [], []
    for number, (title, make) in enumerate(sections, 1):
        progress(f"{title.lower()} ({number}/{len(sections)})")
        try:
            content = make()
        except (_Skip, CnnlabError) as reason:
            skipped.append(title)
            content = f'<p class="skip"><strong>{html.escape(title)} skipped:</strong> {html.escape(str(reason))}</p>'
        body.append((title, content))
    history = r.ctx.record.history
    result = (
        f"test error {history[-1]['test_error']:.2%} after {int(history[-1]['epoch'])} epochs"
        if history
        else "no epochs"
    )
    from cnnlab import __version__

    header = (
        f"<h1>{html.escape(r.ctx.model_name)} on {html.escape(str(r.ctx.record.data or '?'))}</h1>"
        f'<p class="meta">Run {html.escape(str(run_dir.resolve()))}: {html.escape(result)}. Report by cnnlab '
        f"{html.escape(__version__)} on {html.escape(time.strftime('%Y-%m-%d %H:%M'))}, "
        f"in {time.perf_counter() - started:.1f} s.</p>"
    )
    if skipped:
        header += f'<p class="skip">Skipped sections: {html.escape(", ".join(skipped))} (reasons below).</p>'
    target = write_page(run_dir / REPORT_NAME, f"{r.ctx.model_name} report", header, body)
    return target
