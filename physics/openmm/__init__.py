"""Molecular energies from OpenMM systems, batched.

* :class:`OpenMMEnergy`: OpenMM itself (any platform) over a batch, in this process, in a
  crash-safe pool of worker processes (shared memory, one chunk per worker) or on any
  ``concurrent.futures.Executor`` (e.g. a Dask cluster); forces come back with the energies
  and serve as the gradient (no second evaluation).
* :class:`TorchForceField`: the same Amber-type force fields (harmonic bonds and angles,
  periodic torsions, Lennard-Jones + Coulomb without cutoff, OBC implicit solvent) evaluated in
  vectorised PyTorch over the whole batch, on CPU or GPU.

Both are :class:`physics.energy.Energy` objects in reduced units ``u = U / kT`` over flat
Cartesian configurations in nm (``Euclidean(3N)``). See ``docs/molecular_energies.md``.
"""

from .bridge import BatchStats, OpenMMEnergy, OpenMMWorkerError, evaluate_chunk
from .platforms import available_platforms, choose_platform
from .torch_forcefield import TorchForceField

__all__ = [
    "OpenMMEnergy",
    "TorchForceField",
    "BatchStats",
    "OpenMMWorkerError",
    "evaluate_chunk",
    "available_platforms",
    "choose_platform",
]
