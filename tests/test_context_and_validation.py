"""A context given to something unconditional is refused; the package-wide validation switch."""

from __future__ import annotations

import pytest
import torch

import manifoldflows
from manifoldflows import Chain, Flow, InvalidInput, NonFiniteOutput
from manifoldflows.distributions import DiagNormal, StandardNormal, VonMises
from manifoldflows.presets import NSF
from manifoldflows.transforms import AffineCoupling, MaskedAffineAutoregressive, Reverse


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- context
def test_unconditional_flow_log_prob_refuses_a_context():
    flow = NSF(2, layers=2, hidden=(8,))
    x, c = torch.randn(5, 2), torch.randn(5, 3)
    with pytest.raises(InvalidInput, match=r"Flow\.log_prob: got a context .* unconditional"):
        flow.log_prob(x, c)
    flow.log_prob(x)  # without the context it works


@pytest.mark.parametrize("method", ["sample", "rsample", "sample_and_log_prob"])
def test_unconditional_flow_sampling_refuses_a_context(method):
    flow = NSF(2, layers=2, hidden=(8,))
    with pytest.raises(InvalidInput, match="unconditional"):
        getattr(flow, method)((4,), torch.randn(3, 1))


def test_unconditional_flow_sample_and_log_weight_refuses_a_context():
    flow = NSF(2, layers=2, hidden=(8,))
    with pytest.raises(InvalidInput, match="unconditional"):
        flow.sample_and_log_weight(lambda x: (x**2).sum(-1), (4,), torch.randn(3, 1))


def test_fit_refuses_a_context_for_an_unconditional_flow():
    from manifoldflows.training import fit

    flow = NSF(2, layers=2, hidden=(8,))
    data, context = torch.randn(64, 2), torch.randn(64, 1)
    with pytest.raises(InvalidInput, match="unconditional"):
        fit(flow, data, context=context, steps=1, batch_size=16, progress=False)


def test_unconditional_layer_refuses_a_context_naming_it():
    layer = MaskedAffineAutoregressive(2, hidden=(8,))
    x = torch.randn(5, 2)
    with pytest.raises(InvalidInput, match=r"MaskedAffineAutoregressive\.forward: got a context"):
        layer(x, torch.randn(5, 1))
    with pytest.raises(InvalidInput, match=r"MaskedAffineAutoregressive\.inverse: got a context"):
        layer.inverse(x, torch.randn(5, 1))


@pytest.mark.parametrize(
    "dist", [StandardNormal(2), DiagNormal(2), VonMises(1)], ids=lambda d: type(d).__name__
)
def test_unconditional_distribution_refuses_a_context_naming_it(dist):
    x = dist.sample((4,))
    name = type(dist).__name__
    with pytest.raises(InvalidInput, match=rf"{name}\.log_prob: got a context"):
        dist.log_prob(x, torch.randn(4, 2))
    with pytest.raises(InvalidInput, match=rf"{name}: got a context"):
        dist.sample((4,), torch.randn(4, 2))


def test_chain_mixing_conditional_and_unconditional_layers_still_takes_a_context():
    chain = Chain(AffineCoupling(2, context_dim=1), MaskedAffineAutoregressive(2), Reverse(2))
    x, c = torch.randn(5, 2), torch.randn(5, 1)
    y, ld = chain(x, c)
    torch.testing.assert_close(chain.inverse(y, c)[0], x, atol=1e-5, rtol=0)
    flow = Flow(StandardNormal(2), chain)
    assert flow.log_prob(x, c).shape == (5,)


def test_conditional_base_with_unconditional_transform_keeps_working():
    base = DiagNormal(2, context_dim=3)
    flow = Flow(base, Chain(MaskedAffineAutoregressive(2, hidden=(8,)), Reverse(2)))
    c = torch.randn(4, 3)
    x, log_q = flow.sample_and_log_prob((2,), c, generator=_gen(0))
    assert x.shape == (2, 4, 2)
    torch.testing.assert_close(flow.log_prob(x, c), log_q)
    y, log_w = flow.sample_and_log_weight(lambda x: (x**2).sum(-1), (2,), c)
    assert log_w.shape == (2, 4)
    assert flow.sample((3,), c).shape == (3, 4, 2)


# ----------------------------------------------------------------------------- validation
@pytest.fixture
def restore_validation():
    before = manifoldflows.validation_enabled()
    yield
    manifoldflows.set_validation(before)


def test_validation_is_on_by_default():
    assert manifoldflows.validation_enabled() is True
    layer, dist = Reverse(2), StandardNormal(2)
    assert layer.validate is True and dist.validate is True
    with pytest.raises(InvalidInput):
        layer(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(InvalidInput):
        dist.log_prob(torch.tensor([[float("nan"), 1.0]]))


def test_set_validation_false_skips_the_checks(restore_validation):
    flow = NSF(2, layers=2, hidden=(8,))
    bad = torch.tensor([[float("nan"), 1.0]])
    manifoldflows.set_validation(False)
    assert not flow.validate and not flow.transform.validate and not flow.base.validate
    assert Reverse(2)(bad)[0].isnan().any()  # no InvalidInput on the input ...
    assert flow.transform.inverse(bad)[0].isnan().any()  # ... nor NonFiniteOutput after
    assert StandardNormal(2).log_prob(bad).isnan().all()
    assert flow.log_prob(torch.randn(3, 2), torch.randn(3, 1)).shape == (3,)  # context unchecked
    manifoldflows.set_validation(True)
    with pytest.raises(InvalidInput):
        flow.log_prob(bad)


def test_validation_context_manager_restores_the_previous_setting():
    bad = torch.tensor([[float("nan"), 1.0]])
    with manifoldflows.validation(False):
        assert not manifoldflows.validation_enabled()
        Reverse(2)(bad)
        with manifoldflows.validation(True):
            with pytest.raises(InvalidInput):
                Reverse(2)(bad)
        assert not manifoldflows.validation_enabled()
    assert manifoldflows.validation_enabled()
    with pytest.raises(RuntimeError, match="boom"):
        with manifoldflows.validation(False):
            raise RuntimeError("boom")
    assert manifoldflows.validation_enabled()


def test_per_instance_setting_overrides_the_switch(restore_validation):
    bad = torch.tensor([[float("nan"), 1.0]])
    pinned_on, pinned_off = Reverse(2), Reverse(2)
    pinned_on.validate, pinned_off.validate = True, False
    pinned_off(bad)  # off even though the switch is on
    manifoldflows.set_validation(False)
    with pytest.raises(InvalidInput):
        pinned_on(bad)  # on even though the switch is off
    pinned_on.validate = None  # follows the switch again
    pinned_on(bad)
    dist = StandardNormal(2)
    dist.validate = True
    with pytest.raises(InvalidInput):
        dist.log_prob(bad)


def test_nonfinite_output_check_follows_the_switch(restore_validation):
    class Blowup(Reverse):
        def _forward(self, x, context):
            return x / 0.0, x.new_zeros(x.shape[:-1])

    layer = Blowup(2)
    with pytest.raises(NonFiniteOutput):
        layer(torch.ones(1, 2))
    with manifoldflows.validation(False):
        assert torch.isinf(layer(torch.ones(1, 2))[0]).all()


def test_validate_flag_refuses_non_bool_and_survives_save_load(tmp_path):
    layer = Reverse(2)
    with pytest.raises(TypeError, match="Reverse.validate"):
        layer.validate = "no"
    layer.validate = False
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    assert loaded.validate is False
    with pytest.raises(TypeError, match="set_validation: expected a bool"):
        manifoldflows.set_validation(1)
