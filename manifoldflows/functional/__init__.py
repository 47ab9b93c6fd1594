"""Pure math kernels returning ``(y, logabsdet)``, written once and reused by the layers."""

from . import affine, bessel, circle, elementwise, monotonic, planar, residual, sphere, splines

__all__ = [
    "affine",
    "bessel",
    "circle",
    "elementwise",
    "monotonic",
    "planar",
    "residual",
    "sphere",
    "splines",
]
