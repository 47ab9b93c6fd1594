"""Samples <-> mdtraj trajectories (physics.io)."""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest
import torch

from manifoldflows.errors import InvalidInput
from physics.io import load_samples, save_samples, to_trajectory
from physics.systems import alanine_dipeptide
from physics.systems.reference import backbone_torsions, load_reference


@pytest.fixture(scope="module")
def ala2():
    return alanine_dipeptide("vacuum")


@pytest.fixture(scope="module")
def frames():
    return load_reference().frames_test[:50].astype(np.float64)  # (50, 22, 3) nm, any frame


@pytest.mark.parametrize("fmt", ["dcd", "xtc"])
def test_round_trip(tmp_path, ala2, frames, fmt):
    x = torch.as_tensor(frames.reshape(50, 66))
    log_w = torch.linspace(-3.0, 2.0, 50, dtype=torch.float64)
    log_w[7] = -float("inf")  # a zero weight survives the round trip
    out = save_samples(tmp_path / "run", x, log_w, ala2, fmt=fmt)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["log_weights.npy", f"samples.{fmt}", "topology.pdb"]
    loaded = load_samples(out)
    traj, lw = loaded
    assert len(loaded) == traj.n_frames == 50 and traj.n_atoms == 22
    assert np.array_equal(lw, log_w.numpy())
    # DCD stores float32 Angstrom, XTC rounds to 1e-3 nm
    assert np.abs(traj.xyz - frames).max() < (1e-4 if fmt == "dcd" else 1e-3)
    assert loaded.configurations(torch.float64).shape == (50, 66)
    assert [a.name for a in traj.topology.atoms] == [a.name for a in ala2.mdtraj_topology.atoms]
    # mdtraj reads the files on its own, and its torsions are ours
    again = mdtraj.load(str(out / f"samples.{fmt}"), top=str(out / "topology.pdb"))
    phi = mdtraj.compute_phi(again)[1][:, 0]
    assert np.allclose(phi, backbone_torsions(traj.xyz)[0], atol=1e-4)


def test_to_trajectory_shapes(ala2, frames):
    flat = to_trajectory(frames.reshape(50, 66), ala2)
    nested = to_trajectory(torch.as_tensor(frames), ala2.topology)  # openmm topology
    single = to_trajectory(frames[0].reshape(66), ala2.mdtraj_topology)
    assert flat.n_frames == nested.n_frames == 50 and single.n_frames == 1
    assert np.array_equal(flat.xyz, nested.xyz)
    assert flat.unitcell_vectors is None


def test_save_overwrites_and_defaults(tmp_path, ala2, frames):
    save_samples(tmp_path, frames[:3], None, ala2, fmt="xtc")
    save_samples(tmp_path, frames[:4], None, ala2)  # dcd replaces the xtc
    traj, lw = load_samples(tmp_path)
    assert traj.n_frames == 4 and lw.tolist() == [0.0] * 4
    assert not (tmp_path / "samples.xtc").exists()


def test_bad_input(tmp_path, ala2, frames):
    with pytest.raises(
        InvalidInput, match=r"configurations of 22 atoms.*\(66,\).*got shape \(5, 63\)"
    ):
        to_trajectory(np.zeros((5, 63)), ala2)
    with pytest.raises(InvalidInput, match=r"22 atoms.*got shape \(2, 21, 3\)"):
        save_samples(tmp_path, np.zeros((2, 21, 3)), None, ala2)
    with pytest.raises(InvalidInput, match=r"one log weight per frame, shape \(3,\), got \(2,\)"):
        save_samples(tmp_path, frames[:3], np.zeros(2), ala2)
    with pytest.raises(InvalidInput, match="NaN"):
        save_samples(tmp_path, frames[:2], np.array([0.0, np.nan]), ala2)
    with pytest.raises(InvalidInput, match="finite coordinates"):
        to_trajectory(np.full((1, 66), np.nan), ala2)
    with pytest.raises(InvalidInput, match="fmt among"):
        save_samples(tmp_path, frames[:2], None, ala2, fmt="pdbx")
    with pytest.raises(InvalidInput, match="MolecularSystem, an mdtraj.Topology"):
        to_trajectory(frames, "alanine")
    with pytest.raises(FileNotFoundError, match="missing .*topology.pdb"):
        load_samples(tmp_path / "nothing")
    out = save_samples(tmp_path / "short", frames[:3], None, ala2)
    np.save(out / "log_weights.npy", np.zeros(5))
    with pytest.raises(InvalidInput, match=r"\(5,\) log weights but the trajectory has 3 frames"):
        load_samples(out)
