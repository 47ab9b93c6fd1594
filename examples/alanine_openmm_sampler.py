"""A trained flow inside an OpenMM simulation script: flow Metropolis-Hastings moves between
Langevin steps sample the rare phi > 0 basin of alanine dipeptide in the right proportion.

Run ``.venv/bin/python examples/alanine_openmm_sampler.py`` (``--help`` for the options). The
script

1. loads a generator in one call (``--checkpoint``: a trained Boltzmann generator, any file
   :func:`physics.openmm_sampler.load_flow` reads). Without one it builds a stand-in flow from
   the reference data - :class:`BackboneGaussian`: a Gaussian mixture on (phi, psi), one
   component per basin (alpha_R and beta from the MD frames, phi > 0 from 100 ps of MD started
   there), times a Gaussian of the other internal coordinates whose mean follows (phi, psi) -
   saves it with ``torch.save`` and loads it back with ``load_flow``;
2. shows :func:`~physics.openmm_sampler.draw_positions` (configurations as OpenMM quantities);
3. runs :class:`~physics.openmm_sampler.FlowMetropolisSampler` on an ``openmm.app.Simulation``
   of alanine dipeptide (amber99sbildn + OBC implicit solvent, 300 K, LangevinMiddleIntegrator,
   1 fs, Reference platform): ``--cycles`` cycles of ``--md-steps`` Langevin steps and one flow
   move, recording phi after every cycle;
4. runs plain MD from the same start for the same wall time;
5. prints the fraction of time in phi > 0 and F(phi > 0) - F(phi < 0) of both, with block-
   averaged error bars, next to the umbrella-sampling reference (3.26 +- 0.20 kT, a population of
   3.7 %), the acceptance rate and the costs, and writes them to ``<output>/sampler.json``.

Plain MD at 300 K leaves phi < 0 about once in 10 ns, so at this cost it reports no phi > 0
population at all; the flow moves jump between the basins directly. A run with the defaults
(10000 cycles of 20 Langevin steps and 4 flow moves, stand-in flow; 2 busy CPU cores) printed::

    reference (umbrella)   P(phi>0) =   3.71 %          dF = 3.26 ± 0.20 kT
    MD + flow moves        P(phi>0) =   3.14 ± 0.78 %   dF = 3.43 ± 0.26 kT   (140 entries)
    plain MD, same wall    P(phi>0) =   0.01 ± 0.00 %   dF = 9.67 ± 0.69 kT   (2 entries)
    sampler: 40000 flow moves, acceptance 0.117, 200 ps of Langevin steps, 50000 energies,
    10000 flow densities, 36.8 s (MD 9.5 s, flow 16.0 s, energies 3.8 s);
    plain MD: 633 ps in 36.8 s

(about 85 s in all, building the stand-in included). The stand-in's reverse ESS is about 6 %;
a trained generator proposes better and accepts more often.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import openmm  # noqa: E402
import openmm.app as app  # noqa: E402
import openmm.unit as unit  # noqa: E402
import torch  # noqa: E402

from manifoldflows import Flow  # noqa: E402
from manifoldflows.distributions import Distribution, WrappedNormal  # noqa: E402
from manifoldflows.spaces import Torus  # noqa: E402
from manifoldflows.spaces.circle import wrap  # noqa: E402
from physics.coordinates import InternalCoordinates  # noqa: E402
from physics.openmm_sampler import FlowMetropolisSampler, draw_positions, load_flow  # noqa: E402
from physics.systems import PHI_ATOMS, PSI_ATOMS, MolecularSystem  # noqa: E402
from physics.systems.reference import (  # noqa: E402
    backbone_torsions,
    basin_alpha_r,
    load_reference,
    run_md,
    umbrella_system,
)

#: Torsions with a smaller von Mises concentration than this over the MD frames (the methyl
#: rotors) are modelled as independent wrapped normals; phi and psi carry the mixture.
ROTOR_KAPPA = 2.0


def circular_moments(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular means and mean resultant lengths of angles ``(n, k)``."""
    mean_cos, mean_sin = torch.cos(t).mean(0), torch.sin(t).mean(0)
    return torch.atan2(mean_sin, mean_cos), torch.sqrt(mean_cos**2 + mean_sin**2)


def backbone_features(phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Fourier features of (phi, psi) up to second order, ``(*, 13)``."""
    c1, s1, c2, s2 = torch.cos(phi), torch.sin(phi), torch.cos(psi), torch.sin(psi)
    return torch.stack(
        [torch.ones_like(phi), c1, s1, c2, s2, c1 * c2, c1 * s2, s1 * c2, s1 * s2,
         torch.cos(2 * phi), torch.sin(2 * phi), torch.cos(2 * psi), torch.sin(2 * psi)],
        dim=-1,
    )  # fmt: skip


def _log_normal(x: torch.Tensor, mean: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    white = torch.linalg.solve_triangular(tril, (x - mean).unsqueeze(-1), upper=False)
    d = x.shape[-1]
    log_det = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * white.squeeze(-1).square().sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)


class BackboneGaussian(Distribution):
    r"""A density on alanine dipeptide's internal coordinates built from MD frames.

    .. math:: q(z) = \sum_k \pi_k\, \mathcal N(\phi, \psi;\ m_k, S_k)\
              \mathcal N\big(y;\ A\, f(\phi, \psi),\ \Sigma\big)\ \prod_r \mathrm{WN}(t_r)

    A Gaussian mixture on the backbone torsions (one component per basin, unwrapped about its
    mean), the other bonds, angles and torsions ``y`` Gaussian with a mean that depends on
    ``(phi, psi)`` through Fourier features ``f`` (least squares over all frames) and one
    residual covariance ``Sigma`` (well estimated from all frames, so a basin with few frames
    still gets a sound proposal), and the methyl rotors as independent wrapped normals. The
    Gaussian tails outside the domain (negative bonds, beyond +-pi from a torsion's centre)
    carry less than ``1e-6`` of the mass: normalised to that accuracy.

    Arguments:
        ic: the internal coordinates (the space is ``ic.domain``).
        z: ``(n, 60)`` internal coordinates of the frames.
        labels: ``(n,)`` basin index of each frame (``0 .. K-1``).
        weights: ``(K,)`` mixture weights of the basins in the proposal.
        frame_weights: ``(n,)`` weights of the frames in the regression.
        inflate: widening of the residual Gaussian; ``backbone_inflate`` of the mixture.
    """

    def __init__(
        self,
        ic: InternalCoordinates,
        z: torch.Tensor,
        labels: torch.Tensor,
        weights: list[float],
        *,
        frame_weights: torch.Tensor | None = None,
        inflate: float = 1.05,
        backbone_inflate: float = 1.2,
    ):
        super().__init__(ic.domain)
        z = z.double()
        start = ic.n_bonds + ic.n_angles
        phi_i, psi_i = start + ic.torsion_index(PHI_ATOMS), start + ic.torsion_index(PSI_ATOMS)
        centre, length = circular_moments(z[:, start:])
        kappa = length * (2 - length**2) / (1 - length**2).clamp(min=1e-3)
        rotor = start + torch.nonzero(kappa < ROTOR_KAPPA).flatten()
        rotor = rotor[(rotor != phi_i) & (rotor != psi_i)]
        taken = {phi_i, psi_i, *rotor.tolist()}
        other = torch.tensor([i for i in range(z.shape[1]) if i not in taken])
        self.register_buffer("backbone", torch.tensor([phi_i, psi_i]))
        self.register_buffer("rotor", rotor)
        self.register_buffer("other", other)
        self.register_buffer("other_torsion", other >= start)
        self.register_buffer(
            "other_centre", torch.where(other >= start, centre[(other - start).clamp(min=0)], 0.0)
        )
        # backbone mixture
        means, trils = [], []
        pp = z[:, self.backbone]
        for k in range(len(weights)):
            angles = pp[labels == k]
            c = circular_moments(angles)[0]
            u = c + wrap(angles - c)
            means.append(u.mean(0))
            trils.append(torch.linalg.cholesky(torch.cov(u.T) * backbone_inflate**2))
        self.register_buffer("mix_mean", torch.stack(means))
        self.register_buffer("mix_tril", torch.stack(trils))
        self.register_buffer(
            "log_weights", torch.log(torch.tensor(weights, dtype=z.dtype) / sum(weights))
        )
        # conditional Gaussian of the rest
        w = torch.ones(len(z), dtype=z.dtype) if frame_weights is None else frame_weights.to(z)
        feats = backbone_features(pp[:, 0], pp[:, 1])
        y = self._unwrap(z[:, other])
        gram = feats.T @ (w[:, None] * feats) + 1e-8 * torch.eye(feats.shape[1], dtype=z.dtype)
        self.register_buffer("coef", torch.linalg.solve(gram, feats.T @ (w[:, None] * y)))
        resid = y - feats @ self.coef
        cov = (w[:, None] * resid).T @ resid / w.sum() * inflate**2
        self.register_buffer(
            "tril", torch.linalg.cholesky(cov + 1e-10 * torch.eye(len(other), dtype=z.dtype))
        )
        scale = torch.sqrt(-2 * torch.log(length[rotor - start].clamp(1e-3, 0.999)))
        rotors = WrappedNormal(Torus(len(rotor)), centre[rotor - start], scale, learnable=False)
        self.rotors = rotors.to(z.dtype)
        self.n_coordinates = z.shape[1]

    def _unwrap(self, y: torch.Tensor) -> torch.Tensor:
        shifted = self.other_centre + wrap(y - self.other_centre)
        return torch.where(self.other_torsion, shifted, y)

    def _log_prob(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        pp = x[..., self.backbone].unsqueeze(-2)  # (*, 1, 2) against K components
        unwrapped = self.mix_mean + wrap(pp - self.mix_mean)
        log_mix = torch.logsumexp(
            _log_normal(unwrapped, self.mix_mean, self.mix_tril) + self.log_weights, -1
        )
        mean = backbone_features(x[..., self.backbone[0]], x[..., self.backbone[1]]) @ self.coef
        log_rest = _log_normal(self._unwrap(x[..., self.other]), mean, self.tril)
        return log_mix + log_rest + self.rotors._log_prob(x[..., self.rotor], None)

    def _rsample(
        self,
        shape: tuple[int, ...],
        context: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        n = math.prod(shape)
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        eps = torch.randn(n, 2, 1, generator=generator, dtype=self.mix_mean.dtype)
        pp = wrap(self.mix_mean[k] + (self.mix_tril[k] @ eps).squeeze(-1))
        eps = torch.randn(n, len(self.other), 1, generator=generator, dtype=pp.dtype)
        y = backbone_features(pp[:, 0], pp[:, 1]) @ self.coef + (self.tril @ eps).squeeze(-1)
        x = torch.empty(n, self.n_coordinates, dtype=pp.dtype)
        x[:, self.backbone] = pp
        x[:, self.other] = torch.where(self.other_torsion, wrap(y), y)
        x[:, self.rotor] = self.rotors._rsample((n,), None, generator)
        return x.reshape(*shape, self.n_coordinates)


def alpha_l_frames(system: MolecularSystem, seed: int = 5) -> np.ndarray:
    """Frames of the phi > 0 basin: 10 ps restrained at phi = +60 deg, then 100 ps of free MD
    (frames every 0.2 ps; those with phi > 0 are kept)."""
    biased = MolecularSystem(
        umbrella_system(system.system, PHI_ATOMS, 500.0, center=math.radians(60.0)),
        system.topology,
        system.positions,
        system.temperature,
    )
    pulled = run_md(biased, 10.0, seed=seed, equilibration_ps=0.0, progress=False)
    free = run_md(
        system,
        100.0,
        seed=seed + 1,
        frame_interval_ps=0.2,
        equilibration_ps=0.0,
        minimize=False,
        positions=pulled.frames[-1],
        progress=False,
    )
    phi, _ = backbone_torsions(free.frames)
    return free.frames[phi > 0]


def standin_flow(reference, *, alpha_l: bool = True, seed: int = 5) -> Flow:
    """A stand-in generator from the reference data: :class:`BackboneGaussian` pushed through
    the internal coordinates, with basins alpha_R and beta from the MD training frames and,
    with ``alpha_l``, phi > 0 from :func:`alpha_l_frames` (otherwise no simulation runs, and
    phi > 0 is proposed only by the tails)."""
    system = reference.system()
    ic = InternalCoordinates(system)
    frames = reference.frames_train.astype(np.float64)
    phi, psi = backbone_torsions(frames)
    labels = np.where(basin_alpha_r(phi, psi), 0, 1)
    weights = [0.4, 0.6]
    frame_weights = np.ones(len(frames))
    if alpha_l:
        extra = alpha_l_frames(system, seed).astype(np.float64)
        frames = np.concatenate([frames, extra])
        labels = np.concatenate([labels, np.full(len(extra), 2)])
        frame_weights = np.concatenate([frame_weights, np.full(len(extra), 5.0)])
        weights = [0.35, 0.5, 0.15]  # phi > 0 over-proposed; the acceptance corrects it
    with torch.no_grad():
        z = ic.inverse(torch.as_tensor(frames.reshape(len(frames), -1)))[0]
    base = BackboneGaussian(
        ic,
        z,
        torch.as_tensor(labels),
        weights,
        frame_weights=torch.as_tensor(frame_weights),
    )
    return Flow(base, ic)


def alanine_simulation(system: MolecularSystem, start: np.ndarray, seed: int) -> app.Simulation:
    integrator = openmm.LangevinMiddleIntegrator(
        system.temperature * unit.kelvin, 1.0 / unit.picosecond, 1.0 * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(
        system.topology, system.system, integrator, openmm.Platform.getPlatformByName("Reference")
    )
    simulation.context.setPositions(start * unit.nanometer)
    simulation.context.setVelocitiesToTemperature(system.temperature * unit.kelvin, seed)
    return simulation


def phi_positive_estimate(phi: np.ndarray, n_blocks: int = 20) -> dict[str, float]:
    """Fraction of a time series in phi > 0 with a block-averaged error, and the free-energy
    difference F(phi > 0) - F(phi < 0) = -log(P / (1 - P)) with its delta-method error, and
    how often the series entered phi > 0."""
    inside = (phi >= 0).astype(float)
    blocks = np.array([b.mean() for b in np.array_split(inside, n_blocks)])
    p = float(inside.mean())
    se = float(blocks.std(ddof=1) / math.sqrt(n_blocks))
    df = -math.log(p / (1 - p)) if 0 < p < 1 else math.inf
    df_se = se / (p * (1 - p)) if 0 < p < 1 else math.inf
    entries = int(np.sum(~inside[:-1].astype(bool) & inside[1:].astype(bool)))
    return {
        "phi_positive_fraction": p,
        "stderr": se,
        "df_kT": df,
        "df_stderr": df_se,
        "entries": entries,
    }


def compare_with_md(
    flow,
    *,
    n_cycles: int = 20000,
    md_steps: int = 10,
    moves_per_cycle: int = 1,
    seed: int = 0,
    progress: bool = True,
    reference=None,
) -> dict:
    """The sampler and plain MD of the same wall time from the same start (module docstring)."""
    reference = load_reference() if reference is None else reference
    system = reference.system()
    start = reference.frames_train[0].astype(np.float64)

    simulation = alanine_simulation(system, start, seed + 1)
    sampler = FlowMetropolisSampler(
        simulation, flow, generator=torch.Generator().manual_seed(seed), proposal_batch=1024
    )
    phi_sampler = np.empty(n_cycles)
    began = time.perf_counter()
    chunk = max(1, n_cycles // 20)
    for i in range(0, n_cycles, chunk):
        stop = min(n_cycles, i + chunk)
        run = sampler.run(stop - i, md_steps, moves_per_cycle=moves_per_cycle, record=True)
        phi_sampler[i:stop] = backbone_torsions(run.positions)[0]
        if progress:
            print(
                f"  sampler: {stop}/{n_cycles} cycles, acceptance {sampler.acceptance_rate:.3f}, "
                f"phi > 0 fraction {np.mean(phi_sampler[:stop] >= 0):.4f}",
                flush=True,
            )
    sampler_seconds = time.perf_counter() - began

    md = alanine_simulation(system, start, seed + 2)
    phi_md: list[float] = []
    md_steps_done = 0
    began = time.perf_counter()
    while time.perf_counter() - began < sampler_seconds or not phi_md:
        md.step(md_steps)
        md_steps_done += md_steps
        state = md.context.getState(getPositions=True)
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        phi_md.append(float(backbone_torsions(np.asarray(xyz))[0][0]))
    md_seconds = time.perf_counter() - began

    stats = sampler.statistics()
    return {
        "reference": {
            "df_kT": float(reference.df_phi_positive.value),
            "df_stderr": float(reference.df_phi_positive.stderr),
            "phi_positive_fraction": float(reference.estimates["p_phi_positive_umbrella"].value),
        },
        "sampler": {
            **phi_positive_estimate(phi_sampler),
            **stats,
            "wall_seconds": sampler_seconds,
            "simulated_ps": stats["n_md_steps"] * 1e-3,
        },
        "md": {
            **phi_positive_estimate(np.asarray(phi_md)),
            "md_steps": md_steps_done,
            "simulated_ps": md_steps_done * 1e-3,
            "wall_seconds": md_seconds,
        },
    }


def _row(name: str, result: dict) -> str:
    p, se = result["phi_positive_fraction"], result["stderr"]
    df = result["df_kT"]
    df_text = f"{df:.2f} ± {result['df_stderr']:.2f}" if math.isfinite(df) else "inf (never there)"
    return (
        f"  {name:<22} P(phi>0) = {100 * p:6.2f} ± {100 * se:.2f} %   dF = {df_text} kT   "
        f"({result['entries']} entries into phi > 0)"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="trained generator (default: build a stand-in)")
    parser.add_argument("--cycles", type=int, default=10000, help="sampler cycles")
    parser.add_argument("--md-steps", type=int, default=20, help="Langevin steps (1 fs) per cycle")
    parser.add_argument("--moves-per-cycle", type=int, default=4, help="flow moves per cycle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="demo_output/alanine_openmm_sampler")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    reference = load_reference()

    began = time.perf_counter()
    if args.checkpoint is None:
        path = out / "standin_flow.pt"
        torch.save(standin_flow(reference), path)
        print(f"built a stand-in flow in {time.perf_counter() - began:.1f} s -> {path}")
    else:
        path = Path(args.checkpoint)
    flow = load_flow(path)  # one call
    positions = draw_positions(
        flow, 3, generator=torch.Generator().manual_seed(args.seed), topology=reference.system()
    )
    print(f"draw_positions: {positions.value_in_unit(unit.nanometer).shape} in {positions.unit}")

    result = compare_with_md(
        flow,
        n_cycles=args.cycles,
        md_steps=args.md_steps,
        moves_per_cycle=args.moves_per_cycle,
        seed=args.seed,
        reference=reference,
    )
    s, m, r = result["sampler"], result["md"], result["reference"]
    print("\nphi > 0 basin of alanine dipeptide (amber99sbildn/OBC, 300 K)")
    print(
        f"  {'reference (umbrella)':<22} P(phi>0) = {100 * r['phi_positive_fraction']:6.2f} %"
        f"          dF = {r['df_kT']:.2f} ± {r['df_stderr']:.2f} kT"
    )
    print(_row("MD + flow moves", s))
    print(_row("plain MD, same wall", m))
    print(
        f"  sampler: {s['n_proposed']} flow moves, acceptance {s['acceptance_rate']:.3f}, "
        f"{s['n_md_steps']} Langevin steps ({s['simulated_ps']:.0f} ps), "
        f"{s['n_energy_evaluations']} energies, {s['n_density_evaluations']} flow densities, "
        f"{s['n_flow_samples']} flow samples, {s['wall_seconds']:.1f} s "
        f"(MD {s['seconds']['md']:.1f} s, flow {s['seconds']['flow']:.1f} s, "
        f"energies {s['seconds']['energy']:.1f} s)"
    )
    print(
        f"  plain MD: {m['md_steps']} Langevin steps ({m['simulated_ps']:.0f} ps) in "
        f"{m['wall_seconds']:.1f} s"
    )
    combined = math.hypot(s["df_stderr"], r["df_stderr"])
    verdict = abs(s["df_kT"] - r["df_kT"]) <= 2 * combined
    print(f"  sampler consistent with the reference (|diff| <= 2 combined errors): {verdict}")
    (out / "sampler.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
