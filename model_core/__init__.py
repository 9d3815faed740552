"""Core ML library of the radiology report generator: data, labels, models, training, metrics."""

__version__ = "0.1.0"
