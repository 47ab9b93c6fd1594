"""ActNorm is initialised only where meant to be: never as a side effect of evaluation.

Regression tests for the traps of issue 9: a flow trained by reverse KL (which never sees data)
used to initialise its ActNorm layers on the first training-mode ``log_prob`` call, e.g. in the
middle of annealed importance sampling, which then returned a biased log Z; and a single-point
``log_prob`` set a zero spread (``log_scale = log(eps)``) that broke the flow for good.
"""

from __future__ import annotations

import copy

import pytest
import torch

from manifoldflows import presets
from manifoldflows.errors import InvalidInput
from manifoldflows.losses import reverse_kl
from manifoldflows.transforms import ActNorm, ActNorm2d, initialize_actnorm


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _double_well(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x[..., 0] - 6.0 * x[..., 0] ** 2 + x[..., 0] ** 4 + 0.5 * x[..., 1] ** 2


def _actnorms(model) -> list[ActNorm]:
    return [m for m in model.modules() if isinstance(m, ActNorm)]


def _reverse_kl_trained_nsf() -> torch.nn.Module:
    torch.manual_seed(0)
    flow = presets.NSF(2, layers=2, hidden=(16,), actnorm=True).double()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    flow.train()
    for step in range(5):
        opt.zero_grad()
        reverse_kl(flow, _double_well, 128, generator=_gen(step)).backward()
        opt.step()
    return flow  # left in training mode, as fit leaves a model that came in training mode


def test_log_prob_after_reverse_kl_training_matches_the_sampling_density():
    flow = _reverse_kl_trained_nsf()
    assert flow.training and not any(bool(m.initialized) for m in _actnorms(flow))
    state = copy.deepcopy(flow.state_dict())
    with torch.no_grad():
        x, log_q = flow.sample_and_log_prob((256,), generator=_gen(10))
        first = flow.log_prob(x)  # used to initialise the ActNorms here and change q
        again = flow.log_prob(x)
    torch.testing.assert_close(first, log_q)
    torch.testing.assert_close(again, log_q)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_annealed_importance_sampling_leaves_the_flow_unchanged():
    sampling = pytest.importorskip("physics.sampling")
    flow = _reverse_kl_trained_nsf()
    state = copy.deepcopy(flow.state_dict())
    runs = [
        sampling.annealed_importance_sampling(flow, _double_well, 256, 3, generator=_gen(seed))
        for seed in (1, 1)
    ]
    torch.testing.assert_close(runs[0].log_w, runs[1].log_w)  # same seed, same answer
    for key, value in flow.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_single_point_log_prob_does_not_poison_the_flow():
    flow = presets.NSF(2, layers=2, hidden=(8,), actnorm=True).double()
    flow.train()
    flow.log_prob(torch.randn(1, 2, dtype=torch.float64, generator=_gen(0)))
    for layer in _actnorms(flow):
        assert not bool(layer.initialized)
        assert torch.equal(layer.log_scale.detach(), torch.zeros(2, dtype=torch.float64))
    data = torch.randn(512, 2, dtype=torch.float64, generator=_gen(1)) * 3.0 + 1.0
    assert initialize_actnorm(flow, data) == 2
    log_q = flow.log_prob(data)
    assert bool(torch.isfinite(log_q).all())
    loss = -log_q.mean()
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in flow.parameters() if p.grad is not None)


def test_single_point_explicit_initialisation_raises_naming_actnorm():
    flow = presets.NSF(2, layers=2, hidden=(8,), actnorm=True).double()
    with pytest.raises(InvalidInput, match=r"ActNorm\.initialize: expected at least two"):
        initialize_actnorm(flow, torch.randn(1, 2, dtype=torch.float64))
    assert not any(bool(m.initialized) or m._init_on_next_inverse for m in _actnorms(flow))


def test_initialize_actnorm_on_a_conditional_glow_initialises_every_actnorm2d():
    flow = presets.Glow(1, 4, 4, levels=2, steps=1, hidden=6, context_dim=2)
    data = torch.randn(64, 1, 4, 4, generator=_gen(0)) * 2.0 + 0.5
    ctx = torch.randn(64, 2, generator=_gen(1))
    flow.eval()  # explicit initialisation works in either mode
    assert initialize_actnorm(flow, data, ctx) == 2
    assert all(isinstance(m, ActNorm2d) and bool(m.initialized) for m in _actnorms(flow))
    assert initialize_actnorm(flow, data, ctx) == 0
