r"""Planar, radial and Sylvester flows: residual maps ``z + (update)`` with exact logdets.

These are the flows of Rezende & Mohamed (2015) and van den Berg et al. (2018), written in the
latent -> data direction, ``y = f(z)``:

* :class:`PlanarFlow`: ``f(z) = z + u_hat tanh(w^T z + b)`` (a rank-one update);
* :class:`RadialFlow`: ``f(z) = z + beta (z - z0) / (alpha + |z - z0|)`` (expansion or
  contraction around ``z0``);
* :class:`SylvesterFlow`: ``f(z) = z + Q R tanh(R~ Q^T z + b)`` (a rank-``M`` update with
  orthonormal ``Q`` and triangular ``R``, ``R~``), in three kinds: ``"orthogonal"``,
  ``"householder"`` and ``"triangular"``.

Their forward pass and its log-determinant are cheap and exact. Each layer constrains its free
parameters so that the map is a bijection with a derivative bounded away from zero (a strict
margin of ``1e-3`` on the relevant ``> -1`` conditions), and each has an inverse: closed form
for the radial flow, a vectorised safeguarded Newton/bisection root search for the planar and
Sylvester flows (accurate to machine precision and differentiable, so ``Flow.log_prob`` trains
through it). The math lives in :mod:`manifoldflows.functional.planar`.

With ``context_dim`` set, a small MLP maps the context to offsets that are added to every raw
(unconstrained) parameter before the constraints are applied; its last layer starts at zero, so
a new conditional layer equals the unconditional one. Every layer starts as the identity.

References:
    D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
    arXiv:1505.05770.
    R. van den Berg, L. Hasenclever, J. M. Tomczak, M. Welling, "Sylvester Normalizing Flows for
    Variational Inference", UAI 2018, arXiv:1803.05649.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import positive_int
from ..functional import planar as kernels
from ..functional.affine import soft_clamp
from ..spaces import Euclidean
from .conditioned import ContextShiftedParameters
from .linear import _check_features

__all__ = ["PlanarFlow", "RadialFlow", "SylvesterFlow"]

#: Strict margin of the invertibility constraints (``w^T u_hat > -1 + MARGIN`` etc.): the
#: derivative along the critical direction never drops below ``MARGIN``.
MARGIN = 1e-3
#: Smallest ``alpha`` of the radial flow (``alpha = softplus(raw) + ALPHA_MIN``).
ALPHA_MIN = 1e-4
#: The log of the diagonal of ``R~`` in Sylvester flows is softly clamped to this bound.
LOG_SCALE_BOUND = 5.0
SYLVESTER_KINDS = ("orthogonal", "householder", "triangular")


def _check_hidden(owner: str, hidden: object) -> tuple[int, ...]:
    if not isinstance(hidden, Sequence) or isinstance(hidden, str):
        raise ValueError(f"{owner}: expected hidden to be a sequence of sizes, got {hidden!r}")
    return tuple(positive_int(h, "hidden size", owner) for h in hidden)


class _ResidualFlow(ContextShiftedParameters):
    """Shared machinery: raw parameters as ``nn.Parameter``s plus an optional context network.

    ``raw`` maps names to initial values. With ``context_dim`` set, an MLP (last layer zero)
    outputs one offset per raw entry; :meth:`_raw` returns the (broadcast) sums.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int | None,
        hidden: Sequence[int],
        activation: str,
        raw: dict[str, Tensor],
    ):
        owner = type(self).__name__
        d = _check_features(owner, dim)
        if context_dim is not None:
            context_dim = positive_int(context_dim, "context_dim", owner)
        hidden = _check_hidden(owner, hidden)
        super().__init__(Euclidean(d), context_dim=context_dim)
        self.features = d
        self._setup_raw(raw, context_dim, hidden, activation)


class PlanarFlow(_ResidualFlow):
    r"""Planar flow ``f(z) = z + u_hat tanh(w^T z + b)`` on ``R^d`` (Rezende & Mohamed 2015).

    The Jacobian is ``I + tanh'(w^T z + b) u_hat w^T``, so by the matrix determinant lemma::

        log|det J| = log(1 + tanh'(w^T z + b) w^T u_hat).

    **Invertibility.** ``f`` is a bijection iff ``w^T u_hat >= -1``. The free vector ``u`` is
    mapped to ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` (appendix A of the paper), with
    ``m`` = :func:`~manifoldflows.functional.planar.above_minus_one`, a smooth map onto
    ``(-1 + MARGIN, inf)`` that is the identity on ``[0, inf)`` (so ``u_hat = u`` whenever
    ``u`` already satisfies the constraint). Hence ``w^T u_hat > -1 + 1e-3`` for *any* raw
    parameters and the derivative of ``f`` along ``w`` is at least ``1e-3``.

    **Inverse.** No closed form, but a scalar problem: with ``alpha = w^T z``,
    ``w^T y = alpha + (w^T u_hat) tanh(alpha + b)`` is strictly increasing in ``alpha``. It is
    solved, for the whole batch at once, by a safeguarded Newton/bisection search on the
    bracket ``[w^T y - |w^T u_hat|, w^T y + |w^T u_hat|]`` to machine precision; then
    ``z = y - u_hat tanh(alpha + b)``. Gradients through the inverse are exact (implicit
    differentiation via a final Newton step, see :mod:`manifoldflows.functional.planar`).

    The layer starts as the identity (``u = 0``, ``b = 0``, random ``w``).

    Arguments:
        dim: dimension ``d``.
        context_dim: context size; an MLP then adds context-dependent offsets to
            ``(u, w, b)``. ``None`` for an unconditional layer.
        hidden: hidden sizes of that MLP.
        activation: its activation.
        generator: optional :class:`torch.Generator` for the random initialisation of ``w``.

    Inputs have shape ``(..., d)`` (any batch shape); the logdet has shape ``(...)``.

    References:
        Rezende & Mohamed 2015, Variational Inference with Normalizing Flows,
        arXiv:1505.05770 (section 4.1 and appendix A).

    Example:
        >>> layer = PlanarFlow(2)
        >>> with torch.no_grad():
        ...     _ = layer.u.copy_(torch.tensor([-1.5, 1.0]))  # raw w^T u = -2.5 < -1
        ...     _ = layer.w.copy_(torch.tensor([2.0, 0.5]))
        >>> z = torch.randn(6, 2)
        >>> y, logdet = layer(z)
        >>> z2, logdet_inv = layer.inverse(y)
        >>> torch.allclose(z2, z, atol=1e-5), torch.allclose(logdet, -logdet_inv, atol=1e-5)
        (True, True)
        >>> bool(layer.constrained_parameters()["wu"] > -1)
        True
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
        d = _check_features(type(self).__name__, dim)
        bound = 1 / math.sqrt(d)
        w = (2 * torch.rand(d, generator=generator) - 1) * bound
        raw = {"u": torch.zeros(d), "w": w, "b": torch.zeros(1)}
        super().__init__(d, context_dim, hidden, activation, raw)

    def constrained_parameters(self, context: Tensor | None = None) -> dict[str, Tensor]:
        """The parameters the map uses: ``u_hat``, ``w`` ``(..., d)``; ``b``, ``wu`` ``(...)``.

        ``wu = w^T u_hat > -1`` (its guaranteed value). ``...`` is the context's batch shape
        (empty for an unconditional layer).
        """
        raw = self._raw(context if self.context_dim is not None else None)
        u_hat, wu = kernels.planar_u_hat(raw["u"], raw["w"], MARGIN)
        return {"u_hat": u_hat, "w": raw["w"], "b": raw["b"][..., 0], "wu": wu}

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.constrained_parameters(context)
        return kernels.planar(x, p["u_hat"], p["w"], p["b"], p["wu"])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.constrained_parameters(context)
        return kernels.planar_inverse(y, p["u_hat"], p["w"], p["b"], p["wu"])


class RadialFlow(_ResidualFlow):
    r"""Radial flow ``f(z) = z + beta (z - z0) / (alpha + |z - z0|)`` (Rezende & Mohamed 2015).

    Points move along rays from the centre ``z0``: a radius ``r`` becomes
    ``s = r (alpha + beta + r) / (alpha + r)``. With ``h = 1 / (alpha + r)``::

        log|det J| = (d - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)
                   = (d - 1) log(1 + beta h) + log(1 + alpha beta h^2).

    **Invertibility.** ``f`` is a bijection iff ``alpha > 0`` and ``beta >= -alpha``. The layer
    uses ``alpha = softplus(alpha_raw) + 1e-4`` and ``beta = alpha m(beta_raw)`` with ``m`` =
    :func:`~manifoldflows.functional.planar.above_minus_one`, so ``beta > -(1 - 1e-3) alpha``
    for any raw values: the radial derivative ``1 + alpha beta h^2`` stays above ``1e-3``. This
    is the paper's ``beta >= -alpha`` condition made strict and scale-free (``beta_raw = 0``
    is the identity).

    **Inverse (exact).** With ``s = |y - z0|``, ``r`` is the positive root of
    ``r^2 + (alpha + beta - s) r - alpha s = 0`` (taken in a cancellation-free form), and
    ``z = z0 + (y - z0) / (1 + beta h(r))``.

    The layer starts as the identity (``beta_raw = 0``) with a random centre ``z0 ~ N(0, I)``.

    Arguments:
        dim: dimension ``d``.
        context_dim: context size; an MLP then adds offsets to ``(z0, alpha_raw, beta_raw)``.
        hidden: hidden sizes of that MLP.
        activation: its activation.
        generator: optional :class:`torch.Generator` for the random centre.

    Inputs have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Rezende & Mohamed 2015, Variational Inference with Normalizing Flows,
        arXiv:1505.05770 (section 4.1 and appendix A).

    Example:
        >>> layer = RadialFlow(3)
        >>> with torch.no_grad():
        ...     _ = layer.beta_raw.fill_(-50.0)  # strongly contracting, still invertible
        >>> z = torch.randn(4, 3)
        >>> y, logdet = layer(z)
        >>> torch.allclose(layer.inverse(y)[0], z, atol=1e-5)
        True
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
        d = _check_features(type(self).__name__, dim)
        raw = {
            "z0": torch.randn(d, generator=generator),
            "alpha_raw": torch.zeros(1),
            "beta_raw": torch.zeros(1),
        }
        super().__init__(d, context_dim, hidden, activation, raw)

    def constrained_parameters(self, context: Tensor | None = None) -> dict[str, Tensor]:
        """The parameters the map uses: ``z0`` ``(..., d)``; ``alpha > 0``, ``beta`` ``(...)``."""
        raw = self._raw(context if self.context_dim is not None else None)
        alpha = F.softplus(raw["alpha_raw"][..., 0]) + ALPHA_MIN
        beta = alpha * kernels.above_minus_one(raw["beta_raw"][..., 0], MARGIN)
        return {"z0": raw["z0"], "alpha": alpha, "beta": beta}

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.constrained_parameters(context)
        return kernels.radial(x, p["z0"], p["alpha"], p["beta"])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.constrained_parameters(context)
        return kernels.radial_inverse(y, p["z0"], p["alpha"], p["beta"])


class SylvesterFlow(_ResidualFlow):
    r"""Sylvester flow ``f(z) = z + Q R tanh(R~ Q^T z + b)`` (van den Berg et al. 2018).

    ``Q`` is ``d x M`` with orthonormal columns, ``R`` and ``R~`` are ``M x M`` upper
    triangular and ``b`` is in ``R^M``. By Sylvester's determinant identity
    ``det(I_d + A B) = det(I_M + B A)`` and ``Q^T Q = I``::

        log|det J| = log det(I_M + diag(tanh'(a)) R~ R) = sum_i log(1 + R_ii R~_ii tanh'(a_i)),

    with ``a = R~ Q^T z + b``, since the matrix is triangular.

    **Kinds** (how ``Q`` is built; every kind gives exactly orthonormal columns):

    * ``"orthogonal"``: ``Q`` = the first ``M`` columns of ``exp(S)``, the matrix exponential
      of a skew-symmetric ``S`` whose ``d (d - 1) / 2`` upper entries are parameters (an exact
      and smooth alternative to the paper's iterative orthogonalisation);
    * ``"householder"``: ``Q`` = the first ``M`` columns of ``H_1 ... H_K``, a product of
      ``K = num_householder`` reflections ``H_k = I - 2 v_k v_k^T / |v_k|^2``;
    * ``"triangular"``: ``Q`` is the identity, or the reversal permutation with
      ``reverse=True`` (``M = d``); stacks alternate the two.

    **Invertibility.** ``f`` is a bijection iff ``R_ii R~_ii > -1`` for all ``i`` (as
    ``0 < tanh' <= 1``). The diagonals are parameterised as ``R~_ii = exp(c tanh(s_i / c))``
    (``c = 5``) and ``R_ii = m(p_i) / R~_ii`` with ``m`` =
    :func:`~manifoldflows.functional.planar.above_minus_one`, so ``R_ii R~_ii = m(p_i)`` ranges
    over the whole allowed set ``(-1 + 1e-3, inf)`` for any raw ``p_i``. (A positive ``R~_ii``
    loses nothing: flipping the sign of ``v_i`` is absorbed by the signs of ``Q``'s columns,
    ``b`` and the rows of ``R``, ``R~``, as ``tanh`` is odd.)

    **Inverse.** The part of ``y`` orthogonal to the columns of ``Q`` is unchanged, and
    ``v = Q^T z`` solves ``v + R tanh(R~ v + b) = Q^T y``. Since ``R`` and ``R~`` are upper
    triangular this system is solved by back substitution from the last coordinate, each step a
    strictly monotone scalar equation solved by safeguarded Newton/bisection (vectorised over
    the batch), followed by a gradient-carrying Newton step on the whole system; then
    ``z = y - Q R tanh(R~ v + b)``. See
    :func:`~manifoldflows.functional.planar.sylvester_inverse`.

    The layer starts as the identity (``R = 0``, ``R~ = I``, ``b = 0``; ``Q`` random).

    Arguments:
        dim: dimension ``d``.
        kind: ``"orthogonal"``, ``"householder"`` or ``"triangular"``.
        num_ortho_vectors: ``M``, the number of columns of ``Q`` (``1 <= M <= d``; default
            ``d``; must be ``d`` for ``"triangular"``).
        num_householder: number of reflections for ``"householder"`` (default ``d``).
        reverse: for ``"triangular"``, use the reversal permutation as ``Q``.
        context_dim: context size; an MLP then adds offsets to every raw parameter (``Q``'s
            included, so ``Q`` depends on the context as in the paper's amortised flows).
        hidden: hidden sizes of that MLP.
        activation: its activation.
        generator: optional :class:`torch.Generator` for the random initialisation of ``Q``.

    Inputs have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        van den Berg, Hasenclever, Tomczak & Welling 2018, Sylvester Normalizing Flows for
        Variational Inference, arXiv:1803.05649.
        Tomczak & Welling 2016, Improving Variational Auto-Encoders using Householder Flow,
        arXiv:1611.09630 (Householder parameterisation of ``Q``).

    Example:
        >>> layer = SylvesterFlow(4, kind="householder", num_ortho_vectors=2)
        >>> _ = torch.nn.init.normal_(layer.r_off)  # leave the identity initialisation
        >>> _ = torch.nn.init.normal_(layer.r_diag)
        >>> z = torch.randn(5, 4)
        >>> y, logdet = layer(z)
        >>> z2, logdet_inv = layer.inverse(y)
        >>> torch.allclose(z2, z, atol=1e-5), torch.allclose(logdet, -logdet_inv, atol=1e-5)
        (True, True)
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "orthogonal",
        num_ortho_vectors: int | None = None,
        num_householder: int | None = None,
        reverse: bool = False,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
        generator: torch.Generator | None = None,
    ):
        owner = type(self).__name__
        d = _check_features(owner, dim)
        if kind not in SYLVESTER_KINDS:
            raise ValueError(f"{owner}: expected kind in {SYLVESTER_KINDS}, got {kind!r}")
        m = (
            d
            if num_ortho_vectors is None
            else positive_int(num_ortho_vectors, "num_ortho_vectors", owner)
        )
        if m > d:
            raise ValueError(
                f"{owner}: expected num_ortho_vectors <= dim = {d}, got {num_ortho_vectors}"
            )
        if kind == "triangular" and m != d:
            raise ValueError(
                f"{owner}: kind='triangular' uses M = dim = {d} columns, got "
                f"num_ortho_vectors={num_ortho_vectors}"
            )
        if reverse and kind != "triangular":
            raise ValueError(
                f"{owner}: reverse=True applies to kind='triangular' only, got {kind!r}"
            )
        if num_householder is not None and kind != "householder":
            raise ValueError(
                f"{owner}: num_householder applies to kind='householder' only, got {kind!r}"
            )
        raw: dict[str, Tensor] = {}
        if kind == "orthogonal" and d > 1:
            raw["q_skew"] = torch.randn(d * (d - 1) // 2, generator=generator)
        elif kind == "householder":
            if d < 2:
                raise ValueError(f"{owner}: kind='householder' needs dim >= 2, got {d}")
            k = (
                d
                if num_householder is None
                else positive_int(num_householder, "num_householder", owner)
            )
            raw["householder"] = torch.randn(k, d, generator=generator)
        if m > 1:
            raw["r_off"] = torch.zeros(m * (m - 1) // 2)
            raw["r_tilde_off"] = torch.zeros(m * (m - 1) // 2)
        raw["r_diag"] = torch.zeros(m)
        raw["r_tilde_diag"] = torch.zeros(m)
        raw["bias"] = torch.zeros(m)
        super().__init__(d, context_dim, hidden, activation, raw)
        self.kind = kind
        self.num_ortho_vectors = m
        self.reverse = bool(reverse)

    def extra_repr(self) -> str:
        extra = f"kind={self.kind!r}, num_ortho_vectors={self.num_ortho_vectors}"
        if self.kind == "householder":
            extra += f", num_householder={self.householder.shape[0]}"
        if self.reverse:
            extra += ", reverse=True"
        return f"{super().extra_repr()}, {extra}"

    # ------------------------------------------------------------------ parameters
    def _triangular(self, off: Tensor | None, diag: Tensor) -> Tensor:
        m = self.num_ortho_vectors
        batch = (
            diag.shape[:-1]
            if off is None
            else torch.broadcast_shapes(off.shape[:-1], diag.shape[:-1])
        )
        mat = diag.new_zeros(*batch, m, m)
        if off is not None:
            rows, cols = torch.triu_indices(m, m, 1, device=diag.device)
            mat[..., rows, cols] = off.expand(*batch, off.shape[-1])
        return mat + torch.diag_embed(diag)

    def _q(self, raw: dict[str, Tensor]) -> Tensor | None:
        d, m = self.features, self.num_ortho_vectors
        if self.kind == "triangular" or (self.kind == "orthogonal" and d == 1):
            return None
        if self.kind == "orthogonal":
            skew = raw["q_skew"]
            rows, cols = torch.triu_indices(d, d, 1, device=skew.device)
            s = skew.new_zeros(*skew.shape[:-1], d, d)
            s[..., rows, cols] = skew
            return torch.linalg.matrix_exp(s - s.mT)[..., :, :m]
        vectors = raw["householder"]
        eye = torch.eye(d, m, dtype=vectors.dtype, device=vectors.device)
        q = eye.expand(*vectors.shape[:-2], d, m)
        sq = (vectors * vectors).sum(-1).clamp_min(torch.finfo(vectors.dtype).tiny)
        for k in reversed(range(vectors.shape[-2])):
            v = vectors[..., k, :]
            coef = (v.unsqueeze(-2) @ q) * (2 / sq[..., k, None, None])  # (..., 1, M)
            q = q - v.unsqueeze(-1) * coef
        return q

    def constrained_parameters(self, context: Tensor | None = None) -> dict[str, Tensor | None]:
        """The matrices the map uses: ``q``, ``r``, ``r_tilde`` and ``bias``.

        ``q`` is ``(..., d, M)`` with orthonormal columns (``None`` for the triangular kind,
        whose ``Q`` is the identity or the reversal); ``r``, ``r_tilde`` are ``(..., M, M)``
        upper triangular with ``R_ii R~_ii > -1``; ``bias`` is ``(..., M)``.
        """
        raw = self._raw(context if self.context_dim is not None else None)
        scale = torch.exp(soft_clamp(raw["r_tilde_diag"], LOG_SCALE_BOUND))
        product = kernels.above_minus_one(raw["r_diag"], MARGIN)
        r = self._triangular(raw.get("r_off"), product / scale)
        r_tilde = self._triangular(raw.get("r_tilde_off"), scale)
        return {"q": self._q(raw), "r": r, "r_tilde": r_tilde, "bias": raw["bias"]}

    # ------------------------------------------------------------------ maps
    def _map(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        p = self.constrained_parameters(context)
        kernel = kernels.sylvester_inverse if inverse else kernels.sylvester
        if self.reverse:
            out, logdet = kernel(x.flip(-1), p["r"], p["r_tilde"], p["bias"])
            return out.flip(-1), logdet
        return kernel(x, p["r"], p["r_tilde"], p["bias"], p["q"])

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(y, context, inverse=True)
