"""Pure math kernels returning ``(y, logabsdet)``, written once and reused by the layers."""

from . import affine, elementwise, monotonic, planar, residual, sphere, splines

__all__ = ["affine", "elementwise", "monotonic", "planar", "residual", "sphere", "splines"]
