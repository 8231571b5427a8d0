"""chexnet: a reproducible CheXNet-style chest X-ray classifier built as a DVC pipeline."""

__version__ = "0.1.0"
