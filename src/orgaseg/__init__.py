"""orgaseg: label-free organelle segmentation of volume electron microscopy."""

__version__ = "0.1.0"
