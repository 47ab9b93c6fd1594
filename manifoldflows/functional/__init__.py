"""Pure math kernels returning ``(y, logabsdet)``, written once and reused by the layers."""

from . import affine, circle, elementwise, monotonic, planar, residual, sphere, splines

__all__ = [
    "affine",
    "circle",
    "elementwise",
    "monotonic",
    "planar",
    "residual",
    "sphere",
    "splines",
]
