r"""Training Boltzmann generators: the molecular target and five methods, with their budget.

:func:`train_generator` trains a :class:`~physics.generator.MolecularFlow` by one of

* ``"ml"``: maximum likelihood on MD frames (forward KL);
* ``"reverse_kl"``: reverse KL against the Boltzmann density ``exp(-u(x))`` of the force field;
* ``"mixed"``: ``forward_weight`` times forward KL on MD frames plus ``1 - forward_weight``
  times reverse KL (Noe et al. 2019);
* ``"annealed"``: reverse KL at temperature ``T(k)``, lowered geometrically from
  ``start_temperature`` (1200 K) to the system's temperature (300 K) over ``anneal_steps``
  steps, then plain reverse KL; the energy at ``T`` is ``u(x) T_0 / T`` (``u`` reduced at the
  system's ``T_0``);
* ``"fab"``: flow annealed importance sampling bootstrap (Midgley et al. 2023): AIS with HMC
  towards ``p^2 / q`` in the flow's latent space, the alpha-2 loss, and a prioritised replay
  buffer (:class:`~manifoldflows.training.FAB`);

on either energy backend: :class:`~physics.openmm.TorchForceField` (vectorised PyTorch, the
fast one on CPU) or :class:`~physics.openmm.OpenMMEnergy` (OpenMM itself, in-process or in
worker processes). It reuses :func:`~manifoldflows.training.fit` (Adam, gradient clipping,
NaN checks, checkpoints that resume exactly) with the generic objectives of
:mod:`manifoldflows.training` (:class:`~manifoldflows.training.KLObjective`,
:class:`~manifoldflows.training.FAB`), wrapped in a :class:`~manifoldflows.training.Monitor`
whose progress bar shows the loss, the ESS of the step's importance weights and the energy
evaluations so far, and which records them per step with the wall time (the quality-versus-
budget curves of the benchmarks).

**The target** (:class:`MolecularTarget`) is the force field's reduced energy on the
generator's configuration space, made safe for training: energies go through a
:class:`~physics.regularize.LinLogCut` (linear up to ``high`` = 1000 kT, logarithmic above,
NaN/inf replaced by ``max`` with zero gradient), so no sample can make the loss or its gradient
NaN; and configurations with a D-form alpha carbon get ``u = +inf``: the target is the
Boltzmann density **restricted to the L form**, as in the published alanine-dipeptide
benchmarks. Reverse-KL steps drop such samples from the average (and count them), AIS gives
them zero weight and HMC never moves into them, and the reported ESS counts them as zero
weights.

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium states of
    many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato, "Flow
    annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893.
    M. Dibak, L. Klein, A. Kraemer, F. Noe, "Temperature steerable flows and Boltzmann
    generators", Phys. Rev. Research 4 (2022), arXiv:2108.01590 (training at high temperature).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from manifoldflows.errors import InvalidInput
from manifoldflows.targets import Target
from manifoldflows.training import (
    FAB,
    CountedTarget,
    History,
    KLObjective,
    Monitor,
    Objective,
    PrioritisedReplayBuffer,
    TrainingRecord,
    fit,
    geometric_annealing,
)

from .coordinates import is_l_form
from .coordinates.internal import ConfigurationsLike, _configurations
from .energy import Energy
from .generator import MolecularFlow
from .regularize import LinLogCut
from .systems.reference import MDReference

__all__ = [
    "MolecularTarget",
    "METHODS",
    "objective_for",
    "train_generator",
    "GeneratorTraining",
]

#: The training methods of :func:`train_generator`.
METHODS = ("ml", "reverse_kl", "mixed", "annealed", "fab")
#: Default learning rates per method (Adam).
LEARNING_RATES = {"ml": 1e-3, "reverse_kl": 1e-4, "mixed": 3e-4, "annealed": 1e-4, "fab": 3e-4}


class MolecularTarget(Energy):
    r"""A force field's Boltzmann target on a generator's configurations: regularised, L-form.

    .. math::

        \tilde u(x) = \begin{cases} \operatorname{linlog}(u(x)) & x \text{ all-L} \\
            +\infty & \text{otherwise} \end{cases}

    with ``linlog`` the :class:`~physics.regularize.LinLogCut` (``high``, ``max``; NaN/inf
    energies become ``max`` with zero gradient) and the chirality test of
    :meth:`~physics.generator.MolecularFlow.is_l_form` (``filter_chirality=False`` keeps the D
    form). The space is the generator's (:class:`~physics.coordinates.FixedFrameCartesian`,
    configurations modulo rigid motions; the force field is invariant under them), so the
    target passes the space checks of :mod:`manifoldflows`. ``+inf`` has zero gradient.

    Arguments:
        energy: an :class:`~physics.energy.Energy` over ``Euclidean(3N)`` of the same
            molecule (:class:`~physics.openmm.TorchForceField`,
            :class:`~physics.openmm.OpenMMEnergy`).
        generator: the :class:`~physics.generator.MolecularFlow` to train.
        high: start of the logarithmic regime of the cut (reduced units).
        max: the cap.
        filter_chirality: give D-form configurations ``u = +inf``.

    Attributes:
        wrapped: the energy as given; regularized: its :class:`~physics.regularize.LinLogCut`.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> from physics.openmm import TorchForceField
        >>> from physics.generator import BoltzmannGenerator
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> bg = BoltzmannGenerator(ala2, layers=2, hidden=(16,))
        >>> target = MolecularTarget(TorchForceField.from_openmm(ala2), bg)
        >>> x = torch.stack([ala2.configuration(), -ala2.configuration()])  # L and its mirror
        >>> u = target.energy(x)
        >>> bool(torch.isfinite(u[0])), u[1].item()
        (True, inf)
    """

    def __init__(
        self,
        energy: Energy,
        generator: MolecularFlow,
        *,
        high: float = 1e3,
        max: float = 1e5,
        filter_chirality: bool = True,
    ):
        who = type(self).__name__
        if not isinstance(generator, MolecularFlow):
            raise InvalidInput(
                f"{who}: expected a MolecularFlow generator, got {type(generator).__name__}"
            )
        if not hasattr(energy, "energy") or getattr(energy, "dim", None) != 3 * generator.n_atoms:
            raise InvalidInput(
                f"{who}: expected an energy of {3 * generator.n_atoms} Cartesian coordinates "
                f"({generator.system_name}), got {type(energy).__name__} with dim "
                f"{getattr(energy, 'dim', None)}"
            )
        super().__init__(generator.space, kT=getattr(energy, "kT", None))
        self.wrapped = energy
        self.regularized = LinLogCut(energy, high=high, max=max)
        self.filter_chirality = bool(filter_chirality)
        self.centers = generator.chiral_centers
        self.temperature = float(
            getattr(energy, "temperature", None) or generator.molecule["temperature"]
        )

    def extra_repr(self) -> str:
        return (
            f"{type(self.wrapped).__name__}, high={self.regularized.high:g}, "
            f"max={self.regularized.max:g}, filter_chirality={self.filter_chirality}"
        )

    def _reduced(self, x: Tensor) -> Tensor:
        u = self.regularized.energy(x)
        if not self.filter_chirality or not self.centers:
            return u
        return torch.where(is_l_form(x, self.centers), u, torch.full_like(u, math.inf))


@dataclass
class GeneratorTraining:
    """What :func:`train_generator` returns.

    Attributes:
        method: the method.
        history: :func:`~manifoldflows.training.fit`'s :class:`~manifoldflows.training.History`
            (loss per step, total wall time).
        record: the :class:`~manifoldflows.training.TrainingRecord`: per step the loss, the ESS
            (and other diagnostics), the energy evaluations so far and the wall time.
        energy_evaluations: energy evaluations spent on training (excluding monitoring).
        wall_time: seconds in :func:`~manifoldflows.training.fit`.
        target: the :class:`MolecularTarget` trained against (``None`` for ``"ml"`` without an
            energy).
    """

    method: str
    history: History
    record: TrainingRecord
    energy_evaluations: int
    wall_time: float
    target: MolecularTarget | None

    @property
    def final_ess(self) -> float | None:
        """The last ESS measured (relative, w.r.t. the target at the system's temperature)."""
        return self.record.final("ess")

    def summary(self) -> str:
        """One line: method, steps, final loss and ESS, evaluations, wall time."""
        ess = self.final_ess
        return (
            f"{self.method}: {len(self.history.step)} steps, "
            f"loss {self.history.final_train_loss:.4g}, "
            f"ESS {'n/a' if ess is None else f'{100 * ess:.3g}%'}, "
            f"{self.energy_evaluations} energy evaluations, {self.wall_time:.1f} s"
        )


def _frames(data: ConfigurationsLike | MDReference, n_atoms: int, who: str) -> Tensor:
    """MD frames (array, tensor, mdtraj, an MDReference's training frames) as float32 (n, 3N)."""
    if hasattr(data, "frames_train"):
        data = data.frames_train
    if isinstance(data, np.ndarray) and data.dtype == np.float32:
        return torch.as_tensor(data).reshape(data.shape[0], 3 * n_atoms)
    if isinstance(data, Tensor):
        return data.detach().reshape(-1, 3 * n_atoms).to(torch.get_default_dtype())
    return _configurations(data, n_atoms, who).to(torch.get_default_dtype())


def objective_for(
    method: str,
    target: Target | None = None,
    data: Tensor | None = None,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    forward_weight: float = 0.5,
    start_temperature: float = 1200.0,
    temperature: float = 300.0,
    anneal_steps: int | None = None,
    monitor_every: int = 10,
    fab_levels: int = 8,
    fab_leapfrog_steps: int = 4,
    fab_step_size: float = 0.05,
    buffer_size: int | None = None,
    updates_per_ais: int = 8,
    generator: torch.Generator | None = None,
) -> Objective:
    """The objective of a training method (see the module docstring), for ``fit``.

    Arguments:
        method: one of :data:`METHODS`.
        target: the (counted) :class:`MolecularTarget`; for ``"ml"`` optional (then the ESS is
            measured every ``monitor_every`` steps on ``batch_size`` samples).
        data: MD frames ``(n, 3N)`` for ``"ml"`` and ``"mixed"``.
        steps: the run's length (for the annealing schedule's default).
        batch_size: samples (and data rows) per step; FAB: AIS particles per run and buffer
            samples per step.
        forward_weight: weight of the forward term of ``"mixed"``.
        start_temperature: kelvin at the start of ``"annealed"``.
        temperature: the system's temperature (kelvin), where annealing ends.
        anneal_steps: length of the annealing (default: half the run).
        monitor_every: ESS period of ``"ml"``.
        fab_levels: AIS levels of ``"fab"``.
        fab_leapfrog_steps: leapfrog steps per HMC move.
        fab_step_size: initial HMC step size (latent units; adapted towards 65 % acceptance).
        buffer_size: replay-buffer capacity (default ``64 * batch_size``; ``0``: no buffer).
        updates_per_ais: gradient steps per AIS run.
        generator: random generator.

    Returns:
        An objective ``(model, step) -> loss`` with ``diagnostics``.
    """
    who = "objective_for"
    if method not in METHODS:
        raise InvalidInput(f"{who}: expected a method in {METHODS}, got {method!r}")
    if method in ("ml", "mixed") and data is None:
        raise InvalidInput(f"{who}: method {method!r} needs MD frames (data)")
    if method != "ml" and target is None:
        raise InvalidInput(f"{who}: method {method!r} needs an energy (target)")
    if method == "ml":
        return KLObjective(
            target,
            data,
            forward_weight=1.0,
            batch_size=batch_size,
            monitor_every=monitor_every if target is not None else None,
            generator=generator,
        )
    if method == "reverse_kl":
        return KLObjective(target, batch_size=batch_size, generator=generator)
    if method == "mixed":
        return KLObjective(
            target,
            data,
            forward_weight=forward_weight,
            batch_size=batch_size,
            generator=generator,
        )
    if method == "annealed":
        ratio = float(start_temperature) / float(temperature)
        length = max(1, steps // 2) if anneal_steps is None else anneal_steps
        return KLObjective(
            target,
            batch_size=batch_size,
            temperature=geometric_annealing(ratio, 1.0, length),
            generator=generator,
        )
    size = 64 * batch_size if buffer_size is None else int(buffer_size)
    buffer = None
    if size > 0:
        buffer = PrioritisedReplayBuffer(size, min(size, 4 * batch_size), generator=generator)
    return FAB(
        target,
        batch_size,
        n_levels=fab_levels,
        leapfrog_steps=fab_leapfrog_steps,
        step_size=fab_step_size,
        buffer=buffer,
        updates_per_ais=updates_per_ais,
        generator=generator,
    )


def train_generator(
    generator: MolecularFlow,
    method: str,
    *,
    energy: Energy | None = None,
    data: ConfigurationsLike | MDReference | None = None,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float | None = None,
    filter_chirality: bool = True,
    high: float = 1e3,
    max: float = 1e5,
    clip_grad_norm: float | None = 10.0,
    checkpoint: str | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    rng: torch.Generator | None = None,
    **options: Any,
) -> GeneratorTraining:
    r"""Train a Boltzmann generator by one method; return its history and budget.

    Builds the :class:`MolecularTarget` of ``energy`` (regularised, L form), counts its
    evaluations (:class:`~manifoldflows.training.CountedTarget`), takes the method's objective
    (:func:`objective_for`) under a :class:`~manifoldflows.training.Monitor` (progress bar:
    loss, ESS, energy evaluations) and runs :func:`~manifoldflows.training.fit` (Adam at
    ``lr``, default per method: ML 1e-3, reverse KL and annealing 1e-4, mixed and FAB 3e-4).
    With ``checkpoint`` the run writes (and with ``resume=True`` continues) a checkpoint that
    includes the monitor's record, the replay buffer and the generator's identity, and that
    :func:`~physics.generator.load_generator` reads.

    Arguments:
        generator: the :class:`~physics.generator.MolecularFlow` (trained in place; left in
            eval mode).
        method: one of :data:`METHODS`.
        energy: the force field (:class:`~physics.openmm.TorchForceField` or
            :class:`~physics.openmm.OpenMMEnergy`); needed except for ``"ml"``.
        data: MD frames (``(n, 3N)`` or ``(n, N, 3)`` nm, mdtraj, or an
            :class:`~physics.systems.reference.MDReference`) for ``"ml"`` and ``"mixed"``.
        steps: optimizer steps.
        batch_size: see :func:`objective_for`.
        lr: Adam's learning rate (default per method).
        filter_chirality: restrict the target to the L form (see :class:`MolecularTarget`).
        high, max: the lin-log cut of the energies (reduced units).
        clip_grad_norm: gradient clipping.
        checkpoint, checkpoint_every, resume: see :func:`~manifoldflows.training.fit`.
        progress: show the progress bar.
        rng: random generator (default: seeded from torch's global generator).
        **options: method options of :func:`objective_for` (``forward_weight``,
            ``start_temperature``, ``anneal_steps``, ``fab_levels``, ``buffer_size``, ...).

    Returns:
        A :class:`GeneratorTraining`.

    References:
        Noe et al., arXiv:1812.01729; Midgley et al., arXiv:2208.01893.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> from physics.openmm import TorchForceField
        >>> from physics.generator import BoltzmannGenerator
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> bg = BoltzmannGenerator(ala2, layers=2, hidden=(16,))
        >>> run = train_generator(bg, "reverse_kl", energy=TorchForceField.from_openmm(ala2),
        ...                       steps=3, batch_size=32, progress=False)
        >>> run.energy_evaluations, len(run.record.diagnostics["ess"])
        (96, 3)
    """
    who = "train_generator"
    if not isinstance(generator, MolecularFlow):
        raise InvalidInput(f"{who}: expected a MolecularFlow, got {type(generator).__name__}")
    if method not in METHODS:
        raise InvalidInput(f"{who}: expected a method in {METHODS}, got {method!r}")
    target = None
    if energy is not None:
        target = MolecularTarget(
            energy, generator, high=high, max=max, filter_chirality=filter_chirality
        )
    counted = None if target is None else CountedTarget(target)
    frames = None if data is None else _frames(data, generator.n_atoms, who)
    if rng is None:
        rng = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    options.setdefault(
        "temperature", target.temperature if target else generator.molecule["temperature"]
    )
    objective = objective_for(
        method, counted, frames, steps=steps, batch_size=batch_size, generator=rng, **options
    )
    monitor = Monitor(objective, counted, steps=steps, progress=progress, desc=method)
    try:
        history = fit(
            generator,
            objective=monitor,
            steps=steps,
            lr=LEARNING_RATES[method] if lr is None else lr,
            clip_grad_norm=clip_grad_norm,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume=resume,
            progress=False,
            generator=rng,
        )
    finally:
        monitor.close()
    record = monitor.record
    return GeneratorTraining(
        method=method,
        history=history,
        record=record,
        energy_evaluations=record.energy_evaluations[-1] if record.step else 0,
        wall_time=history.wall_time,
        target=target,
    )


def main(argv: list[str] | None = None) -> GeneratorTraining:
    """Command line: train an alanine-dipeptide generator by one method and report its ESS.

    ``python -m physics.training --method fab --steps 200`` builds
    :func:`~physics.generator.BoltzmannGenerator` from the shipped MD reference, trains it
    with :func:`train_generator` on the chosen backend, prints the run's summary and the ESS of
    ``--eval-samples`` fresh samples (w.r.t. the L-form target), and writes the generator to
    ``--output`` when given (:func:`~physics.generator.load_generator` reads it); ``--init``
    starts from a generator file (e.g. maximum likelihood, then reverse KL).

    Arguments:
        argv: the command-line arguments (default ``sys.argv[1:]``; ``--help`` lists them).

    Returns:
        The :class:`GeneratorTraining` of the run.
    """
    import argparse

    from manifoldflows.estimators import effective_sample_size
    from manifoldflows.training import robust_reverse_kl

    from .generator import BoltzmannGenerator, save_generator
    from .openmm import OpenMMEnergy, TorchForceField
    from .systems import alanine_dipeptide
    from .systems.reference import load_reference

    parser = argparse.ArgumentParser(prog="python -m physics.training", description=main.__doc__)
    parser.add_argument("--method", choices=METHODS, default="fab")
    parser.add_argument("--backend", choices=("torch", "openmm"), default="torch")
    parser.add_argument("--forcefield", default="amber99sbildn")
    parser.add_argument("--solvent", default="implicit")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--init", default=None, help="start from this generator file")
    parser.add_argument("--eval-samples", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    system = alanine_dipeptide(args.solvent, args.forcefield)
    reference = load_reference(args.forcefield, args.solvent)
    if args.init:
        from .generator import load_generator

        generator = load_generator(args.init)
    else:
        generator = BoltzmannGenerator(
            system, reference=reference, layers=args.layers, hidden=args.hidden
        )
    energy = (
        TorchForceField.from_openmm(system) if args.backend == "torch" else OpenMMEnergy(system)
    )
    run = train_generator(
        generator,
        args.method,
        energy=energy,
        data=reference,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        rng=torch.Generator().manual_seed(args.seed),
    )
    print(run.summary())
    with torch.no_grad():
        _, log_w, dropped = robust_reverse_kl(generator, run.target, args.eval_samples)
    ess = float(effective_sample_size(log_w))
    print(
        f"ESS of {args.eval_samples} fresh samples: {100 * ess:.3g}% "
        f"({dropped} D-form or non-finite)"
    )
    if args.output:
        save_generator(generator, args.output, record=run.record.state_dict())
    return run


if __name__ == "__main__":  # pragma: no cover
    main()
