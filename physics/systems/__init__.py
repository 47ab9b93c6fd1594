"""Molecular systems: :class:`MolecularSystem` (OpenMM ``System`` + topology + reference
positions + temperature) and ready-made systems (alanine dipeptide)."""

from .alanine import ALANINE_DIPEPTIDE_PDB, PHI_ATOMS, PSI_ATOMS, alanine_dipeptide
from .molecular import MolecularSystem

__all__ = [
    "MolecularSystem",
    "alanine_dipeptide",
    "ALANINE_DIPEPTIDE_PDB",
    "PHI_ATOMS",
    "PSI_ATOMS",
]
