r"""Sphere layers: diffeomorphisms of ``S^n`` (unit vectors in ``R^(n+1)``) for any ``n >= 1``.

Every layer maps ``Sphere(n)`` to itself and returns ``log|det J|`` between orthonormal tangent
bases, i.e. with respect to the surface measure of ``S^n``. The math lives in
:mod:`manifoldflows.functional.sphere` (Moebius maps, exponential-map flows, cylindrical
coordinates, the interval spline); the circle maps at the bottom of the recursive flow (and of
the circle Moebius layer) are element-wise maps of an angle from
:mod:`manifoldflows.transforms.maps`.

* :class:`SphereRotation`: ``y = R x`` with ``R = matrix_exp(A - A^T)`` (volume preserving).
* :class:`MoebiusSphere`: the Moebius map ``f_w`` of ``S^n`` (on the circle also convex
  combinations of ``K`` Moebius maps, Rezende et al. 2020).
* :class:`ExpMapRadial`: ``f(x) = exp_x(grad phi(x))`` for a sum of ``K`` radial potentials
  (Sei 2013; Rezende et al. 2020), inverted by Newton's method.
* :class:`RecursiveSphereFlow`: the recursive (cylindrical) flow of Rezende et al. 2020 for any
  ``n``: an interval spline on the height, then (conditioned on it) the same construction on
  ``S^(n-1)``, down to a circle flow on ``S^1``.

**Parameters.** Every layer gets its parameters from the package's one conditioner,
:class:`~manifoldflows.nn.conditioner.Conditioner`: without a context (and without features) it
holds the raw parameters themselves; with ``context_dim`` set they are the output of an MLP of
the context whose last layer starts at zero and whose last bias holds the initial raw values, so
a new conditional layer equals the unconditional one.

**Points of the sphere as parameters.** The learned centres of :class:`MoebiusSphere` and
:class:`ExpMapRadial` are points of ``S^n``, held as ``geoopt.ManifoldParameter`` on
:class:`geoopt.manifolds.Sphere` (:meth:`~manifoldflows.spaces.Sphere.manifold_parameter`):
``geoopt.optim.RiemannianAdam`` keeps them on the sphere, and plain optimisers still work
because the layers use ``projx`` of the stored value (the identity on the sphere; it also keeps
the layers valid when a test perturbs every parameter off the manifold). With a context, a
centre ``c`` becomes ``exp_c(P_c o(context))``: the exponential map at the learned centre of a
context-dependent offset ``o`` (from the conditioner, zero at initialisation) projected onto the
tangent space at ``c``. So the ManifoldParameter is the centre for the reference context
(``o = 0``), and the context moves it along geodesics.

:class:`SphereRotation` keeps its rotation as ``matrix_exp`` of a skew-symmetric matrix instead
of a ManifoldParameter on the orthogonal group: every value of the skew parameters is a rotation
(no projection is needed after a perturbation or an Euclidean step, and the reflections of
``O(n+1)`` are out of reach), a context adds offsets to the skew entries as for any raw
parameter, and for the small matrices of a sphere layer ``matrix_exp`` costs nothing.

The arithmetic of the sphere (``expmap``, ``logmap``, projections, tangent bases) is that of
:mod:`manifoldflows.functional.sphere`, shared with the space :class:`~manifoldflows.spaces.Sphere`.

References:
    D. J. Rezende, G. Papamakarios, S. Racaniere, M. S. Albergo, G. Kanwar, P. E. Shanahan,
    K. Cranmer, "Normalizing Flows on Tori and Spheres", ICML 2020, arXiv:2002.02428.
    S. Kato, P. McCullagh, "Some properties of a Cauchy family on the sphere derived from the
    Moebius transformations", Bernoulli 2020, arXiv:1510.07679.
    T. Sei, "A Jacobian inequality for gradient maps on the sphere and its application to
    directional statistics", 2013, arXiv:0906.0874.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import positive_int
from ..core import Transform
from ..functional import sphere as kernels
from ..functional.affine import soft_clamp
from ..nn.conditioner import Conditioner
from ..spaces import Sphere
from ..spaces.circle import ANGLE
from .maps import ElementwiseMap, make_map

__all__ = ["SphereRotation", "MoebiusSphere", "ExpMapRadial", "RecursiveSphereFlow"]


def _check_context_dim(who: str, context_dim: object) -> int | None:
    return None if context_dim is None else positive_int(context_dim, "context_dim", who)


def _sphere_dim(who: str, n: object) -> int:
    return positive_int(n, "sphere dimension dim", who)


def _moved_centres(centres: Tensor, offset: Tensor | None) -> Tensor:
    """``projx(c)``, or ``exp_c(P_c offset)`` with a context offset (see the module docstring)."""
    centres = kernels.projx(centres)
    if offset is None:
        return centres
    return kernels.projx(kernels.expmap(centres, kernels.proju(centres, offset)))


#: The angle ``theta = atan2(x_2, x_1)`` of a point of ``S^1``, as circle maps see it.


# --------------------------------------------------------------------------- rotation
class SphereRotation(Transform):
    r"""Learnable rotation ``y = R x`` of ``S^n``, ``R = matrix_exp(A - A^T)``; logdet 0.

    ``A`` is strictly upper triangular (``n (n+1) / 2`` free entries), so ``A - A^T`` is any
    skew-symmetric matrix and ``R`` any rotation in ``SO(n+1)`` (reached from the identity). A
    rotation is an isometry: ``log|det J| = 0`` with respect to the surface measure, and the
    inverse is ``R^T``. The skew parametrisation is kept on purpose instead of a
    ``geoopt.ManifoldParameter`` on the orthogonal group (see the module docstring): any value
    is a rotation, whatever an optimiser or a context does to it. Outputs are renormalised
    (``matrix_exp`` of a large skew matrix is orthogonal only to a few ulps times its norm).
    Stacked between :class:`RecursiveSphereFlow` layers it changes which axis is the "height".

    Arguments:
        dim: sphere dimension (points in ``R^(n+1)``).
        context_dim: context size; the conditioner's MLP then adds context-dependent offsets to
            ``A``.
        hidden, activation: that MLP's hidden sizes and activation.
        generator: if given, ``A`` starts at ``N(0, 1)`` entries (a random rotation, e.g. for
            presets); otherwise at zero (the identity).

    Inputs have shape ``(..., n+1)``; the logdet has shape ``(...)``.

    References:
        Rezende et al. 2020, arXiv:2002.02428 (rotations between recursive sphere flows).

    Example:
        >>> layer = SphereRotation(2, generator=torch.Generator().manual_seed(0))
        >>> x = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-6), float(logdet.abs().max())
        (True, 0.0)
    """

    def __init__(
        self,
        dim: int,
        *,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
        generator: torch.Generator | None = None,
    ):
        who = type(self).__name__
        dim = _sphere_dim(who, dim)
        context_dim = _check_context_dim(who, context_dim)
        super().__init__(Sphere(dim), context_dim=context_dim)
        self.n = dim
        m = dim * (dim + 1) // 2
        init = torch.zeros(m) if generator is None else torch.randn(m, generator=generator)
        self.conditioner = Conditioner(
            0,
            {"skew": (m,)},
            context_dim=context_dim,
            hidden=hidden,
            activation=activation,
            initial={"skew": init},
        )
        rows, cols = torch.triu_indices(dim + 1, dim + 1, offset=1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def matrix(self, context: Tensor | None = None) -> Tensor:
        """The rotation matrix ``R``, shape ``(..., n+1, n+1)`` (``...``: the context batch)."""
        skew = self.conditioner(None, context if self.context_dim is not None else None)["skew"]
        n1 = self.n + 1
        a = skew.new_zeros(*skew.shape[:-1], n1, n1)
        a[..., self._rows, self._cols] = skew
        return torch.linalg.matrix_exp(a - a.transpose(-1, -2))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = F.normalize((self.matrix(context) @ x[..., None])[..., 0], dim=-1)
        return y, x.new_zeros(y.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = F.normalize((self.matrix(context).transpose(-1, -2) @ y[..., None])[..., 0], dim=-1)
        return x, y.new_zeros(x.shape[:-1])


# --------------------------------------------------------------------------- Moebius
class MoebiusSphere(Transform):
    r"""Moebius map of ``S^n``: ``f_w(x) = (1 - |w|^2) / |x - w|^2 (x - w) - w``.

    The sphere-preserving inversion of Kato & McCullagh, which is Rezende et al.'s circle
    Moebius map for ``n = 1``. Its logdet w.r.t. the surface measure is
    ``n log((1 - |w|^2) / |x - w|^2)`` and ``f_w^{-1} = f_{-w}``
    (:func:`~manifoldflows.functional.sphere.moebius_sphere`).

    **Centre.** For ``n >= 2`` the centre is ``w = r_max s / sqrt(1 + s^2) d`` with a direction
    ``d in S^n`` (:attr:`direction`, a ``geoopt.ManifoldParameter`` that
    ``geoopt.optim.RiemannianAdam`` keeps on the sphere) and an unconstrained real ``s``
    (the conditioner's ``"radius"``, 0 at initialisation: the identity). Then
    ``1 - |w|^2 = (1 + (1 - r_max^2) s^2) / (1 + s^2)`` is evaluated without cancellation,
    ``|w| < r_max`` and the log-derivative is bounded by ``n log((1 + r_max)/(1 - r_max))``.
    The push-forward of the uniform distribution is the (unimodal) spherical Cauchy
    distribution centred at ``-w/|w|`` (at ``-d`` for ``s > 0``). With a context, ``s`` is an
    MLP of the context and the direction is ``exp_d(P_d o(context))`` (module docstring).

    **Components.** A convex combination of Moebius maps in the sense of Rezende et al. exists
    only on the circle, where the maps can be lifted to increasing functions of the angle and
    averaged. For ``n = 1`` the layer therefore works on the angle
    ``theta = atan2(x_2, x_1)`` with :class:`~manifoldflows.transforms.maps.MoebiusMap`
    (``components`` maps fixing ``-pi``, mixed, then rotated) and returns
    ``(cos theta', sin theta')`` (the angle chart has logdet 0: both sides are arc length). For
    ``n >= 2`` ``components`` must be 1: Moebius maps and rotations of ``S^n`` form a group, so
    compositions add no expressivity; interleave other layers (:class:`RecursiveSphereFlow`,
    :class:`ExpMapRadial`) instead. With a context, ``w`` is a function of the context (a
    conditional spherical Cauchy distribution). On the circle the parameters are those of the
    circle map, held by the conditioner.

    Arguments:
        dim: sphere dimension.
        components: number of Moebius maps mixed (``n = 1`` only).
        context_dim: context size (``None`` for an unconditional layer).
        hidden, activation: the context MLP's hidden sizes and activation.
        max_radius: bound ``r_max`` on ``|w|``, in ``(0, 1)``.

    Inputs have shape ``(..., n+1)``; the logdet has shape ``(...)``.

    References:
        Kato & McCullagh 2020, arXiv:1510.07679; Rezende et al. 2020, arXiv:2002.02428.

    Example:
        >>> layer = MoebiusSphere(2)
        >>> layer.direction.tolist()  # a ManifoldParameter on the sphere
        [0.0, 0.0, 1.0]
        >>> with torch.no_grad():
        ...     _ = layer.conditioner.free["radius"].fill_(2.0)  # the radius s
        >>> x = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
        >>> y, logdet = layer(x)
        >>> x2, logdet_inv = layer.inverse(y)
        >>> torch.allclose(x2, x, atol=1e-5), torch.allclose(logdet, -logdet_inv, atol=1e-4)
        (True, True)
    """

    def __init__(
        self,
        dim: int,
        *,
        components: int = 1,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        max_radius: float = 0.99,
    ):
        who = type(self).__name__
        dim = _sphere_dim(who, dim)
        components = positive_int(components, "number of components", who)
        context_dim = _check_context_dim(who, context_dim)
        if components > 1 and dim > 1:
            raise ValueError(
                f"{who}: expected components=1 on S^{dim}; a convex combination of Moebius maps is "
                f"only defined on the circle (n = 1), got components={components}. On S^n, "
                "n >= 2, Moebius maps and rotations form a group: interleave other layers instead"
            )
        if not 0.0 < max_radius < 1.0:
            raise ValueError(f"{who}: expected 0 < max_radius < 1, got {max_radius!r}")
        super().__init__(Sphere(dim), context_dim=context_dim)
        self.n, self.components, self.max_radius = dim, components, float(max_radius)
        self.circle_map: ElementwiseMap | None = None
        if dim == 1:
            self.circle_map = make_map(
                "moebius", ANGLE, components=components, max_radius=max_radius
            )
            shapes = dict(self.circle_map.shapes)
        else:
            north = torch.zeros(dim + 1)
            north[-1] = 1.0
            self.direction = self.domain.manifold_parameter(north)
            shapes = {"radius": ()}
            if context_dim is not None:
                shapes["offset"] = (dim + 1,)
        self.conditioner = Conditioner(
            0, shapes, context_dim=context_dim, hidden=hidden, activation=activation
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, components={self.components}"

    def centre(self, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(w, 1 - |w|^2)`` for ``n >= 2``, shapes ``(..., n+1)`` and ``(...)``."""
        raw = self.conditioner(None, context if self.context_dim is not None else None)
        direction = _moved_centres(self.direction, raw.get("offset"))
        s = raw["radius"]
        # With t = 1 / sqrt(1 + s^2): |w| = r_max |s| t and 1 - |w|^2 = t^2 + (1 - r_max^2)(s t)^2,
        # no cancellation and no overflow for any s.
        t = torch.hypot(torch.ones_like(s), s).reciprocal()
        st = s * t
        w = (self.max_radius * st)[..., None] * direction
        one_minus_w2 = t * t + (1.0 - self.max_radius**2) * st * st
        return w, one_minus_w2

    def _circle(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        params = self.conditioner(None, context)
        theta = torch.atan2(x[..., 1], x[..., 0])
        fn = self.circle_map.inverse if inverse else self.circle_map.forward
        out, logdet = fn(theta, params)
        return torch.stack([torch.cos(out), torch.sin(out)], dim=-1), logdet

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.circle_map is not None:
            return self._circle(x, context, inverse=False)
        w, a = self.centre(context)
        return kernels.moebius_sphere(x, w, a)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.circle_map is not None:
            return self._circle(y, context, inverse=True)
        w, a = self.centre(context)
        return kernels.moebius_sphere(y, -w, a)


# --------------------------------------------------------------------------- exponential map
class ExpMapRadial(Transform):
    r"""Exponential-map flow ``f(x) = exp_x(grad phi(x))`` with a sum of radial potentials.

    ``phi(x) = sum_k alpha_k / beta_k exp(beta_k (mu_k . x - 1))`` (Rezende et al. 2020,
    sec. 4.2, after Sei 2013): each component pushes points along great circles towards
    ``mu_k`` (by at most ``alpha_k`` radians), most strongly at geodesic distance of order
    ``beta_k^(-1/2)``. The constraints ``alpha_k >= 0``, ``sum_k alpha_k < 1`` and
    ``beta_k > 0`` make ``phi`` c-convex, hence ``f`` a diffeomorphism. Parametrisation:
    the centres ``mu_k`` are :attr:`centres`, a ``(K, n+1)`` ``geoopt.ManifoldParameter`` on the
    sphere (``geoopt.optim.RiemannianAdam`` keeps every row a unit vector; the layer uses
    ``projx`` of it, so plain optimisers work too); ``alpha = softmax([l_1, ..., l_K, 0])_(1..K)``
    (the extra zero logit keeps the sum below 1); ``log beta_k = soft_clamp(b_k, 7)`` (``beta``
    in about ``(1e-3, 1e3)``, so the map and its Newton inverse stay well conditioned). With a
    context, ``l`` and ``b`` are MLP outputs and each centre moves to
    ``exp_(mu_k)(P_(mu_k) o_k(context))`` (module docstring).

    Logdet: the closed-form ambient Jacobian of
    :func:`~manifoldflows.functional.sphere.expmap_radial` reduced to the tangent spaces (an
    ``(n+1) x (n+1)`` determinant, no basis needed). Inverse: damped Riemannian Newton
    iterations to machine precision with implicit-function gradients
    (:func:`~manifoldflows.functional.sphere.expmap_radial_inverse`).

    Arguments:
        dim: sphere dimension.
        components: number ``K`` of radial components.
        context_dim: context size; the conditioner's MLP then gives ``l``, ``b`` and the centre
            offsets ``o_k``.
        hidden, activation: the context MLP's hidden sizes and activation.
        generator: optional :class:`torch.Generator` for the random initial centres
            ``mu_k = m_k / |m_k|``, ``m_k ~ N(0, I)``.

    At initialisation ``l = 0`` (``alpha_k = 1 / (K + 1)``) and ``b = 0`` (``beta_k = 1``).

    References:
        Rezende et al. 2020, arXiv:2002.02428; Sei 2013, arXiv:0906.0874.

    Example:
        >>> layer = ExpMapRadial(2, components=3, generator=torch.Generator().manual_seed(0))
        >>> x = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
        >>> layer = layer.double()
        >>> y, logdet = layer(x)
        >>> x2, logdet_inv = layer.inverse(y)
        >>> torch.allclose(x2, x), torch.allclose(logdet, -logdet_inv)
        (True, True)
    """

    #: Soft bound on ``log beta``.
    LOG_BETA_BOUND = 7.0

    def __init__(
        self,
        dim: int,
        *,
        components: int = 4,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        generator: torch.Generator | None = None,
    ):
        who = type(self).__name__
        dim = _sphere_dim(who, dim)
        k = positive_int(components, "number of components", who)
        context_dim = _check_context_dim(who, context_dim)
        super().__init__(Sphere(dim), context_dim=context_dim)
        self.n, self.components = dim, k
        self.centres = self.domain.manifold_parameter(torch.randn(k, dim + 1, generator=generator))
        shapes = {"logits": (k,), "log_beta": (k,)}
        if context_dim is not None:
            shapes["offset"] = (k, dim + 1)
        self.conditioner = Conditioner(
            0, shapes, context_dim=context_dim, hidden=hidden, activation=activation
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, components={self.components}"

    def constrained_parameters(self, context: Tensor | None = None) -> dict[str, Tensor]:
        """``mu`` ``(..., K, n+1)``, ``alpha`` and ``beta`` ``(..., K)`` (``...``: context)."""
        raw = self.conditioner(None, context if self.context_dim is not None else None)
        mu = _moved_centres(self.centres, raw.get("offset"))
        logits = raw["logits"]
        padded = torch.cat([logits, torch.zeros_like(logits[..., :1])], dim=-1)
        alpha = torch.softmax(padded, dim=-1)[..., :-1]
        beta = torch.exp(soft_clamp(raw["log_beta"], self.LOG_BETA_BOUND))
        return {"mu": mu, "alpha": alpha, "beta": beta}

    def _params(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        p = self.constrained_parameters(context)
        return p["mu"], p["alpha"], p["beta"]

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return kernels.expmap_radial(x, *self._params(x, context))

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return kernels.expmap_radial_inverse(y, *self._params(y, context))


# --------------------------------------------------------------------------- recursive flow
class RecursiveSphereFlow(Transform):
    r"""Recursive (cylindrical) flow on ``S^n`` for any ``n`` (Rezende et al. 2020, sec. 4.1).

    **Coordinates.** ``x = (sqrt(1 - h^2) x', h)`` with height ``h = x_(n+1) in [-1, 1]`` and
    ``x' in S^(n-1)``; the surface measure factorises as

    .. math:: dS^n = (1 - h^2)^{(n-2)/2} \, dh \, dS^{n-1}

    (:mod:`manifoldflows.functional.sphere` derives it). Repeating on ``x'`` gives heights
    ``h_n, ..., h_2`` and a final angle ``theta`` on ``S^1``.

    **Map.** Following the paper's autoregressive construction, in the sampling direction: the
    top height goes through an interval flow, ``h_n' = g_n(h_n)``; then the point of
    ``S^(n-1)`` is transformed by the same construction *conditioned on* ``h_n'`` (and the
    context), and so on: level ``k`` uses an interval spline ``g_k`` whose parameters are
    functions of ``(context, h_n', ..., h_(k+1)')``, and the circle at the bottom a circle map
    (:mod:`~manifoldflows.transforms.maps`: circular spline or Moebius mixture, with a
    rotation) conditioned on all heights. Each ``g_k`` is a rational-quadratic spline of
    ``[-1, 1]`` onto itself with fixed end points and learnable positive end derivatives
    (:func:`~manifoldflows.functional.sphere.interval_spline`), so heights stay in ``(-1, 1)``;
    it is evaluated on the pair ``(1 + h, 1 - h)`` so no precision is lost at the poles. With
    the volume element above, the logdet w.r.t. the surface measure is

    .. math::

        \log|\det J| = \sum_{k=2}^{n} \Big[\log g_k'(h_k)
            + \tfrac{k-2}{2} \log\frac{1 - h_k'^2}{1 - h_k^2}\Big] + \log c'(\theta).

    In the density direction all heights of the data point are known, so every conditioner is
    evaluated once and the inverse is exact (closed-form spline and circle inverses). The map is
    a diffeomorphism away from the measure-zero set where some ``r_k = 0`` ("poles" of a level),
    where its derivative may be discontinuous; densities stay finite there. Stack layers with
    :class:`SphereRotation` in between so every axis gets to be a height.

    Arguments:
        dim: sphere dimension (``n = 1``: just the circle map on the angle).
        bins: bins of the interval splines (and of the circular spline).
        circle: the circle map on the angle, a name for
            :func:`~manifoldflows.transforms.maps.make_map` on an angle coordinate
            (``"spline"``: circular RQ spline plus rotation, ``"moebius"``: mixture of
            ``components`` Moebius maps plus rotation, ``"shift"``, ``"noncompact"``) or an
            :class:`~manifoldflows.transforms.maps.ElementwiseMap` of angles.
        components: Moebius components when ``circle="moebius"``.
        context_dim: context size (``None`` for an unconditional layer).
        hidden, activation: hidden sizes and activation of the conditioner MLPs.

    Parameters: one :class:`~manifoldflows.nn.conditioner.Conditioner` per level
    (:attr:`height_conditioners`, level ``n - j`` reads the ``j`` heights above it and the
    context; named parameters ``widths``, ``heights``, ``derivatives``) and one for the circle
    map (:attr:`circle_conditioner`, reading all ``n - 1`` heights and the context). Without a
    context the top level's conditioner has no inputs and holds its ``3 bins + 1`` numbers
    directly; every other one is an MLP whose last layer starts at zero, so the layer starts as
    the identity.

    References:
        Rezende et al. 2020, arXiv:2002.02428; Durkan et al. 2019, arXiv:1906.04032.

    Example:
        >>> layer = RecursiveSphereFlow(3, bins=4, hidden=(8,))
        >>> for p in layer.parameters():
        ...     _ = torch.nn.init.normal_(p, std=0.5)
        >>> x = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
        >>> layer = layer.double()
        >>> y, logdet = layer(x)
        >>> x2, logdet_inv = layer.inverse(y)
        >>> torch.allclose(x2, x), torch.allclose(logdet, -logdet_inv)
        (True, True)
    """

    def __init__(
        self,
        dim: int,
        *,
        bins: int = 8,
        circle: str | ElementwiseMap = "spline",
        components: int = 4,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
    ):
        who = type(self).__name__
        dim = _sphere_dim(who, dim)
        bins = positive_int(bins, "number of bins", who)
        components = positive_int(components, "number of components", who)
        context_dim = _check_context_dim(who, context_dim)
        if not isinstance(circle, (str, ElementwiseMap)):
            raise ValueError(
                f"{who}: expected circle= the name of a circle map or an ElementwiseMap of "
                f"angles, got {circle!r}"
            )
        try:
            circle_map = make_map(circle, ANGLE, bins=bins, components=components)
        except ValueError as err:
            raise ValueError(f"{who}: circle={circle!r} is not a circle map ({err})") from None
        super().__init__(Sphere(dim), context_dim=context_dim)
        self.n, self.bins, self.circle_map = dim, bins, circle_map
        options = {"context_dim": context_dim, "hidden": tuple(hidden), "activation": activation}
        spline_shapes = {"widths": (bins,), "heights": (bins,), "derivatives": (bins + 1,)}
        # level n - j reads the j heights above it (and the context)
        self.height_conditioners = nn.ModuleList(
            Conditioner(j, spline_shapes, **options) for j in range(dim - 1)
        )
        self.circle_conditioner = Conditioner(dim - 1, dict(circle_map.shapes), **options)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bins={self.bins}, circle={self.circle_map!r}"

    @staticmethod
    def _features(heights: list[Tensor]) -> Tensor | None:
        return torch.stack(heights, dim=-1) if heights else None

    def _height_params(
        self, j: int, heights: list[Tensor], context: Tensor | None
    ) -> dict[str, Tensor]:
        return self.height_conditioners[j](self._features(heights), context)

    def _circle_params(self, heights: list[Tensor], context: Tensor | None) -> dict[str, Tensor]:
        return self.circle_conditioner(self._features(heights), context)

    @staticmethod
    def _spline(
        a: Tensor, b: Tensor, params: dict[str, Tensor], inverse: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return kernels.interval_spline(
            a, b, params["widths"], params["heights"], params["derivatives"], inverse=inverse
        )

    @staticmethod
    def _height(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(a < b, a - 1.0, 1.0 - b)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b, theta = kernels.height_coordinates(x)
        logdet = x.new_zeros(x.shape[:-1])
        heights: list[Tensor] = []
        a_out, b_out = [], []
        for j in range(self.n - 1):
            params = self._height_params(j, heights, context)
            a2, b2, ld, lr = self._spline(a[..., j], b[..., j], params, inverse=False)
            level = self.n - j
            logdet = logdet + ld + 0.5 * (level - 2) * lr
            a_out.append(a2)
            b_out.append(b2)
            heights.append(self._height(a2, b2))
        theta2, ld = self.circle_map.forward(theta, self._circle_params(heights, context))
        logdet = logdet + ld
        y = kernels.from_height_coordinates(
            self._stack(a_out, a), self._stack(b_out, b), theta2.expand(logdet.shape)
        )
        return y, logdet

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b, theta = kernels.height_coordinates(y)
        logdet = y.new_zeros(y.shape[:-1])
        heights = [self._height(a[..., j], b[..., j]) for j in range(self.n - 1)]
        a_in, b_in = [], []
        for j in range(self.n - 1):
            params = self._height_params(j, heights[:j], context)
            a2, b2, ld, lr = self._spline(a[..., j], b[..., j], params, inverse=True)
            level = self.n - j
            logdet = logdet + ld + 0.5 * (level - 2) * lr
            a_in.append(a2)
            b_in.append(b2)
        theta2, ld = self.circle_map.inverse(theta, self._circle_params(heights, context))
        logdet = logdet + ld
        x = kernels.from_height_coordinates(
            self._stack(a_in, a), self._stack(b_in, b), theta2.expand(logdet.shape)
        )
        return x, logdet

    @staticmethod
    def _stack(cols: list[Tensor], like: Tensor) -> Tensor:
        if not cols:
            return like
        batch = torch.broadcast_shapes(*(c.shape for c in cols))
        return torch.stack([c.expand(batch) for c in cols], dim=-1)
