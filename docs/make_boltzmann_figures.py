r"""Generate the figures and numbers of ``docs/boltzmann.md`` (the double-well walkthrough).

Trains the page's neural spline flow on ``DoubleWell(-0.5, -6, 1)`` with the full step count
(reverse KL, temperature annealed 5 -> 1), draws ``10^5`` importance-weighted samples and writes

* ``docs/images/boltzmann_density.png``: exact Boltzmann density, learned flow density and the
  flow's samples;
* ``docs/images/boltzmann_profile.png``: free-energy profile ``F(x1)`` of the exact target, of
  the raw flow samples, and of the reweighted samples (with error bars);

and prints the estimates (ESS, ``log Z``, ``dF`` plain and stratified) quoted on the page.
Run (about a minute)::

    .venv/bin/python docs/make_boltzmann_figures.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from manifoldflows import losses
from manifoldflows.plotting import new_axes, plot_density_2d, save_figure
from manifoldflows.presets import NSF
from manifoldflows.training import fit
from physics import DoubleWell
from physics import sampling as S
from physics.stratified import stratified_free_energy_difference

__all__ = ["main"]

IMAGES = Path(__file__).resolve().parent / "images"
BOUNDS = ((-3.0, 3.0), (-3.5, 3.5))


def train(flow, target, steps: int, batch: int) -> float:
    """Reverse KL against ``u / T``, ``T`` annealed geometrically 5 -> 1 over 60 % of steps."""
    state = {"k": 0}

    def loss(model, _batch, _context):
        f = min(1.0, state["k"] / (0.6 * steps))
        state["k"] += 1
        temperature = 5.0 ** (1.0 - f)
        return losses.reverse_kl(model, lambda x: target.energy(x) / temperature, batch)

    start = time.perf_counter()
    fit(
        flow,
        loss_fn=loss,
        steps=steps,
        progress=False,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
    )
    return time.perf_counter() - start


def main(steps: int = 1500, n: int = 100_000) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    target = DoubleWell(-0.5, -6.0, 1.0)
    flow = NSF(2, layers=4, hidden=(64, 64))
    seconds = train(flow, target, steps, 512)
    with torch.no_grad():
        s = S.importance_weights(flow, target, n)
    log_z = s.log_partition()
    dF = S.free_energy_difference(s.x, s.log_w, lambda x: x[:, 0] > 0, lambda x: x[:, 0] < 0)
    print(f"training: {steps} steps x 512 samples, {seconds:.0f} s")
    print(f"ESS = {float(s.ess()):.3f}")
    print(f"log Z = {log_z}  (exact {target.log_Z:.6f})")
    print(f"dF = {dF}  (exact {target.delta_F:.6f})")
    with torch.no_grad():
        strat = stratified_free_energy_difference(
            flow, target, lambda x: x[:, 0] > 0, lambda x: x[:, 0] < 0, n, n_proposal=40 * n
        )
    print(f"dF (stratified, {n} energy evaluations, {40 * n} flow samples) = {strat}")

    # learned density next to the exact one
    axes = new_axes(3, size=3.2)
    g = 200
    xs = np.linspace(*BOUNDS[0], g)
    ys = np.linspace(*BOUNDS[1], g)
    grid = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float32)
    exact = torch.exp(-target.energy(grid) - target.log_Z).reshape(g, g).numpy()
    axes[0].imshow(exact, origin="lower", extent=(*BOUNDS[0], *BOUNDS[1]), aspect="auto")
    axes[0].set_title("exact exp(-u) / Z")
    plot_density_2d(flow, axes[1], bounds=BOUNDS, grid=g)
    axes[1].set_title("flow q(x)")
    pts = s.x[:2000].numpy()
    axes[2].scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
    axes[2].set(xlim=BOUNDS[0], ylim=BOUNDS[1], title="flow samples")
    for ax in axes:
        ax.set_xlabel("x1")
    save_figure(axes[0], IMAGES / "boltzmann_density.png")

    # reweighted free-energy profile along x1
    edges = torch.linspace(-2.6, 2.6, 53, dtype=s.x.dtype)
    centres, f_rw, se_rw = S.free_energy_profile(s.x[:, 0], s.log_w, edges)
    _, f_raw, _ = S.free_energy_profile(s.x[:, 0], torch.zeros_like(s.log_w), edges)
    x1 = torch.linspace(-2.6, 2.6, 400, dtype=torch.float64)
    f_exact = target.a * x1 + target.b * x1**2 + target.c * x1**4
    f_exact = f_exact - f_exact.min()
    (ax,) = new_axes(1, size=4.0)
    ax.plot(x1.numpy(), f_exact.numpy(), "k-", lw=1.5, label="exact")
    ax.plot(centres.numpy(), f_raw.numpy(), "o", ms=3, color="tab:orange", label="flow, raw")
    ax.errorbar(
        centres.numpy(),
        f_rw.numpy(),
        yerr=se_rw.numpy(),
        fmt="s",
        ms=3,
        color="tab:blue",
        label="flow, reweighted",
    )
    ax.set(xlabel="x1", ylabel="F(x1) / kT", ylim=(-0.5, 12.0))
    ax.set_title(
        f"dF = {float(dF.value):.3f} ± {float(dF.stderr):.3f} (exact {target.delta_F:.3f})"
    )
    ax.legend()
    save_figure(ax, IMAGES / "boltzmann_profile.png")
    print("wrote", IMAGES / "boltzmann_density.png", IMAGES / "boltzmann_profile.png")
    if not math.isfinite(float(dF.value)):
        sys.exit("non-finite dF")


if __name__ == "__main__":
    main()
