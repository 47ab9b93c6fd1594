"""Conditioner networks."""

from .mlp import MLP, concat_context

__all__ = ["MLP", "concat_context"]
