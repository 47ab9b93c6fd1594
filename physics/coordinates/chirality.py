r"""Chirality of alpha carbons: detect, count and filter mirror-image (D) configurations.

Internal coordinates do not know which side of the backbone a side chain sits on: a flow can
put CB of an amino acid on either side and so generate the D-enantiomer, which has the same
energy as the natural L form (the force field is reflection invariant) but is a different
molecule. Chirality is read from the signed volume of the three heavy substituents about the
alpha carbon,

.. math:: V = (x_N - x_{CA}) \cdot \big((x_C - x_{CA}) \times (x_{CB} - x_{CA})\big),

positive for L-amino acids and negative for D (mirroring a configuration, ``x -> -x``, flips
its sign; rotations and translations keep it). With the automatic Z-matrix of
:class:`~physics.coordinates.InternalCoordinates` CB is placed by the improper torsion
``dihedral(CB, CA, N, C)``, whose sign is ``-sign(V)`` (negative for L): for alanine dipeptide
``ic.torsion_index((10, 8, 6, 14))``.

**Approach: filtering.** As in the published alanine-dipeptide benchmarks (Midgley et al.,
FAB), D-form configurations are not excluded by construction (which would replace that
torsion's circle by a half-circle and change the measure) but detected and filtered:
:func:`is_l_form` gives a boolean per configuration, :func:`l_form_fraction` the fraction of a
batch, and :func:`filter_l_form` drops the D configurations from samples and any tensors that
go with them (log weights, energies) for training or evaluation.

Only alpha carbons are covered (CA with N, C and CB, i.e. every amino acid but glycine); the
second chiral centres of isoleucine and threonine are not.

References:
    L. I. Midgley, V. Stimper, G. N. C. Simm, B. Schoelkopf, J. M. Hernandez-Lobato, "Flow
    annealed importance sampling bootstrap", ICLR 2023, arXiv:2208.01893 (filtering the
    wrong chirality of alanine dipeptide).
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
    arXiv:1812.01729.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from manifoldflows.errors import InvalidInput

from .internal import ConfigurationsLike
from .zmatrix import TopologyLike, as_mdtraj_topology

__all__ = [
    "chiral_centers",
    "signed_volumes",
    "is_l_form",
    "l_form_fraction",
    "filter_l_form",
]

Centers = tuple[tuple[int, int, int, int], ...]
#: Chiral centres: a topology (see :func:`chiral_centers`) or explicit ``(CA, N, C, CB)`` rows.
CentersLike = TopologyLike | Sequence[Sequence[int]]


def chiral_centers(topology: TopologyLike) -> Centers:
    """The alpha-carbon chiral centres ``(CA, N, C, CB)`` of every residue that has all four
    atoms (by name), in residue order.

    Arguments:
        topology: an ``mdtraj.Topology``, ``openmm.app.Topology`` or
            :class:`~physics.systems.MolecularSystem`.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> chiral_centers(alanine_dipeptide("vacuum"))
        ((8, 6, 14, 10),)
    """
    top = as_mdtraj_topology(topology, "chiral_centers")
    centers = []
    for residue in top.residues:
        names = {atom.name: atom.index for atom in residue.atoms}
        if all(name in names for name in ("CA", "N", "C", "CB")):
            centers.append((names["CA"], names["N"], names["C"], names["CB"]))
    return tuple(centers)


def _resolve(centers: CentersLike, who: str) -> Centers:
    if isinstance(centers, Sequence) and all(
        isinstance(c, Sequence) and len(c) == 4 for c in centers
    ):
        resolved = tuple(tuple(int(a) for a in c) for c in centers)
    else:
        resolved = chiral_centers(centers)
    if not resolved:
        raise InvalidInput(f"{who}: expected at least one chiral centre (CA, N, C, CB), got none")
    return resolved  # type: ignore[return-value]


def _positions(x: ConfigurationsLike, n_atoms: int, who: str) -> Tensor:
    x = torch.as_tensor(x.xyz if hasattr(x, "xyz") else x)
    if x.dim() >= 2 and x.shape[-1] == 3 and x.shape[-2] == n_atoms:
        return x
    if x.dim() >= 1 and x.shape[-1] % 3 == 0 and x.shape[-1] // 3 >= n_atoms:
        return x.reshape(*x.shape[:-1], x.shape[-1] // 3, 3)
    raise InvalidInput(
        f"{who}: expected configurations (*batch, 3N) or positions (*batch, N, 3) with at "
        f"least {n_atoms} atoms, got shape {tuple(x.shape)}"
    )


def signed_volumes(x: ConfigurationsLike, centers: CentersLike) -> Tensor:
    r"""Signed volumes ``V = (N - CA) . ((C - CA) x (CB - CA))`` of the chiral centres.

    Arguments:
        x: configurations ``(*batch, 3N)`` (nm, atom-major) or positions ``(*batch, N, 3)``
            (tensor, array or mdtraj trajectory), in any frame.
        centers: a topology (see :func:`chiral_centers`) or explicit ``(CA, N, C, CB)``
            4-tuples.

    Returns:
        ``(*batch, n_centers)`` in nm^3: positive for L, negative for D.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> v = signed_volumes(ala2.configuration(), ala2)
        >>> bool(v > 0), bool(signed_volumes(-ala2.configuration(), ala2) < 0)
        (True, True)
    """
    resolved = _resolve(centers, "signed_volumes")
    index = torch.tensor(resolved, dtype=torch.long)
    pos = _positions(x, int(index.max()) + 1, "signed_volumes")
    ca, n, c, cb = (pos[..., index[:, m].to(pos.device), :] for m in range(4))
    return ((n - ca) * torch.linalg.cross(c - ca, cb - ca)).sum(-1)


def is_l_form(x: ConfigurationsLike, centers: CentersLike) -> Tensor:
    """Whether every alpha carbon of each configuration is in the L form (boolean, batch shape).

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> x = torch.stack([ala2.configuration(), -ala2.configuration()])
        >>> is_l_form(x, ala2).tolist()
        [True, False]
    """
    return (signed_volumes(x, centers) > 0).all(-1)


def l_form_fraction(x: ConfigurationsLike, centers: CentersLike) -> float:
    """Fraction of the configurations ``(*batch, 3N)`` that are all-L (1.0 for an empty batch).

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> l_form_fraction(torch.stack([ala2.configuration(), -ala2.configuration()]), ala2)
        0.5
    """
    mask = is_l_form(x, centers)
    return float(mask.float().mean()) if mask.numel() else 1.0


def filter_l_form(x: Tensor, centers: CentersLike, *others: Tensor) -> tuple[Tensor, ...]:
    """Keep only the all-L configurations of a batch, and the matching entries of ``others``.

    Arguments:
        x: configurations ``(batch, 3N)`` (one batch dimension).
        centers: a topology or ``(CA, N, C, CB)`` 4-tuples (see :func:`signed_volumes`).
        *others: tensors whose first dimension is the batch (log weights, energies, ...).

    Returns:
        ``(x[mask], *[t[mask] for t in others])``.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> x = torch.stack([ala2.configuration(), -ala2.configuration()])
        >>> kept, log_w = filter_l_form(x, ala2, torch.tensor([0.5, 1.5]))
        >>> kept.shape, log_w.tolist()
        (torch.Size([1, 66]), [0.5])
    """
    if x.dim() != 2:
        raise InvalidInput(
            f"filter_l_form: expected configurations of shape (batch, 3N), got {tuple(x.shape)}"
        )
    mask = is_l_form(x, centers).to(x.device)
    for t in others:
        if t.shape[:1] != x.shape[:1]:
            raise InvalidInput(
                f"filter_l_form: expected tensors with the batch size {x.shape[0]} of x first, "
                f"got shape {tuple(t.shape)}"
            )
    return (x[mask], *(t[mask.to(t.device)] for t in others))
