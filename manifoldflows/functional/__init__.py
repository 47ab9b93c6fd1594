"""Pure math kernels returning ``(y, logabsdet)``, written once and reused by the layers."""

from . import elementwise

__all__ = ["elementwise"]
