"""Looking inside: model summaries, training curves (and later filters, activations, deconvnet, occlusion)."""

from cnnlab.inspect.curves import plot_curves
from cnnlab.inspect.summary import LayerRow, ModelSummary, render_summary, summarize

__all__ = ["LayerRow", "ModelSummary", "plot_curves", "render_summary", "summarize"]
