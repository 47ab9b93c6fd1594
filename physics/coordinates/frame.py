r"""The reference frame of a molecule and the space of configurations modulo rigid motions.

Internal coordinates do not see the 6 global degrees of freedom (3 translations, 3 rotations).
They are fixed here, in one place, by three *frame atoms* ``(a0, a1, a2)``: the **canonical
frame** of a configuration puts ``a0`` at the origin, ``a1`` on the positive x axis and ``a2``
in the xy-plane with ``y > 0``. The proper rotation and translation that take a
configuration there (:func:`rigid_frame`) are all that a later layer keeping the frame as
``SO(3) x R^3`` needs: ``x = R^T c + o`` with the canonical configuration ``c``, the rotation
``R`` and the origin ``o``.

:class:`FixedFrameCartesian` is the space of Cartesian configurations modulo proper rigid
motions, of dimension ``3 N - 6``, represented by flat configurations ``(*batch, 3 N)`` (nm,
atom-major, the convention of :mod:`physics.systems`). Its coordinates are the ``3 N - 6``
free Cartesian coordinates of the canonical representative; densities are with respect to
their Lebesgue measure.

References:
    F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators: Sampling equilibrium states
    of many-body systems with deep learning", Science 365 (2019), arXiv:1812.01729.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Space

from .geometry import sin_angles, unit

__all__ = ["FixedFrameCartesian", "rigid_frame", "canonical_positions", "frame_log_jacobian"]


def rigid_frame(positions: Tensor, frame: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    r"""Origin and proper rotation of the canonical frame of ``positions``.

    .. math:: e_1 = \frac{x_{a_1} - x_{a_0}}{|\cdot|}, \quad
              e_2 = \frac{v - (v \cdot e_1) e_1}{|\cdot|}\ (v = x_{a_2} - x_{a_0}), \quad
              e_3 = e_1 \times e_2,

    and ``R`` has the rows ``e_1, e_2, e_3`` (``det R = +1``), so that the canonical positions
    are ``c_i = R (x_i - x_{a_0})``.

    Arguments:
        positions: ``(*batch, N, 3)``.
        frame: the frame atoms ``(a0, a1, a2)``.

    Returns:
        ``(origin, rotation)`` of shapes ``(*batch, 3)`` and ``(*batch, 3, 3)``.

    Example:
        >>> x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 3.0, 1.0], [0.0, 1.0, 1.0]])
        >>> origin, rotation = rigid_frame(x, (0, 1, 2))
        >>> origin.tolist(), (rotation + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0
        ([1.0, 1.0, 1.0], [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    """
    a0, a1, a2 = frame
    origin = positions[..., a0, :]
    e1 = unit(positions[..., a1, :] - origin)
    v = positions[..., a2, :] - origin
    e2 = unit(v - (v * e1).sum(-1, keepdim=True) * e1)
    e3 = torch.linalg.cross(e1, e2)
    return origin, torch.stack([e1, e2, e3], dim=-2)


def frame_log_jacobian(x: Tensor, frame: tuple[int, int, int]) -> Tensor:
    r"""``log J``, the volume of the rigid motions through configurations ``x`` (a term of
    importance weights between canonical-frame flows and MD frames).

    .. math:: \log J(x) = \log r_{01} + \log\lvert (x_{a_1} - x_{a_0}) \times
              (x_{a_2} - x_{a_0}) \rvert, \qquad r_{01} = \lvert x_{a_1} - x_{a_0} \rvert,

    the log volume of the rotations and translations through a configuration, relative to
    the Lebesgue measure of the canonical frame's free coordinates. Invariant under rigid
    motions.

    Arguments:
        x: ``(*batch, 3N)`` configurations in nm.
        frame: the frame atoms ``(a0, a1, a2)``.

    Returns:
        ``(*batch,)`` log Jacobians.

    Example:
        >>> import math
        >>> x = torch.tensor([0.0, 0, 0, 2, 0, 0, 0, 3, 0])  # r01 = 2, r02 = 3, right angle
        >>> round(frame_log_jacobian(x, (0, 1, 2)).item(), 6) == round(math.log(2**2 * 3), 6)
        True
    """
    pos = x.reshape(*x.shape[:-1], -1, 3)
    a0, a1, a2 = frame
    e1 = pos[..., a1, :] - pos[..., a0, :]
    e2 = pos[..., a2, :] - pos[..., a0, :]
    area = torch.linalg.vector_norm(torch.linalg.cross(e1, e2), dim=-1)
    return torch.log(torch.linalg.vector_norm(e1, dim=-1)) + torch.log(area)


def _fixed_mask(n_atoms: int, frame: tuple[int, int, int], like: Tensor) -> Tensor:
    """``(N, 3)`` mask, 0 on the 6 coordinates the frame fixes (a0: xyz, a1: yz, a2: z)."""
    mask = torch.ones(n_atoms, 3, dtype=like.dtype, device=like.device)
    a0, a1, a2 = frame
    mask[a0] = 0.0
    mask[a1, 1:] = 0.0
    mask[a2, 2] = 0.0
    return mask


def canonical_positions(positions: Tensor, frame: tuple[int, int, int]) -> Tensor:
    """Positions ``(*batch, N, 3)`` moved rigidly (rotation + translation) into the canonical
    frame; the 6 coordinates the frame fixes are set to exactly zero.

    Example:
        >>> x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 3.0, 1.0], [0.0, 1.0, 1.0]])
        >>> canonical_positions(x, (0, 1, 2)).tolist()
        [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    origin, rotation = rigid_frame(positions, frame)
    moved = (positions - origin.unsqueeze(-2)) @ rotation.transpose(-1, -2)
    return moved * _fixed_mask(positions.shape[-2], frame, positions)


class FixedFrameCartesian(Space):
    r"""Cartesian configurations of ``N`` atoms modulo proper rigid motions (dimension ``3N-6``).

    A point is a flat configuration ``(*batch, 3 N)`` in nm (atom-major). It stands for every
    configuration obtained from it by a rotation and a translation; its **canonical
    representative** (:meth:`projx`) has atom ``a0`` at the origin, ``a1`` on the positive x
    axis and ``a2`` in the xy-plane with ``y > 0``. Layers that produce points
    (:class:`~physics.coordinates.InternalCoordinates` forward) always produce canonical
    representatives; layers that read points accept any representative, so MD frames in an
    arbitrary frame can be handed to ``flow.log_prob`` as they are. Reflections are *not*
    divided out: a mirror image is a different point (the other enantiomer).

    The coordinates of the space are the ``3 N - 6`` free Cartesian coordinates of the
    canonical representative (:attr:`free_indices`: ``a1.x``, ``a2.x``, ``a2.y`` and all
    coordinates of the other atoms); densities are with respect to their Lebesgue measure.
    :meth:`tangent_basis` returns the corresponding directions at any representative ``x``:
    the unit vectors of those coordinates turned by ``R^T`` into ``x``'s frame (at a canonical
    point, columns of the identity). Moving along them changes only the free coordinates of
    the canonical representative, so Jacobians measured in this basis are those of the free
    coordinates.

    :meth:`check_point` accepts finite configurations whose frame atoms define a frame (``a0``,
    ``a1``, ``a2`` not collinear: ``sin(angle a1-a0-a2) > 100 eps``); :meth:`is_canonical`
    tells whether a configuration already is its canonical representative.

    Arguments:
        n_atoms: ``N >= 3``.
        frame: the frame atoms ``(a0, a1, a2)``, distinct, in ``[0, N)``.

    References:
        F. Noe, S. Olsson, J. Koehler, H. Wu, "Boltzmann generators", Science 365 (2019),
        arXiv:1812.01729 (internal coordinates with the rigid motions removed).

    Example:
        >>> space = FixedFrameCartesian(4, frame=(0, 1, 2))
        >>> space.event_shape, space.dim, space.free_indices[:4]
        ((12,), 6, (3, 6, 7, 9))
        >>> x = space.random((2,), generator=torch.Generator().manual_seed(0))
        >>> turn = torch.tensor([[0.0, -1.0, 0.3], [1.0, 0.0, 0.2], [-0.3, -0.2, 0.0]])
        >>> rotated = (x.reshape(2, 4, 3) @ torch.linalg.matrix_exp(turn)).reshape(2, 12)
        >>> bool(space.is_canonical(x).all()), bool(space.is_canonical(rotated).any())
        (True, False)
        >>> torch.allclose(space.projx(rotated + 1.0), x, atol=1e-5)
        True
    """

    def __init__(self, n_atoms: int, frame: Sequence[int] = (0, 1, 2)):
        who = type(self).__name__
        if isinstance(n_atoms, bool) or int(n_atoms) != n_atoms or n_atoms < 3:
            raise InvalidInput(f"{who}: expected an integer number of atoms >= 3, got {n_atoms!r}")
        frame = tuple(int(a) for a in frame)
        if len(frame) != 3 or len(set(frame)) != 3 or not all(0 <= a < n_atoms for a in frame):
            raise InvalidInput(
                f"{who}: expected three distinct frame atoms in [0, {n_atoms}), got {frame}"
            )
        self.n_atoms = int(n_atoms)
        self.frame: tuple[int, int, int] = frame  # type: ignore[assignment]
        self.event_shape = (3 * self.n_atoms,)
        self.dim = 3 * self.n_atoms - 6
        a0, a1, a2 = frame
        fixed = {3 * a0, 3 * a0 + 1, 3 * a0 + 2, 3 * a1 + 1, 3 * a1 + 2, 3 * a2 + 2}
        #: Flat indices of the ``3 N - 6`` free coordinates of a canonical configuration.
        self.free_indices = tuple(i for i in range(3 * self.n_atoms) if i not in fixed)

    def _key(self) -> tuple:
        return ("FixedFrameCartesian", self.n_atoms, self.frame)

    def __repr__(self) -> str:
        return f"FixedFrameCartesian({self.n_atoms}, frame={self.frame})"

    # ----------------------------------------------------------------- points
    def positions(self, x: Tensor) -> Tensor:
        """Flat configurations ``(*batch, 3N)`` viewed as positions ``(*batch, N, 3)``."""
        return x.reshape(*x.shape[:-1], self.n_atoms, 3)

    def frame_sin(self, x: Tensor) -> Tensor:
        """``sin`` of the angle ``a1-a0-a2`` (0 when the frame atoms are collinear)."""
        a0, a1, a2 = (torch.tensor([a], device=x.device) for a in self.frame)
        return sin_angles(self.positions(x), a1, a0, a2).squeeze(-1)

    def contains(self, x: Tensor) -> Tensor:
        finite = torch.isfinite(x).all(-1)
        return finite & (torch.nan_to_num(self.frame_sin(x)) > self.tolerance(x.dtype))

    def check_point(self, x: Tensor, who: str = "") -> None:
        super().check_point(x, who)
        inside = self.contains(x)
        if not bool(inside.all()):
            prefix = f"{who}: " if who else ""
            a0, a1, a2 = self.frame
            worst = self.frame_sin(x)[~inside].min().item()
            raise InvalidInput(
                f"{prefix}expected configurations of {self!r} whose frame atoms {a0}, {a1}, "
                f"{a2} are not collinear (they fix the reference frame), got "
                f"{int((~inside).sum())} configuration(s) with sin(angle {a1}-{a0}-{a2}) <= "
                f"{self.tolerance(x.dtype):.1e} (smallest {worst:.3g})"
            )

    def projx(self, x: Tensor) -> Tensor:
        """The canonical representative (rigid alignment: translate ``a0`` to the origin,
        rotate ``a1`` onto the positive x axis and ``a2`` into the upper xy half-plane)."""
        return canonical_positions(self.positions(x), self.frame).reshape(x.shape)

    def is_canonical(self, x: Tensor) -> Tensor:
        """Whether each configuration is its canonical representative (boolean, batch shape),
        within ``100 eps`` times the largest coordinate."""
        scale = x.detach().abs().amax(-1).clamp_min(1.0)
        tol = self.tolerance(x.dtype) * scale
        pos = self.positions(x)
        a0, a1, a2 = self.frame
        fixed = (1.0 - _fixed_mask(self.n_atoms, self.frame, x)).reshape(-1).bool()
        zeros = x[..., fixed].abs().amax(-1) <= tol
        return zeros & (pos[..., a1, 0] > 0) & (pos[..., a2, 1] > 0) & self.contains(x)

    def to_free(self, x: Tensor) -> Tensor:
        """The ``3 N - 6`` free coordinates of the canonical representative ``(*batch, 3N-6)``."""
        return self.projx(x)[..., list(self.free_indices)]

    def from_free(self, u: Tensor) -> Tensor:
        """The canonical configuration ``(*batch, 3 N)`` with free coordinates ``u``."""
        out = u.new_zeros(*u.shape[:-1], 3 * self.n_atoms)
        out[..., list(self.free_indices)] = u
        return out

    def random(
        self,
        shape: tuple[int, ...] | torch.Size = (),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Canonical configurations with Gaussian positions of standard deviation 0.5 nm
        (for tests; not a physical distribution)."""
        x = 0.5 * torch.randn(*shape, 3 * self.n_atoms, dtype=dtype, generator=generator)
        return self.projx(x.to(device))

    # ----------------------------------------------------------------- tangent spaces
    def tangent_basis(self, x: Tensor) -> Tensor:
        _, rotation = rigid_frame(self.positions(x), self.frame)
        free = torch.tensor(self.free_indices, device=x.device)
        atom, axis = free // 3, free % 3
        rows = 3 * atom.unsqueeze(-1) + torch.arange(3, device=x.device)  # (3N-6, 3)
        cols = torch.arange(self.dim, device=x.device).unsqueeze(-1)
        basis = x.new_zeros(*self.batch_shape(x), 3 * self.n_atoms, self.dim)
        basis[..., rows, cols] = rotation[..., axis, :]
        return basis

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        basis = self.tangent_basis(x)
        return (basis @ (basis.transpose(-1, -2) @ u.unsqueeze(-1))).squeeze(-1)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        step = self.to_free(y) - self.to_free(x)
        return (self.tangent_basis(x) @ step.unsqueeze(-1)).squeeze(-1)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.linalg.vector_norm(self.projx(y) - self.projx(x), dim=-1)

    def expmap_log_volume(self, x: Tensor, u: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(x.shape, u.shape)[:-1]
        return torch.zeros(shape, dtype=u.dtype, device=u.device)
