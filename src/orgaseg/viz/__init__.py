"""Figures: label overlays and confusion-matrix plots, written as PNG without a display."""

from orgaseg.viz.colors import label_colors
from orgaseg.viz.confusion_plot import plot_confusion
from orgaseg.viz.overlay import overlay_figure

__all__ = ["label_colors", "overlay_figure", "plot_confusion"]
