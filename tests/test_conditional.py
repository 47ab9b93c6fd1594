"""Conditional presets: every preset takes ``context_dim`` and uses its context; the Euclidean
ones learn a conditional density by maximum likelihood."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pytest
import torch

from manifoldflows import presets
from manifoldflows.core import Flow
from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Euclidean, Interval, Product, Torus
from manifoldflows.testing import perturb_parameters
from manifoldflows.training import fit

CONTEXT_DIM = 2
FEATURES = 3  # odd, so coupling splits are uneven

# name (before any "-") -> builder(context_dim) -> Flow on R^3, a 1x4x4 image (Glow), T^3 or S^2
CASES: dict[str, Callable[[int | None], Flow]] = {
    "RealNVP": lambda c: presets.RealNVP(FEATURES, context_dim=c, layers=2, hidden=(16,)),
    "NSF": lambda c: presets.NSF(FEATURES, context_dim=c, layers=2, hidden=(16,)),
    "NSF-autoregressive": lambda c: presets.NSF(
        FEATURES, context_dim=c, layers=2, hidden=(16,), autoregressive=True
    ),
    "MAF": lambda c: presets.MAF(FEATURES, context_dim=c, layers=2, hidden=(16,)),
    "IAF": lambda c: presets.IAF(FEATURES, context_dim=c, layers=2, hidden=(16,)),
    "Planar": lambda c: presets.Planar(FEATURES, context_dim=c, layers=3, hidden=(16,)),
    "Sylvester": lambda c: presets.Sylvester(FEATURES, context_dim=c, layers=2, hidden=(16,)),
    "ResidualFlow": lambda c: presets.ResidualFlow(FEATURES, context_dim=c, layers=2, hidden=(16,)),
    "NAF": lambda c: presets.NAF(FEATURES, context_dim=c, layers=2, hidden=(16,), sigmoid_units=4),
    "FlowPP": lambda c: presets.FlowPP(
        FEATURES, context_dim=c, layers=2, hidden=(16,), components=4
    ),
    "build_flow": lambda c: presets.build_flow(
        FEATURES, "additive", layers=3, context_dim=c, hidden=(16,)
    ),
    "build_flow-product": lambda c: presets.build_flow(
        Product(Euclidean(1), Interval(0.0, 3.0, 1), Torus(1)),
        "spline",
        layers=2,
        context_dim=c,
        hidden=(16,),
        bins=4,
    ),
    "Glow": lambda c: presets.Glow(1, 4, 4, levels=2, steps=1, hidden=8, context_dim=c),
    # manifold presets obey the same contract
    "TorusNSF": lambda c: presets.TorusNSF(3, context_dim=c, layers=2, hidden=(16,), bins=4),
    "TorusMoebius": lambda c: presets.TorusMoebius(
        3, context_dim=c, layers=2, hidden=(16,), components=2
    ),
    "SphereFlow": lambda c: presets.SphereFlow(2, context_dim=c, layers=2, hidden=(16,), bins=4),
}


def flow_presets() -> set[str]:
    """Exported names of presets.py annotated to return a Flow (helpers like ``stack`` are not)."""
    names = set()
    # SNF builds a stochastic flow (no log_prob); tests/test_stochastic.py checks its context.
    for name in set(presets.__all__) - {"SNF"}:
        annotation = inspect.signature(getattr(presets, name)).return_annotation
        if annotation in ("Flow", Flow):
            names.add(name)
    return names


def test_every_preset_has_a_conditional_case():
    assert {"RealNVP", "NSF", "MAF", "Glow"} <= flow_presets()
    missing = flow_presets() - {name.split("-")[0] for name in CASES}
    assert not missing, f"presets {sorted(missing)} have no case in tests/test_conditional.py"


def build(name: str, context_dim: int | None, device) -> Flow:
    torch.manual_seed(0)
    flow = CASES[name](context_dim).to(device=device, dtype=torch.float64)
    # presets start at (or near) the identity: perturb so that the context actually matters
    perturb_parameters(flow, 0.3, torch.Generator().manual_seed(1))
    return flow.eval()  # no data-dependent (ActNorm) initialisation on the first batch


@pytest.mark.parametrize("name", list(CASES))
def test_preset_is_conditional(name, device):
    flow = build(name, CONTEXT_DIM, device)
    assert flow.context_dim == CONTEXT_DIM
    event = tuple(flow.space.event_shape)
    g = torch.Generator().manual_seed(2)
    opts = {"dtype": torch.float64}
    context = torch.randn(4, CONTEXT_DIM, generator=g, **opts).to(device)

    # shapes: sample shape + context batch shape + event shape
    x = flow.sample((5,), context=context).detach()
    assert x.shape == (5, 4, *event)
    log_q = flow.log_prob(x, context).detach()
    assert log_q.shape == (5, 4) and bool(torch.isfinite(log_q).all())
    y, log_q_y = (t.detach() for t in flow.sample_and_log_prob((5,), context=context))
    assert y.shape == (5, 4, *event) and log_q_y.shape == (5, 4)
    torch.testing.assert_close(flow.log_prob(y, context), log_q_y, atol=1e-6, rtol=1e-6)
    assert flow.sample((6,), context=context[0]).shape == (6, *event)

    # each data row is paired with its own context row
    for i in range(context.shape[0]):
        torch.testing.assert_close(flow.log_prob(x[:, i], context[i]), log_q[:, i])

    # the density depends on the context, differentiably
    shifted = flow.log_prob(x, context + 1.0).detach()
    assert float((shifted - log_q).abs().max()) > 1e-3, "log_prob ignores the context"
    ctx = context.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(flow.log_prob(x, ctx).sum(), ctx)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0

    with pytest.raises(InvalidInput):
        flow.log_prob(x)


@pytest.mark.parametrize("name", list(CASES))
def test_preset_without_context_dim_is_unconditional(name, device):
    flow = build(name, None, device)
    assert flow.context_dim is None
    x = flow.sample((3,))
    assert flow.log_prob(x).shape == (3,)


# ---------------------------------------------------------------- every coordinate is transformed


PERMUTED = {
    "RealNVP": presets.RealNVP,
    "NSF": presets.NSF,
    "MAF": presets.MAF,
    "IAF": presets.IAF,
    "NAF": presets.NAF,
    "FlowPP": presets.FlowPP,
}


@pytest.mark.parametrize("permute", ["reverse", "random", "none"])
@pytest.mark.parametrize("features", [2, 4])
@pytest.mark.parametrize("name", list(PERMUTED))
def test_preset_transforms_every_coordinate(name, features, permute):
    # A chain whose permutations undo the couplings' alternation leaves a coordinate untouched:
    # then some latent coordinate equals some data coordinate exactly, for every input.
    torch.manual_seed(0)
    flow = PERMUTED[name](features, layers=4, hidden=(8,), permute=permute).double()
    perturb_parameters(flow, 0.3, torch.Generator().manual_seed(1))
    x = torch.randn(64, features, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z, _ = flow.transform.inverse(x)
    untouched = [
        (i, j)
        for i in range(features)
        for j in range(features)
        if torch.allclose(z[:, j], x[:, i], atol=1e-9, rtol=0)
    ]
    assert not untouched, f"{name}(permute={permute!r}): data -> latent coordinates {untouched}"


# ---------------------------------------------------------------- learning a conditional density

SIGMA = 0.5
# exact conditional entropy of x | c ~ N((c, -c), SIGMA^2 I_2), in nats
ENTROPY = 2 * 0.5 * math.log(2 * math.pi * math.e * SIGMA**2)


def conditional_data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    c = 4.0 * torch.rand(n, 1, generator=g) - 2.0
    x = torch.cat([c, -c], dim=-1) + SIGMA * torch.randn(n, 2, generator=g)
    return x, c


FITS: dict[str, Callable[[], Flow]] = {
    "RealNVP": lambda: presets.RealNVP(2, context_dim=1, layers=4, hidden=(32, 32)),
    "NSF": lambda: presets.NSF(2, context_dim=1, layers=2, hidden=(32, 32)),
    "MAF": lambda: presets.MAF(2, context_dim=1, layers=3, hidden=(32, 32)),
}


@pytest.mark.parametrize("name", list(FITS))
def test_fit_conditional_gaussian(name, device):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, c = conditional_data(4000, g)
    x_test, c_test = conditional_data(5000, g)
    flow = FITS[name]().to(device)
    fit(flow, x, context=c, steps=400, batch_size=256, lr=3e-3, progress=False,
        generator=torch.Generator(device=device).manual_seed(0))  # fmt: skip

    with torch.no_grad():
        nll = -float(flow.log_prob(x_test.to(device), c_test.to(device)).mean())
        # held-out NLL = H(x|c) + E_c KL(p(.|c) || q(.|c)); its Monte Carlo error is ~0.015
        assert abs(nll - ENTROPY) < 0.1, f"{name}: NLL {nll:.4f}, exact entropy {ENTROPY:.4f}"
        sg = torch.Generator(device=device).manual_seed(3)
        for value in (-1.5, 0.0, 1.5):
            ctx = torch.tensor([value], device=device)
            mean = flow.sample((2000,), context=ctx, generator=sg).mean(0).cpu()
            truth = torch.tensor([value, -value])
            # sampling error of the mean is SIGMA / sqrt(2000) ~ 0.011 per coordinate
            err = float((mean - truth).abs().max())
            assert err < 0.15, (
                f"{name}: mean at c={value} is {mean.tolist()}, want {truth.tolist()}"
            )
