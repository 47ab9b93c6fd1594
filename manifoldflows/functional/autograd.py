r"""One autograd helper: a scalar-per-point function and its gradient in the points.

Energies, forces, Langevin drifts and leapfrog steps all need ``(f(x), grad_x f(x))`` for a
function ``f`` with the batch shape of ``x`` (one value per point). :func:`value_and_grad`
is the single place that builds it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["value_and_grad"]


def value_and_grad(
    fn: Callable[[Tensor], Tensor], x: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    r"""``(f(x), grad_x f(x))`` for a function with one value per point, by autograd.

    .. math:: g_i = \frac{\partial}{\partial x_i} \sum_b f(x_b)
              = \nabla f(x_i) \quad\text{(points do not interact)}

    Two modes:

    * ``create_graph=True`` with grad mode on: the gradient is itself differentiable (second
      order terms are kept), so paths through it (a Langevin drift, a leapfrog step) can be
      back-propagated to ``x`` (when ``x`` is part of a graph) and to any parameter of ``fn``.
    * otherwise (or under ``torch.no_grad``): both outputs are detached, computed on a
      detached copy of ``x``; nothing is added to any graph and no parameter of ``fn``
      receives a gradient.

    A function that does not depend on ``x`` gets a zero gradient.

    Arguments:
        fn: ``x -> f(x)`` with ``f(x).shape == x.shape[:-k]`` (any batch shape).
        x: points, ``(*batch, *event_shape)``.
        create_graph: keep the gradient differentiable (see above).

    Returns:
        ``(value, grad)`` with shapes ``f(x).shape`` and ``x.shape``.

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
        >>> value, grad = value_and_grad(lambda x: 0.5 * (x**2).sum(-1), x)
        >>> value.tolist(), torch.equal(grad, x)
        ([2.5, 0.5], True)
    """
    if create_graph and torch.is_grad_enabled():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        value = fn(xg)
        return value, _grad(value, xg, create_graph=True)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        value = fn(xg)
        grad = _grad(value, xg, create_graph=False)
    return value.detach(), grad.detach()


def _grad(value: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    if not value.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad
