r"""Z-matrices: which partners place each atom, given explicitly or built from a bond graph.

A Z-matrix lists one row ``(atom, bond partner, angle partner, torsion partner)`` per atom, in
placement order. Atom ``i`` of row ``(i, j, k, l)`` is placed at distance ``r = |x_i - x_j|``,
angle ``theta = angle(i, j, k)`` and dihedral ``phi = dihedral(i, j, k, l)`` from partners in
earlier rows. The first three rows are the *frame atoms* ``(a0, a1, a2)``, which carry fewer
coordinates: ``(a0,)`` none, ``(a1, a0)`` one bond, ``(a2, j, k)`` with ``{j, k} = {a0, a1}`` a
bond and an angle. ``N`` atoms give ``N - 1`` bonds, ``N - 2`` angles and ``N - 3`` torsions,
``3 N - 6`` coordinates in all.

:meth:`ZMatrix.from_topology` builds one from a bond graph, deterministically:

1. The *main chain* is the longest heavy-atom path (a diameter of the heavy-atom graph found by
   two breadth-first searches, ties to the smallest index); its end with the smaller index is
   the root ``a0``, the next two path atoms are ``a1`` and ``a2``.
2. Every other atom hangs from a spanning tree grown breadth-first from the root that follows
   the main chain; its bond partner ``j`` is its tree parent and its angle partner ``k`` is
   the parent of ``j`` (``a1`` for children of ``a0``). Children of an atom are ordered: the
   main-chain continuation, heavy atoms, then hydrogens (by index), so hydrogens are always
   placed from heavy atoms.
3. Torsion partner ``l``: the first child of ``j`` is placed by the *proper* dihedral along the
   tree (``l`` = parent of ``k``), so every four consecutive main-chain atoms form a torsion
   coordinate (for alanine dipeptide: phi = (4, 6, 8, 14), psi = (6, 8, 14, 16)); its
   siblings are placed relative to it (``l`` = that first child, an *improper* dihedral that
   stays close to +-120 degrees or 180 degrees). For the alpha carbon this makes the torsion
   of CB, ``dihedral(CB, CA, N, C)``, minus the sign of the chirality volume (see
   :mod:`physics.coordinates.chirality`).
4. Heavy-atom rows come before hydrogen rows (each group in breadth-first order).

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
    arXiv:1812.01729 (internal coordinates of proteins from a Z-matrix).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

from manifoldflows.errors import InvalidInput

if TYPE_CHECKING:
    import mdtraj
    import openmm.app

    from ..systems import MolecularSystem

__all__ = ["ZMatrix", "TopologyLike", "as_mdtraj_topology"]

#: What a bond graph is read from: an mdtraj or OpenMM topology, or a ``MolecularSystem``.
TopologyLike = Union["mdtraj.Topology", "openmm.app.Topology", "MolecularSystem"]

Row = tuple[int, int, int, int]


def as_mdtraj_topology(topology: TopologyLike, who: str) -> mdtraj.Topology:
    """An ``mdtraj.Topology`` from an mdtraj or OpenMM topology or a
    :class:`~physics.systems.MolecularSystem` (anything with ``.mdtraj_topology``)."""
    import mdtraj

    if isinstance(topology, mdtraj.Topology):
        return topology
    if hasattr(topology, "mdtraj_topology"):
        return topology.mdtraj_topology
    import openmm.app

    if isinstance(topology, openmm.app.Topology):
        return mdtraj.Topology.from_openmm(topology)
    raise InvalidInput(
        f"{who}: expected an mdtraj.Topology, an openmm.app.Topology or a MolecularSystem, "
        f"got {type(topology).__name__}"
    )


def _short(atoms: Sequence[int], limit: int = 12) -> str:
    atoms = list(atoms)
    text = ", ".join(str(a) for a in atoms[:limit])
    return text + (f", ... ({len(atoms)} in all)" if len(atoms) > limit else "")


class ZMatrix:
    r"""The rows ``(atom, bond partner, angle partner, torsion partner)`` of a Z-matrix.

    Arguments:
        rows: one row per atom in placement order; the first three rows may be given short,
            ``(a0,)``, ``(a1, a0)``, ``(a2, j, k)``, or padded with ``-1``.
        n_atoms: the number of atoms ``N`` (default: the largest atom index + 1). Every atom
            ``0 .. N-1`` must have exactly one row.

    Raises:
        InvalidInput: naming the missing and duplicated atoms, a partner that is not placed in
            an earlier row, repeated atoms within a row, or malformed frame rows.

    Attributes:
        rows: the rows as 4-tuples padded with ``-1``.
        n_atoms: ``N``.
        frame: the frame atoms ``(a0, a1, a2)``.
        bond_atoms, angle_atoms, torsion_atoms: ``(i, j)``, ``(i, j, k)``, ``(i, j, k, l)``
            of every bond (rows 1..), angle (rows 2..) and torsion (rows 3..) coordinate.
        layers: row indices (``>= 3``) grouped so that every partner of a row lies in the
            frame or an earlier group: each group is placed in one vectorised step.

    Example:
        >>> z = ZMatrix([(0,), (1, 0), (2, 1, 0), (3, 2, 1, 0), (4, 1, 0, 2)])
        >>> z.frame, z.torsion_atoms, z.layers
        ((0, 1, 2), ((3, 2, 1, 0), (4, 1, 0, 2)), ((3, 4),))
        >>> ZMatrix([(0,), (1, 0), (2, 1, 0), (2, 1, 0, 3)], n_atoms=4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        manifoldflows.errors.InvalidInput: ZMatrix: ... got atom 3 missing, atom 2 duplicated
    """

    def __init__(self, rows: Sequence[Sequence[int]], n_atoms: int | None = None):
        who = "ZMatrix"
        parsed: list[Row] = []
        for r, row in enumerate(rows):
            try:
                values = [int(v) for v in row]
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"{who}: row {r} is not a sequence of integers: {row!r}"
                ) from None
            width = min(r, 3) + 1
            malformed = len(values) not in (width, 4) or any(v < 0 for v in values[:width])
            if malformed or any(v != -1 for v in values[width:]):
                raise InvalidInput(
                    f"{who}: row {r} must name the atom and {width - 1} partner(s) (padding with "
                    f"-1 allowed), got {tuple(values)}"
                )
            padded = values[:width] + [-1] * (4 - width)
            parsed.append((padded[0], padded[1], padded[2], padded[3]))
        if len(parsed) < 3:
            raise InvalidInput(
                f"{who}: expected at least 3 rows (the frame atoms), got {len(parsed)}"
            )
        atoms = [row[0] for row in parsed]
        if n_atoms is None:
            n_atoms = max(atoms) + 1
        if any(a < 0 or a >= n_atoms for row in parsed for a in row if a != -1) or any(
            a < 0 for a in atoms
        ):
            bad = sorted({a for row in parsed for a in row if a != -1 and not 0 <= a < n_atoms})
            raise InvalidInput(
                f"{who}: atom indices must lie in [0, {n_atoms}), got {_short(bad or [-1])}"
            )
        counts = [0] * n_atoms
        for a in atoms:
            counts[a] += 1
        missing = [a for a, c in enumerate(counts) if c == 0]
        duplicated = [a for a, c in enumerate(counts) if c > 1]
        if missing or duplicated:
            parts = []
            if missing:
                parts.append(f"atom{'s' if len(missing) > 1 else ''} {_short(missing)} missing")
            if duplicated:
                parts.append(
                    f"atom{'s' if len(duplicated) > 1 else ''} {_short(duplicated)} duplicated"
                )
            raise InvalidInput(
                f"{who}: expected one row per atom 0..{n_atoms - 1}, got {', '.join(parts)}"
            )
        placed: dict[int, int] = {}
        for r, row in enumerate(parsed):
            members = [a for a in row if a != -1]
            if len(set(members)) != len(members):
                raise InvalidInput(f"{who}: row {r} repeats an atom: {row}")
            for name, partner in zip(("bond", "angle", "torsion"), row[1:]):
                if partner != -1 and partner not in placed:
                    raise InvalidInput(
                        f"{who}: row {r} (atom {row[0]}): {name} partner {partner} is not placed "
                        "in an earlier row (rows come in placement order)"
                    )
            placed[row[0]] = r
        a0, a1, a2 = atoms[:3]  # placed in order, row 2's partners are {a0, a1}
        self.rows: tuple[Row, ...] = tuple(parsed)
        self.n_atoms = int(n_atoms)
        self.frame = (a0, a1, a2)
        self.bond_atoms = tuple((r[0], r[1]) for r in parsed[1:])
        self.angle_atoms = tuple((r[0], r[1], r[2]) for r in parsed[2:])
        self.torsion_atoms = tuple(parsed[3:])
        level = {a0: 0, a1: 0, a2: 0}
        groups: dict[int, list[int]] = {}
        for r, row in enumerate(parsed[3:], start=3):
            level[row[0]] = 1 + max(level[p] for p in row[1:])
            groups.setdefault(level[row[0]], []).append(r)
        self.layers = tuple(tuple(groups[k]) for k in sorted(groups))

    def __len__(self) -> int:
        return self.n_atoms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZMatrix) and self.rows == other.rows

    def __hash__(self) -> int:
        return hash(self.rows)

    def __repr__(self) -> str:
        return f"ZMatrix(n_atoms={self.n_atoms}, frame={self.frame}, layers={len(self.layers)})"

    # ------------------------------------------------------------------ from a bond graph
    @classmethod
    def from_topology(cls, topology: TopologyLike) -> ZMatrix:
        """Build the Z-matrix of a molecule from its bond graph (see the module docstring).

        Arguments:
            topology: an ``mdtraj.Topology``, an ``openmm.app.Topology`` or a
                :class:`~physics.systems.MolecularSystem`; its bonds must connect all atoms.

        Raises:
            InvalidInput: for fewer than 3 atoms or a bond graph that is not connected (the
                unreachable atoms are named; give the rows explicitly then).

        Example:
            >>> from physics.systems import alanine_dipeptide
            >>> z = ZMatrix.from_topology(alanine_dipeptide("vacuum"))
            >>> z.frame, (14, 8, 6, 4) in z.torsion_atoms, (16, 14, 8, 6) in z.torsion_atoms
            ((1, 4, 6), True, True)
        """
        top = as_mdtraj_topology(topology, "ZMatrix.from_topology")
        n = top.n_atoms
        if n < 3:
            raise InvalidInput(f"ZMatrix.from_topology: expected at least 3 atoms, got {n}")
        neighbours: list[list[int]] = [[] for _ in range(n)]
        for bond in top.bonds:
            a, b = bond[0].index, bond[1].index
            if a != b and b not in neighbours[a]:
                neighbours[a].append(b)
                neighbours[b].append(a)
        hydrogen = [
            atom.element is not None and atom.element.symbol in ("H", "D") for atom in top.atoms
        ]
        return cls(_rows_from_graph(neighbours, hydrogen), n_atoms=n)


def _bfs_distances(start: int, neighbours: list[list[int]], allowed: list[bool]) -> list[int]:
    dist = [-1] * len(neighbours)
    dist[start] = 0
    queue = deque([start])
    while queue:
        a = queue.popleft()
        for b in sorted(neighbours[a]):
            if allowed[b] and dist[b] < 0:
                dist[b] = dist[a] + 1
                queue.append(b)
    return dist


def _farthest(dist: list[int]) -> int:
    best = max(dist)
    return min(a for a, d in enumerate(dist) if d == best)


def _main_chain(neighbours: list[list[int]], hydrogen: list[bool]) -> list[int]:
    """A longest shortest path of the heavy-atom graph (of all atoms without heavy atoms)."""
    n = len(neighbours)
    allowed = [not h for h in hydrogen]
    if not any(allowed):
        allowed = [True] * n
    start = min(a for a in range(n) if allowed[a])
    u = _farthest(_bfs_distances(start, neighbours, allowed))
    dist_u = _bfs_distances(u, neighbours, allowed)
    v = _farthest(dist_u)
    root, end = min(u, v), max(u, v)
    dist = _bfs_distances(root, neighbours, allowed)
    path = [end]  # walk back from the far end, always to the smallest-index predecessor
    while path[-1] != root:
        here = path[-1]
        path.append(min(b for b in neighbours[here] if allowed[b] and dist[b] == dist[here] - 1))
    return path[::-1]


def _rows_from_graph(neighbours: list[list[int]], hydrogen: list[bool]) -> list[Row]:
    n = len(neighbours)
    chain = _main_chain(neighbours, hydrogen)
    on_chain = {a: i for i, a in enumerate(chain)}
    parent: dict[int, int] = {chain[0]: -1}
    children: dict[int, list[int]] = {a: [] for a in range(n)}
    order = [chain[0]]
    queue = deque([chain[0]])
    claimed = set(chain)
    while queue:
        j = queue.popleft()
        kids = []
        if j in on_chain and on_chain[j] + 1 < len(chain):
            kids.append(chain[on_chain[j] + 1])
        kids += sorted(
            (b for b in neighbours[j] if b not in claimed), key=lambda b: (hydrogen[b], b)
        )
        for b in kids:
            claimed.add(b)
            parent[b] = j
            children[j].append(b)
            order.append(b)
            queue.append(b)
    unreachable = [a for a in range(n) if a not in parent]
    if unreachable:
        raise InvalidInput(
            f"ZMatrix.from_topology: the bond graph is not connected: atom(s) "
            f"{_short(unreachable)} cannot be reached from atom {chain[0]}; pass the Z-matrix "
            "rows explicitly"
        )
    a0 = chain[0]
    a1 = children[a0][0]
    a2 = children[a1][0] if children[a1] else children[a0][1]
    frame = [a0, a1, a2]
    rest = [a for a in order if a not in frame]
    rest = [a for a in rest if not hydrogen[a]] + [a for a in rest if hydrogen[a]]
    rank = {a: r for r, a in enumerate(frame + rest)}

    def reference(j: int) -> int:  # the angle partner of j's children
        return a1 if j == a0 else parent[j]

    rows: list[Row] = [
        (a0, -1, -1, -1),
        (a1, a0, -1, -1),
        (a2, parent[a2], reference(parent[a2]), -1),
    ]
    for i in rest:
        j = parent[i]
        k = reference(j)
        siblings = [c for c in children[j] if c != k]
        if siblings[0] != i:
            l = siblings[0]
        else:
            l = reference(k)
            if l in (i, j, k):
                candidates = [b for b in neighbours[k] + neighbours[j] if b not in (i, j, k)]
                placed = [b for b in candidates if rank[b] < rank[i]] or [
                    b for b in frame + rest if rank[b] < rank[i] and b not in (i, j, k)
                ]
                l = min(placed, key=rank.__getitem__)
        rows.append((i, j, k, l))
    if any(rank[p] > rank[row[0]] for row in rows for p in row[1:] if p != -1):
        rows = rows[:3] + sorted(rows[3:], key=lambda row: order.index(row[0]))  # BFS order
    return rows
