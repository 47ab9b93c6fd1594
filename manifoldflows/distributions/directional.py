"""Directional distributions: von Mises (circle, torus), von Mises-Fisher (S^n), wrapped normals.

All densities are with respect to the Riemannian volume of the space: arc length on the circle,
Lebesgue measure on the angle box of the torus, surface measure on the sphere. The von
Mises-Fisher normaliser uses the Bessel functions of :mod:`manifoldflows.functional.bessel`;
mixtures of any distributions on one space are :class:`~manifoldflows.distributions.Mixture`
(:mod:`manifoldflows.distributions.mixture`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..functional.bessel import (  # noqa: F401 - log_bessel_ive: the old import path
    bessel_iv_ratio,
    log_bessel_iv,
    log_bessel_ive,
)
from ..functional.circle import wrap
from ..nn.conditioner import Conditioner
from ..spaces import Circle, Space, Sphere, Torus
from .base import Distribution

__all__ = [
    "sample_von_mises_angle",
    "sample_vmf_cosine",
    "VonMises",
    "VonMisesFisher",
    "WrappedNormal",
]

LOG_2PI = math.log(2.0 * math.pi)
TWO_PI = 2.0 * math.pi
_MAX_REJECTION_ROUNDS = 200


# --------------------------------------------------------------------------------------------
# Exact samplers
# --------------------------------------------------------------------------------------------
def _rejection_loop(
    kappa: Tensor, propose: Callable[[], tuple[Tensor, Tensor]], who: str
) -> Tensor:
    """Run ``propose() -> (value, accepted)`` until every entry has been accepted once."""
    out = torch.zeros_like(kappa)
    done = torch.zeros(kappa.shape, dtype=torch.bool, device=kappa.device)
    for _ in range(_MAX_REJECTION_ROUNDS):
        value, accept = propose()
        take = accept & ~done
        out = torch.where(take, value, out)
        done = done | take
        if bool(done.all()):
            return out
    raise RuntimeError(f"{who}: rejection sampler did not finish in {_MAX_REJECTION_ROUNDS} rounds")


def sample_von_mises_angle(kappa: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Exact samples ``theta ~ vM(0, kappa)`` in ``(-pi, pi]``, one per entry of ``kappa``.

    Best and Fisher's wrapped-Cauchy rejection algorithm, vectorised: with
    ``tau = 1 + sqrt(1 + 4 kappa^2)``, ``rho = (tau - sqrt(2 tau)) / (2 kappa)`` and
    ``r = (1 + rho^2) / (2 rho)``, draw ``z = cos(pi U_1)``, ``f = (1 + r z) / (r + z)``,
    ``c = kappa (r - f)`` and accept when ``c (2 - c) > U_2`` or ``log(c / U_2) + 1 - c >= 0``;
    then ``theta = sign(U_3 - 1/2) arccos f``. The quantities ``rho``, ``r - 1`` and ``1 - f``
    are evaluated in cancellation-free forms, so every ``kappa`` from ``1e-8`` (smaller values
    are raised to it) to ``1e8`` works in float32 and float64. The acceptance rate is above
    65% for every ``kappa``. No gradient flows to ``kappa``.

    Arguments:
        kappa: positive concentrations, any shape.
        generator: the random number generator (on ``kappa``'s device).

    Returns:
        Angles of the same shape, dtype and device as ``kappa``.

    References:
        Best and Fisher, "Efficient simulation of the von Mises distribution",
        J. R. Stat. Soc. C 28 (1979) 152-157.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> theta = sample_von_mises_angle(torch.full((4000,), 4.0, dtype=torch.float64), gen)
        >>> bool((theta.cos().mean() - 0.8635).abs() < 0.01)  # I_1(4) / I_0(4) = 0.8635
        True
    """
    k = kappa.detach().clamp_min(1e-8)
    s = torch.sqrt(1.0 + 4.0 * k * k)
    tau = 1.0 + s
    rho = 2.0 * k * tau / ((s + 1.0) * (tau + torch.sqrt(2.0 * tau)))
    r_minus_1 = (1.0 - rho) ** 2 / (2.0 * rho)
    r = 1.0 + r_minus_1

    def propose() -> tuple[Tensor, Tensor]:
        u = torch.rand((3, *k.shape), dtype=k.dtype, device=k.device, generator=generator)
        z = torch.cos(math.pi * u[0])
        one_minus_f = (r_minus_1 * (1.0 - z) / (r + z)).clamp(0.0, 2.0)
        c = k * (r_minus_1 + one_minus_f)
        accept = (c * (2.0 - c) > u[1]) | (torch.log(c / u[1]) + 1.0 - c >= 0.0)
        theta = 2.0 * torch.asin(torch.sqrt(0.5 * one_minus_f).clamp(max=1.0))
        return torch.where(u[2] < 0.5, -theta, theta), accept

    return _rejection_loop(k, propose, "sample_von_mises_angle")


def sample_vmf_cosine(
    kappa: Tensor, p: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Exact samples of ``W = <mu, x>`` for ``x ~ vMF(mu, kappa)`` on ``S^(p-1)`` (Wood 1994).

    With ``b = (p - 1) / (2 kappa + sqrt(4 kappa^2 + (p - 1)^2))`` and
    ``x0 = (1 - b) / (1 + b)``, draw ``Z ~ Beta((p-1)/2, (p-1)/2)`` (as ``(1 + t) / 2`` with ``t``
    the first coordinate of a uniform point of ``S^(p-1)``), ``W = (1 - (1+b) Z) / (1 - (1-b) Z)``
    and accept when ``kappa W + (p - 1) log(1 - x0 W) - c >= log U`` with
    ``c = kappa x0 + (p - 1) log(1 - x0^2)``. ``1 - W``, ``1 - x0`` and the acceptance test are
    evaluated in cancellation-free forms (accurate for large ``kappa`` in float32).

    Arguments:
        kappa: positive concentrations, any shape.
        p: ambient dimension (the sphere is ``S^(p-1)``), ``p >= 2``.
        generator: the random number generator.

    Returns:
        ``(w, one_minus_w)``, each of ``kappa``'s shape: the cosine and ``1 - w`` (accurate).

    References:
        Wood, "Simulation of the von Mises Fisher distribution", Commun. Stat. Simul. Comput.
        23 (1994) 157-164.

    Example:
        >>> w, _ = sample_vmf_cosine(torch.full((4000,), 10.0, dtype=torch.float64), 3,
        ...                          torch.Generator().manual_seed(0))
        >>> bool((w.mean() - (1 / math.tanh(10.0) - 0.1)).abs() < 0.01)  # A_3(10)
        True
    """
    k = kappa.detach().clamp_min(1e-8)
    m = float(p - 1)
    b = m / (2.0 * k + torch.sqrt(4.0 * k * k + m * m))
    one_minus_x0 = 2.0 * b / (1.0 + b)
    x0 = 1.0 - one_minus_x0
    log_1m_x0sq = torch.log(one_minus_x0) + torch.log1p(x0)

    def propose() -> tuple[Tensor, Tensor]:
        g = torch.randn((p, *k.shape), dtype=k.dtype, device=k.device, generator=generator)
        t = g[0] / torch.linalg.vector_norm(g, dim=0).clamp_min(torch.finfo(k.dtype).tiny)
        z = 0.5 * (1.0 + t)
        denom = 1.0 - (1.0 - b) * z
        one_minus_w = (2.0 * b * z / denom).clamp(0.0, 2.0)
        u = torch.rand(k.shape, dtype=k.dtype, device=k.device, generator=generator)
        # kappa (w - x0) + m (log(1 - x0 w) - log(1 - x0^2)) >= log u
        lhs = k * (one_minus_x0 - one_minus_w) + m * (
            torch.log(one_minus_x0 + x0 * one_minus_w) - log_1m_x0sq
        )
        return one_minus_w, lhs >= torch.log(u)

    one_minus_w = _rejection_loop(k, propose, "sample_vmf_cosine")
    return 1.0 - one_minus_w, one_minus_w


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _softplus_inverse(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


def _as_vector(value: float | Sequence[float] | Tensor, size: int, who: str, what: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, size)):
        raise ValueError(
            f"{who}: expected {what} as a scalar or a ({size},) tensor, got shape {tuple(t.shape)}"
        )
    return t.expand(size).clone()


def _positive(t: Tensor, who: str, what: str) -> Tensor:
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{who}: expected positive finite {what}, got {t.tolist()}")
    return t


def _register(module: nn.Module, name: str, value: Tensor, learnable: bool) -> None:
    if learnable:
        setattr(module, name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


# --------------------------------------------------------------------------------------------
# von Mises
# --------------------------------------------------------------------------------------------
class VonMises(Distribution):
    """Von Mises distribution on the circle, or a product of independent ones on the torus.

    .. math::
        p(x) = \\prod_{i=1}^{n} \\frac{\\exp(\\kappa_i \\cos(x_i - \\mu_i))}{2 \\pi I_0(\\kappa_i)}

    with respect to arc length (Lebesgue measure on the angle box). The log-normaliser uses
    ``log I_0(kappa) = log i0e(kappa) + kappa`` so that large concentrations are stable.
    Sampling is exact (Best and Fisher's algorithm, :func:`sample_von_mises_angle`);
    ``rsample`` is differentiable with respect to ``loc`` (not the concentration).

    The concentrations are parametrised through a softplus. With ``context_dim`` set, an MLP
    (zero-initialised last layer) maps the context to offsets of ``loc`` and of the
    pre-softplus concentrations.

    Arguments:
        space: a :class:`~manifoldflows.spaces.Torus` (``Circle()`` included) or the number of
            angles ``n`` (``1`` gives ``Circle()``).
        loc: mean angles, a scalar or an ``(n,)`` tensor.
        concentration: positive ``kappa``, a scalar or an ``(n,)`` tensor.
        learnable: whether ``loc`` and the concentration are parameters (else buffers).
        context_dim: context size for a conditional distribution.
        hidden: hidden sizes of the context network.

    References:
        Mardia and Jupp, "Directional Statistics", Wiley (2000), section 3.5.4.
        Best and Fisher, J. R. Stat. Soc. C 28 (1979) 152-157.

    Example:
        >>> q = VonMises(2, loc=torch.tensor([0.0, 1.0]), concentration=3.0)
        >>> x = q.sample((5,), generator=torch.Generator().manual_seed(0))
        >>> x.shape, q.log_prob(x).shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(
        self,
        space: Torus | int = 1,
        loc: float | Tensor = 0.0,
        concentration: float | Tensor = 1.0,
        *,
        learnable: bool = True,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64,),
    ):
        if isinstance(space, int) and not isinstance(space, bool) and space >= 1:
            space = Circle() if space == 1 else Torus(space)
        if not isinstance(space, Torus):
            raise ValueError(
                f"VonMises: expected a Torus, Circle() or a positive number of angles, got "
                f"{space!r}"
            )
        super().__init__(space, context_dim=context_dim)
        n = space.n
        self.n = n
        kappa = _positive(
            _as_vector(concentration, n, "VonMises", "concentration"), "VonMises", "concentrations"
        )
        _register(self, "loc", wrap(_as_vector(loc, n, "VonMises", "loc")), learnable)
        _register(self, "raw_concentration", _softplus_inverse(kappa), learnable)
        shapes = {"loc": (n,), "raw_concentration": (n,)}
        self.context_offsets = (
            None
            if context_dim is None
            else Conditioner(0, shapes, context_dim=context_dim, hidden=hidden)
        )

    def extra_repr(self) -> str:
        return repr(self.space)

    @property
    def concentration(self) -> Tensor:
        """``kappa = softplus(raw_concentration)``, shape ``(n,)``."""
        return F.softplus(self.raw_concentration)

    def parameters_for(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Mean angles and concentrations (with the context's batch shape when conditional)."""
        if self.context_offsets is None or context is None:
            return self.loc, self.concentration
        offset = self.context_offsets(None, context)
        return self.loc + offset["loc"], F.softplus(
            self.raw_concentration + offset["raw_concentration"]
        )

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        loc, kappa = self.parameters_for(context)
        log_norm = LOG_2PI + torch.log(torch.special.i0e(kappa))
        return (kappa * (torch.cos(x - loc) - 1.0) - log_norm).sum(-1)

    def _rsample(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        loc, kappa = self.parameters_for(context)
        kappa = kappa.expand(*shape, self.n)
        return wrap(loc + sample_von_mises_angle(kappa, generator))


# --------------------------------------------------------------------------------------------
# von Mises-Fisher
# --------------------------------------------------------------------------------------------
def _householder_to(mu: Tensor, y: Tensor, sign: Tensor) -> Tensor:
    """Apply the reflection ``H`` with ``H e_p = sign * mu`` to ``y`` (``e_p``: last axis)."""
    v = -sign[..., None] * mu
    v = torch.cat([v[..., :-1], v[..., -1:] + 1.0], dim=-1)  # v = e_p - sign * mu
    sq = (v * v).sum(-1, keepdim=True)
    return y - (2.0 / sq) * v * (v * y).sum(-1, keepdim=True)


class VonMisesFisher(Distribution):
    """Von Mises-Fisher distribution on the n-sphere ``S^n`` (any ``n >= 1``).

    .. math::
        p(x) = C_p(\\kappa) \\exp(\\kappa \\langle \\mu, x \\rangle), \\qquad
        \\log C_p(\\kappa) = (p/2 - 1) \\log \\kappa - (p/2) \\log 2\\pi
                              - \\log I_{p/2-1}(\\kappa), \\quad p = n + 1,

    with respect to the surface measure. The exponent is evaluated as
    ``-kappa |x - mu|^2 / 2 + kappa`` and the Bessel function exponentially scaled
    (:func:`log_bessel_ive`), so the density is accurate for concentrations from ``1e-6`` to
    beyond ``1e4`` and differentiable in ``kappa``. Sampling is exact: Wood's rejection
    algorithm for ``<mu, x>`` (:func:`sample_vmf_cosine`), a uniform direction orthogonal to the
    pole, and a Householder reflection taking the pole to ``mu``. ``rsample`` is differentiable
    with respect to ``loc`` (not the concentration). The mean is ``A_p(kappa) mu`` with
    ``A_p = I_(p/2) / I_(p/2-1)`` (:func:`bessel_iv_ratio`).

    ``loc`` is stored unnormalised and normalised on use; the concentration goes through a
    softplus. With ``context_dim`` set, an MLP (zero-initialised last layer) adds offsets to
    ``loc`` and to the pre-softplus concentration.

    Arguments:
        space: a :class:`~manifoldflows.spaces.Sphere` or its dimension ``n``.
        loc: ``(n+1,)`` mean direction (non-zero; normalised), default the north pole.
        concentration: positive ``kappa`` (scalar).
        learnable: whether ``loc`` and the concentration are parameters (else buffers).
        context_dim: context size for a conditional distribution.
        hidden: hidden sizes of the context network.

    References:
        Mardia and Jupp, "Directional Statistics", Wiley (2000), section 9.3.2.
        Wood, Commun. Stat. Simul. Comput. 23 (1994) 157-164.
        Davidson et al., "Hyperspherical variational auto-encoders", UAI 2018, arXiv:1804.00891.

    Example:
        >>> q = VonMisesFisher(2, concentration=10.0)
        >>> x = q.sample((3,), generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool(q.space.contains(x).all())
        (torch.Size([3, 3]), True)
    """

    def __init__(
        self,
        space: Sphere | int = 2,
        loc: Tensor | None = None,
        concentration: float | Tensor = 1.0,
        *,
        learnable: bool = True,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64,),
    ):
        if isinstance(space, int) and not isinstance(space, bool) and space >= 1:
            space = Sphere(space)
        if not isinstance(space, Sphere):
            raise ValueError(
                f"VonMisesFisher: expected a Sphere or a positive dimension n, got {space!r}"
            )
        super().__init__(space, context_dim=context_dim)
        p = space.n + 1
        self.p = p
        dtype = torch.get_default_dtype()
        if loc is None:
            loc = torch.zeros(p, dtype=dtype)
            loc[-1] = 1.0
        loc = torch.as_tensor(loc, dtype=dtype)
        if loc.shape != (p,) or not bool(torch.isfinite(loc).all()) or float(loc.norm()) == 0.0:
            raise ValueError(
                f"VonMisesFisher: expected a finite non-zero loc of shape ({p},), got "
                f"{loc.tolist()}"
            )
        kappa = torch.as_tensor(concentration, dtype=dtype)
        if kappa.numel() != 1:
            raise ValueError(
                f"VonMisesFisher: expected a scalar concentration, got shape {tuple(kappa.shape)}"
            )
        kappa = _positive(kappa.reshape(()).clone(), "VonMisesFisher", "concentration")
        _register(self, "loc", loc / loc.norm(), learnable)
        _register(self, "raw_concentration", _softplus_inverse(kappa), learnable)
        shapes = {"loc": (p,), "raw_concentration": ()}
        self.context_offsets = (
            None
            if context_dim is None
            else Conditioner(0, shapes, context_dim=context_dim, hidden=hidden)
        )

    def extra_repr(self) -> str:
        return repr(self.space)

    @property
    def concentration(self) -> Tensor:
        """``kappa = softplus(raw_concentration)`` (scalar)."""
        return F.softplus(self.raw_concentration)

    def parameters_for(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Unit mean direction ``(..., p)`` and concentration ``(...)``."""
        loc, raw = self.loc, self.raw_concentration
        if self.context_offsets is not None and context is not None:
            offset = self.context_offsets(None, context)
            loc, raw = loc + offset["loc"], raw + offset["raw_concentration"]
        return loc / torch.linalg.vector_norm(loc, dim=-1, keepdim=True), F.softplus(raw)

    def log_normalizer(self, kappa: Tensor) -> Tensor:
        """``log C_p(kappa) + kappa``: the normaliser of ``exp(kappa (<mu, x> - 1))``."""
        v = 0.5 * self.p - 1.0
        return v * torch.log(kappa) - 0.5 * self.p * LOG_2PI - log_bessel_ive(v, kappa)

    def mean_resultant_length(self, context: Tensor | None = None) -> Tensor:
        """``E<mu, x> = A_p(kappa) = I_(p/2)(kappa) / I_(p/2-1)(kappa)``."""
        return bessel_iv_ratio(0.5 * self.p - 1.0, self.parameters_for(context)[1])

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        mu, kappa = self.parameters_for(context)
        return -0.5 * kappa * ((x - mu) ** 2).sum(-1) + self.log_normalizer(kappa)

    def _rsample(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        mu, kappa = self.parameters_for(context)
        p = self.p
        kappa = kappa.expand(shape)
        w, one_minus_w = sample_vmf_cosine(kappa, p, generator)
        g = torch.randn(
            (*shape, p - 1), dtype=kappa.dtype, device=kappa.device, generator=generator
        )
        g = g / torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(
            torch.finfo(g.dtype).tiny
        )
        radius = torch.sqrt((one_minus_w * (2.0 - one_minus_w)).clamp_min(0.0))
        mu = mu.expand(*shape, p)
        sign = torch.where(mu[..., -1] >= 0, -1.0, 1.0).to(mu.dtype)
        y = torch.cat([radius[..., None] * g, (sign * w)[..., None]], dim=-1)
        x = _householder_to(mu, y, sign)
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


# --------------------------------------------------------------------------------------------
# Wrapped normal
# --------------------------------------------------------------------------------------------
def _chi_radius(dof: int, tol: float) -> float:
    """``R`` with ``P(chi_dof > R) <= tol`` (Laurent-Massart bound)."""
    t = math.log(1.0 / tol)
    return math.sqrt(dof + 2.0 * math.sqrt(dof * t) + 2.0 * t)


class WrappedNormal(Distribution):
    """Normal distribution in the tangent space at ``loc`` pushed through the exponential map.

    Sampling: ``c ~ N(0, diag(scale^2))`` in the coordinates of the orthonormal tangent basis
    ``B = space.tangent_basis(loc)``, ``u = B c``, ``x = exp_loc(u)``. The density is that of
    the pushforward (w.r.t. the Riemannian volume), summing over every preimage ``u`` of ``x``:

    .. math:: p(x) = \\sum_{u:\\ \\exp_\\mu(u) = x} \\mathcal N(c(u); 0, \\sigma^2)\\,
              |\\det d\\exp_\\mu(u)|^{-1}.

    * **Sphere** ``S^n`` (isotropic scalar ``scale`` only). With ``theta = d(mu, x)``, the
      preimages lie on the great circle through ``mu`` and ``x`` at signed radii
      ``s_k = theta + 2 pi k`` (``k`` in ``Z``), where ``|det d exp| = |sin theta / s_k|^(n-1)``:

      .. math::
          p(x) = (2\\pi\\sigma^2)^{-n/2} \\sum_{k} e^{-s_k^2 / 2\\sigma^2}
                 \\left|\\frac{s_k}{\\sin\\theta}\\right|^{n-1}.

      For ``n >= 2`` this density is (integrably) unbounded at ``mu`` and at ``-mu``, where
      whole spheres ``|u| = pi k`` of tangent vectors collapse to one point; ``log_prob`` is
      ``+inf`` exactly there. The sum is truncated to ``|k| <= K`` with
      ``K = ceil((R + pi) / 2 pi)`` and ``R = scale * sqrt(n + 2 sqrt(n t) + 2 t)``,
      ``t = log(1/tol)``: every omitted preimage has ``|u| > R``, so the omitted mass is at
      most ``P(|u| > R) <= tol`` (Laurent and Massart's chi-square bound). ``windings=K``
      fixes ``K`` instead.
    * **Torus** ``T^n`` (``scale`` scalar or ``(n,)``): the product of wrapped normals
      ``sum_k N(wrap(x - mu) + 2 pi k; 0, scale^2)`` per angle, truncated the same way
      (``t = log(n / tol)``, one degree of freedom).
    * **Any other space** with ``expmap``, ``logmap``, ``expmap_log_volume`` and
      ``tangent_basis`` whose exponential map is injective (Euclidean, hyperbolic):
      ``log p(x) = log N(B^T log_mu(x); 0, scale^2) - expmap_log_volume(mu, log_mu(x))``.

    ``loc`` is stored as given and projected with ``space.projx`` on use; the scale is
    parametrised by its logarithm. ``rsample`` is differentiable in ``loc`` and ``scale``.

    Arguments:
        space: the space (a manifold with an exponential map).
        loc: a point of ``space`` (``space.event_shape``).
        scale: positive standard deviation, scalar (or ``(dim,)`` off the sphere).
        learnable: whether ``loc`` and ``scale`` are parameters (else buffers).
        tol: bound on the probability mass dropped by truncating the wrapping sums.
        windings: number ``K`` of windings summed on each side (overrides ``tol``).

    References:
        Nagano et al., "A wrapped normal distribution on hyperbolic space for gradient-based
        learning", ICML 2019, arXiv:1902.02992.
        Laurent and Massart, "Adaptive estimation of a quadratic functional by model
        selection", Ann. Statist. 28 (2000) 1302-1338.

    Example:
        >>> q = WrappedNormal(Sphere(2), torch.tensor([0.0, 0.0, 1.0]), 0.3)
        >>> x, log_p = q.sample_and_log_prob((4,), generator=torch.Generator().manual_seed(0))
        >>> x.shape, log_p.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(
        self,
        space: Space,
        loc: Tensor,
        scale: float | Tensor = 1.0,
        *,
        learnable: bool = True,
        tol: float = 1e-12,
        windings: int | None = None,
    ):
        if not isinstance(space, Space):
            raise ValueError(f"WrappedNormal: expected a Space, got {type(space).__name__}")
        missing = [
            name
            for name in ("expmap", "logmap", "expmap_log_volume")
            if getattr(type(space), name) is getattr(Space, name)
        ]
        if missing:
            raise ValueError(
                f"WrappedNormal: expected a space with an exponential map, but {space!r} lacks "
                f"{', '.join(missing)}"
            )
        if not 0.0 < float(tol) < 1.0:
            raise ValueError(f"WrappedNormal: expected 0 < tol < 1, got {tol!r}")
        if windings is not None and (int(windings) != windings or windings < 0):
            raise ValueError(f"WrappedNormal: expected windings >= 0 or None, got {windings!r}")
        super().__init__(space)
        dtype = torch.get_default_dtype()
        loc = torch.as_tensor(loc, dtype=dtype).clone()
        if tuple(loc.shape) != tuple(space.event_shape):
            raise ValueError(
                f"WrappedNormal: expected loc of shape {tuple(space.event_shape)} on {space!r}, "
                f"got {tuple(loc.shape)}"
            )
        if not bool(torch.isfinite(loc).all()) or (
            isinstance(space, Sphere) and float(loc.norm()) == 0.0
        ):
            raise ValueError(f"WrappedNormal: expected a finite point loc, got {loc.tolist()}")
        scale = torch.as_tensor(scale, dtype=dtype).clone()
        sphere = isinstance(space, Sphere)
        if scale.dim() > 1 or (scale.dim() == 1 and (sphere or scale.shape[0] != space.dim)):
            raise ValueError(
                "WrappedNormal: expected a scalar scale"
                + ("" if sphere else f" or one of shape ({space.dim},)")
                + f" on {space!r}, got shape {tuple(scale.shape)}"
            )
        _positive(scale, "WrappedNormal", "scale")
        _register(self, "loc", space.projx(loc), learnable)
        _register(self, "log_scale", scale.log(), learnable)
        self.tol = float(tol)
        self.windings = None if windings is None else int(windings)

    def extra_repr(self) -> str:
        return f"{self.space!r}, tol={self.tol:g}, windings={self.windings}"

    @property
    def scale(self) -> Tensor:
        """Standard deviation(s) in tangent coordinates."""
        return self.log_scale.exp()

    def _num_windings(self, dof: int, tol: float) -> int:
        if self.windings is not None:
            return self.windings
        radius = float(self.scale.detach().max()) * _chi_radius(dof, tol)
        return math.ceil((radius + math.pi) / TWO_PI)

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        space, mu, log_scale = self.space, self.space.projx(self.loc), self.log_scale
        scale = log_scale.exp()
        if isinstance(space, Sphere):
            n = space.n
            theta = space.dist(mu, x)
            big_k = self._num_windings(n, self.tol)
            k = torch.arange(-big_k, big_k + 1, dtype=x.dtype, device=x.device)
            s = theta[..., None] + TWO_PI * k
            terms = -0.5 * (s / scale) ** 2
            if n > 1:
                # (n - 1) log|s_k / sin theta|; the k = 0 term via sinc (finite at theta = 0)
                ratio = torch.where(
                    k == 0,
                    -torch.log(torch.sinc(theta / math.pi))[..., None],
                    torch.log(s.abs()) - torch.log(torch.sin(theta))[..., None],
                )
                terms = terms + (n - 1) * ratio
            return torch.logsumexp(terms, -1) - n * (log_scale + 0.5 * LOG_2PI)
        if isinstance(space, Torus):
            d = wrap(x - mu)
            big_k = self._num_windings(1, self.tol / space.n)
            k = torch.arange(-big_k, big_k + 1, dtype=x.dtype, device=x.device)
            scale_b = scale.expand(space.n)[..., None]
            terms = -0.5 * ((d[..., None] + TWO_PI * k) / scale_b) ** 2
            log_p = torch.logsumexp(terms, -1) - log_scale.expand(space.n) - 0.5 * LOG_2PI
            return log_p.sum(-1)
        u = space.logmap(mu, x)
        basis = space.tangent_basis(mu)
        c = (u.flatten(u.dim() - space.event_ndim)[..., None, :] @ basis)[..., 0, :]
        log_n = -0.5 * (c / scale) ** 2 - log_scale - 0.5 * LOG_2PI
        log_n = log_n.sum(-1) if log_n.shape[-1] == space.dim else log_n
        return log_n - space.expmap_log_volume(mu, u)

    def _rsample(
        self, shape: tuple[int, ...], context: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        space = self.space
        mu = space.projx(self.loc)
        eps = torch.randn(
            (*shape, space.dim), dtype=mu.dtype, device=mu.device, generator=generator
        )
        c = eps * self.log_scale.exp()
        if isinstance(space, Torus):
            return wrap(mu + c)
        u = (space.tangent_basis(mu) @ c[..., None])[..., 0].reshape(*shape, *space.event_shape)
        return space.expmap(mu.expand(*shape, *space.event_shape), u)


# The old import path of Mixture (it lives in manifoldflows.distributions.mixture now).
from .mixture import Mixture  # noqa: E402, F401
