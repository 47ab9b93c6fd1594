"""Specific tests of the Glow image layers, the split prior and the ``Glow`` preset.

The generic properties (inverse, logdet vs autograd, gradients, context, save/load) are covered
by the checker cases in ``tests/cases/glow.py``; these tests pin down what is particular to each
layer: the squeeze is a permutation, the 1x1 convolution's logdet is ``H W log|det W|``, the
split prior is the explicit conditional Gaussian, and Glow densities are normalised.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from manifoldflows import Chain, Flow, Inverse
from manifoldflows.distributions import ImageStandardNormal
from manifoldflows.errors import InvalidInput, SpaceMismatch
from manifoldflows.nn import ConvNet
from manifoldflows.presets import Glow
from manifoldflows.spaces import Euclidean, Image
from manifoldflows.testing import check_distribution, perturb_parameters
from manifoldflows.transforms import (
    ActNorm2d,
    AffineCoupling2d,
    InvertibleConv1x1,
    SplitPrior,
    Squeeze,
    initialize_actnorm,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "layers" / "glow.md"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _standard_normal_log_prob(z: Tensor) -> Tensor:
    return (-0.5 * z * z - 0.5 * math.log(2 * math.pi)).flatten(-3).sum(-1)


# ----------------------------------------------------------------------------- space, base
def test_image_space():
    space = Image(2, 3, 4)
    assert space.event_shape == (2, 3, 4) and space.dim == space.ambient_dim == 24
    assert space == Image(2, 3, 4) and space != Image(2, 4, 3) and space != Euclidean(24)
    x = space.random((5,), generator=_gen())
    assert x.shape == (5, 2, 3, 4)
    space.check_point(x)
    assert space.tangent_basis(x).shape == (5, 24, 24)
    with pytest.raises(InvalidInput, match=r"trailing shape \(2, 3, 4\)"):
        space.check_point(torch.zeros(5, 2, 4, 3))
    with pytest.raises(ValueError, match="Image: expected a positive integer height"):
        Image(1, 0, 2)


def test_image_standard_normal(dtype):
    base = ImageStandardNormal(2, 2, 3)
    check_distribution(base, dtype=dtype)
    x = torch.randn(4, 2, 2, 3, dtype=dtype)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(base.to(dtype).log_prob(x), ref)


# ----------------------------------------------------------------------------- squeeze
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_squeeze_is_a_permutation_with_exact_inverse(batch):
    layer = Squeeze(2, 4, 6)
    x = torch.arange(math.prod(batch) * 48, dtype=torch.float64).reshape(*batch, 2, 4, 6)
    y, logdet = layer(x)
    assert y.shape == (*batch, 8, 2, 3) and logdet.shape == batch
    assert torch.equal(logdet, torch.zeros(batch, dtype=torch.float64))
    # every value appears exactly once: a permutation of the coordinates
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)
    # y[c*4 + a*2 + b, i, j] = x[c, 2i + a, 2j + b]
    for c, a, b, i, j in [(0, 0, 0, 0, 0), (1, 1, 0, 1, 2), (0, 0, 1, 1, 1), (1, 1, 1, 0, 2)]:
        assert torch.equal(y[..., c * 4 + a * 2 + b, i, j], x[..., c, 2 * i + a, 2 * j + b])
    x2, logdet2 = layer.inverse(y)
    assert torch.equal(x2, x) and torch.equal(logdet2, logdet)


def test_squeeze_rejects_odd_sizes_and_wrong_shapes():
    with pytest.raises(ValueError, match=r"Squeeze: expected height and width divisible by 2"):
        Squeeze(1, 3, 4)
    with pytest.raises(ValueError, match=r"Squeeze: .*divisible by 2.*4x5"):
        Squeeze(1, 4, 5)
    layer = Squeeze(1, 4, 4)
    with pytest.raises(InvalidInput, match=r"Squeeze\.forward: .*Image\(1, 4, 4\).*\(2, 1, 4, 3\)"):
        layer(torch.zeros(2, 1, 4, 3))
    with pytest.raises(InvalidInput, match=r"Squeeze\.inverse: .*Image\(4, 2, 2\)"):
        layer.inverse(torch.zeros(2, 1, 4, 4))


# ----------------------------------------------------------------------------- 1x1 conv
def test_invertible_conv_logdet_is_pixels_times_slogdet(dtype):
    layer = InvertibleConv1x1(3, 4, 5, bias=True, generator=_gen(1)).to(dtype)
    perturb_parameters(layer, 0.3, _gen(2))
    w = layer.weight()
    x = torch.randn(6, 3, 4, 5, dtype=dtype, generator=_gen(3)).to(dtype)
    y, logdet = layer(x)
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {}
    expected = 4 * 5 * torch.linalg.slogdet(w)[1]
    torch.testing.assert_close(logdet, expected.expand(6), **tol)
    # it is the convolution with kernel W[:, :, None, None] (plus bias)
    torch.testing.assert_close(y, F.conv2d(x, w[:, :, None, None], layer.bias), **tol)
    x2, logdet2 = layer.inverse(y)
    torch.testing.assert_close(x2, x, **({"atol": 1e-9, "rtol": 1e-9} if tol else {}))
    torch.testing.assert_close(logdet2, -logdet, **tol)


def test_invertible_conv_starts_as_rotation():
    layer = InvertibleConv1x1(4, 2, 2, generator=_gen(5)).double()
    w = layer.weight()
    torch.testing.assert_close(w @ w.T, torch.eye(4, dtype=torch.float64))
    assert not torch.allclose(w.abs(), torch.eye(4, dtype=torch.float64))  # not a permutation


# ----------------------------------------------------------------------------- actnorm
def test_actnorm2d_initialises_per_channel_and_once():
    layer = ActNorm2d(3, 2, 2)
    scale = torch.tensor([4.0, 0.2, 1.0]).view(3, 1, 1)
    data = torch.randn(50, 3, 2, 2, generator=_gen()) * scale + 3.0
    assert initialize_actnorm(layer, data) == 1
    z, logdet = layer.inverse(data)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet, -4 * layer.log_scale.sum().detach().expand(50))
    shift = layer.shift.detach().clone()
    assert initialize_actnorm(layer, data * 10.0) == 0  # already initialised
    layer.inverse(data * 10.0)
    assert torch.equal(layer.shift.detach(), shift)


# ----------------------------------------------------------------------------- split prior
def _perturbed(module, scale=0.3, seed=3):
    perturb_parameters(module, scale, _gen(seed))
    return module


def test_split_prior_is_the_explicit_conditional_gaussian(dtype, device):
    """A one-level model: squeeze, split with a conditional prior, deeper part on kept half."""
    inner = AffineCoupling2d(2, 2, 2, hidden=(8,), context_dim=2)
    split = SplitPrior(4, 2, 2, inner=inner, context_dim=2, hidden=(8,))
    transform = Chain(Squeeze(1, 4, 4), split, Inverse(Squeeze(1, 4, 4)))
    flow = _perturbed(Flow(ImageStandardNormal(1, 4, 4), transform)).to(dtype=dtype, device=device)
    x = torch.randn(7, 1, 4, 4, generator=_gen(1)).to(dtype=dtype, device=device)
    ctx = torch.randn(7, 2, generator=_gen(2)).to(dtype=dtype, device=device)
    with torch.no_grad():
        h = F.pixel_unshuffle(x, 2)
        keep, out = h[:, :2], h[:, 2:]
        z_keep, ld_keep = inner.inverse(keep, ctx)
        mu, log_sigma = split.prior_params(keep, ctx)
        gauss = torch.distributions.Normal(mu, log_sigma.exp())
        manual = (
            _standard_normal_log_prob(z_keep) + ld_keep + gauss.log_prob(out).flatten(1).sum(-1)
        )
        log_q = flow.log_prob(x, ctx)
    assert log_sigma.abs().min() > 1e-3 and mu.abs().min() > 1e-4  # a non-trivial prior
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {}
    torch.testing.assert_close(log_q, manual, **tol)
    # the prior depends on the context
    mu2, _ = split.prior_params(keep, ctx + 1.0)
    assert not torch.allclose(mu, mu2)


def test_split_without_learned_prior_is_standard_normal_on_the_factored_part():
    inner = _perturbed(AffineCoupling2d(2, 2, 2, hidden=(8,)))
    split = SplitPrior(4, 2, 2, inner=inner, learned=False)
    flow = Flow(ImageStandardNormal(4, 2, 2), split).double()
    x = torch.randn(5, 4, 2, 2, dtype=torch.float64, generator=_gen(1))
    with torch.no_grad():
        z_keep, ld = inner.inverse(x[:, :2])
        manual = _standard_normal_log_prob(z_keep) + ld + _standard_normal_log_prob(x[:, 2:])
        torch.testing.assert_close(flow.log_prob(x), manual)


def test_split_prior_rejects_bad_arguments():
    with pytest.raises(SpaceMismatch, match=r"SplitPrior: the kept channels live on Image\(2"):
        SplitPrior(4, 2, 2, inner=AffineCoupling2d(3, 2, 2))
    with pytest.raises(ValueError, match=r"SplitPrior: split must be an integer in \[1, 3\]"):
        SplitPrior(4, 2, 2, split=4)
    with pytest.raises(ValueError, match="SplitPrior: needs at least 2 channels"):
        SplitPrior(1, 2, 2)
    with pytest.raises(ValueError, match="SplitPrior: the prior expects context size 3"):
        SplitPrior(4, 2, 2, inner=AffineCoupling2d(2, 2, 2, context_dim=2), context_dim=3)
    with pytest.raises(ValueError, match="AffineCoupling2d: needs at least 2 channels"):
        AffineCoupling2d(1, 4, 4)
    with pytest.raises(ValueError, match="InvertibleConv1x1: .*positive integer number of chan"):
        InvertibleConv1x1(0, 4, 4)
    with pytest.raises(ValueError, match="ConvNet: expected an odd kernel_size"):
        ConvNet(2, 2, kernel_size=2)


# ----------------------------------------------------------------------------- Glow preset
def _tiny_glow(context_dim=None, **options):
    """A perturbed two-level Glow on 1x4x4 images with initialised actnorms, in float64."""
    flow = Glow(1, 4, 4, levels=2, steps=1, hidden=8, context_dim=context_dim, **options)
    flow = flow.double()
    data = torch.randn(64, 1, 4, 4, dtype=torch.float64, generator=_gen(7))
    ctx = None if context_dim is None else torch.randn(64, context_dim, dtype=torch.float64)
    initialize_actnorm(flow, data, ctx)  # data-dependent initialisation of every ActNorm2d
    return _perturbed(flow, 0.2)


def test_glow_structure_and_actnorm_initialisation():
    flow = _tiny_glow()
    assert isinstance(flow.transform, Chain) and flow.base.space == Image(1, 4, 4)
    actnorms = [m for m in flow.modules() if isinstance(m, ActNorm2d)]
    splits = [m for m in flow.modules() if isinstance(m, SplitPrior)]
    assert len(actnorms) == 2 and all(bool(m.initialized) for m in actnorms)
    assert len(splits) == 1 and splits[0].domain == Image(4, 2, 2)
    assert splits[0].inner.domain == Image(2, 2, 2)  # the next level, on the kept half
    assert sum(isinstance(m, AffineCoupling2d) for m in flow.modules()) == 2
    plain = Glow(1, 4, 4, levels=2, steps=1, hidden=4, split_prior=False, context_dim=2)
    split = next(m for m in plain.modules() if isinstance(m, SplitPrior))
    assert split.prior_net is None and split.context_dim == 2  # the context goes to inner


def test_glow_sampling_and_log_prob_consistency(device):
    flow = _tiny_glow(context_dim=3).to(device)
    ctx = torch.randn(4, 3, dtype=torch.float64, generator=_gen(1)).to(device)
    gen = torch.Generator(device=device).manual_seed(2)
    x = flow.sample((5,), ctx, generator=gen)
    assert x.shape == (5, 4, 1, 4, 4) and x.device.type == torch.device(device).type
    x, log_q = flow.sample_and_log_prob((5,), ctx, generator=gen)
    assert log_q.shape == (5, 4)
    torch.testing.assert_close(log_q, flow.log_prob(x, ctx))
    assert not torch.allclose(flow.log_prob(x, ctx), flow.log_prob(x, ctx + 1.0))
    check_distribution(flow, device=device, context=torch.randn(2, 3))


def test_glow_gradients_are_finite():
    flow = Glow(1, 4, 4, levels=2, steps=2, hidden=8, context_dim=2)
    data = torch.randn(16, 1, 4, 4, generator=_gen(1))
    ctx = torch.randn(16, 2, generator=_gen(2))
    initialize_actnorm(flow, data, ctx)
    _perturbed(flow, 0.1)
    loss = -flow.log_prob(data, ctx).mean()
    loss.backward()
    grads = {n: p.grad for n, p in flow.named_parameters()}
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values())
    assert all(bool((g != 0).any()) for g in grads.values())


NORMALISED = {
    "glow-1x2x2": lambda: Glow(1, 2, 2, levels=1, steps=2, hidden=8),
    "split-1x2x2-context": lambda: Chain(
        Squeeze(1, 2, 2),
        SplitPrior(
            4, 1, 1, inner=AffineCoupling2d(2, 1, 1, hidden=8, context_dim=1), context_dim=1
        ),
        AffineCoupling2d(4, 1, 1, hidden=8, context_dim=1),
        InvertibleConv1x1(4, 1, 1, generator=_gen(4)),
        ActNorm2d(4, 1, 1),
        Inverse(Squeeze(1, 2, 2)),
    ),
}


@pytest.mark.parametrize("name", list(NORMALISED))
def test_glow_density_integrates_to_one(name):
    """Importance sampling from a broad Gaussian: E_g[q/g] = 1 within 4 standard errors."""
    built = NORMALISED[name]()
    flow = built if isinstance(built, Flow) else Flow(ImageStandardNormal(1, 2, 2), built)
    flow = flow.double()
    shape = flow.space.event_shape
    ctx = None if flow.context_dim is None else torch.full((1,), 0.5, dtype=torch.float64)
    init = torch.randn(256, *shape, dtype=torch.float64, generator=_gen(1))
    initialize_actnorm(flow, init, ctx)
    _perturbed(flow, 0.15, seed=11)
    flow.eval()
    scale = 2.5
    x = scale * torch.randn(100_000, *shape, dtype=torch.float64, generator=_gen(5))
    log_g = _standard_normal_log_prob(x / scale) - x[0].numel() * math.log(scale)
    with torch.no_grad():
        ratio = torch.exp(flow.log_prob(x, ctx) - log_g)
    mean, stderr = ratio.mean().item(), ratio.std().item() / math.sqrt(ratio.numel())
    assert abs(mean - 1.0) < 4 * stderr + 1e-3, (mean, stderr)
    assert stderr < 0.05  # the test must be able to detect a 20% normalisation error


def test_glow_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match=r"Glow: .*divisible by 8; got an image of 4x4"):
        Glow(1, 4, 4, levels=3)
    with pytest.raises(ValueError, match="Glow: expected a positive integer number of levels"):
        Glow(1, 4, 4, levels=0)
    flow = Glow(1, 4, 4, levels=2, steps=1, hidden=4)
    with pytest.raises(InvalidInput, match=r"expected points of Image\(1, 4, 4\)"):
        flow.log_prob(torch.randn(3, 4, 4, 1))


# ----------------------------------------------------------------------------- docs
