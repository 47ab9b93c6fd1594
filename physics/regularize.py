r"""Energy regularisers for exploding configurations, with non-finite energies counted.

Early in training a flow proposes configurations with overlapping particles whose energies are
astronomically large, ``inf`` or NaN; a single such sample makes the reverse-KL loss and its
gradient useless. The wrappers here replace the reduced energy ``u`` by a bounded, continuous,
non-decreasing function of it:

* :class:`LinLogCut` (Noe et al. 2019): linear up to ``high``, logarithmic above, capped at
  ``max``:

  .. math::

      \tilde u = \min\Big(u_{\max},\ \begin{cases} u & u \le u_{\rm high} \\
          u_{\rm high} + \log(1 + u - u_{\rm high}) & u > u_{\rm high} \end{cases}\Big)

* :class:`Clip`: ``min(max(u, low), high)``.

Both replace every non-finite energy (NaN, ``+inf`` or ``-inf``) by their cap and record how
many there were (``last_nonfinite`` for the latest call, ``total_nonfinite`` over the object's
life). The replaced entries get **zero** gradient and never enter the autograd graph: when a
batch contains non-finite energies, the wrapped energy is evaluated again on the finite rows
only (one extra evaluation, only for such batches), so NaN/inf derivatives of the bad rows
cannot leak into the gradient through ``0 * inf = NaN``.

Thresholds are in reduced units (multiples of ``kT`` of the wrapped energy).

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: Sampling equilibrium states
    of many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from manifoldflows.spaces import Space
from manifoldflows.targets import Target

from .energy import Energy

__all__ = ["linlog_cut", "RegularizedEnergy", "LinLogCut", "Clip"]


def linlog_cut(u: Tensor, high: float, maximum: float) -> Tensor:
    r"""Linear below ``high``, logarithmic above, capped at ``maximum`` (elementwise).

    .. math::

        f(u) = \min\big(u_{\max},\ u\big) \ (u \le u_{\rm high}), \qquad
        f(u) = \min\big(u_{\max},\ u_{\rm high} + \log(1 + u - u_{\rm high})\big)
        \ (u > u_{\rm high})

    Continuous, non-decreasing, with slope 1 at ``high`` from both sides. The logarithm's
    argument is clamped, so its branch never produces NaN gradients for ``u < high``.

    Arguments:
        u: energies (any shape).
        high: where the logarithmic part starts.
        maximum: the cap.

    Returns:
        A tensor like ``u``.

    Example:
        >>> linlog_cut(torch.tensor([1.0, 11.0, 1e30]), 10.0, 20.0).tolist()
        [1.0, 10.693147659301758, 20.0]
    """
    log_part = high + torch.log1p((u - high).clamp(min=0.0))
    return torch.where(u > high, log_part, u).clamp(max=maximum)


def _as_energy(
    energy: Target, space: Space | None, who: str
) -> tuple[Callable[..., Tensor], Space]:
    """The callable ``x -> u(x)`` and the space of a wrapped target."""
    if hasattr(energy, "energy") and callable(energy.energy):
        space = getattr(energy, "space", None) if space is None else space
        fn = energy.energy
    elif callable(energy):
        fn = energy
    else:
        raise ValueError(
            f"{who}: expected an Energy (or an object with .energy(x), or a callable "
            f"x -> u(x)), got {type(energy).__name__}"
        )
    if not isinstance(space, Space):
        raise ValueError(
            f"{who}: expected the wrapped energy to have a .space or space= to be given, "
            f"got {space!r}"
        )
    return fn, space


class RegularizedEnergy(Energy):
    """Base of the regularisers: wraps an energy, maps finite values, caps non-finite ones.

    Subclasses set ``cap`` and implement ``_transform(u)``. See the module docstring for how
    non-finite energies are handled.

    Arguments:
        energy: an :class:`~physics.energy.Energy`, any object with ``.energy(x)`` and
            ``.space``, or a callable ``x -> u(x)`` (then give ``space``).
        cap: the value that replaces non-finite energies.
        space: the space of the points when ``energy`` has none.

    Attributes:
        wrapped: the wrapped energy (its exact references, e.g. ``wrapped.log_Z``, describe the
            unregularised target).
        cap: replacement value for non-finite energies.
        last_nonfinite: number of non-finite energies in the latest call.
        last_batch: number of energies in the latest call.
        total_nonfinite, total_evaluated: the same, summed over all calls since construction
            or :meth:`reset_counts`.
    """

    def __init__(self, energy: Target, cap: float, *, space: Space | None = None):
        who = type(self).__name__
        fn, space = _as_energy(energy, space, who)
        super().__init__(space, kT=getattr(energy, "kT", None))
        self.wrapped = energy
        self._fn = fn
        self.cap = float(cap)
        self.reset_counts()

    def reset_counts(self) -> None:
        """Set the non-finite counters to zero."""
        self.last_nonfinite = self.last_batch = 0
        self.total_nonfinite = self.total_evaluated = 0

    def _transform(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def _reduced(self, x: Tensor) -> Tensor:
        u = self._fn(x)
        good = torch.isfinite(u)
        bad_count = u.numel() - int(good.sum())
        self.last_nonfinite, self.last_batch = bad_count, u.numel()
        self.total_nonfinite += bad_count
        self.total_evaluated += u.numel()
        if bad_count == 0:
            return self._transform(u)
        out = torch.full(u.shape, self.cap, dtype=u.dtype, device=u.device)
        if bad_count == u.numel():
            return out
        # Evaluate again on the finite rows only: the bad rows stay out of the graph.
        return out.masked_scatter(good, self._transform(self._fn(x[good])))


class LinLogCut(RegularizedEnergy):
    r"""Linear-logarithmic energy cut (Noe et al. 2019) with non-finite energies capped.

    .. math::

        \tilde u(x) = \min\big(u_{\max},\ u(x)\big) \text{ if } u(x) \le u_{\rm high},
        \quad u_{\rm high} + \log(1 + u(x) - u_{\rm high}) \text{ (capped) otherwise};
        \quad \tilde u = u_{\max} \text{ where } u \text{ is NaN or } \pm\infty.

    Arguments:
        energy: the energy to regularise (see :class:`RegularizedEnergy`).
        high: start of the logarithmic regime, in reduced units (default ``1e3``).
        max: the cap, ``> high`` (default ``1e9``).
        space: the space of the points when ``energy`` has none.

    References:
        Noe, Olsson, Koehler & Wu, "Boltzmann generators", Science 2019, arXiv:1812.01729.

    Example:
        >>> from physics.particles import LJ13
        >>> reg = LinLogCut(LJ13(), high=100.0, max=1000.0)
        >>> x = torch.zeros(2, 39)  # all particles on top of each other: u = NaN
        >>> reg.energy(x).tolist(), reg.last_nonfinite
        ([1000.0, 1000.0], 2)
    """

    def __init__(
        self, energy: Target, high: float = 1e3, max: float = 1e9, *, space: Space | None = None
    ):
        who = type(self).__name__
        high, maximum = float(high), float(max)
        if not (math.isfinite(high) and math.isfinite(maximum) and high < maximum):
            raise ValueError(
                f"{who}: expected finite thresholds with high < max, got high={high}, max={maximum}"
            )
        super().__init__(energy, maximum, space=space)
        self.high, self.max = high, maximum

    def extra_repr(self) -> str:
        return f"high={self.high:g}, max={self.max:g}"

    def _transform(self, u: Tensor) -> Tensor:
        return linlog_cut(u, self.high, self.max)


class Clip(RegularizedEnergy):
    r"""Clip the reduced energy to ``[low, high]``; non-finite energies become ``high``.

    .. math:: \tilde u(x) = \min\big(u_{\rm high},\ \max(u_{\rm low},\ u(x))\big)

    Clipped entries have zero gradient (the sample still enters the loss through ``log q``).

    Arguments:
        energy: the energy to regularise (see :class:`RegularizedEnergy`).
        high: the upper clip and cap, in reduced units (default ``1e3``).
        low: optional lower clip (default none).
        space: the space of the points when ``energy`` has none.

    Example:
        >>> from manifoldflows.spaces import Euclidean
        >>> reg = Clip(lambda x: x[..., 0].log(), high=2.0, space=Euclidean(1))
        >>> reg.energy(torch.tensor([[1.0], [100.0], [-1.0]])).tolist(), reg.last_nonfinite
        ([0.0, 2.0, 2.0], 1)
    """

    def __init__(
        self,
        energy: Target,
        high: float = 1e3,
        low: float | None = None,
        *,
        space: Space | None = None,
    ):
        who = type(self).__name__
        high = float(high)
        low = None if low is None else float(low)
        if not math.isfinite(high) or (low is not None and not (math.isfinite(low) and low < high)):
            raise ValueError(
                f"{who}: expected a finite high and optional finite low < high, got "
                f"high={high}, low={low}"
            )
        super().__init__(energy, high, space=space)
        self.high, self.low = high, low

    def extra_repr(self) -> str:
        return f"high={self.high:g}, low={self.low}"

    def _transform(self, u: Tensor) -> Tensor:
        return u.clamp(min=self.low, max=self.high)
