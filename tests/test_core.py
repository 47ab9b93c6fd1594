"""The flow protocol (Chain, Inverse, Flow) and its handling of bad input."""

from __future__ import annotations

import pytest
import torch

from manifoldflows import (
    Chain,
    Flow,
    InvalidInput,
    Inverse,
    InverseNotAvailable,
    NonFiniteOutput,
    SpaceMismatch,
    StochasticFlowError,
    Transform,
)
from manifoldflows.distributions import DiagNormal, StandardNormal
from manifoldflows.spaces import Euclidean, Interval
from manifoldflows.transforms import AffineCoupling, MaskedAffineAutoregressive


class NaNAbove(Transform):
    """Test layer: identity, but NaN wherever x > threshold."""

    def __init__(self, d, threshold):
        super().__init__(Euclidean(d))
        self.threshold = threshold

    def _forward(self, x, context):
        y = torch.where(x > self.threshold, torch.nan, x)
        return y, torch.zeros(x.shape[:-1], dtype=x.dtype)

    _inverse = _forward


class NoisyShift(Transform):
    """Test layer: a stochastic shift y = x + eps, eps ~ N(0, s^2), with its path weight."""

    stochastic = True

    def __init__(self, d, scale=0.1):
        super().__init__(Euclidean(d))
        self.scale = scale

    def _forward(self, x, context):
        eps = torch.randn_like(x) * self.scale
        # forward and backward kernels are the same Gaussian: path weight 0
        return x + eps, torch.zeros(x.shape[:-1], dtype=x.dtype)


class ForwardOnly(Transform):
    def __init__(self):
        super().__init__(Euclidean(2))

    def _forward(self, x, context):
        return 2 * x, torch.full(x.shape[:-1], 2 * torch.log(torch.tensor(2.0)).item())


def test_chain_refuses_incompatible_spaces_naming_both():
    with pytest.raises(SpaceMismatch, match=r"AffineCoupling.*Euclidean\(3\).*Euclidean\(2\)"):
        Chain(AffineCoupling(3), AffineCoupling(2))


def test_flow_refuses_base_on_another_space():
    with pytest.raises(SpaceMismatch, match=r"StandardNormal.*Euclidean\(2\).*Euclidean\(3\)"):
        Flow(StandardNormal(2), AffineCoupling(3))


def test_chain_refuses_conflicting_context_sizes():
    with pytest.raises(ValueError, match="context sizes"):
        Chain(AffineCoupling(2, context_dim=1), AffineCoupling(2, context_dim=2))


def test_wrong_trailing_dimension_names_layer_expected_and_received():
    layer = AffineCoupling(3)
    with pytest.raises(InvalidInput, match=r"AffineCoupling\.forward.*\(3,\).*\(5, 2\)"):
        layer(torch.randn(5, 2))
    with pytest.raises(InvalidInput, match=r"AffineCoupling\.inverse"):
        layer.inverse(torch.randn(4))


def test_dtype_mix_is_refused():
    layer = AffineCoupling(2).double()
    with pytest.raises(InvalidInput, match=r"AffineCoupling.*torch\.float64.*torch\.float32"):
        layer(torch.randn(3, 2, dtype=torch.float32))


def test_device_mix_is_refused():
    layer = AffineCoupling(2).to("meta")
    with pytest.raises(InvalidInput, match=r"AffineCoupling.*device meta.*cpu"):
        layer(torch.randn(3, 2))


def test_integer_input_is_refused():
    with pytest.raises(InvalidInput, match="floating-point"):
        AffineCoupling(2)(torch.ones(3, 2, dtype=torch.long))


@pytest.mark.parametrize("bad", [torch.nan, torch.inf, -torch.inf])
def test_non_finite_input_is_refused(bad):
    x = torch.randn(4, 2)
    x[2, 1] = bad
    with pytest.raises(InvalidInput, match=r"AffineCoupling\.forward.*1 NaN/inf"):
        AffineCoupling(2)(x)
    flow = Flow(StandardNormal(2), AffineCoupling(2))
    with pytest.raises(InvalidInput, match="NaN/inf"):
        flow.log_prob(x)


def test_context_errors():
    layer = AffineCoupling(2, context_dim=3)
    x = torch.randn(4, 2)
    with pytest.raises(InvalidInput, match=r"expected a context tensor with 3 features, got None"):
        layer(x)
    with pytest.raises(InvalidInput, match=r"context of shape \(\.\.\., 3\), got \(4, 2\)"):
        layer(x, torch.randn(4, 2))
    with pytest.raises(InvalidInput, match=r"context batch shape \(5,\) does not broadcast"):
        layer(x, torch.randn(5, 3))
    with pytest.raises(InvalidInput, match="dtype"):
        layer(x, torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(InvalidInput, match="finite context"):
        layer(x, torch.full((4, 3), torch.nan))


def test_interval_domain_refuses_points_outside():
    from manifoldflows.spaces import Interval

    space = Interval(0.0, 1.0, 2)
    with pytest.raises(InvalidInput, match=r"layer X.*Interval\(0, 1, 2\).*1 point"):
        space.check_point(torch.tensor([[0.5, 0.5], [0.5, 1.5]]), "layer X")


def test_nonfinite_output_names_the_culprit_layer():
    chain = Chain(AffineCoupling(2), NaNAbove(2, threshold=50.0), AffineCoupling(2))
    chain(torch.randn(3, 2))  # fine
    with pytest.raises(NonFiniteOutput, match=r"Chain layer 1: NaNAbove\.forward"):
        chain(torch.tensor([[100.0, 0.0]]))


def test_layers_without_context_ignore_it_inside_conditional_chains():
    chain = Chain(AffineCoupling(2, context_dim=1), MaskedAffineAutoregressive(2))
    assert chain.context_dim == 1
    y, ld = chain(torch.randn(5, 2), torch.randn(5, 1))
    assert y.shape == (5, 2) and ld.shape == (5,)


def test_inverse_not_available():
    with pytest.raises(InverseNotAvailable, match="ForwardOnly has no inverse"):
        ForwardOnly().inverse(torch.randn(3, 2))
    inv = Inverse(ForwardOnly())
    with pytest.raises(InverseNotAvailable):
        inv(torch.randn(3, 2))
    y, ld = inv.inverse(torch.ones(3, 2))
    assert torch.equal(y, 2 * torch.ones(3, 2))


def test_inverse_swaps_directions_and_spaces():
    from manifoldflows.transforms import Sigmoid

    sig = Sigmoid(2)
    inv = Inverse(sig)
    assert inv.domain == Interval(0, 1, 2) and inv.codomain == Euclidean(2)
    x = torch.randn(6, 2)
    y, ld = sig(x)
    x2, ld2 = inv(y)
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ld2, -ld, atol=1e-5, rtol=1e-5)
    assert sig.inv.transform is sig and inv.inv is sig


def test_stochastic_chain_has_no_log_prob_but_log_weights():
    flow = Flow(StandardNormal(2), Chain(AffineCoupling(2), NoisyShift(2)))
    assert flow.stochastic
    with pytest.raises(StochasticFlowError, match="sample_and_log_weight"):
        flow.log_prob(torch.randn(3, 2))
    with pytest.raises(StochasticFlowError):
        flow.sample_and_log_prob((3,))
    x, log_w = flow.sample_and_log_weight(lambda x: 0.5 * (x**2).sum(-1), (10,))
    assert x.shape == (10, 2) and log_w.shape == (10,) and torch.isfinite(log_w).all()


def test_log_weights_are_constant_when_flow_equals_target():
    flow = Flow(DiagNormal(2, loc=1.0, scale=2.0), Chain(AffineCoupling(2)))
    energy = lambda x: -DiagNormal(2, loc=1.0, scale=2.0).log_prob(x)  # noqa: E731
    _, log_w = flow.sample_and_log_weight(energy, (100,))
    torch.testing.assert_close(log_w, torch.zeros(100), atol=1e-5, rtol=0)


def test_flow_sample_shapes_with_context():
    from manifoldflows.presets import NSF

    flow = NSF(2, layers=2, hidden=(8,), context_dim=3)
    ctx = torch.randn(5, 3)
    assert flow.sample((4,), ctx).shape == (4, 5, 2)
    x, log_q = flow.sample_and_log_prob((4,), ctx)
    assert x.shape == (4, 5, 2) and log_q.shape == (4, 5)
    torch.testing.assert_close(flow.log_prob(x, ctx), log_q, atol=1e-4, rtol=1e-4)
    assert flow.sample((), torch.randn(3)).shape == (2,)
    with pytest.raises(InvalidInput, match="context"):
        flow.sample((4,))


def test_flow_gradients_flow_through_rsample():
    from manifoldflows.presets import RealNVP

    flow = RealNVP(2, layers=2, hidden=(8,))
    x = flow.rsample((16,))
    x.sum().backward()
    grads = [p.grad for p in flow.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert not flow.sample((3,)).requires_grad


class GaussianEnergy:
    """A target object (the physics.Energy protocol): a space and a reduced energy."""

    def __init__(self, d):
        self.space = Euclidean(d)

    def energy(self, x):
        return 0.5 * (x**2).sum(-1)


def test_target_on_another_space_is_refused_naming_both():
    from manifoldflows.losses import log_importance_weights, reverse_kl
    from manifoldflows.presets import RealNVP

    flow = RealNVP(2, layers=2, hidden=(8,))
    for fn in (reverse_kl, log_importance_weights):
        with pytest.raises(SpaceMismatch, match=r"GaussianEnergy.*Euclidean\(3\).*Euclidean\(2\)"):
            fn(flow, GaussianEnergy(3), 8)
    with pytest.raises(SpaceMismatch, match="GaussianEnergy"):
        flow.sample_and_log_weight(GaussianEnergy(3), (4,))
    assert torch.isfinite(reverse_kl(flow, GaussianEnergy(2), 8))  # same space: accepted
