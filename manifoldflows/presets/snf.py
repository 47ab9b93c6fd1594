"""Stochastic normalizing flows: coupling layers interleaved with MCMC blocks."""

from __future__ import annotations

from collections.abc import Sequence

from .._checks import positive_int
from ..core import Chain, Flow, Transform
from ..distributions import (
    StandardNormal,
)
from ..stochastic import HMC, AnnealedEnergy, MetropolisHastings, OverdampedLangevin
from ..targets import Target
from ..transforms.coupling import AffineCoupling, SplineCoupling

__all__ = ["SNF"]


SNF_STOCHASTIC_KINDS = ("langevin", "mala", "mh", "hmc")
_SNF_DEFAULT_STEP = {"langevin": 0.01, "mala": 0.05, "mh": 0.3, "hmc": 0.1}


def SNF(
    dim: int,
    energy: Target,
    *,
    flow_layers: int = 2,
    stochastic: str = "mh",
    blocks: int = 2,
    hidden: Sequence[int] = (64, 64),
    coupling: str = "affine",
    steps: int = 10,
    step_size: float | None = None,
    leapfrog_steps: int = 5,
    anneal: bool = True,
    learnable_step: bool = True,
    bins: int = 8,
    bound: float = 5.0,
    activation: str = "relu",
    context_dim: int | None = None,
) -> Flow:
    r"""Stochastic normalizing flow on ``R^d``: coupling blocks interleaved with MCMC blocks.

    ``blocks`` times: ``flow_layers`` coupling layers (RealNVP affine or rational-quadratic
    spline, alternating the transformed half, no permutations, so every stochastic block sees
    the data coordinates) followed by one stochastic block of ``steps`` MCMC steps:

    * ``"langevin"``: :class:`~manifoldflows.stochastic.OverdampedLangevin` (unadjusted);
    * ``"mala"``: the Metropolis-adjusted Langevin algorithm;
    * ``"mh"``: :class:`~manifoldflows.stochastic.MetropolisHastings` (Gaussian random walk);
    * ``"hmc"``: :class:`~manifoldflows.stochastic.HMC` with ``leapfrog_steps`` per step.

    With ``anneal=True`` (as in Wu et al.) block ``k = 1..K`` targets the interpolated energy
    :math:`u_{\lambda_k} = (1 - \lambda_k) |x|^2 / 2 + \lambda_k u(x)`,
    :math:`\lambda_k = k / K` (:class:`~manifoldflows.stochastic.AnnealedEnergy`), so the last
    block targets ``u`` itself; with ``anneal=False`` every block targets ``u``. Any choice
    gives unbiased importance weights: every block returns its exact path weight. The base is
    ``N(0, I)``; ``flow.transform`` is stochastic, so the flow offers
    :meth:`~manifoldflows.core.Flow.sample_and_log_weight` (and no ``log_prob``), and
    :func:`manifoldflows.losses.reverse_kl` trains flow and step sizes end to end with the
    path-weighted reverse KL ``E[-log w]``. ``flow_layers=0`` gives a pure (annealed) MCMC
    sampler started from ``N(0, I)``.

    Note that a final block in detailed balance with ``u`` (``"mala"``, ``"mh"``, ``"hmc"``)
    has path weight ``u(y) - u(x)``, which cancels ``u(y)`` in ``log w``: it moves the samples
    towards the target without changing their weights, so its step size receives no
    reverse-KL gradient (the weights, ESS and ``log Z`` estimates are those of its input).

    Arguments:
        dim: dimension ``d`` (at least 2 when ``flow_layers > 0``).
        energy: the target, a callable ``x -> u(x)`` or an object with ``.energy(x)``.
        flow_layers: coupling layers before each stochastic block (``>= 0``).
        stochastic: ``"langevin"``, ``"mala"``, ``"mh"`` or ``"hmc"``.
        blocks: number of (coupling layers, stochastic block) pairs.
        hidden, activation: conditioner MLPs of the couplings.
        coupling: ``"affine"`` (RealNVP) or ``"spline"`` (NSF, ``bins`` bins on
            ``[-bound, bound]``).
        steps: MCMC steps per stochastic block.
        step_size: initial step size / proposal scale (default 0.01 for ``"langevin"``, 0.05
            for ``"mala"``, 0.3 for ``"mh"``, 0.1 for ``"hmc"``).
        leapfrog_steps: leapfrog steps per HMC step.
        anneal: interpolate the intermediate blocks' energies from the base to the target.
        learnable_step: make the step sizes parameters.
        context_dim: context size of the couplings (the stochastic blocks ignore context).

    Returns:
        A :class:`~manifoldflows.core.Flow` with a stochastic transform.

    References:
        H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020,
        arXiv:2002.06707.

    Example:
        >>> u = lambda x: (x[..., 0] ** 2 - 1.0) ** 2 + 0.5 * x[..., 1] ** 2
        >>> flow = SNF(2, u, flow_layers=1, blocks=2, hidden=(8,), steps=3)
        >>> x, log_w = flow.sample_and_log_weight(u, (5,))
        >>> x.shape, log_w.shape, flow.stochastic
        (torch.Size([5, 2]), torch.Size([5]), True)
    """
    if stochastic not in SNF_STOCHASTIC_KINDS:
        raise ValueError(f"SNF: expected stochastic in {SNF_STOCHASTIC_KINDS}, got {stochastic!r}")
    if coupling not in ("affine", "spline"):
        raise ValueError(f"SNF: expected coupling 'affine' or 'spline', got {coupling!r}")
    blocks = positive_int(blocks, "number of blocks", "SNF")
    flow_layers = positive_int(flow_layers, "number of flow_layers", "SNF", minimum=0)
    if flow_layers > 0 and positive_int(dim, "dimension", "SNF") < 2:
        raise ValueError(f"SNF: coupling layers need dim >= 2, got {dim!r}")
    step = _SNF_DEFAULT_STEP[stochastic] if step_size is None else step_size
    options = dict(context_dim=context_dim, hidden=hidden, activation=activation)
    if coupling == "spline":
        options.update(bins=bins, bound=bound)
    layer_type = AffineCoupling if coupling == "affine" else SplineCoupling
    mcmc = {
        "langevin": lambda u: OverdampedLangevin(dim, u, steps, step, learnable=learnable_step),
        "mala": lambda u: OverdampedLangevin(
            dim, u, steps, step, metropolis=True, learnable=learnable_step
        ),
        "mh": lambda u: MetropolisHastings(dim, u, steps, step, learnable=learnable_step),
        "hmc": lambda u: HMC(dim, u, steps, leapfrog_steps, step, learnable=learnable_step),
    }[stochastic]
    parts: list[Transform] = []
    for k in range(blocks):
        for i in range(flow_layers):
            parts.append(layer_type(dim, swap=(k * flow_layers + i) % 2 == 1, **options))
        lam = (k + 1) / blocks
        parts.append(mcmc(AnnealedEnergy(energy, lam) if anneal and k < blocks - 1 else energy))
    return Flow(StandardNormal(dim), Chain(*parts))
