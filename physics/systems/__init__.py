"""Molecular systems: :class:`MolecularSystem` (OpenMM ``System`` + topology + reference
positions + temperature) and ready-made systems (alanine dipeptide)."""

from .alanine import PHI_ATOMS, PSI_ATOMS, alanine_dipeptide, alanine_dipeptide_pdb
from .molecular import MolecularSystem

__all__ = [
    "MolecularSystem",
    "alanine_dipeptide",
    "alanine_dipeptide_pdb",
    "PHI_ATOMS",
    "PSI_ATOMS",
]
