r"""Free energies with error bars from molecular dynamics: block averages of plain MD and
MBAR reweighting of umbrella sampling along a periodic collective variable.

These are the estimators behind the alanine-dipeptide reference (:mod:`physics.systems.reference`);
they take plain numpy arrays and work for any system.

=========================================  ==================================================
:func:`block_population`                    ``P(A)`` from correlated MD frames, block error
:func:`block_free_energy_difference`        ``F_B - F_A`` from correlated MD frames, block error
:func:`umbrella_bias`                       periodic harmonic bias energies of every window
:func:`mbar`                                MBAR free energies of the states and unbiased weights
:func:`umbrella_mbar`                       MBAR for umbrella windows + circular block bootstrap
:class:`Reweighting`                        unbiased weights with bootstrap replicates
=========================================  ==================================================

**Plain MD, block averages.** Frames of a trajectory are correlated, so the error of an average
is estimated from means over blocks of ``L`` consecutive frames (Flyvbjerg & Petersen 1989): with
block means ``p_{A,j}``, ``p_{B,j}`` of the indicators of two regions over ``n_b`` blocks and
their averages ``P_A``, ``P_B``,

.. math::

    \Delta F = F_B - F_A = -\log\frac{P_B}{P_A}, \qquad
    \mathrm{se}^2(\Delta F) = \frac{1}{n_b}\,\mathrm{Var}_j\!\left(
        \frac{p_{B,j}}{P_B} - \frac{p_{A,j}}{P_A}\right)

(the delta method on the block means; it includes the covariance of the two populations). The
error is trustworthy once blocks are longer than the correlation time of the indicators: the
error then stops growing with ``L`` (a plateau).

**Umbrella sampling** (Torrie & Valleau 1977) runs ``K`` simulations, window ``k`` with the bias
``w_k(s) = k_s/2 \, d(s, c_k)^2`` on a collective variable ``s`` (here an angle; ``d`` is the
periodic distance to the centre ``c_k``). With reduced bias energies ``u_{kn} = w_k(s_n)/kT`` of
all ``N = \sum_k N_k`` samples pooled, MBAR (Shirts & Chodera 2008; the binless limit of WHAM,
Kumar et al. 1992) solves the self-consistent equations

.. math::

    f_k = -\log \sum_{n=1}^{N} \frac{e^{-u_{kn}}}{\sum_{l} N_l\, e^{f_l - u_{ln}}}

for the dimensionless free energies ``f_k`` of the biased states (the unbiased energy cancels:
every window runs at the same temperature). They are the minimum of the convex function

.. math::

    \mathcal{L}(f) = \sum_n \log \sum_k N_k e^{f_k - u_{kn}} - \sum_k N_k f_k

(gradient ``\sum_n W_{nk} - N_k`` with ``W_{nk} = N_k e^{f_k - u_{kn}} / \sum_l N_l e^{f_l -
u_{ln}}``, Hessian ``\mathrm{diag}(\sum_n W_{nk}) - W^\top W``), found here by a trust-region
Newton method with ``f_0 = 0``. Every sample then gets the unbiased weight
``w_n \propto 1 / \sum_k N_k e^{f_k - u_{kn}}``, and ``P(A) = \sum_{n\in A} w_n / \sum_n w_n``.
The samples of a window are correlated, so error bars come from a circular block bootstrap
(Politis & Romano 1992): each window's time series is rebuilt from blocks of ``L`` consecutive
samples drawn at random (wrapping around its end), MBAR is solved again, and the standard error
is the standard deviation of the estimate over the replicates.

References:
    G. M. Torrie, J. P. Valleau, "Nonphysical sampling distributions in Monte Carlo free-energy
    estimation: umbrella sampling", J. Comput. Phys. 23 (1977) 187-199.
    S. Kumar, J. M. Rosenberg, D. Bouzida, R. H. Swendsen, P. A. Kollman, "The weighted
    histogram analysis method for free-energy calculations on biomolecules. I. The method",
    J. Comput. Chem. 13 (1992) 1011-1021.
    M. R. Shirts, J. D. Chodera, "Statistically optimal analysis of samples from multiple
    equilibrium states", J. Chem. Phys. 129 (2008) 124105, arXiv:0801.1426.
    H. Flyvbjerg, H. G. Petersen, "Error estimates on averages of correlated data", J. Chem.
    Phys. 91 (1989) 461-466.
    D. N. Politis, J. P. Romano, "A circular block-resampling procedure for stationary data",
    in Exploring the Limits of Bootstrap, Wiley 1992, 263-270.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
import torch

from manifoldflows._checks import positive_float, positive_int
from manifoldflows.errors import InvalidInput
from manifoldflows.estimators import Estimate

__all__ = [
    "wrap_angle",
    "umbrella_bias",
    "mbar",
    "MBARSolution",
    "circular_block_bootstrap",
    "Reweighting",
    "umbrella_mbar",
    "block_population",
    "block_free_energy_difference",
]


def _estimate(value: float, stderr: float) -> Estimate:
    return Estimate(
        torch.tensor(float(value), dtype=torch.float64),
        torch.tensor(float(stderr), dtype=torch.float64),
    )


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """``log sum_k exp(a_k)`` over the first axis (finite ``a``)."""
    top = a.max(0)
    return top + np.log(np.exp(a - top).sum(0))


def _vector(values: object, who: str, what: str, dtype: type = np.float64) -> np.ndarray:
    """A 1-D array (finite when floating) or a clear error."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidInput(f"{who}: expected {what} as a 1-D array, got shape {array.shape}")
    if dtype is bool:
        if array.dtype != np.bool_:
            raise InvalidInput(f"{who}: expected {what} as a boolean mask, got dtype {array.dtype}")
        return array
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidInput(f"{who}: expected real numbers for {what}, got dtype {array.dtype}")
    array = array.astype(dtype)
    if dtype is np.float64 and not np.isfinite(array).all():
        raise InvalidInput(f"{who}: expected finite {what}, got NaN or inf")
    return array


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    r"""Angles (radians) mapped to ``[-pi, pi)``: ``(a + pi) mod 2 pi - pi``.

    Example:
        >>> wrap_angle(np.array([np.pi, 3 * np.pi / 2, -np.pi])).round(4).tolist()
        [-3.1416, -1.5708, -3.1416]
    """
    return np.mod(np.asarray(angle, dtype=np.float64) + np.pi, 2.0 * np.pi) - np.pi


def umbrella_bias(cv: np.ndarray, centers: np.ndarray, force_constant: float) -> np.ndarray:
    r"""Periodic harmonic umbrella energies ``w_k(s_n) = k_s/2 \, d(s_n, c_k)^2``.

    ``d`` is the distance on the circle, ``|wrap(s - c)|`` in ``[0, pi]``: the expression
    ``0.5*k*min(|theta - c|, 2*pi - |theta - c|)^2`` of the ``CustomTorsionForce`` that
    :func:`physics.systems.reference.run_umbrella` adds to the OpenMM system.

    Arguments:
        cv: ``(n,)`` angles in radians.
        centers: ``(K,)`` window centres in radians.
        force_constant: ``k_s`` in energy per rad^2 (the unit of the result).

    Returns:
        ``(K, n)`` bias energies.

    Example:
        >>> umbrella_bias(np.array([3.0, -3.0]), np.array([3.1]), 2.0).round(4).tolist()
        [[0.01, 0.0336]]
    """
    who = "umbrella_bias"
    s = _vector(cv, who, "the collective-variable values cv")
    c = _vector(centers, who, "the window centers")
    k = positive_float(force_constant, "force_constant", who)
    return 0.5 * k * wrap_angle(s[None, :] - c[:, None]) ** 2


@dataclass(frozen=True)
class MBARSolution:
    """Output of :func:`mbar`.

    Attributes:
        free_energies: ``(K,)`` dimensionless free energies ``f_k`` of the states, ``f_0 = 0``.
        log_weights: ``(N,)`` log unbiased weights of the pooled samples, normalised so that
            ``logsumexp(log_weights) = 0``.
        iterations: Newton iterations the solver took.
    """

    free_energies: np.ndarray
    log_weights: np.ndarray
    iterations: int


def mbar(
    reduced_potentials: np.ndarray,
    counts: Sequence[int] | np.ndarray,
    *,
    initial: np.ndarray | None = None,
    tolerance: float = 1e-10,
    max_iterations: int = 500,
) -> MBARSolution:
    r"""Solve the MBAR equations for ``K`` states from pooled samples (see the module docstring).

    Arguments:
        reduced_potentials: ``(K, N)`` reduced energies ``u_k(x_n)`` (in ``kT``) of every
            pooled sample in every state; only differences between states matter, so for
            umbrella windows at one temperature the reduced bias energies suffice.
        counts: ``(K,)`` number of samples drawn from each state (positive, summing to ``N``).
        initial: optional ``(K,)`` starting free energies (e.g. a previous solution).
        tolerance: on the largest gradient component divided by ``N``.
        max_iterations: of the trust-region Newton solver.

    Returns:
        :class:`MBARSolution`.

    References:
        Shirts & Chodera, J. Chem. Phys. 129 (2008) 124105, arXiv:0801.1426.

    Example:
        >>> u0 = np.array([0.0, 0.5, 1.5, 2.0])
        >>> sol = mbar(np.stack([u0, u0 + np.log(2.0)]), [2, 2])  # state 1: energy + log 2
        >>> round(float(sol.free_energies[1]), 6), round(float(np.exp(sol.log_weights).sum()), 6)
        (0.693147, 1.0)
        >>> mbar(np.stack([u0, u0]), [3, 3])
        Traceback (most recent call last):
        ...
        manifoldflows.errors.InvalidInput: mbar: expected counts summing to the 4 samples, got 6
    """
    who = "mbar"
    u = np.asarray(reduced_potentials, dtype=np.float64)
    if u.ndim != 2 or u.shape[0] < 1 or u.shape[1] < 1:
        raise InvalidInput(f"{who}: expected reduced_potentials of shape (K, N), got {np.shape(u)}")
    if not np.isfinite(u).all():
        raise InvalidInput(f"{who}: expected finite reduced potentials, got NaN or inf")
    n_states, n = u.shape
    n_k = np.asarray(counts)
    if n_k.shape != (n_states,) or not np.issubdtype(n_k.dtype, np.integer) or (n_k < 1).any():
        raise InvalidInput(
            f"{who}: expected counts as {n_states} positive integers (one per state), got "
            f"{n_k.tolist()}"
        )
    if int(n_k.sum()) != n:
        raise InvalidInput(f"{who}: expected counts summing to the {n} samples, got {n_k.sum()}")
    log_n = np.log(n_k.astype(np.float64))
    f0 = np.zeros(n_states) if initial is None else np.asarray(initial, dtype=np.float64)
    if f0.shape != (n_states,) or not np.isfinite(f0).all():
        raise InvalidInput(f"{who}: expected initial free energies of shape ({n_states},)")
    f0 = f0 - f0[0]
    if n_states == 1:
        lse = log_n[0] - u[0]
        return MBARSolution(np.zeros(1), -lse - scipy.special.logsumexp(-lse), 0)
    share = n_k[1:] / n

    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def terms(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = g.tobytes()
        if key not in cache:  # the solver asks for the gradient and Hessian at the same point
            cache.clear()
            a = (log_n + np.concatenate(([0.0], g)))[:, None] - u
            lse = _logsumexp(a)
            cache[key] = lse, np.exp(a[1:] - lse)  # W^T without state 0, (K - 1, N)
        return cache[key]

    def objective(g: np.ndarray) -> tuple[float, np.ndarray]:
        lse, w = terms(g)
        return float(lse.mean() - share @ g), w.mean(1) - share

    def hessian(g: np.ndarray) -> np.ndarray:
        _, w = terms(g)
        # einsum, not BLAS: threaded BLAS stalls on busy machines for these small products
        return np.diag(w.mean(1)) - np.einsum("kn,ln->kl", w, w) / n

    result = scipy.optimize.minimize(
        objective,
        f0[1:],
        jac=True,
        hess=hessian,
        method="trust-exact",
        options={"gtol": tolerance, "maxiter": positive_int(max_iterations, "max_iterations", who)},
    )
    g = result.x
    _, w = terms(g)
    if np.abs(w.mean(1) - share).max() > max(1e3 * tolerance, 1e-8):
        raise InvalidInput(
            f"{who}: the MBAR equations did not converge in {max_iterations} iterations "
            f"({result.message}); check that the states' samples overlap"
        )
    free = np.concatenate(([0.0], g))
    lse = scipy.special.logsumexp((log_n + free)[:, None] - u, axis=0)
    log_w = -lse - scipy.special.logsumexp(-lse)
    return MBARSolution(free, log_w, int(result.nit))


def circular_block_bootstrap(
    series: np.ndarray, block_length: int, rng: np.random.Generator
) -> np.ndarray:
    r"""One circular-block-bootstrap resample of several time series, as sample indices.

    Every series (the samples with one label, in time order) of length ``m`` is rebuilt from
    ``ceil(m / L)`` blocks of ``L`` consecutive samples starting at uniformly drawn positions
    and wrapping around the series' end, truncated to ``m``; the series keep their lengths.

    Arguments:
        series: ``(N,)`` integer label of each sample's time series (samples of one series in
            time order; series may be interleaved).
        block_length: ``L`` (1: the ordinary bootstrap of independent samples).
        rng: numpy random generator.

    Returns:
        ``(N,)`` indices into the samples; ``indices[series == s]`` resamples series ``s``.

    References:
        Politis & Romano, "A circular block-resampling procedure for stationary data", 1992.

    Example:
        >>> idx = circular_block_bootstrap(np.array([0, 0, 0, 1, 1]), 2, np.random.default_rng(0))
        >>> sorted(set(idx[:3].tolist()) | {0}) <= [0, 1, 2], sorted(set(idx[3:].tolist()))
        (True, [3, 4])
    """
    who = "circular_block_bootstrap"
    labels = _vector(series, who, "the series labels", dtype=np.int64)
    length = positive_int(block_length, "block_length", who)
    out = np.empty(labels.size, dtype=np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        m = where.size
        starts = rng.integers(0, m, size=-(-m // length))
        positions = (starts[:, None] + np.arange(length)[None, :]).reshape(-1)[:m] % m
        out[where] = where[positions]
    return out


def _log_sum(log_w: np.ndarray, mask: np.ndarray) -> float:
    return float(scipy.special.logsumexp(log_w[mask])) if mask.any() else -math.inf


@dataclass(frozen=True)
class Reweighting:
    r"""Unbiased log weights of pooled samples with bootstrap replicates (from
    :func:`umbrella_mbar`).

    Attributes:
        log_weights: ``(N,)`` log weights of the samples for the unbiased ensemble
            (``logsumexp = 0``).
        free_energies: ``(K,)`` dimensionless free energies of the windows (``f_0 = 0``).
        replicate_indices: ``(B, N)`` sample indices of each bootstrap replicate.
        replicate_log_weights: ``(B, N)`` the log weights MBAR gives those resampled samples.

    Example:
        >>> rw = Reweighting(np.log(np.full(4, 0.25)), np.zeros(1),
        ...                  np.array([[0, 1, 2, 3], [0, 0, 2, 2]]), np.log(np.full((2, 4), 0.25)))
        >>> mask = np.array([True, True, False, False])
        >>> print(rw.free_energy_difference(mask, ~mask)), print(rw.population(mask))
        0 ± 0
        0.5 ± 0
        (None, None)
    """

    log_weights: np.ndarray
    free_energies: np.ndarray
    replicate_indices: np.ndarray
    replicate_log_weights: np.ndarray

    def _mask(self, region: np.ndarray, name: str) -> np.ndarray:
        mask = _vector(region, f"{type(self).__name__}", name, dtype=bool)
        if mask.shape != self.log_weights.shape:
            raise InvalidInput(
                f"{type(self).__name__}: expected {name} of shape {self.log_weights.shape} (one "
                f"entry per sample), got {mask.shape}"
            )
        return mask

    def _estimate(self, statistic: Callable[..., float], *masks: np.ndarray) -> Estimate:
        value = statistic(self.log_weights, *masks)
        replicas = [
            statistic(lw, *(m[idx] for m in masks))
            for idx, lw in zip(self.replicate_indices, self.replicate_log_weights)
        ]
        replicas = np.asarray(replicas, dtype=np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf when a region is empty
            stderr = float(replicas.std(ddof=1)) if replicas.size > 1 else math.nan
        return _estimate(value, stderr)

    def free_energy_difference(self, region_a: np.ndarray, region_b: np.ndarray) -> Estimate:
        r"""``F_B - F_A = log sum_A w - log sum_B w`` in ``kT``, bootstrap standard error.

        Arguments:
            region_a, region_b: ``(N,)`` boolean masks of the samples.

        Returns:
            An :class:`~manifoldflows.estimators.Estimate` (``+inf`` when ``B`` holds no
            sample, ``-inf`` when ``A`` holds none).
        """
        a = self._mask(region_a, "region_a")
        b = self._mask(region_b, "region_b")
        return self._estimate(lambda lw, ma, mb: _log_sum(lw, ma) - _log_sum(lw, mb), a, b)

    def population(self, region: np.ndarray) -> Estimate:
        """``P(A) = sum_A w / sum w`` with bootstrap standard error.

        Arguments:
            region: ``(N,)`` boolean mask of the samples.
        """
        mask = self._mask(region, "region")
        return self._estimate(lambda lw, m: math.exp(_log_sum(lw, m) - _log_sum(lw, m | ~m)), mask)


def umbrella_mbar(
    cv: np.ndarray,
    window: np.ndarray,
    centers: np.ndarray,
    force_constant: float,
    kT: float,  # noqa: N803 - the physical symbol
    *,
    series: np.ndarray | None = None,
    block_length: int = 1,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Reweighting:
    r"""MBAR for umbrella sampling along an angle, with circular-block-bootstrap replicates.

    Arguments:
        cv: ``(N,)`` the biased angle (radians) of every pooled sample.
        window: ``(N,)`` index ``k`` of the window each sample was drawn in (``0 <= k < K``,
            every window sampled).
        centers: ``(K,)`` window centres (radians).
        force_constant: ``k_s`` of the bias ``k_s/2 d^2`` (energy / rad^2, same unit as kT).
        kT: thermal energy in the unit of ``force_constant``.
        series: ``(N,)`` label of each sample's time series (default: ``window``), e.g. one per
            (repeat, window) when windows were run several times; samples of a series in time
            order.
        block_length: bootstrap block length ``L`` in samples (longer than the correlation time
            of the observables within a window; 1 for independent samples).
        n_bootstrap: number of replicates ``B`` (>= 2 for an error bar).
        seed: of the bootstrap's random generator.

    Returns:
        A :class:`Reweighting`; its ``free_energy_difference`` and ``population`` give
        estimates with bootstrap standard errors.

    References:
        Torrie & Valleau, J. Comput. Phys. 23 (1977); Kumar et al., J. Comput. Chem. 13 (1992);
        Shirts & Chodera, J. Chem. Phys. 129 (2008), arXiv:0801.1426.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> centers = np.array([-2.0, 0.0, 2.0])
        >>> window = np.repeat(np.arange(3), 500)
        >>> cv = wrap_angle(centers[window] + rng.normal(0.0, 0.3, window.size))  # flat target
        >>> rw = umbrella_mbar(cv, window, centers, 1 / 0.09, 1.0, n_bootstrap=20)
        >>> rw.log_weights.shape, rw.replicate_log_weights.shape
        ((1500,), (20, 1500))
    """
    who = "umbrella_mbar"
    s = _vector(cv, who, "cv")
    k_index = _vector(window, who, "the window indices", dtype=np.int64)
    c = _vector(centers, who, "the window centers")
    if k_index.shape != s.shape:
        raise InvalidInput(
            f"{who}: expected one window index per sample, shape {s.shape}, got {k_index.shape}"
        )
    counts = np.bincount(k_index, minlength=c.size) if (k_index >= 0).all() else None
    if counts is None or counts.size != c.size or (counts == 0).any():
        raise InvalidInput(
            f"{who}: expected window indices in [0, {c.size}) with every window sampled, got "
            f"{k_index.min()}..{k_index.max()} with counts "
            f"{None if counts is None else counts.tolist()}"
        )
    labels = k_index if series is None else _vector(series, who, "series", dtype=np.int64)
    if labels.shape != s.shape:
        raise InvalidInput(f"{who}: expected series of shape {s.shape}, got {labels.shape}")
    for label in np.unique(labels):
        if np.unique(k_index[labels == label]).size != 1:
            raise InvalidInput(f"{who}: series {label} mixes samples of several windows")
    beta = 1.0 / positive_float(kT, "kT", who)
    n_bootstrap = positive_int(n_bootstrap, "n_bootstrap", who, minimum=0)
    reduced = beta * umbrella_bias(s, c, force_constant)
    solution = mbar(reduced, counts)
    rng = np.random.default_rng(seed)
    indices = np.empty((n_bootstrap, s.size), dtype=np.int64)
    log_ws = np.empty((n_bootstrap, s.size))
    for b in range(n_bootstrap):
        indices[b] = circular_block_bootstrap(labels, block_length, rng)
        replica = mbar(reduced[:, indices[b]], counts, initial=solution.free_energies)
        log_ws[b] = replica.log_weights
    return Reweighting(solution.log_weights, solution.free_energies, indices, log_ws)


# ---------------------------------------------------------------------------- plain MD
def _block_means(
    masks: Sequence[np.ndarray], runs: np.ndarray | None, block_length: int, who: str
) -> np.ndarray:
    """``(n_blocks, len(masks))`` means of the indicators over blocks of ``block_length``
    consecutive frames within each run (the last ``< block_length`` frames of a run unused)."""
    arrays = [_vector(m, who, "a region mask", dtype=bool) for m in masks]
    n = arrays[0].size
    for array in arrays:
        if array.size != n:
            raise InvalidInput(f"{who}: expected region masks of one length, got {array.size}, {n}")
    labels = (
        np.zeros(n, dtype=np.int64)
        if runs is None
        else _vector(runs, who, "the run labels", dtype=np.int64)
    )
    if labels.size != n:
        raise InvalidInput(f"{who}: expected run labels of shape ({n},), got ({labels.size},)")
    length = positive_int(block_length, "block_length (frames)", who)
    stacked = np.stack(arrays, axis=1).astype(np.float64)
    blocks = []
    for label in np.unique(labels):
        frames = stacked[labels == label]
        n_blocks = frames.shape[0] // length
        if n_blocks:
            blocks.append(frames[: n_blocks * length].reshape(n_blocks, length, -1).mean(1))
    total = sum(b.shape[0] for b in blocks)
    if total < 2:
        raise InvalidInput(
            f"{who}: expected at least 2 blocks of {length} frames, got {total} from "
            f"{n} frames; use a shorter block_length"
        )
    return np.concatenate(blocks)


def block_population(
    region: np.ndarray, *, runs: np.ndarray | None = None, block_length: int = 500
) -> Estimate:
    r"""Population ``P(A)`` of a region from MD frames, with block-averaged standard error.

    .. math::

        \hat P = \frac{1}{n_b}\sum_j p_j, \qquad \mathrm{se} = \mathrm{sd}_j(p_j)/\sqrt{n_b}

    over ``n_b`` blocks of ``block_length`` consecutive frames of each run.

    Arguments:
        region: ``(n,)`` boolean mask of the frames in ``A``.
        runs: ``(n,)`` run label of each frame (frames of a run in time order); default one run.
        block_length: frames per block.

    Returns:
        An :class:`~manifoldflows.estimators.Estimate`.

    References:
        Flyvbjerg & Petersen, J. Chem. Phys. 91 (1989) 461-466.

    Example:
        >>> print(block_population(np.arange(100) % 4 == 0, block_length=20))
        0.25 ± 0
    """
    p = _block_means([region], runs, block_length, "block_population")[:, 0]
    return _estimate(p.mean(), p.std(ddof=1) / math.sqrt(p.size))


def block_free_energy_difference(
    region_a: np.ndarray,
    region_b: np.ndarray,
    *,
    runs: np.ndarray | None = None,
    block_length: int = 500,
) -> Estimate:
    r"""``F_B - F_A = -log(P_B / P_A)`` (in ``kT``) from MD frames, block-averaged error.

    See the module docstring for the error formula (delta method over block means).

    Arguments:
        region_a, region_b: ``(n,)`` boolean masks of the frames.
        runs: ``(n,)`` run label of each frame (frames of a run in time order); default one run.
        block_length: frames per block.

    Returns:
        An :class:`~manifoldflows.estimators.Estimate` in ``kT``.

    Raises:
        InvalidInput: when a region holds no frame of the blocks (its free energy is unknown).

    References:
        Flyvbjerg & Petersen, J. Chem. Phys. 91 (1989) 461-466.

    Example:
        >>> frames = np.arange(300)
        >>> a, b = frames % 3 == 0, frames % 3 != 0
        >>> print(block_free_energy_difference(a, b, block_length=30))  # -log 2
        -0.693147 ± 0
    """
    who = "block_free_energy_difference"
    p = _block_means([region_a, region_b], runs, block_length, who)
    total = p.mean(0)
    for name, value, mask in (("region_a", total[0], region_a), ("region_b", total[1], region_b)):
        if value <= 0.0:
            raise InvalidInput(
                f"{who}: {name} holds {int(np.sum(mask))} of {np.size(mask)} frames and none "
                "in the blocks, so its free energy cannot be estimated from these frames"
            )
    influence = p[:, 1] / total[1] - p[:, 0] / total[0]
    stderr = influence.std(ddof=1) / math.sqrt(p.shape[0])
    return _estimate(math.log(total[0]) - math.log(total[1]), stderr)
