r"""Chart layers: changes of coordinates between spaces, with their volume terms.

* :class:`Stereographic`: ``Sphere(n) -> Euclidean(n)``, the stereographic projection from the
  north pole, ``log|det| = n log((1 + |y|^2) / 2)`` (surface measure to Lebesgue measure).
* :class:`AngleToCircle`: ``Torus(1) -> Sphere(1)``, ``theta -> (cos theta, sin theta)``;
  logdet 0, since both sides measure arc length.

Compose them with flows on the other side, e.g. ``Chain(euclidean_flow,
Inverse(Stereographic(n)))`` is a flow onto ``S^n`` from a base on ``R^n``.

References:
    D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020, arXiv:2002.02428
    (charts and the non-compact projection); M. C. Gemici, D. Rezende, S. Mohamed, "Normalizing
    Flows on Riemannian Manifolds", 2016, arXiv:1611.02304 (stereographic charts).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import positive_int
from ..core import Transform
from ..functional import sphere as kernels
from ..functional.circle import wrap
from ..spaces import Circle, Euclidean, Sphere

__all__ = ["Stereographic", "AngleToCircle"]


class Stereographic(Transform):
    r"""Stereographic projection ``S^n \ {north pole} -> R^n`` (a chart layer).

    Forward: ``y = x_(1:n) / (1 - x_(n+1))``; inverse: ``x = (2 y, |y|^2 - 1) / (|y|^2 + 1)``.
    The chart is conformal with ``dS^n = (2 / (1 + |y|^2))^n dy``, so

    .. math:: \log|\det J| = n \log\frac{1 + |y|^2}{2} = -n \log(1 - x_{n+1})

    (surface measure in, Lebesgue measure out;
    :func:`~manifoldflows.functional.sphere.stereographic`). ``1 - x_(n+1)`` is computed
    without cancellation near the pole; the pole itself maps to infinity, which the layer
    reports as a non-finite output. ``Inverse(Stereographic(n))`` maps ``R^n`` onto the sphere.

    Arguments:
        dim: sphere dimension (domain ``Sphere(n)``, codomain ``Euclidean(n)``).

    References:
        Gemici, Rezende, Mohamed 2016, arXiv:1611.02304; Rezende et al. 2020,
        arXiv:2002.02428.

    Example:
        >>> chart = Stereographic(2)
        >>> y, logdet = chart(torch.tensor([[0.0, 0.0, -1.0]]))  # south pole -> origin
        >>> y.tolist(), round(logdet.item(), 4)  # -2 log 2
        ([[0.0, 0.0]], -1.3863)
    """

    def __init__(self, dim: int):
        dim = positive_int(dim, "sphere dimension dim", "Stereographic")
        super().__init__(Sphere(dim), Euclidean(dim))
        self.n = dim

    def extra_repr(self) -> str:
        return f"dim={self.n}"

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return kernels.stereographic(x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return kernels.stereographic_inverse(y)


class AngleToCircle(Transform):
    r"""The angle chart of the circle: ``Torus(1) -> Sphere(1)``, ``theta -> (cos, sin)``.

    Both spaces carry arc length (the angle is the arc-length coordinate of the unit circle),
    so ``log|det J| = 0``: the tangent Jacobian ``(-sin, cos) . (-sin, cos) = 1``. The inverse is
    ``atan2(x_2, x_1)`` wrapped to ``[-pi, pi)``. Use it to run circle layers
    (:mod:`~manifoldflows.transforms.circular`) on ``Sphere(1)`` points, or sphere layers on
    angles.

    Example:
        >>> chart = AngleToCircle()
        >>> x, logdet = chart(torch.tensor([[0.0], [torch.pi / 2]]))
        >>> x.round(decimals=6).tolist(), logdet.tolist()
        ([[1.0, 0.0], [-0.0, 1.0]], [0.0, 0.0])
        >>> chart.inverse(x)[0].squeeze(-1).tolist()  # doctest: +ELLIPSIS
        [0.0, 1.5707...]
    """

    def __init__(self) -> None:
        super().__init__(Circle(), Sphere(1))

    def extra_repr(self) -> str:
        return ""

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        theta = x[..., 0]
        y = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
        return y, torch.zeros_like(theta)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        theta = wrap(torch.atan2(y[..., 1], y[..., 0]))
        return theta[..., None], torch.zeros_like(theta)
