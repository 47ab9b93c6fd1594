"""physics: Boltzmann targets (energies), particle systems, molecular systems and their
energies (OpenMM bridge, torch force field), internal coordinates, energy regularisers and
importance-sampling estimates (log Z, free energies, flow-based MCMC)."""

from . import (
    coordinates,
    evaluation,
    generator,
    io,
    openmm,
    openmm_sampler,
    sampling,
    stratified,
    systems,
    toy_manifold,
    training,
)
from .energy import Energy, TemperatureConditioned
from .generator import BoltzmannGenerator, load_generator, save_generator
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
    "coordinates",
    "evaluation",
    "generator",
    "training",
    "BoltzmannGenerator",
    "load_generator",
    "save_generator",
    "io",
    "openmm",
    "openmm_sampler",
    "systems",
    "sampling",
    "stratified",
    "toy_manifold",
    "Energy",
    "TemperatureConditioned",
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
