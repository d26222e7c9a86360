"""Figures: label overlays and confusion-matrix plots, written as PNG without a display."""

from orgaseg.viz.colors import class_colors, label_colors
from orgaseg.viz.confusion_plot import plot_confusion
from orgaseg.viz.overlay import overlay_figure

__all__ = ["class_colors", "label_colors", "overlay_figure", "plot_confusion"]
