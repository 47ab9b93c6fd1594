r"""Boltzmann generators for molecules: :func:`BoltzmannGenerator`, :class:`MolecularFlow`, files.

A Boltzmann generator (Noe et al. 2019) is a normalizing flow whose samples are molecular
configurations. :func:`BoltzmannGenerator` builds one for a
:class:`~physics.systems.MolecularSystem` as

.. math::

    z \sim p_{\rm base} \ \xrightarrow{\ \text{coupling splines}\ }\
    \xrightarrow{\ \text{standardisation}\ }\ (b, \theta, \phi)
    \ \xrightarrow{\ \text{internal coordinates}\ }\ x \in \mathbb{R}^{3N}\ (\mathrm{nm}),

on the latent space ``Product(Euclidean(N-1), Euclidean(N-2), Torus(N-3))``:

* **coupling layers** over the product space (:func:`~manifoldflows.presets.build_flow` with
  ``"spline"``): rational-quadratic splines with identity tails on the standardised bonds and
  angles, circular splines on the torsions, conditioners reading ``(cos, sin)`` of angles;
* the **standardisation** of bonds and angles (:meth:`~physics.coordinates.
  InternalCoordinates.standardization`), measured on the ``reference`` MD frames (or one
  structure with documented scales);
* the **internal coordinates** (:class:`~physics.coordinates.InternalCoordinates`), so samples
  are Cartesian configurations ``(*, 3N)`` in the canonical frame and ``log_prob(x)`` is the
  density of :class:`~physics.coordinates.FixedFrameCartesian` (configurations modulo rigid
  motions; ``x`` may be in any frame).

**Base.** Bonds and angles get a standard normal. Torsions get, by default
(``torsion_base="von_mises"``), independent von Mises distributions centred on the reference
torsions, with concentrations from the reference frames (the mean resultant length ``R`` of
each torsion, ``kappa = A^{-1}(R)``), so the untrained flow already proposes configurations
close to the reference: with MD frames of alanine dipeptide its samples have a median energy
about 13 kT above the MD average and all have the right chirality, while a uniform base on
the torsions (``torsion_base="uniform"``, :func:`~manifoldflows.presets.default_base`) puts
hydrogens anywhere around their rotation axes (median energies ``> 10^4`` kT) and half the
samples in the D form. The base is fixed (buffers); the flow learns everything else.

**Identity and files.** A :class:`MolecularFlow` knows its molecule (name, atoms, bond-graph
fingerprint, formula, force field terms, temperature, Z-matrix, chiral centres) and the
builder's arguments, and stores them in its ``state_dict`` (``get_extra_state``). So every
checkpoint written by :func:`~manifoldflows.training.save_checkpoint` or
:func:`~manifoldflows.training.fit` is a complete generator file: :func:`load_generator`
rebuilds the flow from it alone, and loading it into a generator of another molecule raises
:class:`~manifoldflows.errors.InvalidInput` naming both molecules.

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: sampling equilibrium states of
    many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural spline flows", NeurIPS 2019,
    arXiv:1906.04032. D. J. Rezende et al., "Normalizing flows on tori and spheres", ICML 2020,
    arXiv:2002.02428 (circular splines).
    L. I. Midgley et al., "Flow annealed importance sampling bootstrap", ICLR 2023,
    arXiv:2208.01893 (the alanine-dipeptide generator, chirality filtering).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from manifoldflows.core import Chain, Flow
from manifoldflows.distributions import (
    Distribution,
    ProductDistribution,
    StandardNormal,
    VonMises,
)
from manifoldflows.errors import InvalidInput
from manifoldflows.presets import build_flow
from manifoldflows.training import save_checkpoint

from .coordinates import InternalCoordinates, InternalStandardization, is_l_form
from .coordinates.chirality import chiral_centers
from .coordinates.internal import ConfigurationsLike, _configurations
from .systems import MolecularSystem

__all__ = [
    "BoltzmannGenerator",
    "MolecularFlow",
    "molecule_identity",
    "load_generator",
    "save_generator",
    "torsion_statistics",
    "FORMAT",
]

#: Format tag stored with every generator's state.
FORMAT = "physics.generator/1"
#: Torsion bases :func:`BoltzmannGenerator` offers.
TORSION_BASES = ("von_mises", "uniform")


# ------------------------------------------------------------------------------- identity
def molecule_identity(system: MolecularSystem) -> dict[str, Any]:
    """What identifies a molecule in a generator file: atoms, bonds, force field, Z-matrix.

    ``fingerprint`` is a hash of the atom names (with residues), elements and bonds: two systems
    with the same fingerprint are the same molecule (force field and temperature may differ:
    ``force_field`` tells).

    Arguments:
        system: a :class:`~physics.systems.MolecularSystem`.

    Returns:
        A dict of plain Python values: ``name``, ``n_atoms``, ``formula``, ``atoms`` (``"ALA2:CA"``
        ...), ``fingerprint``, ``forces`` (OpenMM force classes), ``force_field`` (a hash of
        the serialised OpenMM ``System``, parameters included), ``temperature`` (K),
        ``zmatrix`` (rows of :class:`~physics.coordinates.ZMatrix`), ``chiral_centers``.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> identity = molecule_identity(alanine_dipeptide("vacuum"))
        >>> identity["formula"], identity["n_atoms"], identity["atoms"][8]
        ('C6H12N2O2', 22, 'ALA2:CA')
    """
    top = system.mdtraj_topology
    atoms = [f"{a.residue.name}{a.residue.resSeq}:{a.name}" for a in top.atoms]
    elements = [a.element.symbol if a.element is not None else "?" for a in top.atoms]
    bonds = sorted(tuple(sorted((a.index, b.index))) for a, b in top.bonds)
    digest = hashlib.sha256(json.dumps([atoms, elements, bonds]).encode()).hexdigest()[:16]
    counts = Counter(elements)
    order = [e for e in ("C", "H") if e in counts] + sorted(e for e in counts if e not in "CH")
    formula = "".join(f"{e}{counts[e] if counts[e] > 1 else ''}" for e in order)
    ic = InternalCoordinates(system)
    return {
        "name": system.name,
        "n_atoms": system.n_atoms,
        "formula": formula,
        "atoms": atoms,
        "fingerprint": digest,
        "forces": list(system.force_names),
        "force_field": hashlib.sha256(system.serialize().encode()).hexdigest()[:16],
        "temperature": float(system.temperature),
        "zmatrix": [list(row) for row in ic.zmatrix.rows],
        "chiral_centers": [list(c) for c in chiral_centers(system)],
    }


def _label(molecule: dict[str, Any]) -> str:
    return (
        f"{molecule.get('name', '?')} ({molecule.get('formula', '?')}, "
        f"{molecule.get('n_atoms', '?')} atoms, fingerprint {molecule.get('fingerprint', '?')})"
    )


# ------------------------------------------------------------------------------- the flow
class MolecularFlow(Flow):
    r"""A Boltzmann generator: a :class:`~manifoldflows.core.Flow` on a molecule's configurations.

    Built by :func:`BoltzmannGenerator` (or :func:`load_generator`); the transform is
    ``Chain(*coupling_layers, standardization, internal)``, so ``sample`` returns Cartesian
    configurations ``(*, 3N)`` in nm (canonical frame) and ``log_prob(x)`` takes them in any
    frame. Its ``state_dict`` holds :meth:`describe` (``get_extra_state``); loading a state of
    another molecule raises :class:`~manifoldflows.errors.InvalidInput` naming both.

    Arguments:
        base: the base distribution on the standardised internal coordinates.
        transform: the chain ending with the standardisation and the internal coordinates.
        molecule: :func:`molecule_identity` of the system.
        builder: the keyword arguments that rebuild the architecture (see
            :func:`BoltzmannGenerator`).

    Attributes:
        molecule, builder: as given.
        system_name, n_atoms: from ``molecule``.
        internal: the :class:`~physics.coordinates.InternalCoordinates` layer.
        standardization: the :class:`~physics.coordinates.InternalStandardization` layer.
        chiral_centers: ``(CA, N, C, CB)`` rows of the molecule's alpha carbons.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> bg = BoltzmannGenerator(alanine_dipeptide("vacuum"), layers=2, hidden=(16,))
        >>> x, log_q = bg.sample_and_log_prob((3,))
        >>> x.shape, bg.system_name, bool(bg.is_l_form(x).all())
        (torch.Size([3, 66]), 'alanine_dipeptide_amber99sbildn_vacuum', True)
    """

    def __init__(
        self,
        base: Distribution,
        transform: Chain,
        *,
        molecule: dict[str, Any],
        builder: dict[str, Any],
    ):
        super().__init__(base, transform)
        who = type(self).__name__
        if not isinstance(transform, Chain) or len(transform) < 2:
            raise InvalidInput(f"{who}: expected a Chain ending with standardisation and ic")
        if not isinstance(transform[-1], InternalCoordinates) or not isinstance(
            transform[-2], InternalStandardization
        ):
            raise InvalidInput(
                f"{who}: expected the chain to end with an InternalStandardization and an "
                f"InternalCoordinates layer, got {transform[-2].name} and {transform[-1].name}"
            )
        self.molecule = dict(molecule)
        self.builder = dict(builder)

    @property
    def system_name(self) -> str:
        return str(self.molecule["name"])

    @property
    def n_atoms(self) -> int:
        return int(self.molecule["n_atoms"])

    @property
    def internal(self) -> InternalCoordinates:
        return self.transform[-1]

    @property
    def standardization(self) -> InternalStandardization:
        return self.transform[-2]

    @property
    def chiral_centers(self) -> tuple[tuple[int, int, int, int], ...]:
        return tuple(tuple(int(a) for a in c) for c in self.molecule["chiral_centers"])

    def is_l_form(self, x: Tensor) -> Tensor:
        """Whether each configuration ``(*batch, 3N)`` has every alpha carbon in the L form
        (all ``True`` for a molecule without chiral centres)."""
        if not self.chiral_centers:
            return torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        return is_l_form(x, self.chiral_centers)

    def describe(self) -> dict[str, Any]:
        """The generator's metadata: ``format``, ``molecule`` and ``builder`` (plain values)."""
        return {"format": FORMAT, "molecule": dict(self.molecule), "builder": dict(self.builder)}

    def extra_repr(self) -> str:
        return f"molecule={self.system_name!r}, builder={self.builder}"

    def get_extra_state(self) -> dict[str, Any]:
        return self.describe()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Refuse the state of another molecule (called by ``load_state_dict``)."""
        who = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InvalidInput(f"{who}: expected a Boltzmann-generator state ({FORMAT})")
        theirs = state["molecule"]
        if theirs.get("fingerprint") != self.molecule["fingerprint"]:
            raise InvalidInput(
                f"{who}: the state is of the molecule {_label(theirs)}, but this generator is "
                f"for {_label(self.molecule)}; a generator's weights load only into a "
                "generator of the same molecule"
            )
        if theirs.get("zmatrix") != self.molecule["zmatrix"]:
            raise InvalidInput(
                f"{who}: the state of {_label(theirs)} uses another Z-matrix (other internal "
                "coordinates) than this generator"
            )


# ------------------------------------------------------------------------------- builder
def _kappa_from_resultant(r: Tensor) -> Tensor:
    """Maximum-likelihood von Mises concentration from the mean resultant length (Best and
    Fisher's piecewise approximation of ``A^{-1}(R)``, Mardia and Jupp eq. 5.3.7)."""
    r = r.clamp(0.0, 1.0 - 1e-9)
    small = 2 * r + r**3 + 5 * r**5 / 6
    middle = -0.4 + 1.39 * r + 0.43 / (1 - r)
    large = 1 / (r**3 - 4 * r**2 + 3 * r)
    return torch.where(r < 0.53, small, torch.where(r < 0.85, middle, large))


def torsion_statistics(torsions: Tensor) -> tuple[Tensor, Tensor]:
    r"""Circular mean and von Mises concentration of each torsion over frames.

    .. math:: \bar C + i \bar S = \frac1n\sum_j e^{i\phi_j}, \quad
              \mu = \operatorname{atan2}(\bar S, \bar C), \quad
              R = |\bar C + i \bar S|, \quad \kappa = A^{-1}(R),

    with ``A(kappa) = I_1(kappa) / I_0(kappa)`` inverted by Best and Fisher's approximation.

    Arguments:
        torsions: ``(n, m)`` angles (radians).

    Returns:
        ``(mu, kappa)``, each ``(m,)``.

    References:
        K. V. Mardia, P. E. Jupp, "Directional statistics", Wiley (2000), section 5.3.

    Example:
        >>> mu, kappa = torsion_statistics(torch.tensor([[0.1, 3.0], [-0.1, -3.0]]))
        >>> [round(v, 3) for v in mu.tolist()], bool(kappa[0] > 50), bool(kappa[1] > 5)
        ([0.0, 3.142], True, True)
    """
    c, s = torsions.cos().mean(0), torsions.sin().mean(0)
    return torch.atan2(s, c), _kappa_from_resultant(torch.sqrt(c * c + s * s))


def _reference_frames(reference: object, system: MolecularSystem, who: str) -> Tensor:
    """Reference configurations as a float64 ``(n, 3N)`` tensor (default: the minimised
    structure)."""
    if reference is None:
        reference = system.minimized_positions()
    elif hasattr(reference, "frames_train"):  # an MDReference
        reference = reference.frames_train
    return _configurations(reference, system.n_atoms, who)


def _assemble(
    molecule: dict[str, Any],
    builder: dict[str, Any],
    standardization: InternalStandardization | None = None,
    torsion_loc: Tensor | None = None,
    torsion_kappa: Tensor | None = None,
) -> MolecularFlow:
    """The generator of ``molecule`` with the architecture ``builder`` (placeholders for the
    standardisation and the torsion base when they are about to be loaded from a state)."""
    n = int(molecule["n_atoms"])
    ic = InternalCoordinates(zmatrix=molecule["zmatrix"])
    if standardization is None:
        standardization = InternalStandardization(
            torch.ones(n - 1), torch.ones(n - 1), torch.ones(n - 2), torch.ones(n - 2), n - 3
        )
    space = standardization.domain
    base = None
    if builder["torsion_base"] == "von_mises":
        loc = torch.zeros(n - 3) if torsion_loc is None else torsion_loc
        kappa = torch.ones(n - 3) if torsion_kappa is None else torsion_kappa
        base = ProductDistribution(
            [
                StandardNormal(n - 1),
                StandardNormal(n - 2),
                VonMises(space.spaces[2], loc.float(), kappa.float(), learnable=False),
            ]
        )
    with torch.random.fork_rng(devices=[]):
        if builder.get("seed") is not None:
            torch.manual_seed(int(builder["seed"]))
        flow = build_flow(
            space,
            "spline",
            layers=int(builder["layers"]),
            hidden=tuple(builder["hidden"]),
            bins=int(builder["bins"]),
            base=base,
            who="BoltzmannGenerator",
        )
    chain = Chain(*flow.transform, standardization, ic)
    return MolecularFlow(flow.base, chain, molecule=molecule, builder=builder)


def BoltzmannGenerator(  # noqa: N802 - a constructor-like preset, as manifoldflows.presets
    system: MolecularSystem,
    *,
    reference: ConfigurationsLike | object | None = None,
    layers: int = 8,
    hidden: Sequence[int] = (128, 128),
    bins: int = 8,
    torsion_base: str = "von_mises",
    bond_scale: float | None = None,
    angle_scale: float | None = None,
    torsion_scale: float = 0.2,
    max_concentration: float = 400.0,
    seed: int | None = 0,
) -> MolecularFlow:
    r"""A Boltzmann generator for ``system``: coupling splines, standardisation, internal coords.

    See the module docstring for the architecture. The defaults are sized for alanine
    dipeptide on a few CPU cores: 8 coupling layers (every pair of the 60 internal coordinates
    interacts within four layers, each coordinate is transformed four times), conditioners
    with two hidden layers of 128 units and 8 spline bins (0.9 M parameters). Measured with one
    thread on a shared 2-core machine at batch 256: a maximum-likelihood or reverse-KL step
    takes about 0.15 s (the force field's energies and forces 0.02 s of it: the flow
    dominates), a mixed step 0.3 s, a FAB AIS run 5-7 s (41 flow and energy gradients per
    particle, the energies 1 s of it) and a FAB buffer step 0.2 s; at batch 1024 a reverse-KL
    step takes 0.4 s. 12 layers and ``(256, 256)`` (3.1 M parameters) fit better but cost
    about three times as much.

    ``reference`` fixes the standardisation and the torsion base:

    * MD frames (``(n, 3N)``, ``(n, N, 3)`` in nm, an mdtraj trajectory, or an
      :class:`~physics.systems.reference.MDReference`, whose ``frames_train`` are used):
      bond and angle centres and scales are the frames' means and standard deviations (unless
      ``bond_scale`` / ``angle_scale`` are given), torsion centres and concentrations their
      circular means and :func:`torsion_statistics`;
    * one structure, or ``None`` (the default: ``system.minimized_positions()``): its bonds,
      angles and torsions are the centres, with scales ``bond_scale = 0.005`` nm,
      ``angle_scale = 0.05`` rad (about twice the thermal fluctuations at 300 K) and torsion
      concentrations ``1 / torsion_scale^2`` (``torsion_scale = 0.2`` rad: the first samples
      of alanine dipeptide in vacuum lie a median 80 kT above the minimum, all in the L form;
      0.5 rad gives 300 kT and 4 % D forms, 0.1 rad 50 kT but a backbone held near its
      starting basin).

    Concentrations are capped at ``max_concentration`` (a torsion standard deviation of
    0.05 rad); ``torsion_base="uniform"`` uses a uniform base on the torsions instead.

    Arguments:
        system: the :class:`~physics.systems.MolecularSystem`.
        reference: MD frames, one structure, or ``None`` (see above).
        layers: coupling layers.
        hidden: hidden sizes of the conditioners.
        bins: spline bins.
        torsion_base: ``"von_mises"`` or ``"uniform"``.
        bond_scale, angle_scale: standardisation scales (nm, rad); default from the frames, or
            0.005 and 0.05 for one structure.
        torsion_scale: torsion spread (rad) of the von Mises base for one structure.
        max_concentration: largest von Mises concentration.
        seed: seed of the initial weights (``None``: torch's global generator; the global
            state is left untouched either way).

    Returns:
        A :class:`MolecularFlow` (float32; ``.double()`` for float64).

    References:
        F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
        arXiv:1812.01729. C. Durkan et al., "Neural spline flows", arXiv:1906.04032.
        D. J. Rezende et al., "Normalizing flows on tori and spheres", arXiv:2002.02428.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> from physics.openmm import TorchForceField
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> bg = BoltzmannGenerator(ala2, layers=2, hidden=(32,))
        >>> x = bg.sample((4,), generator=torch.Generator().manual_seed(0))
        >>> energies = TorchForceField.from_openmm(ala2).energy(x)  # reduced, kT units
        >>> x.shape, bool(torch.isfinite(bg.log_prob(x)).all()), bool((energies < 1e3).all())
        (torch.Size([4, 66]), True, True)
    """
    who = "BoltzmannGenerator"
    if not isinstance(system, MolecularSystem):
        raise InvalidInput(f"{who}: expected a MolecularSystem, got {type(system).__name__}")
    if torsion_base not in TORSION_BASES:
        raise InvalidInput(f"{who}: expected torsion_base in {TORSION_BASES}, got {torsion_base!r}")
    for name, value in (("torsion_scale", torsion_scale), ("max_concentration", max_concentration)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InvalidInput(f"{who}: expected a positive {name}, got {value!r}")
    frames = _reference_frames(reference, system, who)
    ic = InternalCoordinates(system)
    single = frames.shape[0] < 2
    std = ic.standardization(
        frames,
        bond_scale=0.005 if single and bond_scale is None else bond_scale,
        angle_scale=0.05 if single and angle_scale is None else angle_scale,
    )
    with torch.no_grad():
        torsions = ic.split(ic.inverse(frames)[0])[2]
    if single:
        loc = torsions[0]
        kappa = torch.full_like(loc, 1.0 / torsion_scale**2)
    else:
        loc, kappa = torsion_statistics(torsions)
    kappa = kappa.clamp(1e-3, max_concentration)
    builder = {
        "layers": int(layers),
        "hidden": [int(h) for h in hidden],
        "bins": int(bins),
        "torsion_base": torsion_base,
        "seed": None if seed is None else int(seed),
    }
    return _assemble(molecule_identity(system), builder, std, loc, kappa)


# ------------------------------------------------------------------------------- files
PathLike = str | os.PathLike


def save_generator(generator: MolecularFlow, path: PathLike, **extra: Any) -> Path:
    """Write a generator file (a :func:`~manifoldflows.training.save_checkpoint`), atomically.

    The file holds the weights, the standardisation and base buffers, the molecule's identity
    and the builder's arguments: :func:`load_generator` needs nothing else.

    Arguments:
        generator: the :class:`MolecularFlow`.
        path: destination file.
        **extra: further entries (see :func:`~manifoldflows.training.save_checkpoint`).

    Returns:
        The path written.
    """
    if not isinstance(generator, MolecularFlow):
        raise InvalidInput(
            f"save_generator: expected a MolecularFlow, got {type(generator).__name__}"
        )
    return save_checkpoint(path, generator, **extra)


def load_generator(path: PathLike, into: MolecularFlow | None = None) -> MolecularFlow:
    """Rebuild a Boltzmann generator from a checkpoint alone, or load one into ``into``.

    Reads any file written by :func:`save_generator`, :func:`~manifoldflows.training.
    save_checkpoint` or :func:`~manifoldflows.training.fit` for a :class:`MolecularFlow`
    (``torch.load(weights_only=True)``: no code is unpickled). Tensors are read onto the CPU;
    move the flow with ``.to(device)``.

    Arguments:
        path: the file.
        into: an existing generator to load the weights into (it must be of the same molecule).

    Returns:
        The generator, in eval mode.

    Raises:
        InvalidInput: the file holds no generator, or (with ``into``) one of another molecule
            (the message names both).

    Example:
        >>> import tempfile, os
        >>> from physics.systems import alanine_dipeptide
        >>> bg = BoltzmannGenerator(alanine_dipeptide("vacuum"), layers=2, hidden=(16,))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     again = load_generator(save_generator(bg, os.path.join(d, "bg.pt")))
        >>> g = lambda: torch.Generator().manual_seed(1)
        >>> torch.equal(bg.sample((2,), generator=g()), again.sample((2,), generator=g()))
        True
    """
    who = "load_generator"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{who}: expected a generator file, {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = state.get("model", state) if isinstance(state, dict) else None
    meta = weights.get("_extra_state") if isinstance(weights, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InvalidInput(
            f"{who}: {path} holds no Boltzmann generator (no {FORMAT} metadata in its model "
            "state); was it written for a MolecularFlow?"
        )
    generator = _assemble(meta["molecule"], meta["builder"]) if into is None else into
    generator.load_state_dict(weights)
    return generator.eval()
