r"""Evaluation of a Boltzmann generator for alanine dipeptide against the MD reference.

One function, :func:`evaluate_generator`, used by the demo, the benchmark and the command
line: it draws ``n`` configurations from a flow (a :class:`~manifoldflows.core.Flow` whose
samples are Cartesian configurations ``(*, 66)`` in nm in the canonical frame), filters the
mirror-image (D-form) ones, weights the rest for the Boltzmann distribution and compares them
with :func:`physics.systems.reference.load_reference` (Midgley et al. 2023's protocol):

==================================  ===========================================================
reverse ESS                          Kish ESS / N of the importance weights of flow samples,
                                     with a bootstrap error bar (:func:`bootstrap_ess`)
D-form fraction                      reported; D-form samples are dropped before weighting
forward NLL                          ``-log q`` of the held-out MD frames (``frames_test``), in
                                     nats per configuration (mean and standard error)
Ramachandran KL / TV                 64 x 64 histograms on ``[-pi, pi)^2`` of the reweighted
                                     and of the raw flow samples against the MD frames
                                     (:func:`histogram_kl`, :func:`total_variation`)
free energies                        ``F(alpha_R) - F(beta)`` and ``F(phi > 0) - F(phi < 0)``
                                     in ``kT`` by importance reweighting, with error bars,
                                     against the reference, with a consistency flag
energy evaluations, wall times       counted
==================================  ===========================================================

**Weights.** The flow's density ``q(x)`` is a density over the ``3N - 6`` free coordinates of
the canonical frame (:class:`~physics.coordinates.FixedFrameCartesian`). The Boltzmann
distribution ``exp(-u(x))`` on ``R^{3N}``, written in canonical coordinates ``c``, a rotation
``R`` and a translation ``o`` (``x = R^T c + o``), has the volume element
``dx = J(c)\, dc\, dR\, do`` with

.. math:: J(c) = r_{01}\, \lvert (x_{a_1} - x_{a_0}) \times (x_{a_2} - x_{a_0}) \rvert
          = r_{01}^2\, r_{02} \sin\theta_{102}

(:func:`physics.coordinates.frame_log_jacobian`; frame atoms ``a_0, a_1, a_2``), so the MD
frames, put into the canonical frame, have density ``exp(-u(c)) J(c) / Z``. The importance
weights that make flow samples exact for that distribution - the one the MD reference
samples - are therefore

.. math:: \log w(x) = -u(x) + \log J(x) - \log q(x),

used whenever the flow samples ``FixedFrameCartesian`` (``rigid_body_jacobian=None``). ``J``
changes by a few percent with the frame atoms' bond and angle; leaving it out biases free
energies by much less than 0.1 ``kT`` but makes the weights inexact.

**Caveat.** The MD reference visits ``phi > 0`` only twice in 2 x 10 ns while its equilibrium
population is about 4 % (from umbrella sampling), so a correct generator reweighted to the
Boltzmann distribution differs from the MD histogram there by about that much total variation;
the report also gives the distances to the umbrella-sampling (MBAR-reweighted) histogram,
which covers ``phi > 0``.

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium states of
    many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato, "Flow
    annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893 (the evaluation
    protocol: reverse ESS, test NLL, Ramachandran KL on 64 x 64 bins, D-form filtering).
    L. Kish, "Survey sampling", Wiley 1965 (the effective sample size).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import tqdm
from torch import Tensor

from manifoldflows._checks import positive_int, reference_tensor
from manifoldflows.errors import InvalidInput
from manifoldflows.estimators import (
    Estimate,
    Samples,
    check_log_weights,
    check_policy,
    effective_sample_size,
    free_energy_difference,
    handle_nonfinite,
)
from manifoldflows.plotting import new_axes, plot_torus_histogram, save_figure, torus_histogram
from manifoldflows.targets import Target, energy_fn

from .coordinates import FixedFrameCartesian, chiral_centers, frame_log_jacobian, is_l_form
from .io import save_samples
from .systems.reference import (
    backbone_torsions,
    basin_alpha_r,
    basin_beta,
    phi_negative,
    phi_positive,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from manifoldflows.distributions import Distribution

    from .systems import MolecularSystem
    from .systems.reference import MDReference

__all__ = [
    "GeneratorReport",
    "FreeEnergyComparison",
    "evaluate_generator",
    "flow_frame",
    "bootstrap_ess",
    "histogram_kl",
    "total_variation",
    "basin_free_energies",
    "plot_ramachandran",
    "FREE_ENERGIES",
    "KL_EPSILON",
]

#: The free energies compared (key -> label), both in ``kT``.
FREE_ENERGIES = {
    "alpha_r_beta": "F(alpha_R) - F(beta)",
    "phi_positive": "F(phi>0) - F(phi<0)",
}
#: Pseudo-probability added to every cell of both histograms in :func:`histogram_kl` (as in
#: the published alanine-dipeptide protocol), so empty flow cells give a finite KL.
KL_EPSILON = 1e-10


# ---------------------------------------------------------------------------- weights
def flow_frame(flow: Distribution) -> tuple[int, int, int] | None:
    """The frame atoms of a flow over :class:`~physics.coordinates.FixedFrameCartesian`
    (``None`` for a flow over plain Cartesian space, whose density needs no rigid-body term).

    Example:
        >>> from manifoldflows.distributions import StandardNormal
        >>> flow_frame(StandardNormal(66)) is None
        True
    """
    space = getattr(flow, "space", None)
    return space.frame if isinstance(space, FixedFrameCartesian) else None


def bootstrap_ess(
    log_w: Tensor, n_bootstrap: int = 100, *, generator: torch.Generator | None = None
) -> Estimate:
    r"""Relative Kish ESS of importance weights with a bootstrap standard error.

    .. math:: \widehat{\mathrm{ESS}}/n = \frac{(\sum_i w_i)^2}{n \sum_i w_i^2}, \qquad
              \mathrm{se} = \mathrm{sd}_b\big(\widehat{\mathrm{ESS}}/n\ \text{of resample } b\big)

    over ``n_bootstrap`` resamples of the ``n`` weights with replacement. A heavy-tailed weight
    distribution makes the ESS itself noisy: the error bar says how far it may move with
    another sample of the same size.

    Arguments:
        log_w: ``(n,)`` log importance weights.
        n_bootstrap: number of bootstrap resamples (``>= 2``).
        generator: optional random generator (on ``log_w``'s device).

    Returns:
        An :class:`~manifoldflows.estimators.Estimate` of ESS / n in ``(0, 1]``.

    References:
        Kish, "Survey sampling", 1965. B. Efron, R. Tibshirani, "An introduction to the
        bootstrap", Chapman & Hall 1993.

    Example:
        >>> est = bootstrap_ess(torch.zeros(100), 20)
        >>> est.value.item(), est.stderr.item()
        (1.0, 0.0)
    """
    who = "bootstrap_ess"
    lw = check_log_weights(log_w, who)
    if lw.dim() != 1:
        raise InvalidInput(f"{who}: expected log weights of shape (n,), got {tuple(lw.shape)}")
    n_bootstrap = positive_int(n_bootstrap, "n_bootstrap", who, minimum=2)
    n = lw.shape[0]
    replicates = []
    for _ in range(n_bootstrap):
        index = torch.randint(n, (n,), generator=generator, device=lw.device)
        resampled = lw[index]
        if bool(torch.isfinite(resampled).any()):  # all-zero resamples have no ESS
            replicates.append(effective_sample_size(resampled))
    value = effective_sample_size(lw)
    stderr = torch.stack(replicates).std() if len(replicates) > 1 else torch.full_like(value, 0)
    return Estimate(value, stderr)


# ---------------------------------------------------------------------------- histograms
def _probabilities(p: np.ndarray | Tensor, what: str, who: str) -> np.ndarray:
    array = p.detach().cpu().double().numpy() if isinstance(p, Tensor) else np.asarray(p, float)
    total = array.sum()
    if not np.isfinite(array).all() or (array < 0).any() or not total > 0:
        raise InvalidInput(
            f"{who}: expected {what} as a histogram of finite non-negative values with a "
            "positive sum"
        )
    return array / total


def _two_histograms(
    p: np.ndarray | Tensor, q: np.ndarray | Tensor, who: str
) -> tuple[np.ndarray, np.ndarray]:
    hp, hq = _probabilities(p, "p", who), _probabilities(q, "q", who)
    if hp.shape != hq.shape:
        raise InvalidInput(
            f"{who}: expected two histograms of one shape, got {hp.shape} and {hq.shape}"
        )
    return hp, hq


def histogram_kl(
    p: np.ndarray | Tensor, q: np.ndarray | Tensor, *, epsilon: float = KL_EPSILON
) -> float:
    r"""Kullback-Leibler divergence ``KL(P || Q)`` between two histograms, in nats.

    Both histograms are normalised and ``epsilon`` is added to every cell of each (the
    published alanine-dipeptide protocol), so that a cell empty in ``Q`` costs a large but
    finite amount:

    .. math:: \mathrm{KL} = \sum_k (P_k + \epsilon) \log\frac{P_k + \epsilon}{Q_k + \epsilon}
              \;\ge 0 .

    Arguments:
        p, q: histograms of one shape (counts or probabilities; ``p`` is the reference).
        epsilon: pseudo-probability per cell (``0`` gives the plain KL, ``inf`` when ``Q``
            misses a cell of ``P``).

    Returns:
        The divergence (a float ``>= 0``).

    Example:
        >>> round(histogram_kl([0.5, 0.5], [0.25, 0.75], epsilon=0.0), 6)  # 0.5 log(4/3)...
        0.143841
    """
    hp, hq = _two_histograms(p, q, "histogram_kl")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise InvalidInput(f"histogram_kl: expected epsilon >= 0, got {epsilon!r}")
    hp, hq = hp + epsilon, hq + epsilon
    inside = hp > 0
    with np.errstate(divide="ignore"):
        terms = hp[inside] * (np.log(hp[inside]) - np.log(hq[inside]))
    return max(float(terms.sum()), 0.0)


def total_variation(p: np.ndarray | Tensor, q: np.ndarray | Tensor) -> float:
    r"""Total-variation distance ``(1/2) sum_k |P_k - Q_k|`` of two normalised histograms.

    In ``[0, 1]``: 0 for equal histograms, 1 for disjoint ones.

    Example:
        >>> total_variation([1.0, 1.0, 0.0], [0.0, 1.0, 1.0])
        0.5
    """
    hp, hq = _two_histograms(p, q, "total_variation")
    return float(0.5 * np.abs(hp - hq).sum())


# ---------------------------------------------------------------------------- free energies
def basin_free_energies(
    phi: np.ndarray | Tensor, psi: np.ndarray | Tensor, log_w: np.ndarray | Tensor | None = None
) -> dict[str, Estimate | None]:
    r"""``F(alpha_R) - F(beta)`` and ``F(phi > 0) - F(phi < 0)`` (in ``kT``) from weighted
    samples of the backbone torsions.

    With the basins of :mod:`physics.systems.reference` and self-normalised importance
    sampling (:func:`~manifoldflows.estimators.free_energy_difference`, delta-method errors):

    .. math:: \Delta F_{\alpha\beta} = -\log\frac{\sum_{\alpha_R} w_i}{\sum_{\beta} w_i},
              \qquad
              \Delta F_{\phi} = -\log\frac{\sum_{\phi \ge 0} w_i}{\sum_{\phi < 0} w_i}.

    The errors assume independent samples (right for flow samples, too small for correlated
    MD frames).

    Arguments:
        phi, psi: ``(n,)`` torsions in radians, ``[-pi, pi)``.
        log_w: ``(n,)`` log importance weights (default: equal weights, e.g. MD frames).

    Returns:
        ``{"alpha_r_beta": Estimate, "phi_positive": Estimate}`` (keys of
        :data:`FREE_ENERGIES`); ``None`` for a difference whose region holds no sample of
        positive weight.

    Example:
        >>> phi = np.array([-1.0, -1.0, -1.0, 1.0])
        >>> psi = np.array([0.0, 0.0, 2.5, 0.0])  # two alpha_R, one beta, one phi > 0
        >>> est = basin_free_energies(phi, psi)
        >>> round(float(est["alpha_r_beta"].value), 4), round(-math.log(2.0), 4)
        (-0.6931, -0.6931)
    """
    who = "basin_free_energies"
    phi_t = torch.as_tensor(np.asarray(phi, dtype=np.float64))
    psi_t = torch.as_tensor(np.asarray(psi, dtype=np.float64))
    if phi_t.dim() != 1 or phi_t.shape != psi_t.shape:
        raise InvalidInput(
            f"{who}: expected phi and psi of one shape (n,), got {tuple(phi_t.shape)} and "
            f"{tuple(psi_t.shape)}"
        )
    if log_w is None:
        lw = torch.zeros_like(phi_t)
    else:
        lw = torch.as_tensor(
            log_w.detach().cpu().numpy() if isinstance(log_w, Tensor) else np.asarray(log_w),
            dtype=torch.float64,
        )
    regions = {
        "alpha_r_beta": (basin_beta(phi_t, psi_t), basin_alpha_r(phi_t, psi_t)),
        "phi_positive": (phi_negative(phi_t), phi_positive(phi_t)),
    }
    out: dict[str, Estimate | None] = {}
    for key, (region_a, region_b) in regions.items():
        positive = lw > -math.inf
        if bool((region_a & positive).any()) and bool((region_b & positive).any()):
            out[key] = free_energy_difference(None, lw, region_a, region_b)
        else:
            out[key] = None
    return out


def _json_float(value: float | Tensor | None) -> float | None:
    """A float for JSON: ``None`` for missing or non-finite values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _estimate_dict(est: Estimate | None) -> dict[str, float | None] | None:
    if est is None:
        return None
    return {"value": _json_float(est.value), "stderr": _json_float(est.stderr)}


@dataclass(frozen=True, eq=False)
class FreeEnergyComparison:
    """A free-energy difference of the generator next to the reference value.

    Attributes:
        label: what is compared, e.g. ``"F(alpha_R) - F(beta)"`` (in ``kT``).
        flow: the importance-reweighted flow estimate (``None`` when a region got no sample
            of positive weight).
        reference: the reference's estimate.
        flow_unweighted: the same from the raw (unweighted) flow samples.
        z: how many combined standard errors make a discrepancy (default 2).

    Example:
        >>> c = FreeEnergyComparison("dF", Estimate(torch.tensor(1.0), torch.tensor(0.3)),
        ...                          Estimate(torch.tensor(1.5), torch.tensor(0.4)))
        >>> round(c.difference, 6), round(c.combined_stderr, 6), c.consistent
        (-0.5, 0.5, True)
    """

    label: str
    flow: Estimate | None
    reference: Estimate
    flow_unweighted: Estimate | None = None
    z: float = 2.0

    @property
    def difference(self) -> float:
        """flow - reference (``nan`` without a flow estimate)."""
        return math.nan if self.flow is None else float(self.flow.value - self.reference.value)

    @property
    def combined_stderr(self) -> float:
        """``sqrt(se_flow^2 + se_reference^2)`` (``nan`` without a flow estimate)."""
        if self.flow is None:
            return math.nan
        return math.hypot(float(self.flow.stderr), float(self.reference.stderr))

    @property
    def consistent(self) -> bool:
        """``|difference| <= z * combined_stderr`` (``False`` without a flow estimate)."""
        return self.flow is not None and abs(self.difference) <= self.z * self.combined_stderr

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "label": self.label,
            "flow": _estimate_dict(self.flow),
            "flow_unweighted": _estimate_dict(self.flow_unweighted),
            "reference": _estimate_dict(self.reference),
            "difference": _json_float(self.difference),
            "combined_stderr": _json_float(self.combined_stderr),
            "consistent": self.consistent,
        }

    def row(self) -> str:
        """One line of :meth:`GeneratorReport.table`."""
        flow = "no samples in a region" if self.flow is None else str(self.flow)
        raw = "-" if self.flow_unweighted is None else str(self.flow_unweighted)
        verdict = "consistent" if self.consistent else "INCONSISTENT"
        diff = "" if self.flow is None else f"   diff {self.difference:+.2f} ({verdict})"
        return f"reweighted {flow}   raw flow {raw}   reference {self.reference}{diff}"


# ---------------------------------------------------------------------------- the report
@dataclass(eq=False)
class GeneratorReport:
    """What :func:`evaluate_generator` measured.

    Attributes:
        n_samples: configurations drawn from the flow.
        n_kept: finite L-form samples kept (the importance-sampling sample size ``N``).
        d_form_fraction: fraction of the finite samples in the D form (dropped when filtering).
        n_nonfinite: samples with NaN/inf coordinates (dropped) or NaN/``+inf`` log weights
            (given zero weight).
        ess: relative Kish ESS of the kept samples, with a bootstrap standard error.
        nll: mean negative log-likelihood of the held-out MD frames (nats per configuration,
            canonical-frame density), with its standard error (independent-frame formula).
        n_test: held-out frames scored; ``n_test_nonfinite`` of them got ``log q = -inf``/NaN.
        ramachandran: distances between 64 x 64 phi/psi histograms: ``{"reweighted": {"kl",
            "tv"}, "flow": {...}}`` against MD and ``"reweighted_vs_umbrella"`` against the
            MBAR-reweighted umbrella samples (KL as :func:`histogram_kl` with the reference
            first).
        free_energies: :class:`FreeEnergyComparison` per key of :data:`FREE_ENERGIES`.
        energy_evaluations: configurations whose energy was evaluated.
        seconds: wall time per phase (``sampling``, ``energy``, ``nll``, ``analysis``,
            ``total``).
        reference_name: the reference's force field, solvent and temperature.
        rigid_body_jacobian: whether the weights include ``log J`` (module docstring).
        samples: the kept samples and their log weights
            (:class:`~manifoldflows.estimators.Samples`; not serialised).
        phi, psi: their backbone torsions; ``md_phi``, ``md_psi``: the reference's.
        system: the molecular system (topology for :meth:`save`).
    """

    n_samples: int
    n_kept: int
    d_form_fraction: float
    n_nonfinite: int
    ess: Estimate
    nll: Estimate
    n_test: int
    n_test_nonfinite: int
    ramachandran: dict[str, dict[str, float]]
    free_energies: dict[str, FreeEnergyComparison]
    energy_evaluations: int
    seconds: dict[str, float]
    reference_name: str
    rigid_body_jacobian: bool
    samples: Samples = field(repr=False)
    phi: np.ndarray = field(repr=False)
    psi: np.ndarray = field(repr=False)
    md_phi: np.ndarray = field(repr=False)
    md_psi: np.ndarray = field(repr=False)
    system: MolecularSystem | None = field(default=None, repr=False)

    @property
    def consistent(self) -> bool:
        """Whether every free energy agrees with the reference within 2 combined errors."""
        return all(c.consistent for c in self.free_energies.values())

    def to_dict(self) -> dict[str, Any]:
        """The numbers as a JSON-serialisable dict (for ``summary.json``; non-finite -> null)."""
        return {
            "reference": self.reference_name,
            "n_samples": self.n_samples,
            "n_kept": self.n_kept,
            "d_form_fraction": self.d_form_fraction,
            "n_nonfinite": self.n_nonfinite,
            "reverse_ess": _estimate_dict(self.ess),
            "forward_nll": _estimate_dict(self.nll),
            "n_test": self.n_test,
            "n_test_nonfinite": self.n_test_nonfinite,
            "ramachandran": {
                key: {name: _json_float(v) for name, v in values.items()}
                for key, values in self.ramachandran.items()
            },
            "free_energies_kT": {k: c.to_dict() for k, c in self.free_energies.items()},
            "consistent": self.consistent,
            "energy_evaluations": self.energy_evaluations,
            "seconds": {k: _json_float(v) for k, v in self.seconds.items()},
            "rigid_body_jacobian": self.rigid_body_jacobian,
        }

    def table(self) -> str:
        """A plain-text table of the report."""
        ess, se = float(self.ess.value), float(self.ess.stderr)
        rama = self.ramachandran
        lines = [
            f"Boltzmann generator vs reference ({self.reference_name})",
            f"  samples               {self.n_samples} drawn, {self.n_kept} kept "
            f"(D form {100 * self.d_form_fraction:.2f} %, {self.n_nonfinite} non-finite)",
            f"  energy evaluations    {self.energy_evaluations}",
            f"  reverse ESS           {100 * ess:.3g} ± {100 * se:.2g} % (Kish, bootstrap error)",
            f"  forward NLL           {self.nll} nats ({self.n_test} MD test frames"
            + (f", {self.n_test_nonfinite} with zero density)" if self.n_test_nonfinite else ")"),
            "  Ramachandran vs MD    KL {:.4g} / TV {:.4g} reweighted, KL {:.4g} / TV {:.4g} raw "
            "flow".format(
                rama["reweighted"]["kl"],
                rama["reweighted"]["tv"],
                rama["flow"]["kl"],
                rama["flow"]["tv"],
            ),
            "  Ramachandran vs US    KL {:.4g} / TV {:.4g} reweighted (umbrella sampling)".format(
                rama["reweighted_vs_umbrella"]["kl"], rama["reweighted_vs_umbrella"]["tv"]
            ),
        ]
        for comparison in self.free_energies.values():
            lines.append(f"  {comparison.label:<21} {comparison.row()}  (kT)")
        lines.append(
            "  wall time             "
            + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot_ramachandran(
        self, path: str | os.PathLike | None = None, *, bins: int = 64, vmax: float = 10.0
    ) -> Figure:
        """:func:`plot_ramachandran` of the MD frames, the flow and the reweighted flow."""
        return plot_ramachandran(
            (self.md_phi, self.md_psi),
            (self.phi, self.psi),
            self.samples.log_w,
            path,
            bins=bins,
            vmax=vmax,
        )

    def save(
        self, directory: str | os.PathLike, *, n_frames: int | None = None, fmt: str = "dcd"
    ) -> Path:
        """Write ``summary.json``, ``ramachandran.png`` and the samples (``samples/``:
        ``topology.pdb``, ``samples.<fmt>``, ``log_weights.npy``; the first ``n_frames`` kept
        samples, default all) into ``directory``; returns it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        self.plot_ramachandran(out / "ramachandran.png")
        if self.system is None:
            raise InvalidInput("GeneratorReport.save: the report has no system to name atoms")
        stop = len(self.samples) if n_frames is None else min(int(n_frames), len(self.samples))
        save_samples(
            out / "samples",
            self.samples.x[:stop],
            self.samples.log_w[:stop],
            self.system,
            fmt=fmt,
        )
        return out


# ---------------------------------------------------------------------------- plots
def plot_ramachandran(
    md_angles: tuple[np.ndarray, np.ndarray],
    flow_angles: tuple[np.ndarray, np.ndarray],
    log_w: Tensor | np.ndarray | None = None,
    path: str | os.PathLike | None = None,
    *,
    bins: int = 64,
    vmax: float = 10.0,
) -> Figure:
    r"""Ramachandran free-energy surfaces of MD, the flow and the reweighted flow, side by side.

    Each panel is ``-log P`` (``kT``, minimum 0, empty cells blank) of a ``bins x bins``
    histogram of ``(phi, psi)`` in degrees (:func:`manifoldflows.plotting.plot_torus_histogram`),
    on one colour scale up to ``vmax``; the third panel only with ``log_w``.

    Arguments:
        md_angles: ``(phi, psi)`` of the MD frames, radians.
        flow_angles: ``(phi, psi)`` of the flow samples, radians.
        log_w: ``(n,)`` log importance weights of the flow samples.
        path: write the figure there (PNG by extension) when given.
        bins: cells per axis.
        vmax: top of the colour scale in ``kT``.

    Returns:
        The matplotlib ``Figure`` (no display needed).

    Example:
        >>> g = np.random.default_rng(0)
        >>> md = (g.uniform(-3, 0, 200), g.uniform(-3, 3, 200))
        >>> fig = plot_ramachandran(md, md, np.zeros(200), bins=8)
        >>> [ax.get_title() for ax in fig.axes[:3]]
        ['MD', 'flow', 'flow, reweighted']
    """
    panels: list[tuple[str, tuple[np.ndarray, np.ndarray], np.ndarray | None]] = [
        ("MD", md_angles, None),
        ("flow", flow_angles, None),
    ]
    if log_w is not None:
        lw = torch.as_tensor(
            log_w.detach().cpu().numpy() if isinstance(log_w, Tensor) else np.asarray(log_w),
            dtype=torch.float64,
        )
        panels.append(("flow, reweighted", flow_angles, torch.softmax(lw, 0).numpy()))
    axes = new_axes(len(panels), size=4.0)
    for ax, (title, (phi, psi), weights) in zip(axes, panels):
        angles = np.stack([np.asarray(phi, float), np.asarray(psi, float)], axis=-1)
        plot_torus_histogram(
            angles,
            weights,
            ax,
            bins=bins,
            vmax=vmax,
            labels=("phi (degrees)", "psi (degrees)"),
        )
        ax.set_title(title)
    figure = axes[0].figure
    figure.colorbar(axes[-1].images[0], ax=axes, label="free energy (kT)", shrink=0.8)
    if path is not None:
        save_figure(figure, path)
    return figure


# ---------------------------------------------------------------------------- evaluation
def _draw(
    flow: Distribution,
    energy: Callable[..., Tensor],
    n: int,
    batch_size: int,
    centers: tuple | None,
    frame: tuple[int, int, int] | None,
    generator: torch.Generator | None,
    progress: bool,
    seconds: dict[str, float],
) -> tuple[Tensor, Tensor, int, int]:
    """Draw ``n`` samples; return the kept ``(x, log_w)``, #D-form and #non-finite samples."""
    xs, lws = [], []
    n_d = n_bad = 0
    with tqdm.tqdm(total=n, disable=not progress, desc="evaluate_generator", unit="samples") as bar:
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            began = time.perf_counter()
            with torch.no_grad():
                x, log_q = flow.sample_and_log_prob((b,), generator=generator)
            seconds["sampling"] += time.perf_counter() - began
            finite = torch.isfinite(x).all(-1)
            keep = finite
            if centers is not None:
                l_form = is_l_form(x.detach(), centers)
                n_d += int((finite & ~l_form).sum())
                keep = finite & l_form
            n_bad += int((~finite).sum())
            x, log_q = x[keep].detach(), log_q[keep].detach()
            began = time.perf_counter()
            with torch.no_grad():
                u = energy(x) if len(x) else x.new_zeros(0)
            seconds["energy"] += time.perf_counter() - began
            log_w = -u.to(log_q.dtype) - log_q
            if frame is not None:
                log_w = log_w + frame_log_jacobian(x, frame)
            xs.append(x)
            lws.append(log_w)
            bar.update(b)
    return torch.cat(xs), torch.cat(lws), n_d, n_bad


def _test_nll(flow: Distribution, frames: np.ndarray, batch_size: int) -> tuple[Estimate, int, int]:
    """Mean and standard error of ``-log q`` over held-out frames; #frames, #non-finite."""
    ref = reference_tensor(flow)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    x = torch.as_tensor(frames.reshape(len(frames), -1), dtype=dtype, device=device)
    with torch.no_grad():
        log_q = torch.cat([flow.log_prob(chunk) for chunk in x.split(batch_size)]).double()
    nll = -log_q
    bad = int((~torch.isfinite(nll)).sum())
    if bad:
        inf = torch.tensor(math.inf, dtype=torch.float64)
        return Estimate(inf, inf), len(x), bad
    n = nll.numel()
    stderr = nll.std() / math.sqrt(n) if n > 1 else torch.zeros((), dtype=torch.float64)
    return Estimate(nll.mean(), stderr), n, 0


def evaluate_generator(
    flow: Distribution,
    energy: Target,
    reference: MDReference,
    *,
    n_samples: int = 100_000,
    batch_size: int = 8192,
    filter_chirality: bool = True,
    progress: bool = True,
    generator: torch.Generator | None = None,
    system: MolecularSystem | None = None,
    bins: int = 64,
    n_bootstrap: int = 100,
    rigid_body_jacobian: bool | None = None,
    nonfinite: str = "zero",
) -> GeneratorReport:
    r"""Evaluate an alanine-dipeptide Boltzmann generator against the MD reference.

    Draws ``n_samples`` configurations from ``flow`` in batches, drops non-finite and (with
    ``filter_chirality``) D-form ones, evaluates the energy of the rest (counted), weights them
    by ``log w = -u + log J - log q`` (module docstring) and measures the quantities of the
    module docstring's table: reverse ESS (bootstrap error), the D-form fraction, the test NLL,
    Ramachandran KL/TV on ``bins x bins`` histograms and the two basin free energies compared
    with ``reference.df_alpha_r_beta`` and ``reference.df_phi_positive``.

    Arguments:
        flow: a flow whose samples are configurations ``(*, 66)`` in nm (e.g. internal
            coordinates; its ``log_prob`` accepts MD frames in any orientation), with
            ``sample_and_log_prob`` and ``log_prob``.
        energy: the reduced energy ``u = U / kT`` at the reference's temperature
            (:class:`~physics.openmm.OpenMMEnergy` or :class:`~physics.openmm.TorchForceField`
            of ``reference.system()``, or any target of :mod:`manifoldflows.targets`).
        reference: from :func:`~physics.systems.reference.load_reference`.
        n_samples: samples drawn (the protocol uses ``>= 1e5``).
        batch_size: samples per flow/energy call (and test frames per ``log_prob`` call).
        filter_chirality: drop D-form samples before weighting (the fraction is reported
            either way).
        progress: progress bar on stderr.
        generator: random generator for the samples and the bootstrap (on the flow's device).
        system: the molecular system (default ``reference.system()``); names the chiral
            centres and the atoms of saved samples.
        bins: histogram cells per axis for the Ramachandran distances.
        n_bootstrap: bootstrap resamples for the ESS error.
        rigid_body_jacobian: add ``log J`` to the log weights (default: when the flow samples
            :class:`~physics.coordinates.FixedFrameCartesian`).
        nonfinite: ``"zero"`` (default: NaN/``+inf`` log weights become zero weights, counted)
            or ``"raise"``.

    Returns:
        A :class:`GeneratorReport` (``to_dict()``, ``table()``, ``plot_ramachandran(path)``,
        ``save(directory)``).

    Raises:
        InvalidInput: for a flow of another size than the reference molecule, an energy at
            another temperature, no sample with positive weight, or bad options.

    References:
        Noe et al., "Boltzmann generators", Science 2019, arXiv:1812.01729. Midgley et al.,
        "Flow annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893. Kish,
        "Survey sampling", 1965.

    Example:
        >>> from manifoldflows import Chain, Flow
        >>> from manifoldflows.distributions import DiagNormal, ProductDistribution, VonMises
        >>> from physics.coordinates import InternalCoordinates
        >>> from physics.openmm import OpenMMEnergy
        >>> from physics.systems.reference import load_reference
        >>> ref = load_reference()
        >>> ala2 = ref.system()
        >>> ic = InternalCoordinates(ala2)
        >>> std = ic.standardization(ref.frames_train)
        >>> base = ProductDistribution([DiagNormal(21), DiagNormal(20), VonMises(19)])
        >>> flow = Flow(base, Chain(std, ic))  # a poor generator, but a real one
        >>> report = evaluate_generator(flow, OpenMMEnergy(ala2), ref, n_samples=200,
        ...                             progress=False, system=ala2,
        ...                             generator=torch.Generator().manual_seed(0))
        >>> report.n_samples, 0.0 < float(report.ess.value) <= 1.0
        (200, True)
        >>> report.energy_evaluations == report.n_kept, report.d_form_fraction > 0.3  # uniform CB
        (True, True)
    """
    who = "evaluate_generator"
    began = time.perf_counter()
    n_samples = positive_int(n_samples, "n_samples", who, minimum=2)
    batch_size = positive_int(batch_size, "batch_size", who)
    bins = positive_int(bins, "bins", who)
    check_policy(nonfinite, who)
    if not (hasattr(flow, "sample_and_log_prob") and hasattr(flow, "log_prob")):
        raise InvalidInput(
            f"{who}: expected a flow with sample_and_log_prob and log_prob, got "
            f"{type(flow).__name__}"
        )
    system = reference.system() if system is None else system
    dim = 3 * system.n_atoms
    event = tuple(getattr(getattr(flow, "space", None), "event_shape", (dim,)))
    if event != (dim,):
        raise InvalidInput(
            f"{who}: expected a flow over configurations of {system.n_atoms} atoms, event "
            f"shape ({dim},), got a flow with event shape {event}"
        )
    temperature = getattr(energy, "temperature", None)
    if temperature is not None and abs(float(temperature) - reference.temperature) > 1e-6:
        raise InvalidInput(
            f"{who}: the energy is at {float(temperature):g} K but the reference at "
            f"{reference.temperature:g} K; free energies would not be comparable"
        )
    frame = flow_frame(flow)
    if rigid_body_jacobian is False:
        frame = None
    elif rigid_body_jacobian and frame is None:
        raise InvalidInput(
            f"{who}: rigid_body_jacobian=True needs a flow over FixedFrameCartesian, got one "
            f"over {getattr(flow, 'space', None)!r}"
        )
    all_centers = chiral_centers(system) or None  # None: no alpha carbon, no chirality
    centers = all_centers if filter_chirality else None
    u_fn = energy_fn(energy)
    seconds = {"sampling": 0.0, "energy": 0.0, "nll": 0.0, "analysis": 0.0, "total": 0.0}

    was_training = getattr(flow, "training", False)
    if was_training:
        flow.eval()
    try:
        x, log_w, n_d, n_bad_x = _draw(
            flow, u_fn, n_samples, batch_size, centers, frame, generator, progress, seconds
        )
        started = time.perf_counter()
        nll, n_test, n_test_bad = _test_nll(flow, reference.frames_test, batch_size)
        seconds["nll"] = time.perf_counter() - started
    finally:
        if was_training:
            flow.train()
    started = time.perf_counter()
    n_finite = n_samples - n_bad_x
    if centers is None and all_centers is not None and len(x):
        n_d = int((~is_l_form(x, all_centers)).sum())
    log_w, n_bad_w = handle_nonfinite(log_w, nonfinite, who)
    if len(x) < 2 or not bool((log_w > -math.inf).any()):
        raise InvalidInput(
            f"{who}: {len(x)} of {n_samples} samples kept ({n_d} D-form, {n_bad_x} non-finite) "
            f"and {int((log_w > -math.inf).sum())} with positive weight; nothing to estimate"
        )
    ess = bootstrap_ess(log_w, n_bootstrap, generator=generator)
    phi, psi = backbone_torsions(x.detach().cpu().double().reshape(len(x), -1, 3).numpy())
    weights = torch.softmax(log_w.double(), 0).cpu().numpy()
    flow_angles = np.stack([phi, psi], -1)
    md = torus_histogram(np.stack([reference.phi, reference.psi], -1), bins=bins)
    umbrella = torus_histogram(
        np.stack([reference.umbrella_phi, reference.umbrella_psi], -1),
        np.exp(reference.umbrella_log_weights - reference.umbrella_log_weights.max()),
        bins=bins,
    )
    reweighted = torus_histogram(flow_angles, weights, bins=bins)
    raw = torus_histogram(flow_angles, bins=bins)
    ramachandran = {
        "reweighted": {"kl": histogram_kl(md, reweighted), "tv": total_variation(md, reweighted)},
        "flow": {"kl": histogram_kl(md, raw), "tv": total_variation(md, raw)},
        "reweighted_vs_umbrella": {
            "kl": histogram_kl(umbrella, reweighted),
            "tv": total_variation(umbrella, reweighted),
        },
    }
    weighted_df = basin_free_energies(phi, psi, log_w)
    raw_df = basin_free_energies(phi, psi)
    references = {
        "alpha_r_beta": reference.df_alpha_r_beta,
        "phi_positive": reference.df_phi_positive,
    }
    free_energies = {
        key: FreeEnergyComparison(label, weighted_df[key], references[key], raw_df[key])
        for key, label in FREE_ENERGIES.items()
    }
    seconds["analysis"] = time.perf_counter() - started
    seconds["total"] = time.perf_counter() - began
    return GeneratorReport(
        n_samples=n_samples,
        n_kept=len(x),
        d_form_fraction=n_d / n_finite if n_finite else 0.0,
        n_nonfinite=n_bad_x + n_bad_w,
        ess=ess,
        nll=nll,
        n_test=n_test,
        n_test_nonfinite=n_test_bad,
        ramachandran=ramachandran,
        free_energies=free_energies,
        energy_evaluations=len(x),
        seconds=seconds,
        reference_name=(f"{reference.forcefield}/{reference.solvent}, {reference.temperature:g} K"),
        rigid_body_jacobian=frame is not None,
        samples=Samples(x, log_w, n_bad_w),
        phi=phi,
        psi=psi,
        md_phi=np.asarray(reference.phi),
        md_psi=np.asarray(reference.psi),
        system=system,
    )
