r"""Pure geometry kernels: bond lengths, bond angles, dihedrals and NeRF atom placement.

Positions are tensors ``(*batch, N, 3)``; atoms are picked with 1-D ``long`` index tensors
(one entry per bond, angle or dihedral), so every kernel handles all rows of a Z-matrix (or
one layer of it) in one vectorised call. Nothing here validates its input: the layers in
:mod:`physics.coordinates.internal` do.

Conventions (those of mdtraj, :func:`mdtraj.compute_angles` / :func:`mdtraj.compute_dihedrals`):

* the angle of ``(i, j, k)`` is the angle at ``j`` between ``i - j`` and ``k - j``, in
  ``[0, pi]``, computed as ``atan2(|u x v|, u . v)`` (accurate near 0 and ``pi``, where
  ``acos`` loses half the digits and has an infinite derivative);
* the dihedral of ``(i, j, k, l)`` with ``b1 = x_j - x_i``, ``b2 = x_k - x_j``,
  ``b3 = x_l - x_k`` is

  .. math:: \phi = \operatorname{atan2}\big(|b_2|\, b_1 \cdot (b_2 \times b_3),\;
            (b_1 \times b_2) \cdot (b_2 \times b_3)\big),

  the IUPAC sign convention, wrapped to ``[-pi, pi)`` (the range of
  :class:`manifoldflows.spaces.Torus`; mdtraj may return ``+pi`` where this returns ``-pi``).
  ``dihedral(i, j, k, l) == dihedral(l, k, j, i)``.

References:
    J. Parsons, J. B. Holmes, J. M. Rojas, J. Tsai, C. E. M. Strauss, "Practical conversion
    from torsion space to Cartesian space for in silico protein synthesis", J. Comput. Chem.
    26 (2005) 1063 (NeRF).
    R. T. McGibbon et al., "MDTraj: a modern open library for the analysis of molecular
    dynamics trajectories", Biophys. J. 109 (2015) (the angle and dihedral conventions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from manifoldflows.functional.circle import wrap

__all__ = [
    "bond_lengths",
    "bond_angles",
    "dihedrals",
    "sin_angles",
    "zmatrix_coordinates",
    "place_atoms",
    "unit",
]


def unit(v: Tensor) -> Tensor:
    """``v / |v|`` along the last dimension; a zero vector stays zero (no NaN).

    Example:
        >>> unit(torch.tensor([[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]])).tolist()
        [[0.6000000238418579, 0.0, 0.800000011920929], [0.0, 0.0, 0.0]]
    """
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return v / norm.clamp_min(torch.finfo(v.dtype).tiny)


def bond_lengths(positions: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """Distances ``|x_i - x_j|``.

    Arguments:
        positions: ``(*batch, N, 3)``.
        i, j: atom indices, ``(m,)`` each.

    Returns:
        ``(*batch, m)``.

    Example:
        >>> x = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
        >>> bond_lengths(x, torch.tensor([0]), torch.tensor([1]))
        tensor([5.])
    """
    return torch.linalg.vector_norm(positions[..., i, :] - positions[..., j, :], dim=-1)


def bond_angles(positions: Tensor, i: Tensor, j: Tensor, k: Tensor) -> Tensor:
    """Angles at ``j`` between ``x_i - x_j`` and ``x_k - x_j``, in ``[0, pi]``.

    Arguments:
        positions: ``(*batch, N, 3)``.
        i, j, k: atom indices, ``(m,)`` each.

    Returns:
        ``(*batch, m)``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
        >>> bond_angles(x, torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
        tensor([1.5708])
    """
    u = positions[..., i, :] - positions[..., j, :]
    v = positions[..., k, :] - positions[..., j, :]
    cross = torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1)
    return torch.atan2(cross, (u * v).sum(-1))


def sin_angles(positions: Tensor, i: Tensor, j: Tensor, k: Tensor) -> Tensor:
    """``sin`` of the angles at ``j`` of the triples ``(i, j, k)``: ``|u x v| / (|u| |v|)``.

    Zero when the three atoms are collinear (or two coincide); used to detect singular
    configurations.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])
        >>> sin_angles(x, torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
        tensor([0.])
    """
    u = positions[..., i, :] - positions[..., j, :]
    v = positions[..., k, :] - positions[..., j, :]
    cross = torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1)
    lengths = torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(v, dim=-1)
    return cross / lengths.clamp_min(torch.finfo(positions.dtype).tiny)


def _dihedral(
    b1: Tensor, b2: Tensor, b3: Tensor, n1: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Dihedral from the bond vectors ``b1, b2, b3`` (and ``n1 = b1 x b2`` if known); also
    returns ``n2 = b2 x b3``."""
    n1 = torch.linalg.cross(b1, b2) if n1 is None else n1
    n2 = torch.linalg.cross(b2, b3)
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    return wrap(torch.atan2(y, (n1 * n2).sum(-1))), n2


def dihedrals(positions: Tensor, i: Tensor, j: Tensor, k: Tensor, l: Tensor) -> Tensor:
    """Dihedral angles of ``(i, j, k, l)`` in ``[-pi, pi)`` (mdtraj's sign convention).

    Arguments:
        positions: ``(*batch, N, 3)``.
        i, j, k, l: atom indices, ``(m,)`` each.

    Returns:
        ``(*batch, m)``.

    Example:
        >>> x = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0], [0, 1.0, 1.0]])
        >>> idx = [torch.tensor([n]) for n in range(4)]
        >>> dihedrals(x, *idx)  # looking down 1 -> 2, atom 3 sits 90 degrees from atom 0
        tensor([-1.5708])
    """
    xi, xj, xk, xl = (positions[..., a, :] for a in (i, j, k, l))
    return _dihedral(xj - xi, xk - xj, xl - xk)[0]


def zmatrix_coordinates(
    positions: Tensor, atom: Tensor, bond: Tensor, angle: Tensor, torsion: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """All internal coordinates of a Z-matrix in one pass, sharing the difference vectors.

    Row ``r >= 1`` places ``atom[r-1]`` with bond partner ``bond[r-1]``; rows ``r >= 2`` have
    the angle partners ``angle`` (``N-2`` entries), rows ``r >= 3`` the torsion partners
    ``torsion`` (``N-3``), so the angle and torsion rows are suffixes of the bond rows.

    Arguments:
        positions: ``(*batch, N, 3)``.
        atom, bond: ``(N-1,)``; angle: ``(N-2,)``; torsion: ``(N-3,)``.

    Returns:
        ``(bonds, angles, torsions, angle_sines, plane_sines)``: bond lengths ``(*batch,
        N-1)``, angles and their sines ``(*batch, N-2)``, dihedrals ``(*batch, N-3)`` and the
        sines of the angles ``(j, k, l)`` of the torsion partners (zero where a torsion is
        undefined), ``(*batch, N-3)``.

    Example:
        >>> x = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [1.0, 1.0, 0], [1.0, 1.0, 1.0]])
        >>> idx = [torch.tensor(v) for v in ([1, 2, 3], [0, 1, 2], [0, 1], [0])]
        >>> [t.tolist() for t in zmatrix_coordinates(x, *idx)[:3]]
        [[1.0, 1.0, 1.0], [1.5707963705062866, 1.5707963705062866], [1.5707963705062866]]
    """
    # Rows >= 2 are the bond rows from index 1 on, rows >= 3 the angle rows from index 1 on.
    xi = positions[..., atom, :]
    d1 = xi - positions[..., bond, :]  # x_i - x_j, rows >= 1
    d2 = positions[..., angle, :] - positions[..., bond[1:], :]  # x_k - x_j, rows >= 2
    d3 = positions[..., torsion, :] - positions[..., angle[1:], :]  # x_l - x_k, rows >= 3
    bonds = torch.linalg.vector_norm(d1, dim=-1)
    u = d1[..., 1:, :]
    c = torch.linalg.cross(u, d2)
    c_norm = torch.linalg.vector_norm(c, dim=-1)
    d2_norm = torch.linalg.vector_norm(d2, dim=-1)
    tiny = torch.finfo(positions.dtype).tiny
    angles = torch.atan2(c_norm, (u * d2).sum(-1))
    angle_sines = c_norm / (bonds[..., 1:] * d2_norm).clamp_min(tiny)
    torsions, n2 = _dihedral(-u[..., 1:, :], d2[..., 1:, :], d3, -c[..., 1:, :])
    plane = torch.linalg.vector_norm(n2, dim=-1)
    d3_norm = torch.linalg.vector_norm(d3, dim=-1)
    plane_sines = plane / (d2_norm[..., 1:] * d3_norm).clamp_min(tiny)
    return bonds, angles, torsions, angle_sines, plane_sines


def place_atoms(
    bond_partner: Tensor,
    angle_partner: Tensor,
    torsion_partner: Tensor,
    bond: Tensor,
    angle: Tensor,
    torsion: Tensor,
) -> Tensor:
    r"""NeRF: positions of atoms ``i`` from their partners ``(j, k, l)`` and ``(r, theta, phi)``.

    With ``e = (x_j - x_k) / |x_j - x_k|``, ``n = (x_k - x_l) x e / |.|`` and ``m = n x e``,

    .. math:: x_i = x_j + r\,(-\cos\theta\, e + \sin\theta\cos\phi\, m + \sin\theta\sin\phi\, n),

    so that ``|x_i - x_j| = r``, the angle of ``(i, j, k)`` is ``theta`` and the dihedral of
    ``(i, j, k, l)`` is ``phi``. The map ``(r, theta, phi) -> x_i`` is spherical coordinates
    about ``x_j``, with ``|det| = r^2 sin(theta)``. Degenerate partners (``j, k, l``
    collinear) give a zero frame vector, hence a finite but meaningless position, never NaN.

    Arguments:
        bond_partner, angle_partner, torsion_partner: positions ``(*batch, m, 3)``.
        bond, angle, torsion: ``(*batch, m)``.

    Returns:
        Positions ``(*batch, m, 3)``.

    Example:
        >>> x = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0]])
        >>> new = place_atoms(x[2:3], x[1:2], x[0:1], *torch.tensor([[1.0], [1.5708], [-1.5708]]))
        >>> torch.allclose(new, torch.tensor([[0.0, 1.0, 1.0]]), atol=1e-4)
        True
    """
    e = unit(bond_partner - angle_partner)
    n = unit(torch.linalg.cross(angle_partner - torsion_partner, e))
    m = torch.linalg.cross(n, e)
    r_sin = (bond * torch.sin(angle)).unsqueeze(-1)
    return (
        bond_partner
        - (bond * torch.cos(angle)).unsqueeze(-1) * e
        + r_sin * torch.cos(torsion).unsqueeze(-1) * m
        + r_sin * torch.sin(torsion).unsqueeze(-1) * n
    )
