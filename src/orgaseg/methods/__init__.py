"""Methods: named presets of an encoder, dense features and a clusterer (:data:`METHODS`)."""

from orgaseg.methods.table import METHODS, Method, get_method, method_names, thousandth_sample

__all__ = ["METHODS", "Method", "get_method", "method_names", "thousandth_sample"]
