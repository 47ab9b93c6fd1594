r"""Internal coordinates and chirality for molecules (Boltzmann generators in (r, theta, phi)).

* :class:`InternalCoordinates`: a :class:`~manifoldflows.core.Transform` from internal
  coordinates ``Product(bonds, angles, torsions)`` (``3 N - 6`` of them) to Cartesian
  configurations (``forward``, the sampling direction; ``inverse`` goes back and accepts any
  frame), with the exact ``log|det|`` (``r^2 sin theta`` per atom), NeRF placement vectorised
  over Z-matrix layers, and torsions equal to mdtraj's dihedrals in ``[-pi, pi)``.
* :class:`FixedFrameCartesian`: its codomain, the configurations modulo rigid motions, with
  the canonical frame of three frame atoms (:func:`rigid_frame`, :func:`canonical_positions`
  keep the frame logic in one place).
* :class:`ZMatrix`: explicit rows or built from a bond graph (phi/psi of alanine dipeptide
  are torsion coordinates).
* :class:`InternalStandardization`: the affine whitening of bonds and angles placed before
  the internal coordinates in a chain (:meth:`InternalCoordinates.standardization`).
* Chirality (:mod:`physics.coordinates.chirality`): :func:`is_l_form`,
  :func:`l_form_fraction`, :func:`filter_l_form` - D-form samples are detected and filtered,
  not excluded by construction.

A Boltzmann generator for alanine dipeptide in internal coordinates::

    ic = InternalCoordinates(ala2)
    std = ic.standardization(md_frames)                  # or one structure + scales
    flow = build_flow(std.domain, "spline")              # any flow on R x R x torus
    bg = Flow(flow.base, Chain(*flow.transform, std, ic))   # samples: (*, 66) nm

Example:
    >>> from physics.systems import alanine_dipeptide
    >>> ala2 = alanine_dipeptide("vacuum")
    >>> ic = InternalCoordinates(ala2)
    >>> z, _ = ic.inverse(ala2.configuration(torch.float64))
    >>> bonds, angles, torsions = ic.split(z)
    >>> z.shape, round(float(torsions[ic.torsion_index((10, 8, 6, 14))]), 4)  # CB: L form
    (torch.Size([60]), -2.0943)
    >>> l_form_fraction(ic(z)[0], ala2), l_form_fraction(-ic(z)[0], ala2)
    (1.0, 0.0)
"""

from .chirality import chiral_centers, filter_l_form, is_l_form, l_form_fraction, signed_volumes
from .frame import FixedFrameCartesian, canonical_positions, frame_log_jacobian, rigid_frame
from .internal import InternalCoordinates, InternalStandardization, internal_space
from .zmatrix import ZMatrix

__all__ = [
    "InternalCoordinates",
    "InternalStandardization",
    "FixedFrameCartesian",
    "ZMatrix",
    "internal_space",
    "rigid_frame",
    "canonical_positions",
    "frame_log_jacobian",
    "chiral_centers",
    "signed_volumes",
    "is_l_form",
    "l_form_fraction",
    "filter_l_form",
]
