r"""Shared machinery of the stochastic (MCMC) layers.

A stochastic layer maps ``x`` to a random ``y ~ q_fwd(y | x)`` and returns, in the logdet slot,
the *path weight* of Wu, Koehler & Noe (2020)

.. math::

    \Delta S(x \to y) = \log q_\mathrm{back}(x \mid y) - \log q_\mathrm{fwd}(y \mid x),

so that a chain ``z -> ... -> y`` started from a base density ``p_0`` gives the unbiased
importance weight ``log w = -u(y) - log p_0(z) + sum_k Delta S_k`` (see
:meth:`manifoldflows.core.Flow.sample_and_log_weight`). For a Markov kernel ``K`` in detailed
balance with ``exp(-u)`` and the backward kernel chosen equal to ``K``,
``pi(x) K(y|x) = pi(y) K(x|y)`` gives ``Delta S = u(y) - u(x)`` exactly, whatever the proposal
and whether the move was accepted.

References:
    H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020, arXiv:2002.06707.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Transform, energy_fn
from ..errors import InvalidInput
from ..functional.autograd import value_and_grad
from ..spaces import Euclidean, Space
from ..targets import Target

__all__ = ["StochasticTransform", "AnnealedEnergy", "metropolis_accept", "metropolis_move"]


def _softplus_inverse(y: Tensor) -> Tensor:
    """``log(exp(y) - 1)``, stable for small and large ``y > 0``."""
    return y + torch.log(-torch.expm1(-y))


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``x``, from ``generator`` when one is given."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def metropolis_move(
    accept: Tensor,
    x: Tensor,
    y: Tensor,
    u: Tensor,
    u_y: Tensor,
    g: Tensor | None = None,
    g_y: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
    """The result of a Metropolis-adjusted step, as the layers' ``_step`` returns it.

    Accepted points move to the proposal ``y`` (with its energy and gradient), rejected ones
    stay; the path weight of a kernel in detailed balance is ``u(y) - u(x)`` for accepted moves
    and 0 otherwise. Returns ``(points, energies, gradients or None, delta_s, accept)``.
    """
    keep = accept[..., None]
    return (
        torch.where(keep, y, x),
        torch.where(accept, u_y, u),
        None if g is None else torch.where(keep, g_y, g),
        torch.where(accept, u_y - u, torch.zeros_like(u)),
        accept,
    )


def metropolis_accept(log_alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""Metropolis decision ``U < min(1, alpha)`` with ``U ~ Uniform(0, 1)`` (``rand_like``).

    .. math:: \text{accept} \iff \log U < \log\alpha

    NaN acceptance ratios (e.g. a proposal with NaN energy) are rejected. The decision carries
    no gradient.

    Arguments:
        log_alpha: log acceptance ratios, any shape.
        generator: optional random generator (on ``log_alpha``'s device).

    Returns:
        A boolean tensor of the same shape.

    References:
        W. K. Hastings, "Monte Carlo sampling methods using Markov chains and their
        applications", Biometrika 57 (1970) 97-109.

    Example:
        >>> metropolis_accept(torch.tensor([0.0, -math.inf, math.nan])).tolist()
        [True, False, False]
    """
    log_alpha = log_alpha.detach()
    if generator is None:
        uniform = torch.rand_like(log_alpha)
    else:
        uniform = torch.rand(
            log_alpha.shape, generator=generator, dtype=log_alpha.dtype, device=log_alpha.device
        )
    log_u = torch.log(uniform)
    return log_u < torch.nan_to_num(log_alpha, nan=-math.inf)


class AnnealedEnergy(nn.Module):
    r"""Geometric interpolation between a reference energy and a target energy.

    .. math:: u_\lambda(x) = (1 - \lambda)\, u_0(x) + \lambda\, u(x), \qquad
              u_0(x) = \tfrac12 |x|^2 \ \text{(default)}

    Used by :func:`manifoldflows.presets.SNF` for the intermediate stochastic blocks (Wu et al.
    2020 anneal from the prior to the target along the flow). ``target`` and ``reference`` are
    callables ``x -> u(x)`` or objects with ``.energy(x)``; ``nn.Module`` ones are registered as
    submodules (so ``.to()`` and ``state_dict`` follow them).

    Arguments:
        target: the target energy ``u``.
        lam: interpolation parameter ``lambda`` in ``[0, 1]``.
        reference: the reference energy ``u_0`` (default: standard normal, ``|x|^2 / 2``).

    References:
        H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020,
        arXiv:2002.06707.
        R. M. Neal, "Annealed importance sampling", Statistics and Computing 11 (2001),
        arXiv:physics/9803008.

    Example:
        >>> u = AnnealedEnergy(lambda x: (x**4).sum(-1), 0.5)
        >>> u(torch.tensor([[2.0]]))  # 0.5 * 2 + 0.5 * 16
        tensor([9.])
    """

    def __init__(self, target: Target, lam: float, reference: Target | None = None):
        super().__init__()
        _check_energy(target, "AnnealedEnergy")
        if reference is not None:
            _check_energy(reference, "AnnealedEnergy")
        lam = float(lam)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"AnnealedEnergy: expected lam in [0, 1], got {lam}")
        self.target = target
        self.reference = reference
        self.lam = lam

    def extra_repr(self) -> str:
        return f"lam={self.lam:g}"

    def energy(self, x: Tensor) -> Tensor:
        """``u_lambda(x)``, batch shape."""
        u = energy_fn(self.target)(x) if self.lam > 0.0 else None
        if self.lam == 1.0:
            return u
        if self.reference is None:
            u0 = 0.5 * (x * x).sum(-1)
        else:
            u0 = energy_fn(self.reference)(x)
        return u0 if u is None else (1.0 - self.lam) * u0 + self.lam * u

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`energy`."""
        return self.energy(x)


def _check_energy(energy: Target, who: str) -> None:
    try:
        energy_fn(energy)
    except TypeError:
        raise ValueError(
            f"{who}: expected the energy as a callable x -> u(x) or an object with .energy(x), "
            f"got {type(energy).__name__}"
        ) from None


class StochasticTransform(Transform):
    """Base class of the MCMC layers: energy handling, step-size parameters, validation.

    Subclasses implement ``_step(x, u, g) -> (y, u_y, g_y, delta_s)`` (one kernel application
    with the current energy ``u`` and gradient ``g`` at ``x``; ``g`` is ``None`` when
    :attr:`needs_grad` is false) and set :attr:`spaces` (the space types they support).
    ``_forward`` applies the kernel ``steps`` times and sums the path weights. Every kernel here
    is its own backward kernel (the backward process is the same kernel run again), so
    ``_inverse`` is ``_forward``: it samples ``x ~ q_back(. | y)`` and returns
    ``log q_fwd(y | x) - log q_back(x | y)``, the path weight of the reverse process, which is
    what ``Chain.inverse`` sums when an SNF is run backwards from data (Wu et al. 2020, maximum
    likelihood training). Contexts are ignored (``context_dim=None``).

    The energy is stored as :attr:`target` (an ``nn.Module`` energy becomes a submodule);
    :meth:`energy` evaluates it. For ``torch.save`` of the whole layer, the energy must be
    picklable (a module-level function or a module); ``state_dict`` always works.
    """

    stochastic = True
    needs_grad: bool = False
    spaces: tuple[type, ...] = (Euclidean,)

    def __init__(self, space: Space | int, energy: Target, steps: int):
        who = type(self).__name__
        if isinstance(space, int) and not isinstance(space, bool) and space >= 1:
            space = Euclidean(space)
        if not self._supports(space):
            names = ", ".join(t.__name__ for t in self.spaces)
            raise ValueError(
                f"{who}: expected a space of type {names} (or a positive dimension), got {space!r}"
            )
        _check_energy(energy, who)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{who}: expected a positive integer number of steps, got {steps!r}")
        super().__init__(space)
        self.target = energy
        self.steps = steps

    def _supports(self, space: object) -> bool:
        if not isinstance(space, Space):
            return False
        if isinstance(space, Euclidean):  # Euclidean(d) only, not a bounded Interval
            return Euclidean in self.spaces and space == Euclidean(space.dim)
        return any(isinstance(space, t) for t in self.spaces if t is not Euclidean)

    # ------------------------------------------------------------------ parameters
    def _register_positive(
        self, name: str, value: float | Tensor, learnable: bool, *, per_dim: bool = True
    ) -> None:
        """Store ``softplus^{-1}(value)`` as ``raw_<name>`` (parameter or buffer)."""
        who = type(self).__name__
        t = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
        shapes = [()] + ([(self.domain.dim,)] if per_dim else [])
        if tuple(t.shape) not in shapes:
            allowed = "a scalar" + (f" or a ({self.domain.dim},) tensor" if per_dim else "")
            raise ValueError(f"{who}: expected {name} as {allowed}, got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise ValueError(f"{who}: expected a finite positive {name}, got {t.tolist()}")
        raw = _softplus_inverse(t)
        if learnable:
            setattr(self, f"raw_{name}", nn.Parameter(raw))
        else:
            self.register_buffer(f"raw_{name}", raw)

    @staticmethod
    def _positive(raw: Tensor) -> Tensor:
        return F.softplus(raw)

    # ------------------------------------------------------------------ energy
    def energy(self, x: Tensor) -> Tensor:
        """The reduced energy ``u(x)`` of the layer's target (batch shape)."""
        u = energy_fn(self.target)(x)
        batch = self.domain.batch_shape(x)
        if not isinstance(u, Tensor) or u.shape != batch:
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise InvalidInput(
                f"{self.name}: expected the energy to return a tensor of the batch shape "
                f"{tuple(batch)}, got {got}"
            )
        return u

    def energy_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u(x), grad u(x))`` by autograd (through ``functional.autograd.value_and_grad``).

        With gradients enabled the gradient is built with ``create_graph=True``, so that paths
        through it (Langevin drifts, leapfrog steps) are differentiable with respect to the
        inputs and the step sizes; under ``torch.no_grad`` both are returned detached.
        """
        return value_and_grad(self.energy, x, create_graph=torch.is_grad_enabled())

    def _evaluate(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.needs_grad:
            return self.energy_and_grad(x)
        return self.energy(x), None

    # ------------------------------------------------------------------ kernel
    def _step(
        self, x: Tensor, u: Tensor, g: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """One kernel application: ``(y, u(y), grad u(y) or None, delta_s, accepted)``."""
        raise NotImplementedError(f"{self.name} does not implement _step")

    def run(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        *,
        start: tuple[Tensor, Tensor | None] | None = None,
        on_step: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""Apply the kernel ``steps`` times and report energies and acceptance.

        The building block of annealed importance sampling
        (:func:`~manifoldflows.stochastic.annealed_importance_sampling`), which needs the
        energy at the start point as well as at the end point.

        Arguments:
            x: points of the layer's space ``(*batch, *event_shape)``.
            generator: optional random generator for the proposals and decisions (else the
                global generator, as in :meth:`forward`).
            start: ``(u(x), grad u(x) or None)`` when the caller already knows them; the
                energy is then not evaluated at ``x`` (the gradient is needed by gradient-based
                kernels, ``needs_grad``).
            on_step: called after every kernel application with the boolean mask of accepted
                moves. Every kernel evaluates its energy at the proposal last, so an energy
                that records what it computed can keep per-point values in step with the
                points (annealed importance sampling keeps ``log q`` and the target energy
                this way and never evaluates a point twice).

        Returns:
            ``(y, u(x), u(y), delta_s, acceptance)``: the end points, the energies at the start
            and end points, the summed path weight (as :meth:`forward`) and the fraction of
            accepted moves per point (1 for unadjusted kernels), each with the batch shape.
        """
        if start is None or (self.needs_grad and start[1] is None):
            u, g = self._evaluate(x)
        else:
            u, g = start
        u_start = u
        total = torch.zeros_like(u)
        accepted = torch.zeros_like(u)
        for _ in range(self.steps):
            x, u, g, delta, accept = self._step(x, u, g, generator)
            total = total + delta
            accepted = accepted + accept.to(u.dtype)
            if on_step is not None:
                on_step(accept)
        return x, u_start, u, total, accepted / self.steps

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u, g = self._evaluate(x)
        total = torch.zeros_like(u)
        for _ in range(self.steps):
            x, u, g, delta, _ = self._step(x, u, g)
            total = total + delta
        return x, total

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._forward(y, context)
