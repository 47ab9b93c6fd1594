"""Conditioner networks."""

from .conv import ConvNet
from .mlp import MLP, concat_context
from .periodic import PeriodicEmbedding, PeriodicMADE, periodic_embedding

__all__ = [
    "MLP",
    "concat_context",
    "ConvNet",
    "PeriodicEmbedding",
    "PeriodicMADE",
    "periodic_embedding",
]
