"""encoder-clean: audit and clean pre-trained self-supervised image encoders of backdoors."""

__version__ = "0.1.0"
