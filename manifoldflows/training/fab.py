r"""Flow annealed importance sampling bootstrap (FAB): :class:`FAB` and its AIS, on any target.

FAB (Midgley et al. 2023) trains a flow ``q`` to minimise the alpha-divergence with
``alpha = 2``,

.. math::

    D_2(p \,\|\, q) = \log \int \frac{p(x)^2}{q(x)}\, dx,
    \qquad \nabla_\theta D_2 \propto -\,\mathbb{E}_{p^2/q_\theta}\big[\nabla_\theta \log
    q_\theta(x)\big],

whose minimiser is mass-covering and whose value bounds the variance of the importance weights
``p/q``. The expectation over ``p^2 / q`` - concentrated where ``q`` under-covers ``p`` - is
estimated by **annealed importance sampling** from ``q`` towards ``p^alpha q^(1 - alpha)``
(:func:`fab_annealed_importance_sampling`), with Hamiltonian Monte Carlo transitions: the AIS
points ``x_i`` with log weights ``log w_i`` give the surrogate loss

.. math:: \mathcal{L}(\theta) = -\sum_i \bar w_i \log q_\theta(x_i), \qquad
          \bar w_i = w_i / \textstyle\sum_j w_j,

(:func:`~manifoldflows.losses.weighted_forward_kl`), the "bootstrap": the flow learns from
samples that AIS has already moved towards where it is wrong. With a
:class:`~manifoldflows.training.PrioritisedReplayBuffer`, every AIS batch is stored and reused
for several steps: minibatches are drawn in proportion to ``w``, their weights moved to the
current flow by ``(q_old / q)^(alpha - 1)`` (clipped at ``max_weight_adjust``), and the loss is
``-mean(w_adjust * log q(x))`` (FAB's section 4).

**Where AIS runs.** For a :class:`~manifoldflows.core.Flow` (``latent=True``, the default) AIS
runs in the flow's **latent space**: ``z ~ base``, target ``v(z) = u(T(z)) - log|det
T'(z)|`` (the target pulled back through the flow), so that the starting density is the base
(Gaussian, von Mises, uniform: cheap, and well conditioned for HMC, whose step size is then
one scalar) and every point maps to a valid sample ``x = T(z)``, also when the data space is a
constrained set (e.g. molecular configurations modulo rigid motions) on which HMC in the
ambient coordinates would not stay. Importance weights are invariant under the change of
variables, so the weights are those of AIS in data space. A latent space that is a
:class:`~manifoldflows.spaces.Product` of real lines and circles (a Boltzmann generator's
``Product(Euclidean, Euclidean, Torus)``) is unrolled to ``R^d``: the energy is evaluated at
the wrapped angles, so it is periodic, and the HMC kernel on ``R^d`` descends to the torus.
With ``latent=False`` AIS runs in data space with ``q = model.log_prob`` and needs a space
that :class:`~manifoldflows.stochastic.HMC` supports.

References:
    L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato, "Flow
    annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893.
    R. M. Neal, "Annealed importance sampling", Statistics and Computing 11 (2001),
    arXiv:physics/9803008.
    T. Minka, "Divergence measures and message passing", Microsoft Research TR-2005-173
    (alpha-divergences).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import positive_float, positive_int
from .._validation import validation
from ..errors import InvalidInput, NonFiniteOutput, StochasticFlowError
from ..estimators import effective_sample_size
from ..functional.circle import wrap
from ..losses import weighted_forward_kl
from ..spaces import Euclidean, Product, Space, Sphere, Torus
from ..stochastic import HMC
from ..targets import Target, check_target_space, energy_fn, target_energy
from .replay import PrioritisedReplayBuffer

__all__ = ["FAB", "FABSamples", "fab_annealed_importance_sampling"]


class FABSamples(NamedTuple):
    """The result of :func:`fab_annealed_importance_sampling`.

    Attributes:
        x: the AIS end points in data space ``(n, *event_shape)``.
        log_w: their AIS log weights w.r.t. ``p^alpha q^(1 - alpha)`` ``(n,)`` (``-inf``:
            zero weight).
        log_q: the flow's ``log q`` at ``x`` ``(n,)`` (no gradient).
        log_w_flow: the flow's own importance log weights ``-u - log q`` at the AIS *start*
            points (plain samples of ``q``) ``(n,)``: the flow's ESS comes for free.
        acceptance: the mean acceptance rate of the HMC moves at each level ``(n_levels,)``.
    """

    x: Tensor
    log_w: Tensor
    log_q: Tensor
    log_w_flow: Tensor
    acceptance: Tensor


def _hmc_ready(space: Space) -> bool:
    return isinstance(space, (Torus, Sphere)) or space == Euclidean(space.ambient_dim)


class _Problem:
    """Where AIS moves: start points, the two parts ``(log r, v)`` of every level's energy, and
    the map of end points to data space (``r``: starting density, ``v``: target energy)."""

    def __init__(self, model: nn.Module, target: Target, latent: bool, who: str):
        self.model, self.target, self.latent, self.who = model, energy_fn(target), latent, who
        self.angles: Tensor | None = None
        if not latent:
            space = model.space
            if not _hmc_ready(space):
                raise InvalidInput(
                    f"{who}: HMC cannot move on the model's space {space!r}; use latent=True "
                    "(AIS in the flow's latent space)"
                )
            self.space = space
            return
        space = model.base.space
        if _hmc_ready(space):
            self.space = space
            return
        kinds = [c.kind for c in space.coordinates] if isinstance(space, Product) else []
        if not kinds or any(k not in ("real", "angle") for k in kinds):
            raise InvalidInput(
                f"{who}: HMC cannot move on the latent space {space!r}; AIS needs R^d, a torus, "
                "a sphere or a product of real lines and circles"
            )
        self.space = Euclidean(space.ambient_dim)
        self.angles = torch.tensor([k == "angle" for k in kinds])

    def wrap(self, z: Tensor) -> Tensor:
        if self.angles is None:
            return z
        return torch.where(self.angles.to(z.device), wrap(z), z)

    def start(self, n: int, generator: torch.Generator | None) -> Tensor:
        source = self.model.base if self.latent else self.model
        return source.sample((n,), None, generator).detach()

    def parts(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.latent:
            log_q = self.model.log_prob(y)
            return log_q, target_energy(self.target, y, log_q.shape, None, self.who)
        z = self.wrap(y)
        x, logdet = self.model.transform(z)
        u = target_energy(self.target, x, logdet.shape, None, self.who)
        return self.model.base.log_prob(z), u - logdet

    def finish(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.latent:
            return y, self.model.log_prob(y)
        z = self.wrap(y)
        x, logdet = self.model.transform(z)
        return x, self.model.base.log_prob(z) - logdet


class _Level:
    r"""Energy of AIS level ``beta`` towards ``p^alpha r^(1 - alpha)``:
    ``e(y) = -(1 - alpha beta) log r(y) + alpha beta v(y)``, keeping the parts ``(log r, v)``
    of the last evaluation and (through :meth:`follow`) of the chain's current points."""

    def __init__(self, problem: _Problem, alpha: float):
        self.problem, self.alpha, self.beta = problem, alpha, 0.0
        self.last: tuple[Tensor, Tensor] | None = None
        self.current: tuple[Tensor, Tensor] | None = None

    def energy(self, y: Tensor) -> Tensor:
        log_r, v = self.problem.parts(y)
        self.last = (log_r.detach(), v.detach())
        ab = self.alpha * self.beta
        return -(1.0 - ab) * log_r + ab * v

    def follow(self, accept: Tensor) -> None:
        self.current = tuple(
            torch.where(accept, new, old) for new, old in zip(self.last, self.current)
        )


def fab_annealed_importance_sampling(
    model: nn.Module,
    target: Target,
    n: int,
    n_levels: int = 8,
    *,
    alpha: float = 2.0,
    latent: bool | None = None,
    step_size: float = 0.1,
    leapfrog_steps: int = 4,
    mcmc_steps: int = 1,
    generator: torch.Generator | None = None,
) -> FABSamples:
    r"""Annealed importance sampling from a flow ``q`` towards ``p^alpha q^(1 - alpha)``.

    Levels ``pi_k ∝ q^(1 - alpha beta_k) p^(alpha beta_k)`` with ``beta_k = k / K``
    (``K = n_levels``) lead from ``q`` (``k = 0``) to ``p^alpha q^(1 - alpha)`` (``p^2 / q``
    for ``alpha = 2``, FAB's target; ``alpha = 1`` is plain AIS towards ``p``). From ``y_0 ~
    q`` the log weight gains, before the moves of each level,

    .. math::

        \log\frac{\pi_k(y)}{\pi_{k-1}(y)} = \alpha(\beta_k - \beta_{k-1})
            \big(-u(y) - \log q(y)\big),

    and the point then makes ``mcmc_steps`` HMC moves (:class:`~manifoldflows.stochastic.HMC`,
    ``leapfrog_steps`` leapfrog steps of size ``step_size``) that leave ``pi_k`` invariant.
    ``exp(log_w)`` is an unbiased estimate of ``int p^alpha q^(1 - alpha)`` and ``(x, w)`` a
    properly weighted sample of ``p^alpha q^(1 - alpha)``. See the module docstring for the
    latent space (``latent=True``, default for a flow with ``base`` and ``transform``).
    Proposals with NaN or infinite energy are rejected; start points with a NaN/inf energy get
    weight zero. No gradient reaches the model's parameters; the package's input checks are
    off inside (every value is checked here).

    Cost: ``n (1 + n_levels (1 + mcmc_steps * leapfrog_steps))`` target evaluations with
    gradients (and as many flow passes with gradients in the latent space), plus one flow pass
    for the end points.

    Arguments:
        model: a flow (``base`` and ``transform``; any distribution with ``sample`` and
            ``log_prob`` when ``latent=False``).
        target: callable ``x -> u(x)`` or object with ``.energy(x)`` (differentiable).
        n: number of particles.
        n_levels: ``K``, the number of annealing levels.
        alpha: the order (``> 0``).
        latent: run in the latent space (default: for flows).
        step_size: the HMC leapfrog step.
        leapfrog_steps: leapfrog steps per HMC move.
        mcmc_steps: HMC moves per level.
        generator: random generator for start points, momenta and decisions.

    Returns:
        :class:`FABSamples`.

    References:
        L. I. Midgley et al., "Flow annealed importance sampling bootstrap", ICLR 2023,
        arXiv:2208.01893. R. M. Neal, "Annealed importance sampling", arXiv:physics/9803008.

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import DiagNormal
        >>> from manifoldflows.presets import NSF
        >>> u = lambda x: 0.5 * (x**2).sum(-1)  # N(0, I); q = N(0, 4 I) is too wide
        >>> q = DiagNormal(2, scale=2.0)
        >>> s = fab_annealed_importance_sampling(q, u, 2000, 4, step_size=0.5,
        ...                                      generator=torch.Generator().manual_seed(0))
        >>> exact = math.log(64 * math.pi**2 / 7)  # int exp(-|x|^2) / q(x) dx
        >>> z_hat = float(torch.logsumexp(s.log_w, 0) - math.log(2000))
        >>> abs(z_hat - exact) < 0.1, s.acceptance.shape
        (True, torch.Size([4]))
    """
    who = "fab_annealed_importance_sampling"
    n = positive_int(n, "number of particles n", who)
    n_levels = positive_int(n_levels, "number of levels n_levels", who)
    alpha = positive_float(alpha, "alpha", who)
    step_size = positive_float(step_size, "step_size", who)
    if getattr(model, "stochastic", False):
        raise StochasticFlowError(f"{who}: the model has stochastic layers and no tractable q")
    if latent is None:
        latent = hasattr(model, "base") and hasattr(model, "transform")
    elif latent and not (hasattr(model, "base") and hasattr(model, "transform")):
        raise InvalidInput(f"{who}: latent=True needs a Flow (base and transform)")
    check_target_space(model, target, who)
    problem = _Problem(model, target, bool(latent), who)
    level = _Level(problem, alpha)
    kernel = HMC(problem.space, level, mcmc_steps, leapfrog_steps, step_size, learnable=False)
    rates = torch.zeros(n_levels, dtype=torch.float64)
    with torch.no_grad(), validation(False):
        y = problem.start(n, generator)
        kernel.to(dtype=y.dtype, device=y.device)
        log_r, v = problem.parts(y)
        level.current = (_nan_to(log_r, math.inf), _nan_to(v, math.inf))
        log_w_flow = _nan_to(-level.current[1] - level.current[0], -math.inf)
        log_w = torch.zeros_like(log_w_flow)
        for k in range(1, n_levels + 1):
            log_r, v = level.current
            increment = alpha / n_levels * (-v - log_r)
            log_w = log_w + _nan_to(increment, -math.inf)
            level.beta = k / n_levels
            y, _, _, _, accepted = kernel.run(y, generator, on_step=level.follow)
            rates[k - 1] = float(accepted.mean())
        x, log_q = problem.finish(y)
    log_w = torch.where(torch.isnan(log_w) | (log_w == math.inf), -math.inf, log_w)
    return FABSamples(x.detach(), log_w, log_q.detach(), log_w_flow, rates.to(log_w))


class FAB:
    r"""The FAB objective (alpha = 2 by default), with or without a prioritised replay buffer.

    Without a buffer, every step runs :func:`fab_annealed_importance_sampling` on
    ``batch_size`` particles and returns ``-sum_i wbar_i log q(x_i)``. With a
    :class:`~manifoldflows.training.PrioritisedReplayBuffer`, AIS runs every
    ``updates_per_ais`` steps (first until the buffer is :attr:`~PrioritisedReplayBuffer.
    ready`) and adds its batch to the buffer; every step draws ``batch_size`` entries in
    proportion to their weights and returns

    .. math:: \mathcal{L} = -\frac1n\sum_i \min\!\Big(c,\ \Big(\frac{q_{\rm old}(x_i)}
              {q(x_i)}\Big)^{\alpha - 1}\Big)\log q(x_i),

    then moves the drawn entries' weights to the current ``q`` (``c = max_weight_adjust``).
    The HMC step size adapts between AIS runs (never within one, which would bias the weights)
    towards a mean acceptance of ``target_acceptance``: ``eps <- eps exp(acc - target)``.

    After every call, :attr:`diagnostics` holds (from the latest AIS run) ``"ess"``: the
    relative ESS of the flow's own importance weights at the AIS start points (plain samples
    of ``q``, w.r.t. ``p``), ``"ess_ais"``: that of the AIS weights (w.r.t. ``p^alpha
    q^(1 - alpha)``), ``"alpha_div"``: the Monte-Carlo alpha-divergence objective of those
    flow samples, ``log(mean w^alpha) / (alpha - 1) = D_alpha(p || q) + alpha/(alpha - 1) log Z``
    (what FAB minimises; as :func:`~manifoldflows.losses.alpha_divergence` computes it),
    ``"acceptance"`` and ``"step_size"`` (the one used).

    Arguments:
        target: callable ``x -> u(x)`` or object with ``.energy(x)`` (differentiable).
        batch_size: AIS particles per run and samples per gradient step.
        n_levels: AIS levels.
        alpha: the order of the divergence (FAB: 2).
        latent: AIS in the flow's latent space (default for flows; see the module docstring).
        step_size: initial HMC step size.
        leapfrog_steps: leapfrog steps per HMC move.
        mcmc_steps: HMC moves per level.
        adapt_step_size: adapt the step size between AIS runs.
        target_acceptance: the acceptance rate the adaptation aims at.
        buffer: a replay buffer (``None``: no buffer, every step runs AIS).
        updates_per_ais: gradient steps per AIS run with a buffer.
        max_weight_adjust: the clip ``c`` of the buffer re-weighting.
        generator: random generator (AIS, buffer draws: give the buffer the same one).

    References:
        L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato, "Flow
        annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893.

    Example:
        >>> import torch
        >>> from manifoldflows.presets import NSF
        >>> from manifoldflows.training import PrioritisedReplayBuffer, fit
        >>> u = lambda x: 0.5 * ((x - 1.0) ** 2).sum(-1)
        >>> fab = FAB(u, 128, n_levels=2, buffer=PrioritisedReplayBuffer(1024, 256))
        >>> _ = fit(NSF(2, layers=2, hidden=(16,)), objective=fab, steps=8, progress=False)
        >>> len(fab.buffer), sorted(fab.diagnostics)  # 2 AIS runs fill it to 256, 1 more at step 4
        (384, ['acceptance', 'alpha_div', 'ess', 'ess_ais', 'step_size'])
    """

    def __init__(
        self,
        target: Target,
        batch_size: int = 256,
        *,
        n_levels: int = 8,
        alpha: float = 2.0,
        latent: bool | None = None,
        step_size: float = 0.1,
        leapfrog_steps: int = 4,
        mcmc_steps: int = 1,
        adapt_step_size: bool = True,
        target_acceptance: float = 0.65,
        buffer: PrioritisedReplayBuffer | None = None,
        updates_per_ais: int = 4,
        max_weight_adjust: float = 10.0,
        generator: torch.Generator | None = None,
    ):
        who = type(self).__name__
        energy_fn(target)
        self.target = target
        self.batch_size = positive_int(batch_size, "batch_size", who)
        self.n_levels = positive_int(n_levels, "n_levels", who)
        self.alpha = positive_float(alpha, "alpha", who)
        self.latent = latent
        self.step_size = positive_float(step_size, "step_size", who)
        self.leapfrog_steps = positive_int(leapfrog_steps, "leapfrog_steps", who)
        self.mcmc_steps = positive_int(mcmc_steps, "mcmc_steps", who)
        self.adapt_step_size = bool(adapt_step_size)
        self.target_acceptance = positive_float(target_acceptance, "target_acceptance", who)
        if buffer is not None and not isinstance(buffer, PrioritisedReplayBuffer):
            raise InvalidInput(
                f"{who}: expected a PrioritisedReplayBuffer or None, got {type(buffer).__name__}"
            )
        if buffer is not None and buffer.max_length < self.batch_size:
            raise InvalidInput(
                f"{who}: the buffer holds {buffer.max_length} entries, fewer than a batch "
                f"({self.batch_size})"
            )
        self.buffer = buffer
        self.updates_per_ais = positive_int(updates_per_ais, "updates_per_ais", who)
        self.max_weight_adjust = positive_float(max_weight_adjust, "max_weight_adjust", who)
        self.generator = generator
        self.diagnostics: dict[str, float] = {}

    def sample(self, model: nn.Module) -> FABSamples:
        """One AIS run with the current settings (and step-size adaptation afterwards)."""
        samples = fab_annealed_importance_sampling(
            model,
            self.target,
            self.batch_size,
            self.n_levels,
            alpha=self.alpha,
            latent=self.latent,
            step_size=self.step_size,
            leapfrog_steps=self.leapfrog_steps,
            mcmc_steps=self.mcmc_steps,
            generator=self.generator,
        )
        acceptance = float(samples.acceptance.mean())
        self.diagnostics = {
            "ess": _relative_ess(samples.log_w_flow),
            "ess_ais": _relative_ess(samples.log_w),
            "alpha_div": _alpha_objective(samples.log_w_flow, self.alpha),
            "acceptance": acceptance,
            "step_size": self.step_size,
        }
        if self.adapt_step_size:
            self.step_size *= math.exp(acceptance - self.target_acceptance)
        return samples

    def __call__(self, model: nn.Module, step: int) -> Tensor:
        who = type(self).__name__
        if self.buffer is None:
            samples = self.sample(model)
            if not bool(torch.isfinite(samples.log_w).any()):
                raise NonFiniteOutput(
                    f"{who}: every AIS weight is zero (all {self.batch_size} particles had a "
                    "NaN/inf energy); regularise the energy or start from a better flow"
                )
            return weighted_forward_kl(model, samples.x, samples.log_w)
        if step % self.updates_per_ais == 0 or not self.buffer.ready:
            while True:
                samples = self.sample(model)
                self.buffer.add(samples.x, samples.log_w, samples.log_q)
                if self.buffer.ready:
                    break
        batch = self.buffer.sample(self.batch_size)
        log_q = model.log_prob(batch.x)
        with torch.no_grad():
            log_adjust = (1.0 - self.alpha) * (log_q - batch.log_q_old)
            w_adjust = torch.nan_to_num(log_adjust.exp(), nan=0.0).clamp(max=self.max_weight_adjust)
        keep = torch.isfinite(log_q)
        loss = -(w_adjust[keep] * log_q[keep]).sum() / max(int(keep.sum()), 1)
        self.buffer.adjust(batch.index, log_q.detach(), self.alpha)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The adapted step size and the buffer's contents."""
        return {
            "step_size": self.step_size,
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.step_size = float(state["step_size"])
        if self.buffer is not None and state.get("buffer") is not None:
            self.buffer.load_state_dict(state["buffer"])


def _nan_to(t: Tensor, value: float) -> Tensor:
    """``t`` with NaN replaced by ``value`` (infinities kept, unlike ``torch.nan_to_num``)."""
    return torch.where(torch.isnan(t), torch.full_like(t, value), t)


def _alpha_objective(log_w: Tensor, alpha: float) -> float:
    """``log(mean w^alpha) / (alpha - 1)`` (``-inf`` when every weight is zero)."""
    if alpha == 1.0:
        return math.nan
    mean = torch.logsumexp(alpha * log_w, 0) - math.log(log_w.numel())
    return float(mean) / (alpha - 1.0)


def _relative_ess(log_w: Tensor) -> float:
    """Relative Kish ESS, 0 when every weight is zero."""
    if not bool(torch.isfinite(log_w).any()):
        return 0.0
    return float(effective_sample_size(log_w))
