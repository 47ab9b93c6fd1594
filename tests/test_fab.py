"""FAB (AIS towards p^alpha q^(1-alpha), the alpha-2 loss, the prioritised replay buffer), the
robust KL objective and the training monitor, on small targets with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from manifoldflows.distributions import DiagNormal
from manifoldflows.errors import InvalidInput
from manifoldflows.estimators import effective_sample_size
from manifoldflows.functional.circle import wrap
from manifoldflows.presets import NSF, build_flow
from manifoldflows.spaces import Euclidean, Product, Torus
from manifoldflows.testing import perturb_parameters
from manifoldflows.training import (
    FAB,
    CountedTarget,
    KLObjective,
    Monitor,
    PrioritisedReplayBuffer,
    fab_annealed_importance_sampling,
    fit,
    robust_reverse_kl,
)
from physics import DoubleWell


def log_mean_exp(log_w):
    return float(torch.logsumexp(log_w, 0) - math.log(log_w.numel()))


# ------------------------------------------------------------------------------ replay buffer
def test_buffer_draws_in_proportion_to_the_weights():
    g = torch.Generator().manual_seed(0)
    buffer = PrioritisedReplayBuffer(8, 4, generator=g)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    buffer.add(torch.arange(4.0).unsqueeze(-1), weights.log(), torch.zeros(4))
    counts = torch.zeros(4)
    for _ in range(1500):
        counts[buffer.sample(1).index] += 1
    torch.testing.assert_close(counts / counts.sum(), weights / weights.sum(), atol=0.035, rtol=0)
    batch = buffer.sample(4)  # without replacement: every entry once
    assert sorted(batch.index.tolist()) == [0, 1, 2, 3]


def test_buffer_ring_state_and_adjust():
    buffer = PrioritisedReplayBuffer(5, 2)
    with pytest.raises(InvalidInput, match="fewer than min_length"):
        buffer.sample(1)
    for start in (0, 3, 6):  # 9 entries into 5 places: the oldest are overwritten
        x = torch.arange(start, start + 3.0).unsqueeze(-1)
        buffer.add(x, torch.zeros(3), torch.zeros(3))
    assert len(buffer) == 5 and sorted(buffer.x.flatten().tolist()) == [4.0, 5.0, 6.0, 7.0, 8.0]
    index = torch.tensor([0, 1])
    buffer.adjust(index, torch.tensor([1.0, float("nan")]), alpha=2.0)  # NaN log q: untouched
    assert buffer.log_w[index].tolist() == [-1.0, 0.0]
    again = PrioritisedReplayBuffer(5, 2)
    again.load_state_dict(buffer.state_dict())
    assert torch.equal(again.x, buffer.x) and torch.equal(again.log_w, buffer.log_w)
    assert (again.position, len(again)) == (buffer.position, len(buffer))
    with pytest.raises(InvalidInput, match="min_length <= max_length"):
        PrioritisedReplayBuffer(2, 3)


# ------------------------------------------------------------------------------ AIS
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_ais_weights_estimate_the_normaliser_of_p_alpha_q(alpha):
    """q = N(0, 4 I), p~ = exp(-|x|^2 / 2) in 2-D: int p~^a q^(1-a) = 2 pi (4 / (a + (1-a)/4))...
    computed per dimension as sqrt(2 pi 4)^(a-1) sqrt(2 pi / (a - (a-1)/4))."""
    q = DiagNormal(2, scale=2.0)
    u = lambda x: 0.5 * (x**2).sum(-1)  # noqa: E731
    per_dim = (alpha - 1) * 0.5 * math.log(8 * math.pi) + 0.5 * math.log(
        2 * math.pi / (alpha - (alpha - 1) / 4)
    )
    s = fab_annealed_importance_sampling(
        q, u, 4000, 3, alpha=alpha, step_size=0.6, generator=torch.Generator().manual_seed(1)
    )
    assert log_mean_exp(s.log_w) == pytest.approx(2 * per_dim, abs=0.06)
    assert log_mean_exp(s.log_w_flow) == pytest.approx(math.log(2 * math.pi), abs=0.06)
    assert bool((s.acceptance > 0.3).all())
    torch.testing.assert_close(s.log_q, q.log_prob(s.x))


def test_latent_ais_on_a_product_with_a_circle():
    """AIS in the latent space of a (perturbed) flow on R x S^1, towards p^2/q, with
    p~(x) = exp(-x0^2/2 + k cos(x1 - 1)): the weights are unbiased whatever the flow, and the
    estimate is compared with quadrature of int p~^2 / q over R x S^1."""
    torch.manual_seed(0)
    flow = build_flow(Product(Euclidean(1), Torus(1)), "spline", layers=2, hidden=(8,)).double()
    perturb_parameters(flow, 0.3, torch.Generator().manual_seed(2))
    k = 1.5

    def u(x):
        return 0.5 * x[..., 0] ** 2 - k * torch.cos(x[..., 1] - 1.0)

    s = fab_annealed_importance_sampling(
        flow, u, 3000, 6, step_size=0.4, generator=torch.Generator().manual_seed(3)
    )
    assert bool(((s.x[:, 1] >= -math.pi) & (s.x[:, 1] < math.pi)).all())  # wrapped angles
    torch.testing.assert_close(s.log_q, flow.log_prob(s.x), atol=1e-6, rtol=0)
    a = torch.linspace(-7.0, 7.0, 201, dtype=torch.float64)
    b = torch.linspace(-math.pi, math.pi, 201, dtype=torch.float64)[:-1]
    grid = torch.stack(torch.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        integrand = -2 * u(grid) - flow.log_prob(grid)
    exact = float(torch.logsumexp(integrand, 0) + math.log(float(a[1] - a[0]) * 2 * math.pi / 200))
    assert log_mean_exp(s.log_w) == pytest.approx(exact, abs=0.1)


def test_infinite_energies_get_zero_weight_and_are_never_entered():
    """Target restricted to x0 > 0 (u = +inf elsewhere, with a NaN gradient there)."""

    def u(x):
        return torch.where(x[..., 0] > 0, 0.5 * (x**2).sum(-1), torch.log(-x[..., 0].abs()))

    s = fab_annealed_importance_sampling(
        DiagNormal(2),
        lambda x: torch.where(torch.isnan(u(x)), math.inf, u(x)),
        500,
        3,
        generator=torch.Generator().manual_seed(0),
    )
    finite = torch.isfinite(s.log_w)
    assert 0 < int(finite.sum()) < 500
    assert bool((s.x[finite, 0] > 0).all())


# ------------------------------------------------------------------------------ FAB training
def _quality(flow, target, n=20000):
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        x, log_q = flow.sample_and_log_prob((n,), generator=g)
        ess = float(effective_sample_size(-target.energy(x) - log_q))
        left = float((x[:, 0] < 0).float().mean())
    return ess, left


def test_fab_covers_both_wells_where_reverse_kl_does_not():
    """The double well of FAB's paper (left well 15.6 % of the mass, barrier ~9 kT): FAB with a
    replay buffer reaches a high ESS with the right well weights; reverse KL with the same
    budget of energy evaluations misses most of the minor well."""
    target = DoubleWell()
    exact_left = 1.0 - target.prob_right
    results = {}
    for method in ("fab", "reverse_kl"):
        torch.manual_seed(1)
        flow = NSF(2, layers=2, hidden=(16, 16))
        counted = CountedTarget(target)
        g = torch.Generator().manual_seed(2)
        if method == "fab":
            buffer = PrioritisedReplayBuffer(2048, 512, generator=g)
            objective = FAB(
                counted,
                128,
                n_levels=3,
                leapfrog_steps=3,
                step_size=0.3,
                buffer=buffer,
                generator=g,
            )
            steps = 60
        else:
            objective = KLObjective(counted, batch_size=128, generator=g)
            steps = 1
        fit(flow, objective=objective, steps=steps, lr=3e-3, progress=False, generator=g)
        if method == "reverse_kl":  # the same budget as FAB used
            budget = results["fab"][2]
            steps = budget // 128
            fit(flow, objective=objective, steps=steps, lr=3e-3, progress=False, generator=g)
        results[method] = (*_quality(flow, target), counted.count)
    ess_fab, left_fab, evals = results["fab"]
    ess_rkl, left_rkl, evals_rkl = results["reverse_kl"]
    assert abs(evals_rkl - evals) <= 256
    assert ess_fab > 0.6
    assert abs(left_fab - exact_left) < 0.06
    assert ess_rkl < ess_fab
    assert abs(left_rkl - exact_left) > abs(left_fab - exact_left)


def test_fab_without_buffer_and_state_round_trip(tmp_path):
    """On-policy FAB lowers the alpha-2 divergence; with a buffer, a run resumed from a
    checkpoint is bit-identical to an uninterrupted one (buffer, step size, random states)."""
    u = lambda x: 0.5 * ((x - 1.5) ** 2).sum(-1) / 0.25  # noqa: E731
    torch.manual_seed(0)
    flow = NSF(2, layers=2, hidden=(16,))
    fab = FAB(u, 128, n_levels=3, generator=torch.Generator().manual_seed(0))
    fit(flow, objective=fab, steps=25, lr=1e-2, progress=False)
    assert fab.diagnostics["ess"] > 0.5

    def run(steps, path, resume):
        torch.manual_seed(0)
        model = NSF(2, layers=1, hidden=(8,))
        g = torch.Generator().manual_seed(4)
        objective = FAB(
            u,
            32,
            n_levels=2,
            buffer=PrioritisedReplayBuffer(256, 64, generator=g),
            updates_per_ais=2,
            generator=g,
        )
        fit(
            model,
            objective=objective,
            steps=steps,
            checkpoint=path,
            resume=resume,
            progress=False,
            generator=g,
        )
        return model, objective

    straight, _ = run(6, tmp_path / "a.pt", False)
    run(3, tmp_path / "b.pt", False)
    resumed, objective = run(6, tmp_path / "b.pt", True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert len(objective.buffer) == 128


# ------------------------------------------------------------------------------ KL objective
class Wall(torch.autograd.Function):
    """0 for x0 > 0, +inf elsewhere, with a NaN gradient there (as an exploding force field)."""

    @staticmethod
    def forward(ctx, x0):
        ctx.save_for_backward(x0)
        return torch.where(x0 > 0, torch.zeros_like(x0), torch.full_like(x0, math.inf))

    @staticmethod
    def backward(ctx, grad):
        (x0,) = ctx.saved_tensors
        return torch.where(x0 > 0, torch.zeros_like(x0), torch.full_like(x0, math.nan)) * grad


def test_robust_reverse_kl_drops_bad_samples_without_nan_gradients():
    q = DiagNormal(2)

    def u(x):
        return 0.5 * (x**2).sum(-1) + Wall.apply(x[..., 0])

    loss, log_w, dropped = robust_reverse_kl(q, u, 512, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert 150 < dropped < 350
    assert all(bool(torch.isfinite(p.grad).all()) for p in q.parameters())
    assert int(torch.isinf(log_w).sum()) == dropped


def test_kl_objective_modes_and_monitor(tmp_path):
    u = CountedTarget(lambda x: 0.5 * ((x - 1.0) ** 2).sum(-1))
    data = 1.0 + torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InvalidInput, match="forward_weight"):
        KLObjective(u, data)
    ml = KLObjective(u, data, forward_weight=1.0, batch_size=64, monitor_every=5)
    monitor = Monitor(ml, u, steps=10, progress=False)
    fit(DiagNormal(2), objective=monitor, steps=10, lr=0.05, progress=False)
    record = monitor.record
    assert record.energy_evaluations[-1] == 0  # maximum likelihood spends no energy
    assert record.monitor_evaluations[-1] == 2 * 64 == u.count  # ESS at steps 0 and 5
    ess = record.diagnostics["ess"]
    assert math.isfinite(ess[0]) and math.isnan(ess[1]) and math.isfinite(ess[5])
    # a resumed monitored run continues the record and the count
    u2 = CountedTarget(u.target)
    path = tmp_path / "ck.pt"

    def run(steps, resume):
        torch.manual_seed(0)
        mon = Monitor(KLObjective(u2, batch_size=32), u2, progress=False)
        fit(
            DiagNormal(2),
            objective=mon,
            steps=steps,
            checkpoint=path,
            resume=resume,
            progress=False,
        )
        return mon

    run(3, False)
    mon = run(5, True)
    assert mon.record.step == [1, 2, 3, 4, 5]
    assert mon.record.energy_evaluations == [32, 64, 96, 128, 160]
    assert mon.record.wall_time == sorted(mon.record.wall_time)


def test_latent_ais_refuses_spaces_hmc_cannot_move_on():
    from manifoldflows.spaces import Interval

    flow = build_flow(Product(Euclidean(1), Interval(0.0, 1.0, 1)), "spline", layers=1)
    with pytest.raises(InvalidInput, match="HMC cannot move"):
        fab_annealed_importance_sampling(flow, lambda x: (x**2).sum(-1), 4, 1)
    assert wrap(torch.tensor(4.0)) < math.pi
