"""Internal coordinates of molecules (physics.coordinates): Z-matrices, the NeRF transform, its
exact logdet, mdtraj's dihedrals, round trips, singular configurations and chirality."""

from __future__ import annotations

import math

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch

from manifoldflows import Chain, Flow, Inverse
from manifoldflows.errors import InvalidInput
from manifoldflows.functional.circle import wrap
from manifoldflows.presets import build_flow
from manifoldflows.spaces import Interval, Product, Torus
from manifoldflows.testing import check_transform, tangent_jacobian_logdet
from physics.coordinates import (
    FixedFrameCartesian,
    InternalCoordinates,
    InternalStandardization,
    ZMatrix,
    chiral_centers,
    filter_l_form,
    is_l_form,
    l_form_fraction,
    signed_volumes,
)
from physics.systems import PHI_ATOMS, PSI_ATOMS, alanine_dipeptide

N_ATOMS = 22


def random_rotations(shape, generator, dtype=torch.float64):
    a = torch.randn(*shape, 3, 3, generator=generator, dtype=dtype)
    return torch.linalg.matrix_exp(a - a.transpose(-1, -2))


def move_rigidly(x, generator):
    """Rotate and translate flat configurations (*batch, 3N) at random."""
    shape = x.shape[:-1]
    rotation = random_rotations(shape, generator, x.dtype)
    shift = torch.randn(*shape, 1, 3, generator=generator, dtype=x.dtype)
    pos = x.reshape(*shape, -1, 3) @ rotation.transpose(-1, -2) + shift
    return pos.reshape(x.shape)


@pytest.fixture(scope="module")
def ala2():
    return alanine_dipeptide("vacuum")


@pytest.fixture(scope="module")
def ic(ala2):
    return InternalCoordinates(ala2)


@pytest.fixture(scope="module")
def md_frames(ala2):
    """3 ps of Langevin MD at 300 K (1 fs steps, friction 1/ps, Reference platform), a frame
    every 0.1 ps: float64 positions (30, 22, 3) in nm, in OpenMM's (arbitrary) frame."""
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picoseconds
    )
    integrator.setRandomNumberSeed(2024)
    context = openmm.Context(
        ala2.system, integrator, openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(ala2.minimized_positions())
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2024)
    frames = []
    for _ in range(30):
        integrator.step(100)
        state = context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.asarray(frames)


@pytest.fixture(scope="module")
def reference_z(ic, ala2):
    return ic.inverse(torch.as_tensor(ala2.positions.reshape(-1), dtype=torch.float64))[0]


def near_reference_internal(ic, z0, scale=0.02, seed=0):
    """Checker inputs on the internal side: the PDB geometry plus small noise."""
    gen = torch.Generator().manual_seed(seed)

    def sample(shape):
        z = z0 + scale * torch.randn(*shape, z0.shape[-1], generator=gen, dtype=z0.dtype)
        bonds, angles, torsions = ic.split(z)
        return torch.cat([bonds, angles, wrap(torsions)], -1)

    return sample


def near_reference_cartesian(x0, scale=0.01, seed=0):
    """Checker inputs on the Cartesian side: PDB positions + noise, in a random frame."""
    gen = torch.Generator().manual_seed(seed)

    def sample(shape):
        noise = torch.randn(*shape, x0.shape[-1], generator=gen, dtype=x0.dtype)
        return move_rigidly(x0 + scale * noise, gen)

    return sample


# ---------------------------------------------------------------------------------- structure
def test_dimensions_and_spaces(ic):
    assert ic.domain.dim == 3 * N_ATOMS - 6 == 60
    assert ic.domain == Product(Interval(0, math.inf, 21), Interval(0, math.pi, 20), Torus(19))
    assert ic.codomain == FixedFrameCartesian(N_ATOMS, frame=ic.frame)
    assert ic.codomain.event_shape == (66,) and ic.codomain.dim == 60
    assert (ic.n_bonds, ic.n_angles, ic.n_torsions) == (21, 20, 19)


def test_zmatrix_from_bond_graph(ala2, ic):
    z = ic.zmatrix
    assert sorted(row[0] for row in z.rows) == list(range(N_ATOMS))
    # phi and psi are torsion coordinates, and equal mdtraj's dihedrals of those atoms
    assert ic.torsion_index(PHI_ATOMS) == ic.torsion_index(PHI_ATOMS[::-1])
    assert set(z.torsion_atoms[ic.torsion_index(PHI_ATOMS)]) == set(PHI_ATOMS)
    assert set(z.torsion_atoms[ic.torsion_index(PSI_ATOMS)]) == set(PSI_ATOMS)
    # heavy frame, hydrogens bonded to heavy atoms, few vectorised placement steps
    hydrogen = {a.index for a in ala2.mdtraj_topology.atoms if a.element.symbol == "H"}
    assert not set(ic.frame) & hydrogen
    assert all(row[1] not in hydrogen for row in z.rows if row[0] in hydrogen)
    assert 1 + len(z.layers) <= 8
    # bond partners are real bonds
    bonds = {frozenset((b[0].index, b[1].index)) for b in ala2.mdtraj_topology.bonds}
    assert all(frozenset(pair) in bonds for pair in z.bond_atoms)
    # deterministic, and the same from every kind of topology
    assert ZMatrix.from_topology(ala2.topology) == z
    assert ZMatrix.from_topology(ala2.mdtraj_topology) == z
    with pytest.raises(InvalidInput, match=r"\(4, 6, 8, 15\) is not a torsion coordinate"):
        ic.torsion_index((4, 6, 8, 15))


def make_topology(elements, bonds):
    top = mdtraj.Topology()
    residue = top.add_residue("MOL", top.add_chain())
    atoms = [
        top.add_atom(f"{e}{i}", mdtraj.element.get_by_symbol(e), residue)
        for i, e in enumerate(elements)
    ]
    for a, b in bonds:
        top.add_bond(atoms[a], atoms[b])
    return top


RING = (
    ["C"] * 6 + ["H"] * 6,
    [(i, (i + 1) % 6) for i in range(6)] + [(i, i + 6) for i in range(6)],
)
STAR = (["H", "C", "C", "C", "C", "C"], [(1, 0), (1, 2), (1, 3), (1, 4), (1, 5)])
METHANE = (["H", "H", "C", "H", "H"], [(2, 0), (2, 1), (2, 3), (2, 4)])
WATER = (["H", "O", "H"], [(0, 1), (1, 2)])


@pytest.mark.parametrize(
    "molecule", [RING, STAR, METHANE, WATER], ids=["ring", "star", "ch4", "h2o"]
)
def test_zmatrix_from_other_bond_graphs(molecule):
    elements, bonds = molecule
    top = make_topology(elements, bonds)
    ic = InternalCoordinates(top)
    n = len(elements)
    assert sorted(row[0] for row in ic.zmatrix.rows) == list(range(n))
    graph = {frozenset(b) for b in bonds}
    assert all(frozenset(pair) in graph for pair in ic.zmatrix.bond_atoms)
    hydrogen = {i for i, e in enumerate(elements) if e == "H"}
    if len(hydrogen) < n - 1:
        assert not set(ic.frame[:2]) & hydrogen
    gen = torch.Generator().manual_seed(0)
    z = torch.cat(
        [
            0.1 + 0.05 * torch.rand(n - 1, generator=gen, dtype=torch.float64),
            1.7 + 0.4 * torch.rand(n - 2, generator=gen, dtype=torch.float64),
            wrap(6.3 * torch.rand(n - 3, generator=gen, dtype=torch.float64)),
        ]
    )
    x, logdet = ic(z)
    back, logdet_inv = ic.inverse(x)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(logdet, -logdet_inv)


def test_disconnected_graph_is_refused(ala2):
    top = mdtraj.Topology()
    chain = top.add_chain()
    for residue in ala2.mdtraj_topology.residues:
        new = top.add_residue(residue.name, chain)
        for atom in residue.atoms:
            top.add_atom(atom.name, atom.element, new)
    atoms = list(top.atoms)
    for a, b in ala2.mdtraj_topology.bonds:
        if 8 not in (a.index, b.index):  # cut the alpha carbon out
            top.add_bond(atoms[a.index], atoms[b.index])
    with pytest.raises(InvalidInput, match=r"not connected: atom\(s\) 8, 9, 10, .* cannot be"):
        ZMatrix.from_topology(top)


# ---------------------------------------------------------------------------------- checker
def test_generic_checker(ic, ala2, reference_z, dtype, device):
    check_transform(ic, dtype=dtype, device=device, inputs=near_reference_internal(ic, reference_z))
    x0 = torch.as_tensor(ala2.positions.reshape(-1), dtype=torch.float64)
    check_transform(Inverse(ic), dtype=dtype, device=device, inputs=near_reference_cartesian(x0))


def test_checker_with_standardization(ic, md_frames, dtype, device):
    std = ic.standardization(md_frames)
    check_transform(std, dtype=dtype, device=device, perturb=0.0, jacobian_points=1)
    chain = Chain(std, ic)
    gen = torch.Generator().manual_seed(3)

    def inputs(shape):
        z = torch.randn(*shape, 60, generator=gen, dtype=torch.float64)
        return torch.cat([z[..., :41], wrap(3.0 * z[..., 41:])], -1)

    check_transform(chain, dtype=dtype, device=device, perturb=0.0, inputs=inputs)


def test_logdet_is_the_free_coordinate_volume(ic, reference_z):
    """log|det| = log r_a2 + sum_i (2 log r_i + log sin theta_i), and equals autograd's."""
    z = near_reference_internal(ic, reference_z, seed=5)((2,))
    _, logdet = ic(z)
    bonds, angles, _ = ic.split(z)
    expected = (
        bonds[:, 1].log() + 2 * bonds[:, 2:].log().sum(-1) + angles[:, 1:].sin().log().sum(-1)
    )
    torch.testing.assert_close(logdet, expected)
    for i in range(2):
        torch.testing.assert_close(logdet[i], tangent_jacobian_logdet(ic, z[i]))


# ---------------------------------------------------------------------------------- MD frames
def test_internal_coordinates_match_mdtraj(ala2, ic, md_frames):
    traj = mdtraj.Trajectory(md_frames, ala2.mdtraj_topology)
    z, _ = ic.inverse(torch.as_tensor(md_frames.reshape(-1, 66)))
    bonds, angles, torsions = (t.numpy() for t in ic.split(z))
    zm = ic.zmatrix
    ref_torsions = mdtraj.compute_dihedrals(traj, zm.torsion_atoms)
    gap = np.abs((torsions - ref_torsions + np.pi) % (2 * np.pi) - np.pi)
    assert gap.max() < 2e-5, gap.max()
    np.testing.assert_allclose(bonds, mdtraj.compute_distances(traj, zm.bond_atoms), atol=1e-6)
    np.testing.assert_allclose(angles, mdtraj.compute_angles(traj, zm.angle_atoms), atol=2e-5)
    assert torsions.min() >= -math.pi and torsions.max() < math.pi
    phi = torsions[:, ic.torsion_index(PHI_ATOMS)]
    indices, reference = mdtraj.compute_phi(traj)
    assert tuple(indices[0]) == PHI_ATOMS
    gap_phi = np.abs((phi - reference[:, 0] + np.pi) % (2 * np.pi) - np.pi)
    assert gap_phi.max() < 2e-5


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_round_trip_of_md_frames(ic, md_frames, dtype, tol):
    x = torch.as_tensor(md_frames.reshape(-1, 66), dtype=dtype)  # OpenMM's frame
    z, logdet_inv = ic.inverse(x)
    y, logdet = ic(z)
    assert y.dtype == z.dtype == dtype
    target = ic.codomain.projx(x)
    assert (y - target).abs().max() < tol
    assert bool(ic.codomain.is_canonical(y).all()) and not bool(ic.codomain.is_canonical(x).any())
    assert (logdet + logdet_inv).abs().max() < 1e3 * torch.finfo(dtype).eps * logdet.abs().max()


def test_inverse_ignores_rigid_motions(ic, md_frames):
    x = torch.as_tensor(md_frames.reshape(-1, 66))
    moved = move_rigidly(x, torch.Generator().manual_seed(1))
    z, logdet = ic.inverse(x)
    z2, logdet2 = ic.inverse(moved)
    torch.testing.assert_close(z2, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet2, logdet)
    # the canonical frame: a0 at the origin, a1 on +x, a2 in the upper xy half-plane
    pos = ic.codomain.projx(moved).reshape(-1, N_ATOMS, 3)
    a0, a1, a2 = ic.frame
    assert pos[:, a0].abs().max() == 0 and pos[:, a1, 1:].abs().max() == 0
    assert pos[:, a2, 2].abs().max() == 0 and bool((pos[:, a1, 0] > 0).all())
    assert bool((pos[:, a2, 1] > 0).all())


def test_batch_shapes(ic, reference_z):
    sample = near_reference_internal(ic, reference_z, seed=2)
    for shape in [(), (5,), (2, 3)]:
        z = sample(shape)
        x, logdet = ic(z)
        assert x.shape == (*shape, 66) and logdet.shape == shape
        z2, logdet2 = ic.inverse(x)
        assert z2.shape == (*shape, 60) and logdet2.shape == shape
        torch.testing.assert_close(z2, z)


def test_dtype_and_device_follow_the_input(ic, reference_z, device):
    layer = InternalCoordinates(zmatrix=ic.zmatrix).to(device)
    for dtype in (torch.float32, torch.float64):
        z = reference_z.to(device=device, dtype=dtype)
        x, logdet = layer(z)
        assert x.dtype == logdet.dtype == dtype and x.device.type == torch.device(device).type


# ---------------------------------------------------------------------------------- Z-matrices
BUTANE_LIKE = [(0,), (1, 0), (2, 1, 0), (3, 2, 1, 0), (4, 1, 0, 2)]


def test_explicit_zmatrix():
    ic = InternalCoordinates(zmatrix=BUTANE_LIKE)
    assert ic.domain.dim == 9 and ic.frame == (0, 1, 2)
    assert ic.torsion_index((0, 1, 2, 3)) == 0 and ic.torsion_index((2, 0, 1, 4)) == 1
    z = torch.tensor([0.15, 0.15, 0.15, 0.11, 1.9, 1.9, 1.9, 1.0, -2.0], dtype=torch.float64)
    x, logdet = ic(z)
    back, logdet_inv = ic.inverse(x)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(logdet, -logdet_inv)
    check_transform(ic, inputs=lambda shape: z + 0.01 * torch.randn(*shape, 9, dtype=z.dtype))
    # padded rows and ZMatrix objects are accepted alike
    padded = [(0, -1, -1, -1), (1, 0, -1, -1), (2, 1, 0, -1)] + BUTANE_LIKE[3:]
    assert InternalCoordinates(zmatrix=padded).zmatrix == ic.zmatrix
    assert InternalCoordinates(zmatrix=ZMatrix(BUTANE_LIKE)).zmatrix == ic.zmatrix


@pytest.mark.parametrize(
    "rows, z",
    [
        # three atoms (water-like): no torsion factor
        ([(0,), (1, 0), (2, 0, 1)], [0.096, 0.096, 1.82]),
        # the third frame atom bonded to a0 (methane-like branching at the root)
        (
            [(0,), (1, 0), (2, 0, 1), (3, 0, 1, 2), (4, 0, 1, 2)],
            [0.109, 0.109, 0.109, 0.109, 1.91, 1.91, 1.91, 2.1, -2.1],
        ),
    ],
)
def test_small_explicit_zmatrices(rows, z):
    ic = InternalCoordinates(zmatrix=rows)
    z = torch.tensor(z, dtype=torch.float64)
    assert ic.domain.dim == len(z) == 3 * len(rows) - 6
    check_transform(ic, inputs=lambda shape: z + 0.005 * torch.randn(*shape, len(z), dtype=z.dtype))
    x, logdet = ic(z)
    back, logdet_inv = ic.inverse(move_rigidly(x, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(logdet, -logdet_inv)


def test_explicit_zmatrix_with_topology(ala2, ic):
    explicit = InternalCoordinates(ala2, zmatrix=ic.zmatrix.rows)
    assert explicit.zmatrix == ic.zmatrix
    with pytest.raises(InvalidInput, match="the Z-matrix has 5 atoms but the topology has 22"):
        InternalCoordinates(ala2, zmatrix=ZMatrix(BUTANE_LIKE))


@pytest.mark.parametrize(
    "rows, n_atoms, message",
    [
        (BUTANE_LIKE[:4], 5, r"atom 4 missing"),
        (BUTANE_LIKE + [(3, 2, 1, 0)], None, r"atom 3 duplicated"),
        ([(0,), (1, 0), (2, 1, 0), (2, 1, 0, 3)], 6, r"atoms 3, 4, 5 missing, atom 2 duplicated"),
        ([(0,), (1, 0), (2, 1, 0), (3, 2, 1, 4), (4, 1, 0, 2)], None, "partner 4 is not placed"),
        ([(0,), (1, 0), (2, 1, 0), (3, 2, 2, 0)], None, "repeats an atom"),
        ([(0,), (1, 0), (2, 1, 3), (3, 2, 1, 0)], None, "partner 3 is not placed"),
        ([(0,), (1, 0), (2, 0), (3, 2, 1, 0)], None, "row 2 must name the atom and 2 partner"),
        ([(0,), (1, 0), (2, 1, 0), (3, 2, 1, 7)], 4, r"must lie in \[0, 4\), got 7"),
        ([(0,), (1, 0)], None, "at least 3 rows"),
        ([(0,), (1, 0), (2, 1, 0), (3, 2, 1, -1)], None, "row 3 must name the atom and 3"),
    ],
)
def test_bad_zmatrix(rows, n_atoms, message):
    with pytest.raises(InvalidInput, match=message):
        ZMatrix(rows, n_atoms=n_atoms)


# ---------------------------------------------------------------------------------- singular
def test_collinear_configurations_raise_naming_the_atoms(ic, ala2):
    pos = torch.as_tensor(ala2.positions, dtype=torch.float64).clone()
    i, j, k, _ = ic.zmatrix.torsion_atoms[ic.torsion_index(PSI_ATOMS)]  # (16, 14, 8, 6)
    # put atom i on the line through k and j: angle (i, j, k) = pi
    direction = (pos[j] - pos[k]) / (pos[j] - pos[k]).norm()
    pos[i] = pos[j] + 0.13 * direction
    x = torch.stack([torch.as_tensor(ala2.positions.reshape(-1)), pos.reshape(-1)])
    with pytest.raises(
        InvalidInput,
        match=rf"inverse: singular .* index \(1,\): atoms {i}, {j}, {k} are collinear",
    ):
        ic.inverse(x)
    # coincident atoms
    pos2 = torch.as_tensor(ala2.positions, dtype=torch.float64).clone()
    pos2[9] = pos2[8]
    with pytest.raises(InvalidInput, match="atoms 9 and 8 coincide"):
        ic.inverse(pos2.reshape(-1))


def test_singular_internal_coordinates_raise(ic, reference_z):
    for angle in (0.0, math.pi):
        z = reference_z.clone()
        z[ic.n_bonds + 5] = angle
        with pytest.raises(InvalidInput, match=r"forward: singular .*collinear"):
            ic(z)
    z = reference_z.clone()
    z[3] = 0.0
    with pytest.raises(InvalidInput, match="coincide"):
        ic(z)
    # inside a chain the layer still names itself
    std = ic.standardization(ic(reference_z)[0], bond_scale=1.0, angle_scale=1.0).double()
    u = torch.zeros(60, dtype=torch.float64)
    u[41:] = reference_z[41:]
    u[21 + 5] = -std.shift[21 + 5]  # that angle -> exactly 0
    with pytest.raises(InvalidInput, match="InternalCoordinates.forward: singular"):
        Chain(std, ic)(u)


def test_nearly_collinear_configurations_stay_finite(ic, ala2):
    pos = torch.as_tensor(ala2.positions, dtype=torch.float64).clone()
    i, j, k = 16, 14, 8
    direction = (pos[j] - pos[k]) / (pos[j] - pos[k]).norm()
    normal = torch.linalg.cross(direction, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    pos[i] = pos[j] + 0.13 * (direction + 1e-4 * normal / normal.norm())
    x = pos.reshape(-1).requires_grad_(True)
    z, logdet = ic.inverse(x)
    (z.sum() + logdet).backward()
    assert torch.isfinite(z).all() and torch.isfinite(logdet) and torch.isfinite(x.grad).all()


def test_collinear_frame_atoms_are_refused(ic, ala2):
    pos = torch.as_tensor(ala2.positions, dtype=torch.float64).clone()
    a0, a1, a2 = ic.frame
    pos[a2] = pos[a0] + 2.0 * (pos[a1] - pos[a0])
    with pytest.raises(InvalidInput, match=rf"frame atoms {a0}, {a1}, {a2} are not collinear"):
        ic.inverse(pos.reshape(-1))


def test_out_of_domain_values_inside_a_chain_stay_finite(ic, md_frames):
    """A preceding layer may push an angle past pi: NeRF mirrors, the logdet uses |sin|."""
    std = ic.standardization(md_frames).double()
    u = torch.zeros(60, dtype=torch.float64)
    u[21 + 3] = (math.pi + 0.1 - float(std.shift[21 + 3])) / float(std.scale[21 + 3])
    x, logdet = Chain(std, ic)(u)
    assert torch.isfinite(x).all() and torch.isfinite(logdet)


def test_wrong_atom_count(ic):
    with pytest.raises(
        InvalidInput, match=r"trailing shape \(66,\), got a tensor of shape \(5, 63\)"
    ):
        ic.inverse(torch.zeros(5, 63))
    with pytest.raises(
        InvalidInput, match=r"trailing shape \(60,\), got a tensor of shape \(57,\)"
    ):
        ic(torch.ones(57))


# ---------------------------------------------------------------------------------- frame space
def test_fixed_frame_space(ic, md_frames):
    space = ic.codomain
    x = torch.as_tensor(md_frames.reshape(-1, 66))
    c = space.projx(x)
    torch.testing.assert_close(space.projx(c), c, atol=1e-12, rtol=0)
    assert bool(space.is_canonical(c).all())
    basis = space.tangent_basis(x[:2])
    eye = torch.eye(60, dtype=x.dtype).expand(2, 60, 60)
    torch.testing.assert_close(basis.transpose(-1, -2) @ basis, eye)
    torch.testing.assert_close(space.tangent_basis(c[:1])[0][list(space.free_indices)], eye[0])
    torch.testing.assert_close(space.from_free(space.to_free(x)), c)
    assert space.dist(x, move_rigidly(x, torch.Generator().manual_seed(0))).max() < 1e-10
    with pytest.raises(InvalidInput, match="expected three distinct frame atoms"):
        FixedFrameCartesian(4, frame=(0, 1, 1))


# ---------------------------------------------------------------------------------- standardization
def test_standardization_from_data(ic, md_frames):
    std = ic.standardization(md_frames)
    assert isinstance(std, InternalStandardization) and std.codomain == ic.domain
    z = Chain(std, ic).inverse(torch.as_tensor(md_frames.reshape(-1, 66), dtype=torch.float32))[0]
    standardized = z[:, :41]
    assert standardized.mean(0).abs().max() < 1e-3
    torch.testing.assert_close(standardized.std(0), torch.ones(41), atol=1e-3, rtol=0)
    _, logdet = std(torch.zeros(60))
    torch.testing.assert_close(logdet, std.scale.log().sum())


def test_standardization_from_one_structure(ic, ala2):
    minimized = ala2.minimized_positions()
    with pytest.raises(InvalidInput, match="one reference configuration has no spread"):
        ic.standardization(minimized)
    std = ic.standardization(minimized, bond_scale=0.005, angle_scale=0.05)
    assert torch.allclose(std.scale[:21], torch.tensor(0.005)) and torch.allclose(
        std.scale[21:], torch.tensor(0.05)
    )
    with pytest.raises(InvalidInput, match="expected configurations of shape"):
        ic.standardization(np.zeros((21, 3)))


def test_boltzmann_generator_flow(ic, md_frames):
    """Flow(base, Chain(flow layers, standardization, ic)): Cartesian samples, exact density."""
    std = ic.standardization(md_frames)
    inner = build_flow(std.domain, "spline", layers=2, hidden=(16,), bins=4)
    flow = Flow(inner.base, Chain(*inner.transform, std, ic))
    x, log_q = flow.sample_and_log_prob((8,))
    assert x.shape == (8, 66) and bool(ic.codomain.is_canonical(x).all())
    torch.testing.assert_close(flow.log_prob(x), log_q, atol=2e-3, rtol=0)
    # MD frames in OpenMM's frame get the density of their canonical representative
    frames = torch.as_tensor(md_frames[:4].reshape(-1, 66), dtype=torch.float32)
    torch.testing.assert_close(
        flow.log_prob(frames), flow.log_prob(ic.codomain.projx(frames)), atol=2e-3, rtol=0
    )


# ---------------------------------------------------------------------------------- chirality
def test_chirality(ala2, ic, md_frames):
    assert chiral_centers(ala2) == ((8, 6, 14, 10),)
    x = torch.as_tensor(md_frames.reshape(-1, 66))
    pdb = torch.as_tensor(ala2.positions.reshape(-1))
    assert bool(is_l_form(pdb, ala2)) and bool(is_l_form(x, ala2).all())
    mirrored = -x
    assert not bool(is_l_form(mirrored, ala2).any())
    assert l_form_fraction(torch.cat([x, mirrored[:10]]), ala2) == pytest.approx(30 / 40)
    # invariant under rigid motions, explicit centres work like the topology
    moved = move_rigidly(x, torch.Generator().manual_seed(4))
    assert bool(is_l_form(moved, [(8, 6, 14, 10)]).all())
    # the CB torsion of the automatic Z-matrix carries the chirality: sign = -sign(V)
    both = torch.cat([x, mirrored])
    torsions = ic.split(ic.inverse(both)[0])[2]
    cb = torsions[:, ic.torsion_index((10, 8, 6, 14))]
    assert torch.equal(cb < 0, signed_volumes(both, ala2)[:, 0] > 0)
    # filtering keeps the L configurations and what goes with them
    log_w = torch.arange(40.0)
    kept, kept_w = filter_l_form(torch.cat([x, mirrored[:10]]), ala2, log_w)
    assert kept.shape == (30, 66) and torch.equal(kept_w, log_w[:30])
    with pytest.raises(InvalidInput, match="expected tensors with the batch size 40"):
        filter_l_form(torch.cat([x, mirrored[:10]]), ala2, log_w[:3])
