"""Evaluation of alanine-dipeptide Boltzmann generators (physics.evaluation).

The stand-in generator is a real flow: a Gaussian in standardised bonds and angles and wrapped
normals on the torsions, fitted to the MD training frames, pushed through the internal
coordinates (``Flow(base, Chain(standardization, ic))``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from manifoldflows import Chain, Flow
from manifoldflows.distributions import DiagNormal, ProductDistribution, StandardNormal
from manifoldflows.distributions.directional import WrappedNormal
from manifoldflows.errors import InvalidInput
from manifoldflows.plotting import plot_torus_histogram, torus_histogram
from manifoldflows.spaces import Torus
from physics.coordinates import InternalCoordinates, frame_log_jacobian
from physics.evaluation import (
    FREE_ENERGIES,
    FreeEnergyComparison,
    basin_free_energies,
    bootstrap_ess,
    evaluate_generator,
    flow_frame,
    histogram_kl,
    total_variation,
)
from physics.io import load_samples
from physics.openmm import OpenMMEnergy
from physics.systems.reference import load_reference


@pytest.fixture(scope="module")
def reference():
    return load_reference()


@pytest.fixture(scope="module")
def system(reference):
    return reference.system()


def fitted_flow(reference, system, *, chirality_spread: bool = False) -> Flow:
    ic = InternalCoordinates(system)
    frames = torch.as_tensor(reference.frames_train.reshape(-1, 66), dtype=torch.float32)
    std = ic.standardization(frames)
    with torch.no_grad():
        z = Chain(std, ic).inverse(frames)[0]
    bonds, angles, torsions = z[:, :21], z[:, 21:41], z[:, 41:]
    mean_cos, mean_sin = torch.cos(torsions).mean(0), torch.sin(torsions).mean(0)
    length = torch.sqrt(mean_cos**2 + mean_sin**2).clamp(1e-3, 0.999)
    spread = torch.sqrt(-2.0 * torch.log(length))  # wrapped-normal sd from the resultant length
    if chirality_spread:  # the CB improper torsion anywhere: half the samples in the D form
        spread[ic.torsion_index((10, 8, 6, 14))] = 10.0
    base = ProductDistribution(
        [
            DiagNormal(21, bonds.mean(0), bonds.std(0)),
            DiagNormal(20, angles.mean(0), angles.std(0)),
            WrappedNormal(Torus(19), torch.atan2(mean_sin, mean_cos), spread),
        ]
    )
    return Flow(base, Chain(std, ic))


@pytest.fixture(scope="module")
def flow(reference, system):
    return fitted_flow(reference, system)


@pytest.fixture(scope="module")
def report(flow, reference, system):
    return evaluate_generator(
        flow,
        OpenMMEnergy(system),
        reference,
        n_samples=3000,
        batch_size=1024,
        progress=False,
        system=system,
        n_bootstrap=30,
        generator=torch.Generator().manual_seed(0),
    )


# ---------------------------------------------------------------------------- histograms
def test_total_variation_hand_computed():
    assert total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert total_variation([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25)
    assert total_variation([2.0, 2.0], [1.0, 1.0]) == 0.0  # counts are normalised
    p = np.array([[0.1, 0.2], [0.3, 0.4]])
    assert total_variation(p, p.T) == pytest.approx(0.5 * (0.1 + 0.1))


def test_kl_hand_computed():
    exact = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert histogram_kl([0.5, 0.5], [0.25, 0.75], epsilon=0.0) == pytest.approx(exact)
    assert histogram_kl([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0, abs=1e-12)
    assert histogram_kl([0.0, 1.0], [0.5, 0.5], epsilon=0.0) == pytest.approx(math.log(2.0))
    # a cell the model misses: infinite without, large but finite with the pseudo-probability
    assert histogram_kl([0.5, 0.5], [1.0, 0.0], epsilon=0.0) == math.inf
    with_eps = histogram_kl([0.5, 0.5], [1.0, 0.0])
    expected = (0.5 + 1e-10) * math.log((0.5 + 1e-10) / (1.0 + 1e-10)) + (0.5 + 1e-10) * math.log(
        (0.5 + 1e-10) / 1e-10
    )
    assert with_eps == pytest.approx(expected)
    with pytest.raises(InvalidInput, match="one shape"):
        histogram_kl([0.5, 0.5], [1.0, 0.0, 0.0])
    with pytest.raises(InvalidInput, match="non-negative"):
        total_variation([-0.5, 1.5], [0.5, 0.5])


def test_torus_histogram_wraps_and_weights():
    angles = np.array([[math.pi, 0.1], [-math.pi, 0.1], [0.5, -0.5], [0.5, 2 * math.pi - 0.5]])
    hist = torus_histogram(angles, np.array([1.0, 1.0, 1.0, 3.0]), bins=4)
    assert hist.shape == (4, 4) and hist.sum() == pytest.approx(1.0)
    assert hist[0, 2] == pytest.approx(2 / 6)  # +pi is -pi: both in the first phi bin
    assert hist[2, 1] == pytest.approx(4 / 6)  # psi = 2 pi - 0.5 wraps to -0.5
    ax = plot_torus_histogram(angles, bins=4, free_energy=False)
    assert ax.get_xlim() == (-180.0, 180.0)


# ---------------------------------------------------------------------------- weights
def test_frame_log_jacobian_is_the_rigid_motion_volume():
    """|det d x / d(free coords, rotation, translation)| of x = R(w)^T c + o, at w = 0."""
    torch.manual_seed(1)
    c = torch.tensor([[0.0, 0, 0], [0.15, 0, 0], [0.05, 0.12, 0], [0.3, 0.1, 0.2]])
    free = torch.tensor([c[1, 0], c[2, 0], c[2, 1], *c[3]], dtype=torch.float64)

    def to_x(v: torch.Tensor) -> torch.Tensor:
        u, w, o = v[:6], v[6:9], v[9:12]
        canonical = torch.zeros(4, 3, dtype=v.dtype)
        canonical[1, 0], canonical[2, 0], canonical[2, 1], canonical[3] = u[0], u[1], u[2], u[3:]
        skew = torch.zeros(3, 3, dtype=v.dtype)
        skew[0, 1], skew[0, 2], skew[1, 2] = -w[2], w[1], -w[0]
        rotation = torch.linalg.matrix_exp(skew - skew.T)
        return (canonical @ rotation + o).reshape(-1)

    v = torch.cat([free, torch.zeros(6, dtype=torch.float64)])
    jac = torch.autograd.functional.jacobian(to_x, v)
    log_det = torch.linalg.slogdet(jac)[1]
    x = to_x(v)
    assert frame_log_jacobian(x, (0, 1, 2)).item() == pytest.approx(log_det.item(), abs=1e-9)
    # invariant under rigid motions; r01^2 r02 sin(theta)
    turn = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.2], [0.3, 0, -0.7], [-0.2, 0.7, 0]]))
    moved = (x.reshape(4, 3).float() @ turn + torch.tensor([1.0, -2.0, 0.5])).reshape(-1)
    assert frame_log_jacobian(moved, (0, 1, 2)).item() == pytest.approx(log_det.item(), abs=1e-5)
    r01, r02 = 0.15, math.hypot(0.05, 0.12)
    assert log_det.item() == pytest.approx(math.log(r01**2 * r02 * (0.12 / r02)))


def test_bootstrap_ess():
    est = bootstrap_ess(torch.zeros(50), 10)
    assert (est.value.item(), est.stderr.item()) == (1.0, 0.0)
    lw = torch.log(torch.tensor([1.0, 1.0, 2.0, 4.0] * 25, dtype=torch.float64))
    est = bootstrap_ess(lw, 200, generator=torch.Generator().manual_seed(0))
    kish = 8.0**2 / (4 * 22.0)  # (sum w)^2 / (n sum w^2), the same for each group of 4
    assert est.value.item() == pytest.approx(kish)
    assert 0.0 < est.stderr.item() < 0.1


# ---------------------------------------------------------------------------- free energies
def test_md_frames_reproduce_the_reference_value(reference):
    est = basin_free_energies(reference.phi, reference.psi)  # weights 1 on MD frames
    assert float(est["alpha_r_beta"].value) == pytest.approx(
        float(reference.df_alpha_r_beta.value), abs=1e-6
    )
    assert est["phi_positive"] is not None  # the two phi > 0 frames of the MD
    no_positive = basin_free_energies(
        reference.phi[reference.phi < 0], reference.psi[reference.phi < 0]
    )
    assert no_positive["phi_positive"] is None


def test_free_energy_comparison():
    ref = FreeEnergyComparison(
        "dF", None, basin_free_energies([-1.0, -1.0], [0.0, 2.5])["alpha_r_beta"]
    )
    assert not ref.consistent and math.isnan(ref.difference)
    assert json.dumps(ref.to_dict(), allow_nan=False)
    assert "no samples" in ref.row()


# ---------------------------------------------------------------------------- the report
def test_report_numbers_are_consistent(report, flow, reference):
    assert report.n_samples == 3000 and report.n_kept + report.n_nonfinite <= 3000
    assert report.energy_evaluations == report.n_kept
    assert 0.0 <= report.d_form_fraction < 0.01  # fitted chirality torsion: L form
    assert 0.0 < float(report.ess.value) <= 1.0 and float(report.ess.stderr) >= 0.0
    assert report.rigid_body_jacobian and flow_frame(flow) == (1, 4, 6)
    for key in ("reweighted", "flow", "reweighted_vs_umbrella"):
        assert 0.0 <= report.ramachandran[key]["tv"] <= 1.0
        assert report.ramachandran[key]["kl"] >= 0.0
    md = torus_histogram(np.stack([reference.phi, reference.psi], -1), bins=64)
    raw = torus_histogram(np.stack([report.phi, report.psi], -1), bins=64)
    assert report.ramachandran["flow"]["tv"] == pytest.approx(total_variation(md, raw))
    # the test NLL is the mean of -log q over the held-out frames
    with torch.no_grad():
        x = torch.as_tensor(reference.frames_test.reshape(-1, 66), dtype=torch.float32)
        nll = -flow.log_prob(x).double()
    assert report.n_test == len(x) and report.n_test_nonfinite == 0
    assert float(report.nll.value) == pytest.approx(nll.mean().item(), rel=1e-6)
    assert float(report.nll.stderr) == pytest.approx(nll.std().item() / math.sqrt(len(x)), rel=1e-4)
    # free energies: reweighted and raw, against the reference
    assert set(report.free_energies) == set(FREE_ENERGIES)
    ab = report.free_energies["alpha_r_beta"]
    assert ab.reference is reference.df_alpha_r_beta and ab.flow is not None
    assert ab.consistent == (abs(ab.difference) <= 2 * ab.combined_stderr)
    assert report.free_energies["phi_positive"].reference is reference.df_phi_positive


def test_report_outputs(report, tmp_path):
    summary = report.to_dict()
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["n_samples"] == 3000
    assert set(summary["free_energies_kT"]) == set(FREE_ENERGIES)
    table = report.table()
    for line in ("reverse ESS", "forward NLL", "Ramachandran", "F(alpha_R) - F(beta)", "wall"):
        assert line in table
    out = report.save(tmp_path / "eval", n_frames=20)
    assert (out / "summary.json").is_file() and (out / "ramachandran.png").stat().st_size > 0
    traj, log_w = load_samples(out / "samples")
    assert traj.n_frames == 20 and np.allclose(log_w, report.samples.log_w[:20].numpy())
    fig = report.plot_ramachandran(bins=16)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["MD", "flow", "flow, reweighted"]


def test_chirality_filtering(reference, system):
    flow = fitted_flow(reference, system, chirality_spread=True)
    energy = OpenMMEnergy(system)
    kwargs = dict(n_samples=400, progress=False, system=system, n_bootstrap=5)
    filtered = evaluate_generator(
        flow, energy, reference, generator=torch.Generator().manual_seed(1), **kwargs
    )
    kept = evaluate_generator(
        flow,
        energy,
        reference,
        filter_chirality=False,
        generator=torch.Generator().manual_seed(1),
        **kwargs,
    )
    assert 0.3 < filtered.d_form_fraction < 0.7
    assert filtered.d_form_fraction == pytest.approx(kept.d_form_fraction)
    assert filtered.n_kept == round(400 * (1 - filtered.d_form_fraction))
    assert kept.n_kept == kept.energy_evaluations == 400


def test_bad_input(reference, system, flow):
    energy = OpenMMEnergy(system)
    with pytest.raises(InvalidInput, match=r"22 atoms, event shape \(66,\), got .*\(60,\)"):
        evaluate_generator(StandardNormal(60), energy, reference, n_samples=10, system=system)
    with pytest.raises(InvalidInput, match="350 K but the reference at 300 K"):
        evaluate_generator(
            flow, OpenMMEnergy(system, temperature=350.0), reference, n_samples=10, system=system
        )
    with pytest.raises(InvalidInput, match="rigid_body_jacobian=True needs"):
        evaluate_generator(
            StandardNormal(66),
            energy,
            reference,
            n_samples=10,
            system=system,
            rigid_body_jacobian=True,
        )
