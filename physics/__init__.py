"""physics: Boltzmann targets (energies), particle systems and energy regularisers."""

from .energy import Energy
from .particles import DW4, LJ13, LennardJones, PairDoubleWell, ParticleEnergy, remove_com
from .regularize import Clip, LinLogCut, RegularizedEnergy
from .toy import (
    DoubleWell,
    FABGaussianMixture,
    GaussianMixtureEnergy,
    ManyWell,
    MuellerBrown,
)

__all__ = [
    "Energy",
    "DoubleWell",
    "ManyWell",
    "GaussianMixtureEnergy",
    "FABGaussianMixture",
    "MuellerBrown",
    "ParticleEnergy",
    "PairDoubleWell",
    "LennardJones",
    "DW4",
    "LJ13",
    "remove_com",
    "RegularizedEnergy",
    "LinLogCut",
    "Clip",
]
