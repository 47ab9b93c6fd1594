"""Generic correctness checks for transforms and distributions.

Used by this project's test-suite and meant for users who write their own layers::

    from manifoldflows.testing import check_transform
    check_transform(MyLayer(...))            # raises AssertionError on any failure

:func:`check_transform` verifies, for several batch shapes, that outputs have the right shapes
and lie in the codomain, that the inverse recovers the input, that the forward and inverse
logdets cancel, that the logdet equals ``log|det J|`` of autograd's Jacobian expressed in
orthonormal tangent bases of the domain and codomain, that every parameter receives a finite,
non-zero gradient, that context broadcasts, and that the layer survives ``torch.save``/``load``.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .core import Transform
from .distributions import Distribution
from .spaces import Space

__all__ = [
    "Tolerance",
    "tolerance_for",
    "perturb_parameters",
    "tangent_jacobian_logdet",
    "check_transform",
    "check_distribution",
]


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerances used by the checks."""

    atol: float
    rtol: float


def tolerance_for(dtype: torch.dtype) -> Tolerance:
    """Default tolerances: tight in float64, loose in float32."""
    if dtype == torch.float64:
        return Tolerance(atol=1e-7, rtol=1e-6)
    return Tolerance(atol=2e-3, rtol=2e-3)


def perturb_parameters(
    module: torch.nn.Module, scale: float = 0.1, generator: torch.Generator | None = None
) -> None:
    """Add ``N(0, scale^2)`` noise to every floating-point parameter (in place).

    Layers often start at the identity; perturbing them makes the checks meaningful.
    """
    with torch.no_grad():
        for p in module.parameters():
            if torch.is_floating_point(p):
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                p.add_(scale * noise)


def _fail(t: Transform, what: str) -> None:
    raise AssertionError(f"check_transform({t.name}): {what}")


def _assert_close(t: Transform, what: str, a: Tensor, b: Tensor, tol: Tolerance) -> None:
    if a.shape != b.shape:
        _fail(t, f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if not torch.allclose(a, b, atol=tol.atol, rtol=tol.rtol):
        err = (a - b).abs().max().item()
        _fail(t, f"{what}: max abs difference {err:.3g} exceeds atol={tol.atol}, rtol={tol.rtol}")


def _point_distance(space: Space, a: Tensor, b: Tensor) -> Tensor:
    try:
        return space.dist(a, b)
    except NotImplementedError:
        return (a - b).flatten(a.dim() - space.event_ndim).norm(dim=-1)


def tangent_jacobian_logdet(t: Transform, x: Tensor, context: Tensor | None = None) -> Tensor:
    """``log|det J|`` of ``t.forward`` at the single point ``x`` computed with autograd.

    The ambient Jacobian ``J`` is expressed in orthonormal tangent bases:
    ``J_T = B_out(y)^T J B_in(x)``, which is square when ``t`` preserves the intrinsic dimension.
    """
    dom, cod = t.domain, t.codomain
    ctx = None if context is None else context.unsqueeze(0)

    def f(v: Tensor) -> Tensor:
        return t._forward(v.unsqueeze(0), ctx)[0].squeeze(0).reshape(-1)

    jac = torch.autograd.functional.jacobian(f, x).reshape(cod.ambient_dim, dom.ambient_dim)
    y = f(x).reshape(cod.event_shape)
    basis_in = dom.tangent_basis(x)
    basis_out = cod.tangent_basis(y)
    jt = basis_out.transpose(-1, -2) @ jac @ basis_in
    if jt.shape[-1] != jt.shape[-2]:
        raise AssertionError(f"{t.name}: tangent Jacobian is not square, {tuple(jt.shape)}")
    return torch.linalg.slogdet(jt)[1]


def _random_context(
    t: Transform,
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator | None,
) -> Tensor | None:
    if t.context_dim is None:
        return None
    return torch.randn(*shape, t.context_dim, dtype=dtype, generator=generator).to(device)


def check_transform(
    transform: Transform,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    batch_shapes: Sequence[tuple[int, ...]] = ((), (7,), (3, 4)),
    tolerance: Tolerance | None = None,
    perturb: float = 0.1,
    jacobian_points: int = 3,
    inputs: Callable[[tuple[int, ...]], Tensor] | None = None,
    seed: int = 0,
) -> Transform:
    """Run every generic check on ``transform``; raise ``AssertionError`` on the first failure.

    Arguments:
        transform: the layer to check (a deep copy is checked; the argument is untouched).
        dtype, device: where to run the checks.
        batch_shapes: batch shapes to try.
        tolerance: overrides :func:`tolerance_for` ``(dtype)``.
        perturb: scale of the noise added to the parameters first (0 to keep them).
        jacobian_points: how many points get the autograd-Jacobian logdet check.
        inputs: optional callable ``shape -> points of the domain`` (default:
            ``domain.random``).
        seed: seed of the generator used for inputs, contexts and perturbations.

    Returns:
        The checked copy (moved to ``dtype``/``device``).

    Example:
        >>> from manifoldflows.transforms import AffineCoupling
        >>> _ = check_transform(AffineCoupling(4, context_dim=2))
    """
    tol = tolerance or tolerance_for(dtype)
    gen = torch.Generator().manual_seed(seed)
    t = copy.deepcopy(transform).to(device=device, dtype=dtype)
    if perturb:
        perturb_parameters(t, perturb, gen)

    def sample_inputs(shape: Sequence[int]) -> Tensor:
        if inputs is not None:
            return inputs(tuple(shape)).to(device=device, dtype=dtype)
        return t.domain.random(tuple(shape), dtype=dtype, generator=gen).to(device)

    invertible = not t.stochastic
    for shape in batch_shapes:
        x = sample_inputs(shape)
        ctx = _random_context(t, shape, dtype, device, gen)
        y, ld = t(x, ctx)
        if tuple(y.shape) != tuple(shape) + tuple(t.codomain.event_shape):
            _fail(t, f"forward output shape {tuple(y.shape)} for batch shape {shape}")
        if tuple(ld.shape) != tuple(shape):
            _fail(t, f"logdet shape {tuple(ld.shape)}, expected the batch shape {shape}")
        if y.dtype != dtype or ld.dtype != dtype:
            _fail(t, f"output dtypes {y.dtype}/{ld.dtype}, expected {dtype}")
        t.codomain.check_point(y, f"{t.name} output")
        if not invertible:
            continue
        x2, ld2 = t.inverse(y, ctx)
        gap = _point_distance(t.domain, x, x2)
        _assert_close(
            t, f"inverse(forward(x)) = x for batch shape {shape}", gap, torch.zeros_like(gap), tol
        )
        _assert_close(
            t,
            f"forward + inverse logdet = 0 for batch shape {shape}",
            ld + ld2,
            torch.zeros_like(ld),
            tol,
        )

    x = sample_inputs((max(jacobian_points, 1),))
    ctx = _random_context(t, (x.shape[0],), dtype, device, gen)
    if invertible:
        _, ld = t(x, ctx)
        for i in range(jacobian_points):
            ref = tangent_jacobian_logdet(t, x[i], None if ctx is None else ctx[i])
            _assert_close(t, f"logdet equals autograd log|det J| at point {i}", ld[i], ref, tol)

    # Every parameter gets a finite, non-zero gradient; inputs get finite gradients.
    t.zero_grad(set_to_none=True)
    x = sample_inputs((16,)).requires_grad_(True)
    ctx = _random_context(t, (16,), dtype, device, gen)
    y, ld = t(x, ctx)
    weights = torch.randn(y.shape, dtype=dtype, generator=gen).to(device)
    ((y * weights).sum() + ld.sum()).backward()
    if x.grad is None or not bool(torch.isfinite(x.grad).all()):
        _fail(t, "gradient with respect to the input is missing or not finite")
    for name, p in t.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            _fail(t, f"parameter {name!r} received no gradient")
        if not bool(torch.isfinite(p.grad).all()):
            _fail(t, f"parameter {name!r} has a non-finite gradient")
        if not bool((p.grad != 0).any()):
            _fail(t, f"parameter {name!r} received an all-zero gradient")

    # Context broadcasting and context dependence.
    if t.context_dim is not None:
        x = sample_inputs((5,))
        c = _random_context(t, (), dtype, device, gen)
        y1, ld1 = t(x, c)
        y2, ld2 = t(x, c.expand(5, -1))
        _assert_close(t, "output with a broadcast context", y1, y2, tol)
        _assert_close(t, "logdet with a broadcast context", ld1, ld2, tol)
        y3, ld3 = t(x, c + 1.0)
        if torch.allclose(y1, y3) and torch.allclose(ld1, ld3):
            _fail(t, "output does not depend on the context")

    # Save/load round trips: whole module and state dict.
    x = sample_inputs((4,))
    ctx = _random_context(t, (4,), dtype, device, gen)
    with torch.no_grad():
        ref_y, ref_ld = t(x, ctx)
        buffer = io.BytesIO()
        torch.save(t, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        if t.stochastic:
            return t
        y, ld = loaded(x, ctx)
        _assert_close(t, "output after torch.save/torch.load", y, ref_y, tol)
        _assert_close(t, "logdet after torch.save/torch.load", ld, ref_ld, tol)
        fresh = copy.deepcopy(t)
        perturb_parameters(fresh, 1.0, gen)
        fresh.load_state_dict(t.state_dict())
        y, ld = fresh(x, ctx)
        _assert_close(t, "output after load_state_dict", y, ref_y, tol)
    return t


def check_distribution(
    dist: Distribution,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    context: Tensor | None = None,
    tolerance: Tolerance | None = None,
    seed: int = 0,
) -> Distribution:
    """Shapes, support, ``sample_and_log_prob`` vs ``log_prob`` consistency, save/load.

    Example:
        >>> from manifoldflows.distributions import DiagNormal
        >>> _ = check_distribution(DiagNormal(3))
    """
    tol = tolerance or tolerance_for(dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    d = copy.deepcopy(dist).to(device=device, dtype=dtype)
    if context is not None:
        context = context.to(device=device, dtype=dtype)
    batch = tuple(context.shape[:-1]) if context is not None else ()
    for shape in ((), (5,), (2, 3)):
        x = d.sample(shape, context, generator=gen)
        expected = shape + batch + tuple(d.space.event_shape)
        if tuple(x.shape) != expected:
            raise AssertionError(f"{d.name}: sample shape {tuple(x.shape)}, expected {expected}")
        d.space.check_point(x, f"{d.name} sample")
        x, lp = d.sample_and_log_prob(shape, context, generator=gen)
        if tuple(lp.shape) != shape + batch:
            raise AssertionError(f"{d.name}: log_prob shape {tuple(lp.shape)}")
        ref = d.log_prob(x, context)
        if not torch.allclose(lp, ref, atol=tol.atol * 10, rtol=tol.rtol * 10):
            raise AssertionError(
                f"{d.name}: sample_and_log_prob disagrees with log_prob "
                f"by {(lp - ref).abs().max():.3g}"
            )
    buffer = io.BytesIO()
    torch.save(d, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = d.sample((4,), context, generator=gen)
    if not torch.allclose(
        loaded.log_prob(x, context), d.log_prob(x, context), atol=tol.atol, rtol=tol.rtol
    ):
        raise AssertionError(f"{d.name}: log_prob changed after torch.save/torch.load")
    return d
