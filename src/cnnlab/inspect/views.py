"""One entry point for every view, for the command line: ``run_view(kind, checkpoint, images, ...)``.

>>> result = run_view("occlusion", "runs/lenet5-digits", ["seven.png"], size=8, stride=2)
>>> result.paths, result.notes
([PosixPath('runs/lenet5-digits/viz/occlusion-seven.png')], [])

Every view reads a cnnlab checkpoint (or run directory), rebuilds the model and its preprocessing from it, writes
PNGs to ``out_dir`` (default: the run directory's ``viz/`` folder: a command that reads a run writes into that run's
directory unless told otherwise) and returns their paths with notes for the user (an image that was resized or
converted, what a projection means for this model...). Views that look at single images take image files; without
any, they use the first ``count`` test images of the checkpoint's dataset (whose labels are then known). Options are
validated against the view's own list (:data:`VIEWS`), so a typo is an error, not ignored.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnlab.errors import CheckpointError, ConfigError, UnknownNameError
from cnnlab.inspect.grid import safe_name, save

if TYPE_CHECKING:
    from cnnlab.data import ImageDataset
    from cnnlab.train.record import RunRecord


@dataclass(frozen=True)
class ViewOption:
    """One option of a view: name (a keyword of :func:`run_view`, ``--name`` on the CLI), type, default, help."""

    name: str
    type: type
    default: object
    help: str
    choices: tuple[str, ...] | None = None
    minimum: int = 1  # for whole-number options: every count and size is at least 1 (a class index at least 0)
    maximum: int | None = None  # a count's bound: what one figure can show, and memory stays bounded


@dataclass(frozen=True)
class ViewSpec:
    """What a view needs and takes.

    Attributes:
        kind: the view's name (``cnnlab viz KIND``).
        help: one line for ``--help``.
        takes_images: reads image files (or, without any, ``count`` test images of the checkpoint's dataset).
        takes_layer: ``--layer`` is meaningful; ``takes_channel``: ``--channel`` is.
        options: its own options beyond layer and channel.
    """

    kind: str
    help: str
    takes_images: bool
    takes_layer: bool
    takes_channel: bool
    options: tuple[ViewOption, ...]
    run: Callable[..., list[Path]] = field(repr=False)


@dataclass
class ViewResult:
    """What :func:`run_view` wrote (``paths``) and what the user should know about it (``notes``)."""

    paths: list[Path]
    notes: list[str]


@dataclass
class InputImage:
    """One image as a view sees it.

    Attributes:
        name: for file names and captions (file stem, or ``test-<index>``).
        pixels: uint8 (C, H, W) fitted to the model's input (resized, padded).
        x: the model input (C, H, W), normalised, on the device.
        label: the true class if known (dataset images), else None.
    """

    name: str
    pixels: torch.Tensor
    x: torch.Tensor
    label: int | None

    @property
    def display(self) -> torch.Tensor:
        """(C, H, W) in [0, 1] for drawing: the pixels the model saw."""
        return self.pixels.float() / 255


# ---- options shared by several views --------------------------------------------------------------------------
MAX_IMAGES = 64  # images one view draws in one call: each is a figure held in memory while it is drawn
_COUNT = ViewOption(
    "count",
    int,
    1,
    f"without IMAGE files: how many test images of the checkpoint's dataset (1-{MAX_IMAGES})",
    maximum=MAX_IMAGES,
)
_DATA = ViewOption("data", str, None, "dataset (default: the one the checkpoint was trained on)")
_DATA_ROOT = ViewOption(
    "data_root", str, None, "where datasets live (default: the run's own for its dataset, else $CNNLAB_DATA)"
)
_TARGET = ViewOption(
    "target", int, None, "class to explain (default: the true class if known, else the predicted)", minimum=0
)


class ViewContext:
    """A loaded checkpoint and everything views derive from it (dataset loaded once, on demand)."""

    def __init__(
        self,
        checkpoint: str | Path | RunRecord,
        device: str | torch.device,
        out_dir: str | Path | None = None,
        progress: Callable[[str], None] = lambda text: None,
    ):
        from cnnlab.train import resolve_device
        from cnnlab.train.record import RunRecord

        self.record = checkpoint if isinstance(checkpoint, RunRecord) else RunRecord.load(checkpoint)
        self.progress = progress
        self.checkpoint = self.record.path
        self.device = device if isinstance(device, torch.device) else resolve_device(str(device))
        self.model: nn.Module = self.record.build_model(self.device)
        self.preprocessing = self.record.preprocessing
        self.classes: list[str] = list(self.record.classes)
        self.out_dir = Path(out_dir) if out_dir is not None else self.record.run_dir / DEFAULT_VIZ_DIR
        self.notes: list[str] = []
        self._datasets: dict[tuple[str, str | None], ImageDataset] = {}

    @property
    def model_name(self) -> str:
        return self.record.model_name

    def dataset(self, data: str | None = None, data_root: str | None = None) -> ImageDataset:
        """The named dataset (default: the checkpoint's, its own split), checked against the model's channels."""
        name = data or self.record.data
        if (name, data_root) not in self._datasets:
            self._datasets[name, data_root] = self.record.dataset(name, data_root)
        return self._datasets[name, data_root]

    def check_classes(self, dataset: ImageDataset) -> None:
        self.record.check_classes(dataset)

    def inputs(
        self, images: Sequence[str | Path], count: int = 1, data: str | None = None, data_root: str | None = None
    ) -> list[InputImage]:
        """Image files (converted and resized as in training, with a note when that changed them), or without
        any, the first ``count`` test images of the dataset."""
        if images:
            loaded = [self._load_file(Path(p)) for p in images]
            seen: dict[str, int] = {}
            for item in loaded:  # two files with one stem (a/x.png, b/x.png) must not write one PNG
                seen[item.name] = seen.get(item.name, 0) + 1
                if seen[item.name] > 1:
                    item.name = f"{item.name}-{seen[item.name]}"
            return loaded
        if count < 1:
            raise ConfigError(f"count must be a positive integer, got {count}.")
        dataset = self.dataset(data, data_root)
        pixels, labels = dataset.test.model_inputs(self.preprocessing, count)  # decodes only these from a folder
        x = self.preprocessing.normalize(pixels.to(self.device))
        known = dataset.num_classes == len(self.classes)
        return [InputImage(f"test-{i}", pixels[i], x[i], int(labels[i]) if known else None) for i in range(len(labels))]

    def _load_file(self, path: Path) -> InputImage:
        from cnnlab.data.preprocessing import open_image

        pixels = self.preprocessing.load_image(path)  # raises ImageDecodeError for missing or undecodable files
        with open_image(path) as image:
            mode, (width, height) = image.mode, image.size
        pre = self.preprocessing
        wanted = "L" if pre.in_chans == 1 else "RGB"
        changes = []
        if mode != wanted:
            changes.append(f"converted from {mode} to {'grey' if wanted == 'L' else 'RGB'}")
        if (height, width) != tuple(pre.resize):
            changes.append(f"resized from {width}×{height} to {pre.resize[1]}×{pre.resize[0]}")
        if pre.pad:
            changes.append(f"padded by {pre.pad} px to {pre.input_size[2]}×{pre.input_size[1]}")
        if mode != wanted or (height, width) != tuple(pre.resize):  # padding alone is the expected form
            self.notes.append(f"{path}: {', '.join(changes)}, as the training images were.")
        x = pre.normalize(pixels.unsqueeze(0).to(self.device))[0]
        return InputImage(safe_name(path.stem), pixels, x, None)

    def grey_baseline(self) -> torch.Tensor:
        """(C,) the value of a mid-grey pixel (0.5) after normalisation: the occluder's colour."""
        pre = self.preprocessing
        return torch.tensor([(0.5 - m) / s for m, s in zip(pre.mean, pre.std, strict=True)], device=self.device)

    def each(self, items: list[InputImage], what: str) -> Iterator[InputImage]:
        """The items, with a progress line before each ("occlusion test-0 (1/3)")."""
        for number, item in enumerate(items, 1):
            self.progress(f"{what} {item.name} ({number}/{len(items)})")
            yield item

    def path(self, *parts: object) -> Path:
        return self.out_dir / ("-".join(safe_name(str(p)) for p in parts if p is not None and p != "") + ".png")

    def make_hookable(self) -> None:
        """Switch in-place ReLUs off (this model is our own copy); same results, and the hooks can see them."""
        changed = [n for n, m in self.model.named_modules() if isinstance(m, nn.ReLU) and m.inplace]
        for name in changed:
            self.model.get_submodule(name).inplace = False
        if changed:
            self.notes.append(
                f"{len(changed)} nn.ReLU(inplace=True) module(s) ({', '.join(changed[:3])}...) were switched to "
                "inplace=False for the backward hooks; the results are the same."
            )


DEFAULT_VIZ_DIR = "viz"  # inside the run directory, when no out_dir is given
MAX_SEARCHED_FILES = 10_000  # photos decoded into memory for a search: ~4.5 GB at 3×224×224 uint8


def searchable_split(dataset: ImageDataset, split: str, notes: list[str]):
    """The split to search for top patches: all of it, or for a large photo folder an evenly spaced sample of
    :data:`MAX_SEARCHED_FILES` files (every class represented), since the search holds its images in memory."""
    from cnnlab.data import FileImageSet

    pool = getattr(dataset, split)
    if isinstance(pool, FileImageSet) and len(pool) > MAX_SEARCHED_FILES:
        step = -(-len(pool) // MAX_SEARCHED_FILES)
        notes.append(f"Searched every {step}th of the {len(pool):,} {split} files, to hold them in memory.")
        pool = FileImageSet(pool.paths[::step], pool.labels[::step])
    return pool


def _one_layer(kind: str, layer: str | Sequence[str] | None) -> str | None:
    if layer is None or isinstance(layer, str):
        return layer
    if len(layer) > 1:
        raise ConfigError(f"The {kind} view takes one --layer, got {len(layer)}: {', '.join(layer)}.")
    return layer[0] if layer else None


# ---- the views ------------------------------------------------------------------------------------------------
def _view_filters(ctx: ViewContext, images, layer, channel, *, scale: str, mode: str) -> list[Path]:
    from cnnlab.inspect.filters import filters, render_filters

    view = filters(ctx.model, _one_layer("filters", layer), scale=scale, mode=mode)
    if view.layer != view.qualified and layer is not None:
        ctx.notes.append(f"Showing {view.qualified}, the first layer with kernels in {view.layer!r}.")
    if view.mode != "norms":
        o, i, kh, kw = view.kernels.shape
        ctx.notes.append(
            f"{view.qualified}: {o} kernels of {i}×{kh}×{kw}; each pixel is one kernel weight, min–max scaled "
            f"{'per kernel' if scale == 'each' else 'over the layer'} (black = min, white = max)."
        )
    picture = render_filters(view, title=f"{ctx.model_name} {view.qualified}")
    return [save(picture, ctx.path("filters", view.qualified))]


def _view_activations(
    ctx: ViewContext, images, layer, channel, *, count: int, data, data_root, max_channels: int
) -> list[Path]:
    from cnnlab.inspect.activations import activations, render_activations
    from cnnlab.inspect.hooks import check_channel

    layers = [layer] if isinstance(layer, str) else list(layer or [])
    paths = []
    for item in ctx.each(ctx.inputs(images, count, data, data_root), "activations"):
        maps = activations(ctx.model, item.x, layers or None)
        if channel is not None:
            for amap in maps:
                check_channel(amap.layer, channel, amap.values.shape[0])
                amap.values = amap.values[channel : channel + 1]
        fig = render_activations(maps, item.display, max_channels, f"{ctx.model_name} activations for {item.name}")
        paths.append(save(fig, ctx.path("activations", item.name)))
    return paths


def _view_deconv(ctx: ViewContext, images, layer, channel, *, count: int, data, data_root) -> list[Path]:
    from cnnlab.inspect.deconv import deconvnet, render_deconv
    from cnnlab.inspect.hooks import default_spatial_layer

    ctx.make_hookable()
    layer = _one_layer("deconv", layer) or default_spatial_layer(ctx.model, ctx.preprocessing.input_size)
    paths = []
    for item in ctx.each(ctx.inputs(images, count, data, data_root), "deconv"):
        result = deconvnet(ctx.model, item.x, layer, channel)
        for note in result.notes:
            if note not in ctx.notes:
                ctx.notes.append(note)
        paths.append(
            save(render_deconv(result, item.display), ctx.path("deconv", layer, f"ch{result.channel}", item.name))
        )
    return paths


def _view_top_patches(
    ctx: ViewContext, images, layer, channel, *, k: int, split: str, data, data_root, batch_size: int, max_units: int
) -> list[Path]:
    from cnnlab.inspect.hooks import default_spatial_layer
    from cnnlab.inspect.patches import render_top_patches, top_patches

    if images:
        raise ConfigError("top-patches searches a dataset, not image files; use --data to choose the dataset.")
    layer = _one_layer("top-patches", layer) or default_spatial_layer(ctx.model, ctx.preprocessing.input_size)
    dataset = ctx.dataset(data, data_root)
    fitted, _ = searchable_split(dataset, split, ctx.notes).model_inputs(ctx.preprocessing)
    channels = [channel] if channel is not None else None
    result = top_patches(ctx.model, fitted, ctx.preprocessing, layer, channels, k=k, batch_size=batch_size)
    if channel is None and len(result.channels) > max_units:
        ctx.notes.append(f"Showing the first {max_units} of {len(result.channels)} channels; pick one with --channel.")
    ctx.notes.append(
        f"Searched {result.images_seen:,} {dataset.name} {split} images in {result.seconds:.2f} s on {ctx.device}."
    )
    ctx.notes.extend(result.notes)
    fig = render_top_patches(result, max_units=max_units)
    return [save(fig, ctx.path("top-patches", layer, f"ch{channel}" if channel is not None else ""))]


def _view_occlusion(
    ctx: ViewContext,
    images,
    layer,
    channel,
    *,
    count,
    data,
    data_root,
    size,
    stride,
    batch_size,
    precision,
    incremental,
    target,
) -> list[Path]:
    from cnnlab.inspect.occlusion import occlusion, render_occlusion

    paths = []
    for item in ctx.each(ctx.inputs(images, count, data, data_root), "occlusion"):
        follow = target if target is not None else item.label
        result = occlusion(
            ctx.model,
            item.x,
            follow,
            size=size,
            stride=stride,
            baseline=ctx.grey_baseline(),
            batch_size=batch_size,
            precision=precision,
            incremental={"auto": None, "on": True, "off": False}[incremental],
        )
        fig = render_occlusion(result, item.display, ctx.classes, item.label)
        paths.append(save(fig, ctx.path("occlusion", item.name)))
    return paths


def _attribution_view(method: str):
    def run(ctx: ViewContext, images, layer, channel, *, count, data, data_root, target) -> list[Path]:
        from cnnlab.inspect.attribution import guided_backprop, render_attributions, saliency

        if method == "guided-backprop":
            ctx.make_hookable()
        compute = saliency if method == "saliency" else guided_backprop
        paths = []
        for item in ctx.each(ctx.inputs(images, count, data, data_root), method):
            result = compute(ctx.model, item.x, target if target is not None else item.label)
            for note in result.notes:
                if note not in ctx.notes:
                    ctx.notes.append(note)
            fig = render_attributions([result], item.display, ctx.classes, f"{ctx.model_name}: {item.name}")
            paths.append(save(fig, ctx.path(method, item.name)))
        return paths

    return run


def _predictions(ctx: ViewContext, split: str, data, data_root, batch_size):
    from cnnlab.inspect.mistakes import predict

    dataset = ctx.dataset(data, data_root)
    ctx.check_classes(dataset)
    fitted, labels = getattr(dataset, split).model_inputs(ctx.preprocessing)
    return dataset, fitted, predict(ctx.model, fitted, labels, ctx.preprocessing, batch_size=batch_size)


def _view_confusion(ctx: ViewContext, images, layer, channel, *, split, data, data_root, batch_size) -> list[Path]:
    from cnnlab.inspect.mistakes import confusion_matrix, render_confusion

    dataset, _, predictions = _predictions(ctx, split, data, data_root, batch_size)
    matrix = confusion_matrix(predictions, len(ctx.classes))
    title = f"{ctx.model_name} on {dataset.name} {split}: {predictions.error:.2%} error ({len(predictions.labels):,})"
    return [save(render_confusion(matrix, ctx.classes, title), ctx.path("confusion", split))]


def _view_errors(ctx: ViewContext, images, layer, channel, *, count, split, data, data_root, batch_size) -> list[Path]:
    from cnnlab.inspect.mistakes import confident_mistakes, render_mistakes

    dataset, fitted, predictions = _predictions(ctx, split, data, data_root, batch_size)
    worst = confident_mistakes(predictions, count)
    if len(worst) == 0:
        ctx.notes.append(f"No mistakes on the {len(predictions.labels):,} {dataset.name} {split} images.")
    return [save(render_mistakes(fitted, predictions, worst, ctx.classes), ctx.path("errors", split))]


def _view_curves(ctx: ViewContext, images, layer, channel) -> list[Path]:
    from cnnlab.inspect.curves import plot_curves
    from cnnlab.train.rundir import read_metrics

    metrics = ctx.checkpoint.parent / "metrics.csv"
    if metrics.is_file():
        rows = read_metrics(metrics)
    else:
        rows = list(ctx.record.history)
        if rows:
            ctx.notes.append(f"No {metrics}; the curves come from the checkpoint's own history.")
    if not rows:
        raise CheckpointError(
            f"{ctx.checkpoint} has no training history and there is no metrics.csv beside it; curves need a run "
            "directory written by `cnnlab train`."
        )
    path = ctx.path("curves")
    path.parent.mkdir(parents=True, exist_ok=True)
    return [plot_curves(rows, path, f"{ctx.model_name} on {ctx.record.data or '?'}")]


def _view_transformer(ctx: ViewContext, images, layer, channel, *, count, data, data_root) -> list[Path]:
    from cnnlab.inspect.transformer import find_transformers, render_theta_history, render_transformer

    transformer, *others = find_transformers(ctx.model)  # a clear error before any data is loaded
    items = ctx.inputs(images, count, data, data_root)
    pre = ctx.preprocessing
    inputs = torch.stack([item.x for item in items])
    labels = [item.label for item in items]
    paths = [
        save(render_transformer(ctx.model, inputs, pre.mean, pre.std, ctx.classes, labels), ctx.path("transformer"))
    ]
    state = ctx.record.task_state()
    if "theta_history" in state:
        history = render_theta_history(transformer, state["theta_images"], state["theta_history"], pre.mean, pre.std)
        paths.append(save(history, ctx.path("transformer", "training")))
        if others:
            ctx.notes.append(f"θ over training is recorded for the first of the {1 + len(others)} transformers.")
    else:
        ctx.notes.append("This run recorded no θ over training (a run from before cnnlab tracked it): one figure only.")
    return paths


_SPLIT = ViewOption("split", str, "test", "dataset split: train or test", ("train", "test"))
_BATCH = ViewOption("batch_size", int, 512, "images per forward pass")

VIEWS: dict[str, ViewSpec] = {
    spec.kind: spec
    for spec in (
        ViewSpec(
            "filters",
            "first-layer kernels as tiled images (exact values); deeper layers: kernel norms as a heat map",
            False,
            True,
            False,
            (
                ViewOption(
                    "scale", str, "each", "min–max scale each kernel on its own, or all together", ("each", "all")
                ),
                ViewOption(
                    "mode",
                    str,
                    "auto",
                    "tiles, norms, or auto (tiles for 1 or 3 input maps)",
                    ("auto", "tiles", "norms"),
                ),
            ),
            _view_filters,
        ),
        ViewSpec(
            "activations",
            "feature maps of chosen layers (default: every stage) for an input, tiled, shapes in the captions",
            True,
            True,
            True,
            (_COUNT, _DATA, _DATA_ROOT, ViewOption("max_channels", int, 64, "channels shown per layer")),
            _view_activations,
        ),
        ViewSpec(
            "deconv",
            "Zeiler & Fergus deconvnet: one unit (default: the strongest) projected back to pixels, beside its patch",
            True,
            True,
            True,
            (_COUNT, _DATA, _DATA_ROOT),
            _view_deconv,
        ),
        ViewSpec(
            "top-patches",
            "the 9 dataset patches (receptive fields) that activate each unit of a layer most",
            False,
            True,
            True,
            (
                ViewOption("k", int, 9, "patches per unit"),
                ViewOption("split", str, "train", "dataset split to search: train or test", ("train", "test")),
                _DATA,
                _DATA_ROOT,
                ViewOption("batch_size", int, 1024, "images per forward pass"),
                ViewOption("max_units", int, 16, "units (channels) drawn"),
            ),
            _view_top_patches,
        ),
        ViewSpec(
            "occlusion",
            "a grey square slid over the image: drop of the class log-odds, most probable class, Captum attribution",
            True,
            False,
            False,
            (
                _COUNT,
                _DATA,
                _DATA_ROOT,
                ViewOption("size", int, None, "square side in pixels (default: 1/7 of the image side)"),
                ViewOption("stride", int, None, "step in pixels (default: size/4)"),
                ViewOption("batch_size", int, 32, "occluded copies per forward pass"),
                ViewOption(
                    "precision",
                    str,
                    "float32",
                    "float32, or bfloat16: ~2× faster on BF16 CPUs, less exact",
                    ("float32", "bfloat16"),
                ),
                ViewOption(
                    "incremental",
                    str,
                    "auto",
                    "compute early layers only where the square changes them: auto (CPU, images ≥ 112×112), on, off",
                    ("auto", "on", "off"),
                ),
                _TARGET,
            ),
            _view_occlusion,
        ),
        ViewSpec(
            "saliency",
            "|gradient| of the class score with respect to the pixels (Simonyan et al. 2013), via Captum",
            True,
            False,
            False,
            (_COUNT, _DATA, _DATA_ROOT, _TARGET),
            _attribution_view("saliency"),
        ),
        ViewSpec(
            "guided-backprop",
            "guided backpropagation of the class score to the pixels (Springenberg et al. 2014), via Captum",
            True,
            False,
            False,
            (_COUNT, _DATA, _DATA_ROOT, _TARGET),
            _attribution_view("guided-backprop"),
        ),
        ViewSpec(
            "confusion",
            "confusion matrix on a labelled split (rows: true class, columns: predicted)",
            False,
            False,
            False,
            (_SPLIT, _DATA, _DATA_ROOT, _BATCH),
            _view_confusion,
        ),
        ViewSpec(
            "errors",
            "the most confidently wrong images of a labelled split",
            False,
            False,
            False,
            (
                ViewOption("count", int, 16, "how many mistakes to show (1-256)", maximum=256),
                _SPLIT,
                _DATA,
                _DATA_ROOT,
                _BATCH,
            ),
            _view_errors,
        ),
        ViewSpec(
            "transformer",
            "spatial transformer models: inputs beside the transformer's output, the sampled region outlined, "
            "and where it looked after each epoch",
            True,
            False,
            False,
            (
                ViewOption("count", int, 8, "without IMAGE files: how many test images (1-16)", maximum=16),
                _DATA,
                _DATA_ROOT,
            ),
            _view_transformer,
        ),
        ViewSpec(
            "curves",
            "training and test loss and error per epoch, from the run directory",
            False,
            False,
            False,
            (),
            _view_curves,
        ),
    )
}


def view_list() -> str:
    """One line per view (name and help), for ``cnnlab viz --help``."""
    width = max(map(len, VIEWS))
    return "\n".join(f"  {spec.kind:<{width}}  {spec.help}" for spec in VIEWS.values())


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every view's own options to ``parser`` as ``--name`` flags (``--batch-size`` for ``batch_size``).

    The flags default to "not given" (``argparse.SUPPRESS``), so each view uses its own defaults, and
    :func:`run_view` rejects a flag that the chosen view does not take. Collect them with
    :func:`options_from_args`. The help of each flag names the views that take it and their defaults.
    """
    by_name: dict[str, dict[tuple[str, str], list[str]]] = {}  # name -> (help, default) -> views
    first: dict[str, ViewOption] = {}
    for kind, spec in VIEWS.items():
        for option in spec.options:
            first.setdefault(option.name, option)
            default = "" if option.default is None else f" (default: {option.default})"
            by_name.setdefault(option.name, {}).setdefault((option.help, default), []).append(kind)
    for name, groups in by_name.items():
        option = first[name]
        text = "; ".join(f"[{', '.join(kinds)}] {help_}{default}" for (help_, default), kinds in groups.items())
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"view_{name}",
            type=option.type,
            choices=option.choices,
            default=argparse.SUPPRESS,
            metavar=None if option.choices else name.upper(),
            help=text,
        )


def options_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The view options given on the command line (from :func:`add_view_arguments`), as keywords for run_view."""
    return {key[len("view_") :]: value for key, value in vars(args).items() if key.startswith("view_")}


def run_view(
    kind: str,
    checkpoint: str | Path,
    images: Sequence[str | Path] = (),
    layer: str | Sequence[str] | None = None,
    channel: int | None = None,
    out_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[str], None] = lambda text: None,
    **options: object,
) -> ViewResult:
    """Run one view on a checkpoint and write its PNG(s).

    Args:
        kind: one of :data:`VIEWS` (``filters``, ``activations``, ``deconv``, ``top-patches``, ``occlusion``,
            ``saliency``, ``guided-backprop``, ``confusion``, ``errors``, ``curves``).
        checkpoint: a checkpoint file or a run directory.
        images: image files for the views that take images; empty: the first ``count`` test images of the
            checkpoint's dataset.
        layer: qualified module or stage name (``features.c1.conv`` or ``c1``); ``activations`` takes several.
        channel: a channel of that layer (deconv, top-patches, activations).
        out_dir: where the PNGs go (created if needed); default: ``viz/`` in the checkpoint's run directory.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a ``torch.device``.
        progress: called with a short line before each step ("loading ...", "occlusion test-0 (1/3)").
        **options: the view's own options, see ``VIEWS[kind].options``; unknown ones are an error.

    Returns:
        The PNG paths written and notes for the user.

    Raises:
        CnnlabError: a bad kind, checkpoint, image, layer, channel or option, each with what to do instead.
    """
    from cnnlab.outputs import output_dir

    if kind not in VIEWS:
        raise UnknownNameError("view", kind, VIEWS)
    if out_dir is not None:
        output_dir(out_dir)  # a folder that can be written, before any work
    spec = VIEWS[kind]
    valid = {o.name: o for o in spec.options}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listing = ", ".join(valid) or "none"
        raise ConfigError(f"The {kind} view has no option {', '.join(map(repr, unknown))}. Its options: {listing}.")
    resolved = {}
    for name, option in valid.items():
        value = options.get(name, option.default)
        if value is not None and option.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"Option {name} of the {kind} view must be a whole number, got {value!r}.")
            if value < option.minimum:
                raise ConfigError(f"Option {name} of the {kind} view must be at least {option.minimum}, got {value}.")
            if option.maximum is not None and value > option.maximum:
                raise ConfigError(
                    f"Option {name} of the {kind} view must be at most {option.maximum}, got {value}: one call draws "
                    "a bounded number of figures; run the view again on other images for more."
                )
        if option.choices and value not in option.choices:
            raise ConfigError(f"Option {name} of the {kind} view must be one of {', '.join(option.choices)}.")
        resolved[name] = value
    if layer is not None and not spec.takes_layer:
        raise ConfigError(f"The {kind} view has no layer to choose; leave --layer out.")
    if channel is not None and not spec.takes_channel:
        raise ConfigError(f"The {kind} view has no channel to choose; leave --channel out.")
    if images and not spec.takes_images:
        raise ConfigError(f"The {kind} view does not read image files; leave the IMAGE arguments out.")
    progress(f"loading {checkpoint}")
    ctx = ViewContext(checkpoint, device, out_dir, progress)
    if out_dir is None:
        output_dir(ctx.out_dir)  # RUN_DIR/viz: checked as soon as the checkpoint says where the run is
    progress(f"{kind}: computing")
    paths = spec.run(ctx, list(images), layer, channel, **resolved)
    return ViewResult(paths, ctx.notes)
