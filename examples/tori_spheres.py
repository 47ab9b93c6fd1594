"""Fit flows on the circle, the torus and the sphere, and draw what they learned.

Run ``.venv/bin/python examples/tori_spheres.py``. The script

1. fits a circular spline flow on the circle ``S^1`` by maximum likelihood (forward KL) to
   samples of a two-component von Mises mixture;
2. fits ``TorusNSF(2)`` on the torus ``T^2`` by reverse KL to the multimodal target of Rezende
   et al. (2020) (``physics.toy_manifold.TorusMultimodal``);
3. fits ``SphereFlow(2)`` (recursive construction) on the sphere ``S^2`` by reverse KL to the
   paper's four-mode target (``physics.toy_manifold.SphereMixture``);
4. prints, for the two reverse-KL fits, ``KL(q || p)`` in nats (with the exact ``log Z``) and the
   effective sample size of the importance weights, and writes
   ``demo_output/tori_spheres_{circle,torus,sphere}.png`` (target and flow side by side, flow
   samples overlaid).

The budgets are short (a few hundred steps), so that it runs in well under a minute on one
CPU thread (about 30 s); ``benchmarks/rezende2020.py`` trains the same flows to ESS > 95%.
"""

from __future__ import annotations

import time

_START = time.perf_counter()  # the reported wall time includes importing torch

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

# Idle OpenMP threads sleep instead of spinning (a busy 2-core machine is otherwise several
# times slower on small tensors). Must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from manifoldflows.distributions import Mixture, VonMises  # noqa: E402
from manifoldflows.losses import ess, log_importance_weights  # noqa: E402
from manifoldflows.plotting import (  # noqa: E402
    plot_circle_density,
    plot_sphere_density,
    plot_torus_density,
    save_figure,
)
from manifoldflows.presets import SphereFlow, TorusNSF  # noqa: E402
from manifoldflows.training import fit  # noqa: E402
from physics.toy_manifold import SphereMixture, TorusMultimodal  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per fit")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and samples")
    # Batches of a few hundred 2-D or 3-D points: one thread is faster than two here (about
    # 26 s against 44 s on a 2-core machine), extra threads only add synchronisation.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


def cosine(steps: int):
    def make(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    return make


def scores(flow, target, n: int, generator: torch.Generator) -> tuple[float, float, float]:
    """KL(q || p) with the exact log Z, its standard error, and the ESS fraction."""
    _, log_w = log_importance_weights(flow, target, n, generator=generator)
    kl = (-log_w).mean().item() + target.log_Z
    return kl, log_w.std().item() / math.sqrt(n), ess(log_w).item()


def side_by_side(plot, target, flow, titles: tuple[str, str], n: int, generator, **options):
    """Target density and flow density (with ``n`` flow samples) in one figure."""
    sphere = plot is plot_sphere_density
    fig = Figure(figsize=(10, 3.4) if sphere else (8, 4), layout="constrained")
    axes = [
        fig.add_subplot(1, 2, i + 1, projection="mollweide" if sphere else None) for i in (0, 1)
    ]
    with torch.no_grad():
        samples = flow.sample((n,), generator=generator)
    plot(target, ax=axes[0], **options)
    plot(flow, ax=axes[1], samples=samples, **options)
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
    return fig


def fit_and_draw(flow, target, plot, target_name: str, flow_name: str, path: Path, steps: int,
                 generator: torch.Generator, grid: int):  # fmt: skip
    """Reverse-KL fit of ``flow`` to ``target``, its scores, and the side-by-side figure.

    Returns ``(kl, kl_stderr, ess, path_written)``.
    """
    fit(flow, target=target, steps=steps, batch_size=256, lr=3e-3, scheduler=cosine(steps),
        progress=False, generator=generator)  # fmt: skip
    kl, se, e = scores(flow, target, 10000, generator)
    titles = (f"target: {target_name}", f"{flow_name}: KL {kl:.3f} nats, ESS {e:.0%}")
    fig = side_by_side(plot, target, flow, titles, 1000, generator, grid=grid)
    return kl, se, e, save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    if args.steps < 1:
        raise SystemExit(f"tori_spheres.py: expected --steps >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    out: dict[str, float] = {}

    # 1. Circle, forward KL on samples of a von Mises mixture.
    torch.manual_seed(args.seed)
    truth = Mixture(
        [VonMises(1, loc=-2.0, concentration=6.0), VonMises(1, loc=1.0, concentration=2.0)],
        weights=torch.tensor([0.4, 0.6]),
    )
    with torch.no_grad():
        data = truth.sample((4000,), generator=generator)
    circle_flow = TorusNSF(1, layers=2, bins=8)
    fit(circle_flow, data, steps=args.steps, batch_size=256, lr=1e-2, scheduler=cosine(args.steps),
        progress=False, generator=generator)  # fmt: skip
    with torch.no_grad():
        nll = -circle_flow.log_prob(data).mean().item()
        floor = -truth.log_prob(data).mean().item()
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    plot_circle_density(circle_flow, ax=ax, samples=data, color="C1")
    ax.plot(*plot_circle_density(truth).lines[0].get_data(), "k--", lw=1, label="truth")
    ax.legend(frameon=False)
    ax.set_title(f"circle: NLL {nll:.3f} nats (true density: {floor:.3f})", fontsize=10)
    paths = [save_figure(fig, args.out / "tori_spheres_circle.png")]
    out["circle_nll"], out["circle_nll_floor"] = nll, floor

    # 2. Torus, reverse KL to the multimodal target.
    torch.manual_seed(args.seed)
    torus_target = TorusMultimodal()
    torus_flow = TorusNSF(2, layers=4, bins=8, hidden=(32, 32))
    kl, se, e, path = fit_and_draw(
        torus_flow, torus_target, plot_torus_density, "T^2 multimodal", "TorusNSF",
        args.out / "tori_spheres_torus.png", args.steps, generator, grid=120,
    )  # fmt: skip
    out["torus_kl"], out["torus_ess"] = kl, e
    paths.append(path)

    # 3. Sphere, reverse KL to the four-mode target.
    torch.manual_seed(args.seed)
    sphere_target = SphereMixture()
    sphere_flow = SphereFlow(2, kind="recursive", layers=4, bins=8, hidden=(32, 32))
    kl_s, se_s, e_s, path = fit_and_draw(
        sphere_flow, sphere_target, plot_sphere_density, "S^2 four modes", "SphereFlow",
        args.out / "tori_spheres_sphere.png", args.steps, generator, grid=90,
    )  # fmt: skip
    out["sphere_kl"], out["sphere_ess"] = kl_s, e_s
    paths.append(path)

    wall = time.perf_counter() - _START
    out["wall_time"] = wall
    print(f"circle (forward KL): NLL {nll:.3f} nats; the true density scores {floor:.3f}")
    print(f"torus  (reverse KL): KL {kl:.4f} ± {se:.4f} nats, ESS {e:.1%}")
    print(f"sphere (reverse KL): KL {kl_s:.4f} ± {se_s:.4f} nats, ESS {e_s:.1%}")
    print(f"wall time: {wall:.1f} s ({args.steps} steps per fit)")
    print("figures: " + ", ".join(str(p) for p in paths))
    return out


if __name__ == "__main__":
    main()
