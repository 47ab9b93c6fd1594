r"""Internal coordinates: a Transform from (bonds, angles, torsions) to Cartesian configurations.

**Direction.** Like every layer here, ``forward`` is the sampling direction: internal
coordinates ``z`` (a point of ``Product(Interval(0, inf, N-1), Interval(0, pi, N-2),
Torus(N-3))``) to a Cartesian configuration ``x`` (flat, ``(*batch, 3 N)`` nm, atom-major).
A Boltzmann generator in internal coordinates is ``Flow(base, Chain(*flow_layers,
standardization, ic))``: its samples are Cartesian configurations that an energy (e.g.
:mod:`physics.openmm`) evaluates directly, and its ``log_prob(x)`` (which runs ``ic.inverse``)
is the density of configurations of :class:`~physics.coordinates.FixedFrameCartesian`: the
density with respect to the Lebesgue measure of the ``3 N - 6`` free Cartesian coordinates of
the canonical frame (atom ``a0`` at the origin, ``a1`` on the positive x axis, ``a2`` in the
upper xy half-plane). ``ic.inverse`` accepts configurations in any frame (MD frames): internal
coordinates and the logdet are invariant under rotations and translations, so no alignment is
needed; ``ic.forward`` always returns the canonical representative.

**Volume element.** Every atom placed by ``(r, theta, phi)`` about its partners contributes
spherical coordinates, ``|det| = r^2 sin(theta)``; the second frame atom ``(r, 0, 0)``
contributes 1 and the third, placed by polar coordinates ``(r, theta)`` in the xy-plane,
contributes ``r``. The Jacobian is block-triangular in placement order, so

.. math:: \log\left|\det \frac{\partial x_{\rm free}}{\partial z}\right|
          = \log r_{a_2} + \sum_{i \ge 3} \left(2 \log r_i + \log \sin\theta_i\right).

**Torsions** follow mdtraj's :func:`~mdtraj.compute_dihedrals` (IUPAC sign) wrapped to
``[-pi, pi)``, the range of :class:`~manifoldflows.spaces.Torus`.

**Standardisation.** Bonds and angles fluctuate by a few percent about their equilibrium
values; :meth:`InternalCoordinates.standardization` builds an
:class:`InternalStandardization` (``b = b0 + s_b z_b``, ``theta = theta0 + s_a z_a``, torsions
unchanged, ``log|det| = sum log s``, counted exactly) from data or from one (minimised)
structure, so the flow and its base see ``O(1)`` real coordinates.

**Singular configurations.** Coincident bonded atoms or collinear angle triples (``sin theta
<= 100 eps``; also collinear torsion planes on the Cartesian side) make the volume element
vanish and torsions undefined; with validation on (the default) both directions raise
:class:`~manifoldflows.errors.InvalidInput` naming the layer, the configuration, the atoms and
the value, also inside a :class:`~manifoldflows.core.Chain`. Inside a chain, values outside the
domain (a negative bond or an angle outside ``(0, pi)`` from a preceding layer) are not
refused: NeRF places the atom at the mirrored point and the logdet uses ``|r^2 sin theta|``,
finite, but such a point is not the inverse of its own internal coordinates.

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: Sampling equilibrium states
    of many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
    J. Parsons, J. B. Holmes, J. M. Rojas, J. Tsai, C. E. M. Strauss, "Practical conversion
    from torsion space to Cartesian space for in silico protein synthesis", J. Comput. Chem.
    26 (2005) 1063 (NeRF).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from torch import Tensor

from manifoldflows.core import Transform
from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Euclidean, Interval, Product, Space, Torus

from .frame import FixedFrameCartesian
from .geometry import place_atoms, zmatrix_coordinates
from .zmatrix import TopologyLike, ZMatrix, as_mdtraj_topology

if TYPE_CHECKING:
    import mdtraj

__all__ = ["InternalCoordinates", "InternalStandardization", "internal_space", "ConfigurationsLike"]

#: Cartesian configurations as users hold them: tensors, arrays or mdtraj trajectories (nm).
ConfigurationsLike = Union[Tensor, np.ndarray, "mdtraj.Trajectory"]


def internal_space(n_atoms: int, standardized: bool = False) -> Product:
    """The space of the internal coordinates of ``n_atoms`` atoms.

    ``Product(Interval(0, inf, N-1), Interval(0, pi, N-2), Torus(N-3))`` (bonds in nm, angles,
    torsions), or with ``standardized=True`` ``Product(Euclidean(N-1), Euclidean(N-2),
    Torus(N-3))``; three atoms have no torsion factor.

    Example:
        >>> internal_space(22)
        Product(Interval(0, inf, 21), Interval(0, 3.14159, 20), Torus(19))
    """
    n = int(n_atoms)
    if standardized:
        spaces: list[Space] = [Euclidean(n - 1), Euclidean(n - 2)]
    else:
        spaces = [Interval(0.0, math.inf, n - 1), Interval(0.0, math.pi, n - 2)]
    if n > 3:
        spaces.append(Torus(n - 3))
    return Product(*spaces)


def _configurations(x: ConfigurationsLike, n_atoms: int, who: str) -> Tensor:
    """Cartesian input as a float64 tensor ``(n, 3N)``: accepts ``(3N,)``, ``(N, 3)``,
    ``(n, 3N)``, ``(n, N, 3)``, numpy arrays, tensors and mdtraj trajectories (``.xyz``)."""
    if hasattr(x, "xyz"):
        x = x.xyz
    t = torch.as_tensor(
        np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x), dtype=torch.float64
    )
    if t.dim() >= 2 and tuple(t.shape[-2:]) == (n_atoms, 3):
        t = t.reshape(*t.shape[:-2], 3 * n_atoms)
    if t.shape[-1:] != (3 * n_atoms,) or t.dim() > 2:
        raise InvalidInput(
            f"{who}: expected configurations of shape (3N,) = ({3 * n_atoms},), (N, 3) = "
            f"({n_atoms}, 3) or a batch of them, got shape {tuple(t.shape)}"
        )
    return t.reshape(-1, 3 * n_atoms)


class InternalCoordinates(Transform):
    r"""Internal coordinates (bonds, angles, torsions) -> Cartesian configurations (NeRF).

    See the module docstring for the direction, frame, volume element and torsion
    conventions. The Z-matrix comes from the bond graph (:meth:`ZMatrix.from_topology`: the
    longest heavy-atom chain first, hydrogens from heavy atoms; for alanine dipeptide the
    backbone torsions phi and psi are torsion coordinates) or is given explicitly.

    Placement is vectorised over the batch and over the atoms of one Z-matrix *layer*
    (:attr:`ZMatrix.layers`: atoms whose partners are already placed; 6 steps for alanine
    dipeptide); the inverse computes all coordinates in one step. Dtype and device follow the
    input (the layer holds only integer index buffers).

    Arguments:
        topology: an ``mdtraj.Topology``, ``openmm.app.Topology`` or
            :class:`~physics.systems.MolecularSystem` (its bonds give the Z-matrix; with an
            explicit ``zmatrix`` only its atom count is used).
        zmatrix: a :class:`~physics.coordinates.ZMatrix` or its rows ``(atom, bond partner,
            angle partner, torsion partner)`` in placement order.

    Shapes: ``forward`` takes ``(*batch, 3N - 6)`` (bonds, angles, torsions concatenated) and
    returns ``(*batch, 3N)`` and a logdet ``(*batch,)``; ``inverse`` the reverse.

    Attributes:
        zmatrix: the :class:`~physics.coordinates.ZMatrix`.
        n_atoms, n_bonds, n_angles, n_torsions: ``N``, ``N-1``, ``N-2``, ``N-3``.
        frame: the frame atoms ``(a0, a1, a2)``.

    References:
        F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
        arXiv:1812.01729.
        J. Parsons et al., "Practical conversion from torsion space to Cartesian space for in
        silico protein synthesis", J. Comput. Chem. 26 (2005) 1063.

    Example:
        >>> from physics.systems import alanine_dipeptide
        >>> ala2 = alanine_dipeptide("vacuum")
        >>> ic = InternalCoordinates(ala2)
        >>> ic.domain.dim, ic.codomain, ic.torsion_index((4, 6, 8, 14))
        (60, FixedFrameCartesian(22, frame=(1, 4, 6)), 2)
        >>> x = torch.as_tensor(ala2.positions, dtype=torch.float64).reshape(1, 66)
        >>> z, logdet_inv = ic.inverse(x)  # any frame; the PDB frame is not canonical
        >>> y, logdet = ic(z)
        >>> bool(torch.allclose(y, ic.codomain.projx(x), atol=1e-12))
        True
        >>> bool(logdet + logdet_inv == 0)
        True
    """

    def __init__(
        self,
        topology: TopologyLike | None = None,
        *,
        zmatrix: ZMatrix | Sequence[Sequence[int]] | None = None,
    ):
        who = type(self).__name__
        n_atoms = None
        if topology is not None:
            n_atoms = as_mdtraj_topology(topology, who).n_atoms
        if zmatrix is None:
            if topology is None:
                raise InvalidInput(
                    f"{who}: expected a topology or an explicit zmatrix, got neither"
                )
            zmatrix = ZMatrix.from_topology(topology)
        elif not isinstance(zmatrix, ZMatrix):
            zmatrix = ZMatrix(zmatrix, n_atoms=n_atoms)
        if n_atoms is not None and zmatrix.n_atoms != n_atoms:
            raise InvalidInput(
                f"{who}: the Z-matrix has {zmatrix.n_atoms} atoms but the topology has {n_atoms}"
            )
        n = zmatrix.n_atoms
        super().__init__(internal_space(n), FixedFrameCartesian(n, zmatrix.frame))
        self.zmatrix = zmatrix
        rows = torch.tensor(zmatrix.rows, dtype=torch.long)
        # Cartesian -> internal, every coordinate at once: the placed atoms (rows >= 1) and the
        # partners of the rows that have them (rows >= 1, 2, 3).
        self.register_buffer("_atom", rows[1:, 0].clone(), persistent=False)
        self.register_buffer("_bond_partner", rows[1:, 1].clone(), persistent=False)
        self.register_buffer("_angle_partner", rows[2:, 2].clone(), persistent=False)
        self.register_buffer("_torsion_partner", rows[3:, 3].clone(), persistent=False)
        # Internal -> Cartesian: rows >= 3 layer by layer; row r has bond r-1, angle r-2 and
        # torsion r-3, at these positions of the flat coordinate vector.
        order = [r for layer in zmatrix.layers for r in layer]
        row = torch.tensor(order, dtype=torch.long)
        coordinate = torch.stack([row - 1, n - 1 + row - 2, 2 * n - 3 + row - 3])
        self.register_buffer("_place", rows[order].T.contiguous(), persistent=False)
        self.register_buffer("_place_coordinate", coordinate, persistent=False)
        bounds = np.cumsum([0] + [len(layer) for layer in zmatrix.layers])
        self._layer_bounds = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    # ------------------------------------------------------------------ description
    @property
    def n_atoms(self) -> int:
        return self.zmatrix.n_atoms

    @property
    def n_bonds(self) -> int:
        return self.n_atoms - 1

    @property
    def n_angles(self) -> int:
        return self.n_atoms - 2

    @property
    def n_torsions(self) -> int:
        return self.n_atoms - 3

    @property
    def frame(self) -> tuple[int, int, int]:
        return self.zmatrix.frame

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, frame={self.frame}, layers={len(self.zmatrix.layers)}"

    def coordinate_index(self, atoms: Sequence[int]) -> int:
        """Position in the flat internal-coordinate vector of the bond (2 atoms), angle (3) or
        torsion (4) of ``atoms`` (also found in reversed order, which has the same value).

        Raises:
            InvalidInput: when the Z-matrix has no such coordinate (the message lists the
                coordinates about the same central atoms).

        Example:
            >>> ic = InternalCoordinates(zmatrix=[(0,), (1, 0), (2, 1, 0), (3, 2, 1, 0)])
            >>> [ic.coordinate_index(atoms) for atoms in ((0, 1), (0, 1, 2), (0, 1, 2, 3))]
            [0, 3, 5]
        """
        atoms = tuple(int(a) for a in atoms)
        tables = {
            2: self.zmatrix.bond_atoms,
            3: self.zmatrix.angle_atoms,
            4: self.zmatrix.torsion_atoms,
        }
        if len(atoms) not in tables:
            raise InvalidInput(
                f"{self.name}.coordinate_index: expected 2, 3 or 4 atoms, got {atoms}"
            )
        offset = {2: 0, 3: self.n_bonds, 4: self.n_bonds + self.n_angles}[len(atoms)]
        table = tables[len(atoms)]
        for index, entry in enumerate(table):
            if entry in (atoms, atoms[::-1]):
                return offset + index
        kind = {2: "bond", 3: "angle", 4: "torsion"}[len(atoms)]
        centre = set(atoms[1:-1]) if len(atoms) > 2 else set(atoms)
        near = [e for e in table if set(e[1:-1] if len(e) > 2 else e) == centre]
        raise InvalidInput(
            f"{self.name}: {atoms} is not a {kind} coordinate of this Z-matrix; its {kind}s "
            f"about the same central atoms are {near or 'none'}"
        )

    def torsion_index(self, atoms: Sequence[int]) -> int:
        """Index within the torsion block of the dihedral of ``atoms`` (4 atoms, either
        order); the torsion equals :func:`mdtraj.compute_dihedrals` of ``atoms``.

        Example:
            >>> from physics.systems import alanine_dipeptide, PHI_ATOMS, PSI_ATOMS
            >>> ic = InternalCoordinates(alanine_dipeptide("vacuum"))
            >>> ic.torsion_index(PHI_ATOMS), ic.torsion_index(PSI_ATOMS)
            (2, 4)
        """
        if len(tuple(atoms)) != 4:
            raise InvalidInput(f"{self.name}.torsion_index: expected 4 atoms, got {tuple(atoms)}")
        return self.coordinate_index(atoms) - self.n_bonds - self.n_angles

    def split(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(bonds, angles, torsions)`` of internal coordinates ``(*batch, 3N-6)``."""
        parts = self.domain.split(z)
        torsions = parts[2] if len(parts) > 2 else z[..., :0]
        return parts[0], parts[1], torsions

    # ------------------------------------------------------------------ volume and checks
    @staticmethod
    def _log_volume(bonds: Tensor, angles: Tensor) -> Tensor:
        """``log|r_{a2}| + sum_{i>=3} (2 log|r_i| + log|sin theta_i|)``."""
        return (
            bonds[..., 1].abs().log()
            + 2.0 * bonds[..., 2:].abs().log().sum(-1)
            + torch.sin(angles[..., 1:]).abs().log().sum(-1)
        )

    def _check_singular(
        self, bonds: Tensor, sines: Tensor, plane_sines: Tensor | None, method: str
    ) -> None:
        """Raise InvalidInput if a bond vanishes or an angle (or a torsion plane) is straight."""
        tol = 100.0 * torch.finfo(bonds.dtype).eps
        parts = [bonds, sines] + ([plane_sines] if plane_sines is not None else [])
        values = torch.cat(parts, dim=-1).abs()
        bad = values <= tol
        if not bool(bad.any()):
            return
        flat_bad = bad.reshape(-1, bad.shape[-1])
        per_config = flat_bad.any(-1)
        first = int(torch.nonzero(per_config)[0])
        where = tuple(int(i) for i in np.unravel_index(first, bad.shape[:-1]))
        column = int(torch.nonzero(flat_bad[first])[0])
        value = float(values.reshape(-1, bad.shape[-1])[first, column])
        z = self.zmatrix
        if column < self.n_bonds:
            i, j = z.bond_atoms[column]
            what = f"atoms {i} and {j} coincide (distance {value:.3g} nm <= {tol:.1e})"
        elif column < self.n_bonds + self.n_angles:
            i, j, k = z.angle_atoms[column - self.n_bonds]
            what = (
                f"atoms {i}, {j}, {k} are collinear (|sin(angle at {j})| = {value:.3g} <= "
                f"{tol:.1e})"
            )
        else:
            i, j, k, l = z.torsion_atoms[column - self.n_bonds - self.n_angles]
            what = (
                f"atoms {j}, {k}, {l} are collinear, so the torsion ({i}, {j}, {k}, {l}) is "
                f"undefined (|sin(angle at {k})| = {value:.3g} <= {tol:.1e})"
            )
        raise InvalidInput(
            f"{self.name}.{method}: singular configuration at batch index {where}: {what}; "
            "internal coordinates and the volume element r^2 sin(theta) degenerate there "
            f"({int(per_config.sum())} singular configuration(s) in all)"
        )

    # ------------------------------------------------------------------ the maps
    def _forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        bonds, angles, _ = self.split(z)
        if self.validate:
            self._check_singular(bonds, torch.sin(angles), None, "forward")
        batch = z.shape[:-1]
        # Atom-major work layout (N, B, 3): gathering and writing whole atoms is contiguous.
        flat = z.reshape(-1, z.shape[-1]).T  # (3N-6, B)
        coords = flat[self._place_coordinate.reshape(-1)].reshape(3, -1, flat.shape[-1])
        positions = z.new_zeros(self.n_atoms, flat.shape[-1], 3)
        _, a1, a2 = self.frame
        r1, r2, theta2 = flat[0], flat[1], flat[self.n_bonds]
        # a2 is placed from a0 (at the origin, towards +x) or from a1 (at r1, towards -x).
        from_a0 = self.zmatrix.rows[2][1] == self.frame[0]
        positions[a1, :, 0] = r1
        positions[a2, :, 0] = r2 * torch.cos(theta2) if from_a0 else r1 - r2 * torch.cos(theta2)
        positions[a2, :, 1] = r2 * torch.sin(theta2)
        for start, stop in self._layer_bounds:
            i, j, k, l = self._place[:, start:stop]
            positions[i] = place_atoms(
                positions[j], positions[k], positions[l], *coords[:, start:stop]
            )
        x = positions.transpose(0, 1).reshape(*batch, 3 * self.n_atoms)
        return x, self._log_volume(bonds, angles)

    def _inverse(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        positions = x.reshape(*x.shape[:-1], self.n_atoms, 3)
        bonds, angles, torsions, sines, plane_sines = zmatrix_coordinates(
            positions,
            self._atom,
            self._bond_partner,
            self._angle_partner,
            self._torsion_partner,
        )
        if self.validate:
            self._check_singular(bonds, sines, plane_sines, "inverse")
        z = torch.cat([bonds, angles, torsions], dim=-1)
        return z, -self._log_volume(bonds, angles)

    # ------------------------------------------------------------------ standardisation
    def standardization(
        self,
        reference: ConfigurationsLike,
        *,
        bond_scale: float | Tensor | None = None,
        angle_scale: float | Tensor | None = None,
        min_scale: float = 1e-4,
    ) -> InternalStandardization:
        r"""The affine standardisation of bonds and angles measured on ``reference``.

        Centres: the mean bonds and angles of the reference configurations. Scales:
        ``bond_scale`` / ``angle_scale`` when given (a number or one value per coordinate),
        otherwise the standard deviation over the reference configurations (at least
        ``min_scale``, so bonds that data hold fixed stay invertible). One configuration (a
        minimised structure, ``system.minimized_positions()``) needs both scales, e.g. 0.005
        nm and 0.05 rad (thermal fluctuations at 300 K are about 0.003 nm and 0.03-0.1 rad).

        Arguments:
            reference: configurations ``(3N,)``, ``(N, 3)``, ``(n, 3N)`` or ``(n, N, 3)`` in nm
                (tensor, array or mdtraj trajectory), in any frame.
            bond_scale, angle_scale: scales in nm and rad (default: from the data).
            min_scale: floor of data-derived scales.

        Returns:
            An :class:`InternalStandardization` whose codomain is this layer's domain, in
            torch's default dtype: ``Chain(*flow_layers, standardization, ic)``.

        Example:
            >>> from physics.systems import alanine_dipeptide
            >>> ala2 = alanine_dipeptide("vacuum")
            >>> ic = InternalCoordinates(ala2)
            >>> std = ic.standardization(ala2.positions, bond_scale=0.005, angle_scale=0.05)
            >>> std.domain
            Product(Euclidean(21), Euclidean(20), Torus(19))
            >>> from manifoldflows import Chain
            >>> z, _ = Chain(std, ic).inverse(ala2.configuration(torch.float32))
            >>> bool(z[:41].abs().max() < 1e-3)  # the reference's bonds and angles map to 0
            True
        """
        who = f"{self.name}.standardization"
        x = _configurations(reference, self.n_atoms, who)
        with torch.no_grad():
            z = self.inverse(x)[0]
        bonds, angles, _ = self.split(z)
        scales = []
        for values, given, name in (
            (bonds, bond_scale, "bond_scale"),
            (angles, angle_scale, "angle_scale"),
        ):
            if given is None:
                if values.shape[0] < 2:
                    raise InvalidInput(
                        f"{who}: one reference configuration has no spread; pass {name} "
                        "(and the other scale) or several configurations"
                    )
                scales.append(values.std(0).clamp_min(min_scale))
            else:
                scales.append(torch.as_tensor(given, dtype=torch.float64).expand(values.shape[-1]))
        return InternalStandardization(
            bonds.mean(0), scales[0], angles.mean(0), scales[1], self.n_torsions
        )


class InternalStandardization(Transform):
    r"""Affine standardisation of bonds and angles; torsions pass through.

    .. math:: b = b_0 + s_b \odot z_b, \qquad \theta = \theta_0 + s_\theta \odot z_\theta,
              \qquad \phi = z_\phi, \qquad
              \log|\det| = \sum \log s_b + \sum \log s_\theta .

    ``forward`` maps ``Product(Euclidean(N-1), Euclidean(N-2), Torus(N-3))`` (standardised,
    ``O(1)`` coordinates, where a flow and a Gaussian base live) to the domain of
    :class:`InternalCoordinates`. It is affine on the whole real line, so values far in the
    tails (more than ``b0 / s_b`` standard deviations) give a negative bond or an angle outside
    ``(0, pi)``; see the module docstring for what the next layer does with them. Built by
    :meth:`InternalCoordinates.standardization`; centres and scales are buffers (saved with
    the layer, not trained).

    Arguments:
        bond_mean, bond_scale: ``(N-1,)`` in nm (means positive, scales positive).
        angle_mean, angle_scale: ``(N-2,)`` in rad (means in ``(0, pi)``).
        n_torsions: ``N - 3``.

    References:
        F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
        arXiv:1812.01729 (internal coordinates whitened before the flow).

    Example:
        >>> layer = InternalStandardization(
        ...     torch.tensor([0.1, 0.15]), torch.tensor([0.01, 0.01]),
        ...     torch.tensor([2.0]), torch.tensor([0.1]), n_torsions=0)
        >>> y, logdet = layer(torch.tensor([1.0, -1.0, 2.0]))
        >>> [round(v, 6) for v in y.tolist()], round(logdet.item(), 4)  # log(0.01 * 0.01 * 0.1)
        ([0.11, 0.14, 2.2], -11.5129)
    """

    def __init__(
        self,
        bond_mean: Tensor,
        bond_scale: Tensor,
        angle_mean: Tensor,
        angle_scale: Tensor,
        n_torsions: int,
    ):
        who = type(self).__name__
        values = [
            torch.as_tensor(v, dtype=torch.get_default_dtype()).reshape(-1)
            for v in (bond_mean, bond_scale, angle_mean, angle_scale)
        ]
        n_atoms = values[0].numel() + 1
        expected = (n_atoms - 1, n_atoms - 1, n_atoms - 2, n_atoms - 2)
        if tuple(v.numel() for v in values) != expected or int(n_torsions) != max(n_atoms - 3, 0):
            raise InvalidInput(
                f"{who}: expected bond centres and scales of length N-1, angle centres and "
                f"scales of length N-2 and N-3 torsions, got lengths "
                f"{tuple(v.numel() for v in values)} and n_torsions={n_torsions}"
            )
        scale = torch.cat([values[1], values[3]])
        if not bool(torch.isfinite(scale).all() & (scale > 0).all()):
            raise InvalidInput(f"{who}: expected positive finite scales, got {scale.tolist()}")
        if not bool((values[0] > 0).all() & (values[2] > 0).all() & (values[2] < math.pi).all()):
            raise InvalidInput(
                f"{who}: expected positive bond centres and angle centres in (0, pi), got "
                f"bonds {values[0].tolist()} and angles {values[2].tolist()}"
            )
        super().__init__(internal_space(n_atoms, standardized=True), internal_space(n_atoms))
        self.register_buffer("shift", torch.cat([values[0], values[2]]))
        self.register_buffer("scale", scale)

    def extra_repr(self) -> str:
        return f"n_atoms={(self.shift.numel() + 3) // 2}"

    def _logdet(self, x: Tensor, sign: float) -> Tensor:
        total = sign * self.scale.log().sum()
        return total.to(x.dtype).expand(x.shape[:-1])

    def _forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        m = self.shift.numel()
        y = torch.cat([self.shift + self.scale * z[..., :m], z[..., m:]], dim=-1)
        return y, self._logdet(z, 1.0)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        m = self.shift.numel()
        z = torch.cat([(y[..., :m] - self.shift) / self.scale, y[..., m:]], dim=-1)
        return z, self._logdet(y, -1.0)
