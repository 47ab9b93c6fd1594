"""Boltzmann generators for alanine dipeptide: the builder, its files, and every training method
on both energy backends (small flows and few steps: the tests check behaviour, not quality)."""

from __future__ import annotations

import copy
import math

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

from manifoldflows.errors import InvalidInput
from manifoldflows.functional.circle import wrap
from manifoldflows.testing import check_transform, perturb_parameters
from manifoldflows.training import load_checkpoint
from physics.coordinates import FixedFrameCartesian
from physics.generator import (
    BoltzmannGenerator,
    MolecularFlow,
    load_generator,
    molecule_identity,
    save_generator,
)
from physics.openmm import OpenMMEnergy, TorchForceField
from physics.systems import MolecularSystem, alanine_dipeptide
from physics.systems.reference import load_reference
from physics.training import METHODS, MolecularTarget, train_generator

SMALL = dict(layers=2, hidden=(32,), bins=4)


@pytest.fixture(scope="module")
def ala2():
    return alanine_dipeptide()  # amber99sbildn, implicit solvent: the shipped reference's


@pytest.fixture(scope="module")
def frames():
    reference = load_reference()
    return torch.as_tensor(reference.frames_train[::5].reshape(-1, 66))  # 2000 frames, float32


@pytest.fixture(scope="module")
def generator(ala2, frames):
    return BoltzmannGenerator(ala2, reference=frames, **SMALL)


@pytest.fixture(scope="module")
def forcefield(ala2):
    return TorchForceField.from_openmm(ala2)


def methane() -> MolecularSystem:
    top = app.Topology()
    residue = top.addResidue("CH4", top.addChain())
    carbon = top.addAtom("C", app.Element.getBySymbol("C"), residue)
    for i in range(4):
        top.addBond(carbon, top.addAtom(f"H{i + 1}", app.Element.getBySymbol("H"), residue))
    system = openmm.System()
    for mass in (12.0, 1.0, 1.0, 1.0, 1.0):
        system.addParticle(mass)
    d = 0.063
    positions = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]], dtype=float)
    return MolecularSystem(system, top, positions, name="methane")


# ------------------------------------------------------------------------------ the builder
def test_samples_are_configurations_with_their_density(generator, forcefield):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x, log_q = generator.sample_and_log_prob((128,), generator=g)
    assert isinstance(generator, MolecularFlow)
    assert x.shape == (128, 66) and generator.space == FixedFrameCartesian(22, (1, 4, 6))
    torch.testing.assert_close(generator.log_prob(x), log_q, atol=2e-3, rtol=1e-4)
    z = generator.internal.inverse(x.double())[0]
    bonds, angles, torsions = generator.internal.split(z)
    assert 0.09 < float(bonds.min()) and float(bonds.max()) < 0.17  # nm: X-H to C-N bonds
    assert 1.5 < float(angles.min()) and float(angles.max()) < 2.4  # rad
    assert bool(((torsions >= -math.pi) & (torsions < math.pi)).all())
    assert bool(generator.is_l_form(x).all())
    energies = forcefield.energy(x)
    assert float(energies.median()) < 50.0  # kT; MD frames average about -24


def test_md_frames_have_a_finite_density_in_any_frame(generator, frames):
    x = frames[:200]
    with torch.no_grad():
        log_q = generator.log_prob(x)
    assert bool(torch.isfinite(log_q).all())
    turn = torch.linalg.matrix_exp(
        torch.tensor([[0.0, -0.7, 0.2], [0.7, 0.0, 0.4], [-0.2, -0.4, 0.0]])
    )
    moved = (x.reshape(-1, 22, 3) @ turn.T + 1.5).reshape(-1, 66)
    with torch.no_grad():
        torch.testing.assert_close(generator.log_prob(moved), log_q, atol=1e-3, rtol=1e-4)


def test_the_density_is_that_of_fixed_frame_cartesian(generator):
    """The generic checker on the whole chain: inverse, logdet = autograd's Jacobian in the
    tangent bases of Product(R, R, T) and FixedFrameCartesian (the IC tests check the internal
    coordinates alone; here they are composed with the couplings and the standardisation)."""
    gen = torch.Generator().manual_seed(3)

    def inputs(shape):
        z = torch.randn(*shape, 60, generator=gen, dtype=torch.float64)
        return torch.cat([z[..., :41], wrap(0.3 * z[..., 41:])], -1)

    check_transform(
        generator.transform,
        inputs=inputs,
        perturb=0.05,
        batch_shapes=((), (3,)),
        jacobian_points=1,
    )


def test_builder_options_and_refusals(ala2):
    single = BoltzmannGenerator(ala2, **SMALL)  # the minimised structure, documented scales
    torch.testing.assert_close(
        single.standardization.scale[:21], torch.full((21,), 0.005), rtol=1e-6, atol=0
    )
    uniform = BoltzmannGenerator(ala2, torsion_base="uniform", **SMALL)
    x = uniform.sample((400,), generator=torch.Generator().manual_seed(0))
    assert 0.3 < float(uniform.is_l_form(x).float().mean()) < 0.7  # half of them D
    with pytest.raises(InvalidInput, match="torsion_base"):
        BoltzmannGenerator(ala2, torsion_base="normal")
    with pytest.raises(InvalidInput, match="MolecularSystem"):
        BoltzmannGenerator(ala2.system)


# ------------------------------------------------------------------------------ files
def test_checkpoint_round_trip_and_other_molecules(generator, ala2, tmp_path):
    path = save_generator(generator, tmp_path / "bg.pt")
    again = load_generator(path)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(generator.sample((5,), generator=g()), again.sample((5,), generator=g()))
    assert again.describe() == generator.describe()
    assert again.describe()["molecule"]["fingerprint"] == molecule_identity(ala2)["fingerprint"]
    # the same molecule with another force field loads (transfer), through any loader
    amber96 = BoltzmannGenerator(alanine_dipeptide("implicit", "amber96"), **SMALL)
    load_checkpoint(path, amber96)
    assert torch.equal(amber96.sample((5,), generator=g()), again.sample((5,), generator=g()))
    # another molecule: a clear error naming both
    other = BoltzmannGenerator(methane(), reference=methane().positions, layers=1, hidden=(8,))
    for load in (lambda: load_checkpoint(path, other), lambda: load_generator(path, into=other)):
        with pytest.raises(InvalidInput, match="alanine_dipeptide.*C6H12N2O2.*methane"):
            load()
    with pytest.raises(InvalidInput, match="methane.*alanine_dipeptide"):
        load_generator(save_generator(other, tmp_path / "ch4.pt"), into=copy.deepcopy(generator))
    torch.save({"model": {"weight": torch.zeros(1)}}, tmp_path / "plain.pt")
    with pytest.raises(InvalidInput, match="no Boltzmann generator"):
        load_generator(tmp_path / "plain.pt")


# ------------------------------------------------------------------------------ training
OPTIONS = {
    "ml": {},
    "reverse_kl": {},
    "mixed": {"forward_weight": 0.5},
    "annealed": {"start_temperature": 1200.0, "anneal_steps": 3},
    "fab": {"fab_levels": 2, "fab_leapfrog_steps": 2, "buffer_size": 128, "updates_per_ais": 2},
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_with_the_torch_force_field(method, generator, forcefield, frames):
    bg = copy.deepcopy(generator)
    before = [p.detach().clone() for p in bg.parameters()]
    run = train_generator(
        bg,
        method,
        energy=forcefield,
        data=frames,
        steps=6,
        batch_size=32,
        progress=False,
        rng=torch.Generator().manual_seed(0),
        **OPTIONS[method],
    )
    losses = run.history.train_loss
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, bg.parameters()))
    ess = run.record.diagnostics["ess"]
    assert 0.0 <= run.final_ess <= 1.0 and len(ess) == 6
    evaluations = run.record.energy_evaluations
    if method == "ml":
        assert evaluations[-1] == 0 and run.record.monitor_evaluations[-1] == 32  # ESS at step 0
        assert losses[-1] < losses[0]
    elif method == "fab":  # AIS fills the buffer (4 x 32) before the first step, then every 2nd
        per_run = 32 * (1 + 2 * (1 + 2))
        assert evaluations == [4 * per_run] * 2 + [5 * per_run] * 2 + [6 * per_run] * 2
    else:
        assert evaluations == [32 * (k + 1) for k in range(6)]
    if method == "annealed":
        assert run.record.diagnostics["temperature"][:4] == pytest.approx(
            [4.0, 4 ** (2 / 3), 4 ** (1 / 3), 1.0]
        )
    assert run.wall_time > 0 and run.record.wall_time[-1] <= run.wall_time + 1.0
    assert method in run.summary()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_takes_a_step_with_openmm(method, generator, ala2, frames):
    energy = OpenMMEnergy(ala2)  # in-process
    bg = copy.deepcopy(generator)
    run = train_generator(
        bg,
        method,
        energy=energy,
        data=frames,
        steps=1,
        batch_size=16,
        progress=False,
        rng=torch.Generator().manual_seed(1),
        **OPTIONS[method],
    )
    assert math.isfinite(run.history.train_loss[0])
    assert energy.total_evaluated >= run.energy_evaluations


def test_bad_samples_never_nan_the_training(generator, forcefield):
    """A flow with perturbed weights proposes clashing atoms (energies up to 1e10 kT and more):
    the lin-log cut keeps every energy finite and the loss and gradients too."""
    bg = copy.deepcopy(generator)
    perturb_parameters(bg, 2.0, torch.Generator().manual_seed(0))
    x = bg.sample((256,), generator=torch.Generator().manual_seed(0))
    raw = forcefield.energy(x)
    assert float(raw.max()) > 1e6
    target = MolecularTarget(forcefield, bg)
    u = target.energy(x)
    assert bool((u[torch.isfinite(u)] <= 1e5).all())
    for method in ("reverse_kl", "annealed", "fab"):
        run = train_generator(
            copy.deepcopy(bg),
            method,
            energy=forcefield,
            steps=2,
            batch_size=64,
            progress=False,
            rng=torch.Generator().manual_seed(2),
            **OPTIONS[method],
        )
        assert all(math.isfinite(v) for v in run.history.train_loss)


def test_d_form_samples_are_filtered(ala2, forcefield):
    bg = BoltzmannGenerator(ala2, torsion_base="uniform", **SMALL)  # half the samples are D
    target = MolecularTarget(forcefield, bg)
    x = torch.stack([ala2.configuration(), -ala2.configuration()])  # L and its mirror image
    assert torch.isfinite(target.energy(x)[0]) and target.energy(x)[1] == math.inf
    assert bool(
        torch.isfinite(MolecularTarget(forcefield, bg, filter_chirality=False).energy(x)).all()
    )
    run = train_generator(
        bg,
        "reverse_kl",
        energy=forcefield,
        steps=2,
        batch_size=128,
        progress=False,
        rng=torch.Generator().manual_seed(0),
    )
    dropped = run.record.diagnostics["dropped"]
    assert all(30 < d < 100 for d in dropped)
    assert all(math.isfinite(v) for v in run.history.train_loss)


def test_a_training_checkpoint_is_a_generator_file(generator, forcefield, tmp_path):
    path = tmp_path / "run.pt"
    bg = copy.deepcopy(generator)
    train_generator(
        bg,
        "reverse_kl",
        energy=forcefield,
        steps=2,
        batch_size=16,
        checkpoint=path,
        progress=False,
        rng=torch.Generator().manual_seed(0),
    )
    again = load_generator(path)
    for a, b in zip(bg.state_dict().values(), again.state_dict().values()):
        assert a == b if isinstance(a, dict) else torch.equal(a, b)
    resumed = train_generator(
        again,
        "reverse_kl",
        energy=forcefield,
        steps=4,
        batch_size=16,
        checkpoint=path,
        resume=True,
        progress=False,
        rng=torch.Generator().manual_seed(0),
    )
    assert resumed.record.step == [1, 2, 3, 4]
    assert resumed.record.energy_evaluations == [16, 32, 48, 64]
