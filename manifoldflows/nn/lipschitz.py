"""Lipschitz-constrained networks for the residual branch of invertible residual flows.

:class:`SpectralNormLinear` rescales its weight so that its spectral norm is at most ``coeff``;
:class:`LipschitzMLP` stacks such layers with 1-Lipschitz activations, so that the whole network
is ``coeff^L``-Lipschitz in its input (the context enters through an unconstrained linear map
added to the first hidden pre-activation, which does not change the Lipschitz constant in the
input). It also returns its exact input Jacobian in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SpectralNormLinear",
    "LipSwish",
    "LipschitzELU",
    "LipschitzTanh",
    "LIPSCHITZ_ACTIVATIONS",
    "LipschitzMLP",
]

_NORMS = ("power", "exact")


def _default_power_tol(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-6


class SpectralNormLinear(nn.Module):
    """Linear layer whose weight has spectral norm at most ``coeff``.

    The weight used is ``W_hat = W * min(1, coeff / sigma(W))`` (Behrmann et al. 2019;
    Chen et al. 2019), so ``||W_hat||_2 <= coeff``. The largest singular value ``sigma(W)`` is
    either computed exactly (``norm="exact"``, ``torch.linalg.matrix_norm(W, ord=2)``) or by
    power iteration (``norm="power"``, the default) warm-started from a persistent buffer
    ``u`` (the left singular vector estimate, saved in the ``state_dict``)::

        v <- normalize(W^T u),   u <- normalize(W v),   sigma = u^T W v.

    The iteration runs **to convergence** (relative change of ``sigma`` below ``power_tol``,
    default ``1e-12`` in float64 and ``1e-6`` otherwise, at most ``power_max_iterations``
    steps), so the normalised weight is a function of ``W`` alone up to that tolerance: the
    forward and inverse passes of a residual block see the same map even in training mode.
    Warm-started, convergence typically takes one or two steps per call. In training mode the
    buffer is updated; in eval mode it is left untouched, which makes evaluation a
    deterministic function of the parameters and buffers. The gradient of ``sigma`` is
    ``u v^T`` (``u`` and ``v`` are treated as constants, Miyato et al. 2018).

    Call :meth:`normalized_weight` once per pass and reuse it when the layer is evaluated
    many times with the same parameters (as in a fixed-point iteration).

    Arguments:
        in_features: input size.
        out_features: output size.
        coeff: bound on the spectral norm, ``> 0``.
        bias: learn an additive bias.
        norm: ``"power"`` or ``"exact"``.
        power_tol: relative tolerance of the power iteration (``None``: by dtype).
        power_max_iterations: iteration cap of the power iteration.

    Inputs have shape ``(..., in_features)``.

    References:
        Miyato et al. 2018, Spectral Normalization for Generative Adversarial Networks,
        arXiv:1802.05957. Behrmann et al. 2019, Invertible Residual Networks, arXiv:1811.00995.

    Example:
        >>> layer = SpectralNormLinear(4, 3, coeff=0.9)
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(10.0)
        >>> norm = torch.linalg.matrix_norm(layer.normalized_weight(), ord=2).item()
        >>> abs(norm - 0.9) < 1e-5
        True
    """

    u: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        coeff: float = 0.97,
        bias: bool = True,
        norm: str = "power",
        power_tol: float | None = None,
        power_max_iterations: int = 1000,
    ):
        super().__init__()
        name = type(self).__name__
        for label, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer {label}, got {value!r}")
        if not (isinstance(coeff, (int, float)) and coeff > 0 and math.isfinite(coeff)):
            raise ValueError(f"{name}: expected a finite coeff > 0, got {coeff!r}")
        if norm not in _NORMS:
            raise ValueError(f"{name}: norm must be one of {_NORMS}, got {norm!r}")
        if power_tol is not None and not power_tol > 0:
            raise ValueError(f"{name}: expected power_tol > 0, got {power_tol!r}")
        if power_max_iterations < 1:
            raise ValueError(
                f"{name}: expected power_max_iterations >= 1, got {power_max_iterations!r}"
            )
        self.in_features, self.out_features = in_features, out_features
        self.coeff = float(coeff)
        self.norm = norm
        self.power_tol = power_tol
        self.power_max_iterations = int(power_max_iterations)
        linear = nn.Linear(in_features, out_features, bias=bias)
        self.weight = linear.weight
        self.bias = linear.bias
        # A fixed pseudo-random start vector: almost surely not orthogonal to the top singular
        # vector, and reproducible (no global random state involved).
        start = torch.randn(out_features, generator=torch.Generator().manual_seed(out_features))
        self.register_buffer("u", start / start.norm(), persistent=True)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"coeff={self.coeff}, norm={self.norm!r}, bias={self.bias is not None}"
        )

    @torch.no_grad()
    def _power_iteration(self) -> tuple[Tensor, Tensor]:
        """Converged ``(u, v)``; writes ``u`` back to the buffer in training mode."""
        w = self.weight.detach()
        tol = self.power_tol or _default_power_tol(w.dtype)
        tiny = torch.finfo(w.dtype).tiny
        u = self.u
        for _ in range(self.power_max_iterations):
            wtu = w.t() @ u
            sigma_a = torch.linalg.vector_norm(wtu)
            v = wtu / sigma_a.clamp_min(tiny)
            wv = w @ v
            sigma_b = torch.linalg.vector_norm(wv)
            # keep the old u when W v vanishes (e.g. W = 0), so the buffer never collapses
            u = torch.where(sigma_b > 0, wv / sigma_b.clamp_min(tiny), u)
            if bool((sigma_b - sigma_a).abs() <= tol * sigma_b):
                break
        if self.training:
            self.u.copy_(u)
        return u, v

    def spectral_norm(self) -> Tensor:
        """The estimate of ``sigma(W)`` used for the normalisation (differentiable)."""
        if self.norm == "exact":
            return torch.linalg.matrix_norm(self.weight, ord=2)
        u, v = self._power_iteration()
        return torch.dot(u, self.weight @ v)

    def normalized_weight(self) -> Tensor:
        """``W * min(1, coeff / sigma(W))``, shape ``(out_features, in_features)``."""
        sigma = self.spectral_norm()
        return self.weight * (self.coeff / torch.clamp(sigma, min=self.coeff))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class LipSwish(nn.Module):
    """``LipSwish(x) = x * sigmoid(beta x) / 1.1``: a smooth 1-Lipschitz activation.

    ``d/dt [t sigmoid(t)]`` lies in ``(-0.0998, 1.0998)``, and rescaling ``t = beta x`` does not
    change the range of the derivative, so ``|LipSwish'| < 1`` for every ``beta > 0``. ``beta =
    softplus(raw_beta)`` is learned per unit (initialised to 1).

    Arguments:
        features: number of units (size of the last input dimension).

    References:
        Chen et al. 2019, Residual Flows for Invertible Generative Modeling, arXiv:1906.02735.

    Example:
        >>> act = LipSwish(3)
        >>> x = torch.linspace(-5, 5, 101).unsqueeze(-1).expand(101, 3)
        >>> bool((act.derivative(x).abs() < 1).all())
        True
    """

    def __init__(self, features: int):
        super().__init__()
        self.raw_beta = nn.Parameter(torch.full((features,), math.log(math.e - 1.0)))

    def forward(self, x: Tensor) -> Tensor:
        beta = F.softplus(self.raw_beta)
        return x * torch.sigmoid(beta * x) / 1.1

    def derivative(self, x: Tensor) -> Tensor:
        """Elementwise derivative ``(s + beta x s (1 - s)) / 1.1`` with ``s = sigmoid(beta x)``."""
        beta = F.softplus(self.raw_beta)
        s = torch.sigmoid(beta * x)
        return (s + beta * x * s * (1.0 - s)) / 1.1


class LipschitzELU(nn.Module):
    """ELU (``alpha = 1``), 1-Lipschitz, with its derivative.

    Example:
        >>> LipschitzELU(2).derivative(torch.tensor([0.0, 2.0])).tolist()
        [1.0, 1.0]
    """

    def __init__(self, features: int):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, torch.ones_like(x), torch.exp(torch.clamp(x, max=0.0)))


class LipschitzTanh(nn.Module):
    """``tanh``, 1-Lipschitz, with its derivative ``1 - tanh^2``.

    Example:
        >>> LipschitzTanh(1).derivative(torch.zeros(1)).item()
        1.0
    """

    def __init__(self, features: int):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 - torch.tanh(x) ** 2


#: Activations with Lipschitz constant at most 1 and a closed-form derivative.
LIPSCHITZ_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "lipswish": LipSwish,
    "elu": LipschitzELU,
    "tanh": LipschitzTanh,
}


class LipschitzMLP(nn.Module):
    """MLP ``g(x, c)`` with ``Lip_x(g) <= coeff^L`` and a closed-form input Jacobian.

    .. math::

        h_1 = \\phi(\\hat W_1 x + b_1 + A c),\\quad h_i = \\phi(\\hat W_i h_{i-1} + b_i),\\quad
        g(x, c) = \\hat W_L h_{L-1} + b_L,

    with spectrally normalised weights ``||W_hat_i||_2 <= coeff`` (:class:`SpectralNormLinear`)
    and a 1-Lipschitz activation ``phi`` (:data:`LIPSCHITZ_ACTIVATIONS`); the context map ``A``
    is unconstrained. Hence ``|g(x, c) - g(x', c)| <= coeff^L |x - x'|`` for every ``c``. The
    input Jacobian is ``J = W_L D_{L-1} W_{L-1} ... D_1 W_1`` with ``D_i = diag(phi'(pre_i))``.

    Because power iteration runs on every call to :meth:`normalized_weights`, evaluate the net
    many times with fixed weights through :meth:`evaluate` / :meth:`evaluate_with_jacobian`.

    Arguments:
        features: input size ``d``.
        hidden: hidden layer sizes (may be empty: ``g`` is then linear).
        out_features: output size (default ``d``).
        context_dim: context size, or ``None``.
        activation: ``"lipswish"`` (default), ``"elu"`` or ``"tanh"``.
        coeff: spectral-norm bound of every weight, in ``(0, 1)`` for a contraction.
        norm: ``"power"`` (power iteration) or ``"exact"`` (SVD) spectral norms.
        power_tol, power_max_iterations: see :class:`SpectralNormLinear`.

    Inputs have shape ``(..., d)``, contexts ``(..., context_dim)`` (broadcast).

    References:
        Behrmann et al. 2019, Invertible Residual Networks, arXiv:1811.00995.
        Chen et al. 2019, Residual Flows for Invertible Generative Modeling, arXiv:1906.02735.

    Example:
        >>> net = LipschitzMLP(2, hidden=(8,), context_dim=1)
        >>> out, jac = net.evaluate_with_jacobian(
        ...     torch.randn(5, 2), torch.randn(5, 1), net.normalized_weights()
        ... )
        >>> out.shape, jac.shape
        (torch.Size([5, 2]), torch.Size([5, 2, 2]))
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        *,
        out_features: int | None = None,
        context_dim: int | None = None,
        activation: str = "lipswish",
        coeff: float = 0.97,
        norm: str = "power",
        power_tol: float | None = None,
        power_max_iterations: int = 1000,
    ):
        super().__init__()
        name = type(self).__name__
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"{name}: expected a positive integer features, got {features!r}")
        hidden = tuple(hidden)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"{name}: expected positive integer hidden sizes, got {hidden!r}")
        if context_dim is not None and (
            isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 1
        ):
            raise ValueError(f"{name}: expected context_dim None or >= 1, got {context_dim!r}")
        if activation not in LIPSCHITZ_ACTIVATIONS:
            raise ValueError(
                f"{name}: activation must be one of {sorted(LIPSCHITZ_ACTIVATIONS)}, "
                f"got {activation!r}"
            )
        out_features = features if out_features is None else out_features
        self.features, self.out_features, self.context_dim = features, out_features, context_dim
        sizes = [features, *hidden, out_features]
        self.linears = nn.ModuleList(
            SpectralNormLinear(
                a,
                b,
                coeff=coeff,
                norm=norm,
                power_tol=power_tol,
                power_max_iterations=power_max_iterations,
            )
            for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.activations = nn.ModuleList(LIPSCHITZ_ACTIVATIONS[activation](h) for h in hidden)
        self.context_linear = (
            None if context_dim is None else nn.Linear(context_dim, sizes[1], bias=False)
        )

    @property
    def coeff(self) -> float:
        return self.linears[0].coeff

    def normalized_weights(self) -> list[Tensor]:
        """The spectrally normalised weights, one per linear layer (runs power iteration)."""
        return [layer.normalized_weight() for layer in self.linears]

    def _pre_activation(self, i: int, h: Tensor, weight: Tensor, context: Tensor | None) -> Tensor:
        pre = F.linear(h, weight, self.linears[i].bias)
        if i == 0 and self.context_linear is not None and context is not None:
            pre = pre + self.context_linear(context)
        return pre

    def evaluate(self, x: Tensor, context: Tensor | None, weights: Sequence[Tensor]) -> Tensor:
        """``g(x, c)`` with the given normalised weights."""
        h = x
        for i, weight in enumerate(weights):
            h = self._pre_activation(i, h, weight, context)
            if i < len(self.activations):
                h = self.activations[i](h)
        return h

    def evaluate_with_jacobian(
        self, x: Tensor, context: Tensor | None, weights: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """``(g(x, c), dg/dx)`` with shapes ``(..., out)`` and ``(..., out, d)``."""
        h = x
        jac: Tensor | None = None
        for i, weight in enumerate(weights):
            h = self._pre_activation(i, h, weight, context)
            jac = weight if jac is None else weight @ jac
            if i < len(self.activations):
                jac = self.activations[i].derivative(h).unsqueeze(-1) * jac
                h = self.activations[i](h)
        assert jac is not None
        return h, jac.expand(*h.shape, self.features)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.evaluate(x, context, self.normalized_weights())

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """Product of the exact spectral norms of the normalised weights (a bound on Lip_x g)."""
        bound = 1.0
        for weight in self.normalized_weights():
            bound *= torch.linalg.matrix_norm(weight, ord=2).item()
        return bound
