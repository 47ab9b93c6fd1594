r"""Alanine dipeptide (ACE-ALA-NME, 22 atoms) in vacuum or OBC implicit solvent.

The structure ships with the package (``physics/systems/data/alanine-dipeptide.pdb``: standard
LEaP geometry, OpenMM atom names). :func:`alanine_dipeptide` parameterises it with force-field
files from the OpenMM wheel, with no cutoff (``NoCutoff``), flexible bonds (no constraints) and
300 K by default:

======================  ==========================================  =====================
``forcefield``          vacuum                                      implicit solvent
======================  ==========================================  =====================
``"amber99sbildn"``     ``amber99sbildn.xml``                       + ``amber99_obc.xml``
``"amber96"``           ``amber96.xml``                             + ``amber96_obc.xml``
======================  ==========================================  =====================

Backbone torsions (0-based atom indices, as mdtraj finds them): ``phi = (4, 6, 8, 14)``,
``psi = (6, 8, 14, 16)``; the alpha carbon is atom 8.

References:
    K. Lindorff-Larsen et al., "Improved side-chain torsion potentials for the Amber ff99SB
    protein force field", Proteins 78 (2010) (amber99sbildn).
    W. D. Cornell et al., J. Am. Chem. Soc. 117 (1995) (the Amber ff94/ff96 family).
    A. Onufriev, D. Bashford, D. A. Case, "Exploring protein native states and large-scale
    conformational changes with a modified generalized Born model", Proteins 55 (2004).
"""

from __future__ import annotations

from importlib import resources

from manifoldflows.errors import InvalidInput

from .molecular import MolecularSystem

__all__ = ["alanine_dipeptide", "alanine_dipeptide_pdb", "FORCE_FIELDS", "PHI_ATOMS", "PSI_ATOMS"]



def alanine_dipeptide_pdb() -> str:
    """Path of the ACE-ALA-NME structure shipped with the package.

    Example:
        >>> alanine_dipeptide_pdb().endswith("alanine-dipeptide.pdb")
        True
    """
    return str(resources.files("physics.systems") / "data" / "alanine-dipeptide.pdb")

#: Force-field files per (forcefield, solvent).
FORCE_FIELDS = {
    ("amber99sbildn", "vacuum"): ("amber99sbildn.xml",),
    ("amber99sbildn", "implicit"): ("amber99sbildn.xml", "amber99_obc.xml"),
    ("amber96", "vacuum"): ("amber96.xml",),
    ("amber96", "implicit"): ("amber96.xml", "amber96_obc.xml"),
}

#: Atoms of the backbone torsion phi (C-N-CA-C) and psi (N-CA-C-N), 0-based.
PHI_ATOMS = (4, 6, 8, 14)
PSI_ATOMS = (6, 8, 14, 16)


def alanine_dipeptide(
    solvent: str = "implicit",
    forcefield: str = "amber99sbildn",
    temperature: float = 300.0,
) -> MolecularSystem:
    r"""Alanine dipeptide as a :class:`MolecularSystem` (NoCutoff, flexible bonds).

    ``forcefield="amber99sbildn"`` (default) is this project's reference system: amber99sbildn
    with ``amber99_obc.xml`` (OpenMM's ``GBSAOBCForce``: the OBC2 model, alpha, beta, gamma =
    1, 0.8, 4.85, with the ACE surface-area term) for implicit solvent.

    ``forcefield="amber96"`` is the closest system to the ff96/OBC alanine dipeptide of the
    published Boltzmann-generator benchmarks (FAB, TA-BG, constrained mass transport), which
    use openmmtools' ``AlanineDipeptideImplicit(constraints=None)``: Amber ff96 from a LEaP
    prmtop with OpenMM's OBC1 generalized Born model (a ``CustomGBForce``, alpha, beta, gamma =
    0.8, 0, 2.909125). Here the bonded and Lennard-Jones/Coulomb terms come from
    ``amber96.xml`` (the same ff96 parameters) but the solvent is ``amber96_obc.xml``, i.e.
    ``GBSAOBCForce`` with the OBC2 parameters, so the solvation energy - and with it
    free energies and ESS figures - differ slightly from theirs: put our figures next to
    theirs as a comparison of like systems, not as identical targets. Their vacuum
    counterpart (SNF paper, ff96 at 1000 K) is ``solvent="vacuum", temperature=1000``.

    Arguments:
        solvent: ``"implicit"`` (OBC generalized Born) or ``"vacuum"``.
        forcefield: ``"amber99sbildn"`` or ``"amber96"``.
        temperature: kelvin.

    Returns:
        The :class:`MolecularSystem`, reference positions = the shipped PDB geometry.

    Example:
        >>> ala2 = alanine_dipeptide()
        >>> ala2.name, ala2.n_atoms, "GBSAOBCForce" in ala2.force_names
        ('alanine_dipeptide_amber99sbildn_implicit', 22, True)
        >>> alanine_dipeptide(solvent="water")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        manifoldflows.errors.InvalidInput: alanine_dipeptide: expected solvent 'implicit' or ...
    """
    if solvent not in ("implicit", "vacuum"):
        raise InvalidInput(
            f"alanine_dipeptide: expected solvent 'implicit' or 'vacuum', got {solvent!r}"
        )
    if (forcefield, solvent) not in FORCE_FIELDS:
        raise InvalidInput(
            "alanine_dipeptide: expected forcefield 'amber99sbildn' or 'amber96', "
            f"got {forcefield!r}"
        )
    return MolecularSystem.from_pdb(
        alanine_dipeptide_pdb(),
        FORCE_FIELDS[(forcefield, solvent)],
        temperature=temperature,
        nonbonded_method="NoCutoff",
        constraints=None,
        name=f"alanine_dipeptide_{forcefield}_{solvent}",
    )
