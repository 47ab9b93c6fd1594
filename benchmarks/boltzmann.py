r"""Boltzmann sampling: free energies, ``log Z`` and sampling efficiency against exact references.

Every target here has exact reference values (``physics.toy``), so the table reports errors,
not just estimates. No section trains on exact samples of the target: the flows only ever see
the energy ``u(x)`` (exact samples are used in section (c) for *evaluation* of the forward KL).

* **(a) double wells** ``u = a x1 + b x1^2 + c x1^4 + x2^2 / 2`` with ``(a, b, c) = (-0.5, -6,
  1)`` and ``(1, -6, 1)``: a neural spline flow trained by reverse KL with **temperature
  annealing** (the energy is divided by ``T``, annealed geometrically from ``T0`` to ``T_end``
  over the first 60 % of the steps, then kept at ``T_end``). A hot start covers both wells, so
  the flow does not drop a mode (plain reverse KL, and alpha = 2 started from ``N(0, I)``, both
  lose the left well of the first double well). ``dF = F_left - F_right`` (wells split at
  ``x1 = 0``) is estimated several times, each time from ``10^5`` energy evaluations, by plain
  importance weights (:func:`physics.sampling.free_energy_difference`) and by the stratified
  estimator (:func:`physics.stratified.stratified_free_energy_difference`): half the energy
  evaluations in each well, the flow's own well masses counted on flow samples that need no
  energy. Plain reweighting cannot beat the error of exact sampling, ``1 / sqrt(n P_l P_r)``
  (0.0087 and 0.0177 kT here); stratification removes that floor.
* **(b) GMM-40** (FAB's 40-mode mixture in ``[-40, 40]^2``, ``log Z = 0``): the flow lives in
  rescaled coordinates ``y = x / 40`` (target ``u(40 y) - 2 log 40``, same ``Z``). Two training
  stages, both from the energy only: temperature-annealed reverse KL (``T`` from 100 to 1)
  finds every mode; then the importance-weighted forward KL
  (:func:`manifoldflows.losses.importance_weighted_forward_kl`: maximum likelihood on the
  flow's own samples reweighted to the target, mass-covering) fixes the relative masses of the
  modes, which reverse KL leaves wrong. Reported: mean absolute error of ``log Z`` over
  repeated independent estimates from 2000 samples each, by plain importance sampling and by
  annealed importance sampling from the flow (2000 chains;
  :func:`physics.sampling.annealed_importance_sampling`), FAB's evaluation, with random or
  quasi-random (scrambled Sobol, ``qmc=True``) starting points.
* **(c) many-well-32** (16 double-well pairs, ``log Z = 164.6957``, ``2^16`` modes): same
  annealed reverse-KL recipe; ``log Z`` error from ``10^5`` weighted samples and the forward KL
  ``KL(p || q) = E_p[-log q] - H`` on exact samples (``H = 27.4972`` nats).
* **(d) SNF vs plain flow vs pure MCMC** on the first double well, every method given the same
  total number of energy evaluations (training plus sampling), counted by wrapping the energy.
  *Flow*: the NSF of (a). *SNF*: ``SNF(stochastic="mh")`` (affine couplings interleaved with
  Metropolis-Hastings blocks, trained end to end by path-weighted reverse KL with the same
  temperature annealing as the flow; the MH blocks always target ``u``). *MCMC*: the
  same annealed Metropolis-Hastings blocks with no coupling layers and no training (an
  annealed importance sampler started from ``N(0, I)``). All three give unbiased importance
  weights; we report the absolute Kish ESS of the weighted samples per energy evaluation.

Energy evaluations count one per configuration whose energy is computed (a force computed by
autograd in the same call is not counted again). Wall times are on the machine named in the
header, with one torch thread per process.

Run::

    .venv/bin/python benchmarks/boltzmann.py                    # -> results/boltzmann.md
    .venv/bin/python benchmarks/boltzmann.py --sections a d     # a subset
    .venv/bin/python benchmarks/boltzmann.py --quick            # smoke run, nothing written

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 2019,
    arXiv:1812.01729. H. Wu, J. Koehler, F. Noe, "Stochastic normalizing flows", NeurIPS 2020,
    arXiv:2002.06707. L. I. Midgley et al., "Flow annealed importance sampling bootstrap",
    ICLR 2023, arXiv:2208.01893.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_header, markdown_table, write_result  # noqa: E402

from manifoldflows import losses  # noqa: E402
from manifoldflows.presets import NSF, SNF  # noqa: E402
from manifoldflows.training import fit  # noqa: E402
from physics import DoubleWell, FABGaussianMixture, ManyWell  # noqa: E402
from physics import sampling as S  # noqa: E402
from physics.stratified import stratified_free_energy_difference  # noqa: E402

__all__ = [
    "CountingEnergy",
    "ScaledEnergy",
    "Budget",
    "Config",
    "QUICK",
    "FULL",
    "train_annealed",
    "section_a",
    "section_b",
    "section_c",
    "section_d",
    "main",
]

SECTIONS = ("a", "b", "c", "d")
FAB_GMM_MAE = 0.0027  # FAB's published mean absolute log Z error on GMM-40


class CountingEnergy:
    """Wrap a target ``u`` and count the configurations it is evaluated on.

    Arguments:
        energy: callable ``x -> u(x)`` or object with ``.energy(x)``; ``space`` is passed on.

    Example:
        >>> c = CountingEnergy(lambda x: (x**2).sum(-1))
        >>> c(torch.zeros(5, 2)).shape, c.count
        (torch.Size([5]), 5)
    """

    def __init__(self, energy):
        self.inner = energy
        self._fn = energy.energy if hasattr(energy, "energy") else energy
        self.space = getattr(energy, "space", None)
        self.count = 0

    def energy(self, x: Tensor) -> Tensor:
        self.count += int(math.prod(x.shape[:-1]))
        return self._fn(x)

    __call__ = energy


class ScaledEnergy:
    r"""The target in rescaled coordinates ``y = x / s``: ``u_s(y) = u(s y) - d log s``.

    ``int exp(-u_s(y)) dy = int exp(-u(x)) dx``, so ``log Z`` is unchanged and weights of
    samples ``y`` are weights of ``x = s y``.

    Example:
        >>> u = ScaledEnergy(lambda x: 0.5 * (x**2).sum(-1), 2.0, 2)
        >>> round(u(torch.zeros(1, 2)).item(), 4)  # -2 log 2
        -1.3863
    """

    def __init__(self, energy, scale: float, dim: int):
        self.inner = energy
        self._fn = energy.energy if hasattr(energy, "energy") else energy
        self.scale = float(scale)
        self.shift = dim * math.log(self.scale)

    def energy(self, y: Tensor) -> Tensor:
        return self._fn(self.scale * y) - self.shift

    __call__ = energy


@dataclass
class Budget:
    """Training budget of one model: steps, batch, energy evaluations, wall time (s)."""

    steps: int
    batch: int
    evaluations: int
    seconds: float
    schedule: str | None = None  # e.g. "3000 x 512 + 3000 x 4096" for several stages

    def text(self) -> str:
        schedule = self.schedule or f"{self.steps} steps x {self.batch}"
        return f"{schedule}; {self.evaluations / 1e6:.2f}M u-evals; {self.seconds:.0f} s"


@dataclass
class Config:
    """Sizes of every section (``QUICK``: a smoke run; ``FULL``: the committed table)."""

    a_steps: int = 1500
    a_samples: int = 100_000
    a_repeats: int = 5
    a_proposal: int = 4_000_000
    b_steps: int = 3000
    b_refine_steps: int = 3000
    b_refine_batch: int = 4096
    b_layers: int = 12
    b_hidden: tuple[int, ...] = (128, 128)
    b_ais_levels: int = 200
    b_ais_mh_steps: int = 3
    b_repeats: int = 20
    b_samples: int = 2000
    c_steps: int = 2500
    c_samples: int = 100_000
    c_exact: int = 20_000
    d_budget: int = 1_000_000
    batch: int = 512
    hidden: tuple[int, ...] = (64, 64)
    layers: int = 4
    c_layers: int = 8
    c_hidden: tuple[int, ...] = (128, 128)


QUICK = Config(
    a_steps=20,
    a_samples=2000,
    a_repeats=2,
    a_proposal=20_000,
    b_steps=20,
    b_refine_steps=10,
    b_refine_batch=128,
    b_layers=2,
    b_hidden=(16,),
    b_ais_levels=5,
    b_ais_mh_steps=2,
    b_repeats=3,
    b_samples=200,
    c_steps=10,
    c_samples=2000,
    c_exact=500,
    d_budget=20_000,
    batch=64,
    hidden=(16,),
    layers=2,
    c_layers=2,
    c_hidden=(16,),
)
FULL = Config()


def train_annealed(
    flow,
    energy,
    steps: int,
    batch: int,
    *,
    t_start: float = 5.0,
    t_end: float = 1.0,
    anneal_fraction: float = 0.6,
    lr: float = 1e-3,
) -> float:
    r"""Train ``flow`` against ``energy / T`` with ``T`` annealed geometrically; wall seconds.

    ``T_k = t_start^(1 - f) t_end^f`` with ``f = min(1, k / (anneal_fraction * steps))``.
    Reverse KL (:func:`manifoldflows.losses.reverse_kl`), cosine learning-rate decay.
    """
    fn = energy.energy if hasattr(energy, "energy") else energy
    state = {"k": 0}

    def loss(model, _batch, _context):
        k = state["k"]
        state["k"] += 1
        f = min(1.0, k / max(1.0, anneal_fraction * steps))
        temperature = t_start ** (1.0 - f) * t_end**f

        def u(x: Tensor) -> Tensor:
            return fn(x) / temperature

        return losses.reverse_kl(model, u, batch)

    return _fit_cosine(flow, loss, steps, lr)


def _fit_cosine(flow, loss_fn, steps: int, lr: float) -> float:
    """:func:`~manifoldflows.training.fit` with cosine learning-rate decay; wall seconds."""
    start = time.perf_counter()
    fit(
        flow,
        loss_fn=loss_fn,
        steps=steps,
        lr=lr,
        progress=False,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
    )
    return time.perf_counter() - start


def _dw_flow(config: Config, seed: int):
    torch.manual_seed(seed)
    return NSF(2, layers=config.layers, hidden=config.hidden, bins=8, bound=5.0)


def _right(x: Tensor) -> Tensor:
    return x[:, 0] > 0


def _left(x: Tensor) -> Tensor:
    return x[:, 0] < 0


def _wells_dF(x: Tensor, log_w: Tensor) -> S.Estimate:
    """``F_left - F_right`` (the :class:`~physics.toy.DoubleWell` convention)."""
    return S.free_energy_difference(x, log_w, _right, _left)


def section_a(config: Config, seed: int = 0) -> list[dict]:
    """Double wells: dF errors over repeated estimates, plain and stratified, ``a_samples`` each.

    One flow per target (annealed reverse KL, ``T`` 5 -> 1); then ``a_repeats`` independent
    estimates of each kind, every one from ``a_samples`` energy evaluations: plain importance
    sampling (:func:`physics.sampling.free_energy_difference`) and the stratified estimator
    (:func:`physics.stratified.stratified_free_energy_difference`, ``a_proposal`` flow-only
    samples for the well masses).
    """
    rows = []
    n = config.a_samples
    for a in (-0.5, 1.0):
        target = DoubleWell(a, -6.0, 1.0)
        counted = CountingEnergy(target)
        flow = _dw_flow(config, seed)
        seconds = train_annealed(flow, counted, config.a_steps, config.batch, t_end=1.0)
        budget = Budget(config.a_steps, config.batch, counted.count, seconds)
        p_right = target.prob_right
        floor = 1.0 / math.sqrt(n * p_right * (1.0 - p_right))
        for kind in ("plain", "stratified"):
            errors, ses, ess, evals = [], [], [], []
            start = time.perf_counter()
            for _ in range(config.a_repeats):
                before = counted.count
                with torch.no_grad():
                    if kind == "plain":
                        s = S.importance_weights(flow, counted, n, batch_size=65536)
                        dF = _wells_dF(s.x, s.log_w)
                        ess.append(float(s.ess()))
                    else:
                        dF = stratified_free_energy_difference(
                            flow, counted, _right, _left, n, n_proposal=config.a_proposal
                        )
                        ess.append(min(dF.ess))
                errors.append(float(dF.value) - target.delta_F)
                ses.append(float(dF.stderr))
                evals.append(counted.count - before)
            rows.append(
                dict(
                    target=f"DoubleWell({a:g}, -6, 1)",
                    exact=target.delta_F,
                    kind=kind,
                    errors=errors,
                    mae=sum(abs(e) for e in errors) / len(errors),
                    max_error=max(abs(e) for e in errors),
                    stderr=sum(ses) / len(ses),
                    se_floor=floor,
                    ess=sum(ess) / len(ess),
                    evaluations=max(evals),
                    seconds=(time.perf_counter() - start) / config.a_repeats,
                    budget=budget,
                )
            )
    return rows


def train_reweighted(flow, energy, steps: int, batch: int, lr: float = 3e-4) -> float:
    """Importance-weighted forward KL on the flow's own samples; wall seconds (cosine decay)."""

    def loss(model, _batch, _context):
        return losses.importance_weighted_forward_kl(model, energy, batch)

    return _fit_cosine(flow, loss, steps, lr)


def _log_z_errors(estimate: Callable[[], S.Samples], repeats: int, counted: CountingEnergy):
    """MAE of ``log Z`` (exact 0) over ``repeats`` estimates, its se, mean ESS, cost each."""
    errors, ess = [], []
    before, start = counted.count, time.perf_counter()
    for _ in range(repeats):
        s = estimate()
        errors.append(abs(float(s.log_partition().value)))
        ess.append(float(s.ess()))
    mae = sum(errors) / repeats
    se = (sum((e - mae) ** 2 for e in errors) / max(1, repeats - 1) / repeats) ** 0.5
    return dict(
        mae=mae,
        mae_se=se,
        max_error=max(errors),
        ess=sum(ess) / repeats,
        evaluations=(counted.count - before) // repeats,
        seconds=(time.perf_counter() - start) / repeats,
    )


def section_b(config: Config, seed: int = 0) -> dict:
    """GMM-40: MAE of ``log Z`` over ``b_repeats`` estimates from ``b_samples`` samples each."""
    gmm = FABGaussianMixture()
    counted = CountingEnergy(gmm)
    scaled = ScaledEnergy(counted, 40.0, 2)
    torch.manual_seed(seed)
    flow = NSF(2, layers=config.b_layers, hidden=config.b_hidden, bins=16, bound=3.0)
    n, repeats = config.b_samples, config.b_repeats

    def plain() -> S.Samples:
        with torch.no_grad():
            return S.importance_weights(flow, scaled, n)

    def annealed(mcmc_steps: int = 1, qmc: bool = False) -> Callable[[], S.Samples]:
        # MH steps of 0.03 in y = x / 40, about one standard deviation of a mode
        return lambda: S.annealed_importance_sampling(
            flow,
            scaled,
            n,
            config.b_ais_levels,
            step_size=0.03,
            mcmc_steps=mcmc_steps,
            qmc=qmc,
        )

    seconds = train_annealed(
        flow, scaled, config.b_steps, config.batch, t_start=100.0, anneal_fraction=0.8
    )
    stage1 = Budget(config.b_steps, config.batch, counted.count, seconds)
    rows = [dict(stage="annealed reverse KL", method="IS", budget=stage1)]
    rows[-1].update(_log_z_errors(plain, repeats, counted))
    before = counted.count
    seconds += train_reweighted(flow, scaled, config.b_refine_steps, config.b_refine_batch)
    steps = config.b_steps + config.b_refine_steps
    evaluations = stage1.evaluations + counted.count - before
    schedule = (
        f"{config.b_steps} x {config.batch} + {config.b_refine_steps} x {config.b_refine_batch}"
    )
    stage2 = Budget(steps, config.b_refine_batch, evaluations, seconds, schedule)
    levels, m = config.b_ais_levels, config.b_ais_mh_steps
    estimators = (
        ("IS", plain),
        (f"AIS, {levels} levels x 1 MH step", annealed()),
        (f"AIS, {levels} levels x {m} MH steps, quasi-random starts", annealed(m, qmc=True)),
    )
    for method, estimate in estimators:
        rows.append(dict(stage="+ importance-weighted forward KL", method=method, budget=stage2))
        rows[-1].update(_log_z_errors(estimate, repeats, counted))
    return dict(rows=rows, config=config)


def section_c(config: Config, seed: int = 0) -> dict:
    """Many-well-32: ``log Z`` error and forward KL on exact samples."""
    target = ManyWell()
    counted = CountingEnergy(target)
    torch.manual_seed(seed)
    flow = NSF(32, layers=config.c_layers, hidden=config.c_hidden, bins=8, bound=5.0)
    seconds = train_annealed(flow, counted, config.c_steps, config.batch, t_end=1.0)
    budget = Budget(config.c_steps, config.batch, counted.count, seconds)
    with torch.no_grad():
        s = S.importance_weights(flow, target, config.c_samples, batch_size=10_000)
        log_z = s.log_partition()
        g = torch.Generator().manual_seed(seed + 1)
        exact = target.sample(config.c_exact, generator=g)
        nll = -flow.log_prob(exact)
    kl = float(nll.mean()) - target.entropy
    kl_se = float(nll.std()) / math.sqrt(nll.numel())
    return dict(
        exact=target.log_Z,
        estimate=float(log_z.value),
        stderr=float(log_z.stderr),
        error=float(log_z.value) - target.log_Z,
        ess=float(s.ess()),
        kl=kl,
        kl_se=kl_se,
        budget=budget,
        config=config,
    )


def _sample_until(flow, target: CountingEnergy, budget: int, batch: int) -> S.Samples:
    """Weighted samples in batches until ``target.count`` reaches ``budget`` (at least one)."""
    xs, lws = [], []
    with torch.no_grad():
        while True:
            before = target.count
            x, lw = flow.sample_and_log_weight(target, (batch,))
            xs.append(x)
            lws.append(lw)
            per = (target.count - before) / batch
            if target.count + per * batch > budget:
                break
    return S.Samples(torch.cat(xs), torch.cat(lws))


def section_d(config: Config, seed: int = 0) -> list[dict]:
    """Flow, SNF and annealed MCMC at an equal budget of ``d_budget`` energy evaluations."""
    target = DoubleWell(-0.5, -6.0, 1.0)
    budget = config.d_budget
    train_share = budget // 2
    rows = []

    def finish(name: str, flow, counted: CountingEnergy, steps: int, batch: int, seconds: float):
        train_evals = counted.count
        s = _sample_until(flow, counted, budget, batch=max(64, config.batch))
        ess_abs = float(s.ess(relative=False))
        dF = _wells_dF(s.x, s.log_w)
        rows.append(
            dict(
                method=name,
                train=Budget(steps, batch, train_evals, seconds),
                samples=len(s),
                evaluations=counted.count,
                ess=ess_abs,
                ess_per_eval=ess_abs / counted.count,
                error=float(dF.value) - target.delta_F,
                stderr=float(dF.stderr),
            )
        )

    # plain flow: half the budget for annealed reverse-KL training, half for sampling
    counted = CountingEnergy(target)
    flow = _dw_flow(config, seed)
    steps = max(1, train_share // config.batch)
    seconds = train_annealed(flow, counted, steps, config.batch, t_end=1.5)
    finish("NSF flow (annealed reverse KL)", flow, counted, steps, config.batch, seconds)

    # SNF: couplings + MH blocks, trained end to end by path-weighted reverse KL
    counted = CountingEnergy(target)
    torch.manual_seed(seed)
    snf = SNF(2, counted, flow_layers=2, blocks=2, stochastic="mh", steps=5, hidden=config.hidden)
    with torch.no_grad():
        snf.sample_and_log_weight(counted, (16,))
    per_sample = counted.count / 16
    counted.count = 0
    batch = max(16, config.batch // 4)
    steps = max(1, int(train_share // (per_sample * batch)))
    seconds = train_annealed(snf, counted, steps, batch, t_end=1.5)
    finish("SNF (2 x [2 affine couplings + 5 MH steps])", snf, counted, steps, batch, seconds)

    # pure MCMC: annealed MH from N(0, I), no training
    counted = CountingEnergy(target)
    torch.manual_seed(seed)
    mcmc = SNF(2, counted, flow_layers=0, blocks=10, stochastic="mh", steps=5, step_size=0.5)
    finish("annealed MH from N(0, I) (10 levels x 5 steps)", mcmc, counted, 0, 0, 0.0)
    return rows


# ---------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:+.{digits}f}" if math.isfinite(value) else str(value)


def report_a(rows: list[dict], config: Config) -> list[str]:
    header = [
        "target",
        "exact dF (kT)",
        "estimator",
        "errors of the repeats",
        "mean abs error",
        "met < 0.01?",
        "mean se",
        "se floor (exact samples)",
        "ESS",
        "u-evals / estimate",
        "s / estimate",
        "training budget",
    ]
    table = [
        [
            r["target"],
            f"{r['exact']:+.6f}",
            r["kind"],
            ", ".join(f"{e:+.4f}" for e in r["errors"]),
            f"{r['mae']:.4f}",
            "yes" if r["max_error"] < 0.01 else "no",
            f"{r['stderr']:.4f}",
            f"{r['se_floor']:.4f}",
            f"{r['ess']:.3f}",
            f"{r['evaluations']:,}",
            f"{r['seconds']:.1f}",
            r["budget"].text(),
        ]
        for r in rows
    ]
    return [
        "## (a) Double wells: free-energy difference",
        "",
        f"NSF (coupling, {config.layers} layers), trained by reverse KL with the temperature"
        " annealed 5 -> 1; then"
        f" {config.a_repeats} independent estimates of each kind, each from"
        f" {config.a_samples:,} energy evaluations. *plain*: importance weights of"
        f" {config.a_samples:,} flow samples. *stratified*:"
        " `physics.stratified.stratified_free_energy_difference`, half of the evaluations in"
        " each well (flow samples restricted to the well) and the flow's own well masses"
        f" counted on {config.a_proposal:,} flow samples, which need no energy. 'met' means"
        " every repeat is within 0.01 kT. The se floor is the standard error of dF from the"
        " same number of *exact* samples, sqrt(1 / (n P_right P_left)): plain reweighting of"
        " even a perfect flow cannot beat it; the stratified estimator is not bound by it"
        " (ESS column: mean relative ESS, for *stratified* the lower of the two wells).",
        "",
        *markdown_table(header, table),
        "",
    ]


def report_b(r: dict) -> list[str]:
    c = r["config"]
    header = [
        "training",
        "estimator",
        "MAE of log Z",
        f"met < {FAB_GMM_MAE}?",
        "max error",
        "mean ESS",
        "u-evals / estimate",
        "s / estimate",
        "training budget (cumulative)",
    ]
    table = [
        [
            row["stage"],
            row["method"],
            f"{row['mae']:.4f} ± {row['mae_se']:.4f}",
            "yes" if row["mae"] < FAB_GMM_MAE else "no",
            f"{row['max_error']:.4f}",
            f"{row['ess']:.3f}",
            f"{row['evaluations']:,}",
            f"{row['seconds']:.1f}",
            row["budget"].text(),
        ]
        for row in r["rows"]
    ]
    return [
        "## (b) GMM-40 (FAB): log Z",
        "",
        f"NSF ({c.b_layers} spline couplings, hidden {c.b_hidden}, 16 bins) in coordinates"
        f" x / 40. Stage 1: {c.b_steps} steps x {c.batch} of reverse KL, T annealed 100 -> 1"
        f" over 80 % of the steps. Stage 2: {c.b_refine_steps} steps x {c.b_refine_batch} of"
        " importance-weighted forward KL (maximum likelihood on the flow's own samples"
        " reweighted to the target). Each row: MAE over"
        f" {c.b_repeats} independent estimates of log Z (exact 0), each from {c.b_samples}"
        " samples: IS = importance weights of flow samples; AIS = annealed importance sampling"
        f" from the flow, {c.b_samples} chains, {c.b_ais_levels} geometric levels q^(1-b) p^b"
        " with Metropolis steps of 0.03 (FAB's kind of evaluation); quasi-random starts ="
        " the chains start from scrambled Sobol points of the flow's base (`qmc=True`),"
        " which spreads them evenly over the flow instead of at random (still unbiased)."
        f" FAB's published MAE is {FAB_GMM_MAE}.",
        "",
        *markdown_table(header, table),
        "",
    ]


def report_c(r: dict) -> list[str]:
    c = r["config"]
    header = ["log Z estimate ± se", "error", "met < 0.03?", "ESS", "forward KL (nats)", "budget"]
    table = [
        [
            f"{r['estimate']:.4f} ± {r['stderr']:.4f}",
            _fmt(r["error"]),
            "yes" if abs(r["error"]) < 0.03 else "no",
            f"{r['ess']:.3f}",
            f"{r['kl']:.3f} ± {r['kl_se']:.3f}",
            r["budget"].text(),
        ]
    ]
    return [
        "## (c) Many-well-32: log Z and forward KL",
        "",
        f"NSF ({c.c_layers} coupling layers, hidden {c.c_hidden}), reverse KL annealed T = 5 ->"
        f" 1; log Z from {c.c_samples:,} samples (exact {r['exact']:.4f}); forward KL ="
        f" NLL on {c.c_exact:,} exact samples - 27.4972.",
        "",
        *markdown_table(header, table),
        "",
    ]


def report_d(rows: list[dict], config: Config) -> list[str]:
    header = [
        "method",
        "training",
        "samples",
        "total u-evals",
        "ESS",
        "ESS per 10^6 u-evals",
        "dF error ± se",
    ]
    table = [
        [
            r["method"],
            r["train"].text() if r["train"].steps else "none",
            f"{r['samples']:,}",
            f"{r['evaluations']:,}",
            f"{r['ess']:.0f}",
            f"{1e6 * r['ess_per_eval']:.0f}",
            f"{r['error']:+.3f} ± {r['stderr']:.3f}",
        ]
        for r in rows
    ]
    return [
        "## (d) SNF vs plain flow vs MCMC at equal energy budget",
        "",
        f"DoubleWell(-0.5, -6, 1); each method gets {config.d_budget:,} energy evaluations in"
        " total (about half for training where there is training, the rest for sampling).",
        "",
        *markdown_table(header, table),
        "",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--quick", action="store_true", help="smoke run; nothing written")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = QUICK if args.quick else FULL
    lines = [
        "# Boltzmann sampling benchmark",
        "",
        *machine_header(torch.device("cpu"), ["numpy"]),
        "",
    ]
    runners: dict[str, Callable[[], list[str]]] = {
        "a": lambda: report_a(section_a(config, args.seed), config),
        "b": lambda: report_b(section_b(config, args.seed)),
        "c": lambda: report_c(section_c(config, args.seed)),
        "d": lambda: report_d(section_d(config, args.seed), config),
    }
    start = time.perf_counter()
    for name in args.sections:
        t0 = time.perf_counter()
        part = runners[name]()
        print("\n".join(part), f"[section {name}: {time.perf_counter() - t0:.0f} s]", flush=True)
        lines += part
    lines.append(f"Total wall time: {time.perf_counter() - start:.0f} s.")
    if not args.quick:
        print("wrote", write_result("boltzmann.md", lines))


if __name__ == "__main__":
    main()
