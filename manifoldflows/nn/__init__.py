"""Conditioner networks."""

from .conv import ConvNet
from .mlp import MLP, concat_context

__all__ = ["MLP", "concat_context", "ConvNet"]
