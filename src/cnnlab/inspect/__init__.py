"""Looking inside: summaries, curves, filters, activations, deconvnet, top patches, occlusion, saliency, reports."""

from cnnlab.inspect.curves import plot_curves
from cnnlab.inspect.summary import LayerRow, ModelSummary, render_summary, summarize

__all__ = ["LayerRow", "ModelSummary", "plot_curves", "render_summary", "summarize"]

# ---- views: filters, activations, deconvnet, top patches, occlusion, attribution, mistakes; report ------------
from cnnlab.inspect._errors import MissingDependencyError, UnsupportedModelError
from cnnlab.inspect.activations import ActivationMap, activations, render_activations
from cnnlab.inspect.attribution import Attribution, guided_backprop, render_attributions, saliency
from cnnlab.inspect.deconv import DeconvProjection, deconvnet, render_deconv
from cnnlab.inspect.fields import FieldMap, receptive_fields
from cnnlab.inspect.filters import FilterView, filters, render_filters
from cnnlab.inspect.hooks import (
    layer_geometry,
    layer_names,
    layer_outputs,
    resolve_layer,
    without_inplace_relu,
)
from cnnlab.inspect.mistakes import (
    Predictions,
    confident_mistakes,
    confusion_matrix,
    predict,
    render_confusion,
    render_mistakes,
)
from cnnlab.inspect.occlusion import OcclusionMap, occlusion, render_occlusion
from cnnlab.inspect.patches import TopPatches, render_top_patches, top_patches
from cnnlab.inspect.report import write_report
from cnnlab.inspect.views import VIEWS, ViewResult, run_view

__all__ += [
    "VIEWS",
    "ActivationMap",
    "Attribution",
    "DeconvProjection",
    "FieldMap",
    "FilterView",
    "MissingDependencyError",
    "OcclusionMap",
    "Predictions",
    "TopPatches",
    "UnsupportedModelError",
    "ViewResult",
    "activations",
    "confident_mistakes",
    "confusion_matrix",
    "deconvnet",
    "filters",
    "guided_backprop",
    "layer_geometry",
    "layer_names",
    "layer_outputs",
    "occlusion",
    "predict",
    "receptive_fields",
    "render_activations",
    "render_attributions",
    "render_confusion",
    "render_deconv",
    "render_filters",
    "render_mistakes",
    "render_occlusion",
    "render_top_patches",
    "resolve_layer",
    "run_view",
    "saliency",
    "top_patches",
    "without_inplace_relu",
    "write_report",
]
