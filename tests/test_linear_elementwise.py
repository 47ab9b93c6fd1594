"""Specific tests of the permutation, LU-linear, ActNorm and elementwise layers.

The generic properties (inverse, logdet vs autograd, gradients, save/load) are covered by the
checker cases in ``tests/cases/euclidean_basic.py``; these tests pin down what is particular
to each layer.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from manifoldflows import Chain, Flow, Inverse
from manifoldflows.distributions import StandardNormal
from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Euclidean, Interval
from manifoldflows.transforms import (
    ActNorm,
    Exp,
    IntervalToReal,
    Logit,
    LULinear,
    Permutation,
    RandomPermutation,
    Reverse,
    Sigmoid,
    Softplus,
    Tanh,
    initialize_actnorm,
)

BATCH_SHAPES = [(), (7,), (2, 3)]


# ----------------------------------------------------------------------------- permutations
@pytest.mark.parametrize(
    "bad, fragment",
    [
        ([0, 0, 1], "permutation of range(3)"),
        ([0, 2], "permutation of range(2)"),
        ([1, 2, 3], "permutation of range(3)"),
        ([-1, 0], "permutation of range(2)"),
        ([0.0, 1.0], "integer"),
        ([True, False], "integer"),
        ([[0, 1], [1, 0]], "1-D"),
        ([], "non-empty"),
        ("abc", "permutation"),
    ],
)
def test_permutation_rejects_non_permutations(bad, fragment):
    with pytest.raises(ValueError, match="Permutation") as info:
        Permutation(bad)
    assert fragment in str(info.value)


def test_permutation_accepts_tensor_and_sequence():
    a = Permutation(torch.tensor([2, 0, 1]))
    b = Permutation((2, 0, 1))
    x = torch.randn(4, 3)
    assert torch.equal(a(x)[0], b(x)[0])
    assert torch.equal(a(x)[0], x[:, [2, 0, 1]])


@pytest.mark.parametrize("shape", BATCH_SHAPES)
def test_permutation_roundtrip_and_zero_logdet(shape):
    layer = RandomPermutation(5, generator=torch.Generator().manual_seed(3))
    x = torch.randn(*shape, 5, dtype=torch.float64)
    y, ld = layer(x)
    assert ld.shape == shape and bool((ld == 0).all())
    assert torch.equal(layer.inverse(y)[0], x)


def test_reverse_and_random_permutation():
    assert Reverse(4).permutation.tolist() == [3, 2, 1, 0]
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(RandomPermutation(9, g1).permutation, RandomPermutation(9, g2).permutation)
    assert sorted(RandomPermutation(9).permutation.tolist()) == list(range(9))


@pytest.mark.parametrize("cls", [Reverse, RandomPermutation, LULinear, ActNorm, Tanh, Exp])
@pytest.mark.parametrize("features", [0, -2, 2.5, True, "3"])
def test_bad_feature_counts_are_refused(cls, features):
    with pytest.raises(ValueError, match=cls.__name__):
        cls(features)


def test_permutation_buffers_survive_dtype_changes():
    layer = Permutation([1, 0]).to(torch.float64)
    assert layer.permutation.dtype == torch.long
    assert set(layer.state_dict()) == {"permutation", "inverse_permutation"}


# ----------------------------------------------------------------------------- LULinear
def _random_lu(d: int, seed: int = 0) -> LULinear:
    layer = LULinear(d, identity_init=False, generator=torch.Generator().manual_seed(seed))
    layer = layer.to(torch.float64)
    with torch.no_grad():  # move away from a rotation so the logdet is non-trivial
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return layer


@pytest.mark.parametrize("identity_init", [True, False])
def test_lulinear_weight_is_plu_and_logdet_is_slogdet(identity_init):
    layer = LULinear(5, identity_init=identity_init, generator=torch.Generator().manual_seed(1))
    layer = layer.to(torch.float64)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    P, L, U = layer.permutation_matrix(), layer.lower_matrix(), layer.upper_matrix()
    W = layer.weight()
    torch.testing.assert_close(W, P @ L @ U)
    # the factors have the promised structure
    assert torch.equal(torch.diagonal(L), torch.ones(5, dtype=torch.float64))
    assert torch.equal(L, torch.tril(L)) and torch.equal(U, torch.triu(U))
    assert bool((torch.diagonal(U) > 0).all())
    assert torch.equal(P @ P.T, torch.eye(5, dtype=torch.float64))
    sign, logabsdet = torch.linalg.slogdet(W)
    x = torch.randn(6, 5, dtype=torch.float64)
    y, ld = layer(x)
    torch.testing.assert_close(ld, logabsdet.expand(6))
    torch.testing.assert_close(sign, torch.linalg.det(P))
    torch.testing.assert_close(y, x @ W.T + layer.bias)


def test_lulinear_identity_init_is_identity():
    layer = LULinear(4)
    x = torch.randn(3, 4)
    y, ld = layer(x)
    assert torch.equal(y, x) and torch.equal(ld, torch.zeros(3))


def test_lulinear_rotation_init_is_orthogonal():
    layer = LULinear(6, identity_init=False, generator=torch.Generator().manual_seed(0))
    W = layer.weight().double()
    torch.testing.assert_close(W @ W.T, torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", BATCH_SHAPES + [(0,)])
@pytest.mark.parametrize("bias", [True, False])
def test_lulinear_inverse_any_batch_shape(shape, bias):
    layer = _random_lu(4)
    if not bias:
        layer.bias = None
    x = torch.randn(*shape, 4, dtype=torch.float64)
    y, ld = layer(x)
    assert y.shape == x.shape and ld.shape == shape
    x2, ld2 = layer.inverse(y)
    assert x2.shape == x.shape and ld2.shape == shape
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ld + ld2, torch.zeros(shape, dtype=torch.float64))


def test_lulinear_inverse_matches_linear_solve():
    layer = _random_lu(5)
    y = torch.randn(8, 5, dtype=torch.float64)
    x, _ = layer.inverse(y)
    ref = torch.linalg.solve(layer.weight(), (y - layer.bias).T).T
    torch.testing.assert_close(x, ref)


def test_lulinear_logdet_can_be_written_in_place():
    # the logdet is a fresh tensor, not an expanded view of a parameter
    _, ld = LULinear(3)(torch.randn(4, 3))
    before = ld.clone()
    ld += 1.0  # raises if ld were an expanded view of a parameter
    assert torch.equal(ld, before + 1.0)


# ----------------------------------------------------------------------------- ActNorm
def _skewed_data(n: int = 400, seed: int = 0, shape=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if shape is None else shape
    scale = torch.tensor([4.0, 0.2, 1.0], dtype=torch.float64)
    shift = torch.tensor([-3.0, 10.0, 0.5], dtype=torch.float64)
    return torch.randn(*shape, 3, generator=g, dtype=torch.float64) * scale + shift


@pytest.mark.parametrize("shape", [(400,), (20, 20)])
def test_actnorm_initialize_actnorm_standardises_latents(shape):
    layer = ActNorm(3).double()
    assert not bool(layer.initialized)
    data = _skewed_data(shape=shape)
    assert initialize_actnorm(layer, data) == 1
    z, ld = layer.inverse(data)
    assert bool(layer.initialized)
    flat = z.reshape(-1, 3)
    torch.testing.assert_close(flat.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(flat.std(0, correction=0), torch.ones(3, dtype=torch.float64))
    assert ld.shape == shape
    # the returned logdet is that of the initialised map
    expected = -torch.log(data.reshape(-1, 3).std(0, correction=0)).sum()
    torch.testing.assert_close(ld, expected.expand(shape))


def test_actnorm_initialises_only_once():
    layer = ActNorm(3).double()
    assert initialize_actnorm(layer, _skewed_data(seed=0)) == 1
    state = copy.deepcopy(layer.state_dict())
    assert initialize_actnorm(layer, _skewed_data(seed=1) * 7.0 + 2.0) == 0
    layer.inverse(_skewed_data(seed=1) * 7.0 + 2.0)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_actnorm_forward_and_inverse_never_initialise():
    layer = ActNorm(3).double()
    y, ld = layer(_skewed_data())
    assert not bool(layer.initialized)
    assert torch.equal(y, _skewed_data()) and torch.equal(ld, torch.zeros(400, dtype=torch.float64))
    layer.eval()
    layer.inverse(_skewed_data())
    assert not bool(layer.initialized)
    layer.train()
    z, ld = layer.inverse(_skewed_data())  # training mode: still no side effect
    assert not bool(layer.initialized)
    assert torch.equal(z, _skewed_data()) and torch.equal(ld, torch.zeros(400, dtype=torch.float64))
    initialize_actnorm(layer, _skewed_data())
    assert bool(layer.initialized)


def test_actnorm_explicit_initialize_and_constant_feature():
    data = _skewed_data()
    data[:, 1] = 2.5  # constant: only centred, its scale stays 1
    layer = ActNorm(3).double().initialize(data)
    z, ld = layer.inverse(data)
    assert bool(torch.isfinite(z).all()) and bool(torch.isfinite(ld).all())
    torch.testing.assert_close(z[:, 1], torch.zeros(400, dtype=torch.float64))
    assert layer.log_scale[1].item() == 0.0 and layer.shift[1].item() == 2.5
    # a later point off the constant value is not blown up by 1 / spread
    z_new, _ = layer.inverse(torch.tensor([[0.0, 3.5, 0.0]], dtype=torch.float64))
    assert z_new[0, 1].item() == pytest.approx(1.0)
    with pytest.raises(InvalidInput, match="ActNorm.initialize"):
        layer.initialize(torch.randn(0, 3, dtype=torch.float64))
    with pytest.raises(InvalidInput, match="ActNorm.initialize"):
        layer.initialize(torch.randn(5, 4, dtype=torch.float64))


def test_actnorm_constant_feature_up_to_float32_rounding_keeps_unit_scale():
    data = torch.full((1000, 2), 1234.567)
    data[:, 0] = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    layer = ActNorm(2).initialize(data)
    assert layer.log_scale[1].item() == 0.0
    assert abs(layer.log_scale[0].item()) < 0.1


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (torch.randn(1, 3, dtype=torch.float64), "at least two data points"),
        (torch.randn(3, dtype=torch.float64), "at least two data points"),
        (torch.tensor([[0.0, float("nan"), 1.0], [1.0, 2.0, 3.0]], dtype=torch.float64), "NaN"),
    ],
)
def test_actnorm_degenerate_batch_raises_naming_actnorm_and_leaves_layer_alone(bad, fragment):
    layer = ActNorm(3).double()
    with pytest.raises(InvalidInput, match=rf"ActNorm\.initialize: .*{fragment}"):
        layer.initialize(bad)
    with pytest.raises(InvalidInput, match=fragment):
        initialize_actnorm(layer, bad)
    assert not bool(layer.initialized) and not layer._init_on_next_inverse
    assert torch.equal(layer.log_scale.detach(), torch.zeros(3, dtype=torch.float64))
    assert initialize_actnorm(layer, _skewed_data()) == 1  # a proper batch still works


def test_actnorm_single_point_inside_a_flow_raises_naming_actnorm():
    flow = Flow(StandardNormal(3), Chain(LULinear(3), ActNorm(3))).double()
    with pytest.raises(InvalidInput, match="ActNorm.initialize"):
        initialize_actnorm(flow, _skewed_data()[:1])
    assert not bool(flow.transform[1].initialized)


def test_actnorm_state_survives_state_dict_and_save_load():
    layer = ActNorm(3).double()
    initialize_actnorm(layer, _skewed_data())
    assert "initialized" in layer.state_dict()

    fresh = ActNorm(3).double()
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized)
    new_data = _skewed_data(seed=5) * 3.0
    assert initialize_actnorm(fresh, new_data) == 0
    torch.testing.assert_close(fresh.inverse(new_data)[0], layer.inverse(new_data)[0])
    for key, value in fresh.state_dict().items():  # not re-initialised on new data
        assert torch.equal(value, layer.state_dict()[key]), key

    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert bool(loaded.initialized)
    torch.testing.assert_close(loaded.inverse(new_data)[0], layer.inverse(new_data)[0])


def test_actnorm_loading_an_uninitialised_state_reenables_initialisation():
    layer = ActNorm(3).double()
    initialize_actnorm(layer, _skewed_data())
    layer.load_state_dict(ActNorm(3).double().state_dict())
    assert not bool(layer.initialized)
    assert initialize_actnorm(layer, _skewed_data(seed=2)) == 1
    z, _ = layer.inverse(_skewed_data(seed=2))
    assert bool(layer.initialized)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))


def test_actnorm_is_initialised_by_initialize_actnorm_on_a_flow():
    flow = Flow(StandardNormal(3), Chain(LULinear(3), ActNorm(3))).double()
    data = _skewed_data()
    assert initialize_actnorm(flow, data) == 1
    log_q = flow.log_prob(data)
    assert log_q.shape == (400,) and bool(torch.isfinite(log_q).all())
    actnorm = flow.transform[1]
    assert bool(actnorm.initialized)
    z, _ = actnorm.inverse(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))


def test_initialize_actnorm_initialises_in_density_order_on_upstream_outputs():
    """Each ActNorm sees the activations left by the layers after it (in forward order)."""
    g = torch.Generator().manual_seed(3)
    mixer = LULinear(3, identity_init=False, generator=g).double()
    chain = Chain(ActNorm(3), mixer, ActNorm(3)).double()
    data = _skewed_data()
    assert initialize_actnorm(chain, data) == 2
    z, _ = chain.inverse(data)  # the first layer (last in the inverse) standardises
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(z.std(0, correction=0), torch.ones(3, dtype=torch.float64))
    inner, _ = chain[2].inverse(data)
    torch.testing.assert_close(inner.std(0, correction=0), torch.ones(3, dtype=torch.float64))


def test_initialize_actnorm_rejects_other_objects():
    with pytest.raises(TypeError, match="initialize_actnorm: expected a Flow or a Transform"):
        initialize_actnorm(torch.nn.Linear(2, 2), torch.randn(4, 2))
    assert initialize_actnorm(Reverse(3), torch.randn(4, 3)) == 0  # nothing to initialise


# ----------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize(
    "dtype, big", [(torch.float64, 100.0), (torch.float32, 30.0), (torch.float32, 80.0)]
)
@pytest.mark.parametrize(
    "make", [lambda: Sigmoid(3), lambda: Sigmoid(3, -2.0, 5.0), lambda: Tanh(3)]
)
def test_squashing_logdets_are_finite_in_the_tails(make, dtype, big):
    layer = make()
    x = torch.tensor([[big, -big, 0.0], [-big, big, 1.0]], dtype=dtype)
    y, ld = layer(x)
    assert bool(torch.isfinite(ld).all()) and bool(torch.isfinite(y).all())
    # log-derivatives decay like -|x| (sigmoid) or -2|x| (tanh): the tails dominate the sum
    assert bool((ld < -big).all())
    x2, ld2 = layer.inverse(y)  # saturated outputs are pulled inside, so this stays finite
    assert bool(torch.isfinite(x2).all()) and bool(torch.isfinite(ld2).all())


def test_sigmoid_logdet_matches_closed_form_in_float64():
    x = torch.tensor([-100.0, -5.0, 0.0, 3.0, 100.0], dtype=torch.float64)
    _, ld = Sigmoid(5, low=1.0, high=4.0)(x)
    s = torch.sigmoid(x)
    # log(3 s (1 - s)) evaluated with log-sigmoids, exact also at +-100
    ref = math.log(3.0) + torch.nn.functional.logsigmoid(x) + torch.nn.functional.logsigmoid(-x)
    torch.testing.assert_close(ld, ref.sum())
    # away from the tails the naive formula agrees (at +-100 it gives -inf in float64)
    _, ld_mid = Sigmoid(3, low=1.0, high=4.0)(x[1:4])
    s = s[1:4]
    torch.testing.assert_close(ld_mid, torch.log(3 * s * (1 - s)).sum())


@pytest.mark.parametrize("bad", [-0.1, -1e-3, 2.001, 2.5, 1e6])
def test_logit_refuses_points_outside_its_interval(bad):
    layer = Logit(2, low=0.0, high=2.0)
    with pytest.raises(InvalidInput, match=r"Logit\.forward") as info:
        layer(torch.tensor([[1.0, 1.0], [bad, 0.5]]))
    message = str(info.value)
    assert "Interval(0, 2, 2)" in message  # what it expected
    assert "1 point(s) outside" in message  # what it received


def test_logit_accepts_the_bounds_themselves():
    x, ld = Logit(2)(torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(ld).all())


def test_logit_refuses_nan_and_sigmoid_inverse_refuses_outside():
    with pytest.raises(InvalidInput, match="Logit"):
        Logit(1)(torch.tensor([float("nan")]))
    with pytest.raises(InvalidInput, match=r"Sigmoid\.inverse"):
        Sigmoid(1).inverse(torch.tensor([1.5]))


def test_logit_is_the_inverse_of_sigmoid():
    sig, logit = Sigmoid(3, low=-1.0, high=2.0), Logit(3, low=-1.0, high=2.0)
    assert logit.domain == sig.codomain and logit.codomain == sig.domain
    assert logit.domain == Inverse(sig).domain
    y = Interval(-1.0, 2.0, 3).random((10,), dtype=torch.float64)
    x, ld = logit(y)
    x_ref, ld_ref = Inverse(sig)(y)
    torch.testing.assert_close(x, x_ref)
    torch.testing.assert_close(ld, ld_ref)
    torch.testing.assert_close(sig(x)[0], y)


def test_positive_codomain_is_one_space():
    assert Exp(2).codomain == Softplus(2).codomain == Interval(0.0, math.inf, 2)
    chart = IntervalToReal(Interval(0.0, math.inf, 2))
    chain = Chain(Softplus(2), chart)  # builds: codomain == domain
    x = torch.randn(5, 2, dtype=torch.float64)
    y, ld = Chain(Exp(2), chart)(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ld, torch.zeros(5, dtype=torch.float64))
    assert chain(x)[0].shape == x.shape


@pytest.mark.parametrize("low, high", [(-1.0, 3.0), (0.5, math.inf), (-math.inf, 2.0)])
def test_interval_to_real_is_the_space_chart(low, high):
    space = Interval(low, high, 3)
    layer = IntervalToReal(space)
    assert layer.domain == space and layer.codomain == Euclidean(3)
    y = space.random((6,), dtype=torch.float64)
    z, ld = layer(y)
    z_ref, ld_ref = space.to_real(y)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(ld, ld_ref)
    y2, ld2 = layer.inverse(z)
    torch.testing.assert_close(y2, y)
    torch.testing.assert_close(ld + ld2, torch.zeros(6, dtype=torch.float64))


def test_interval_to_real_refuses_outside_points_and_non_intervals():
    layer = IntervalToReal(Interval(0.0, 1.0, 1))
    with pytest.raises(InvalidInput, match=r"IntervalToReal\.forward"):
        layer(torch.tensor([[2.0]]))
    with pytest.raises(ValueError, match="IntervalToReal"):
        IntervalToReal(Euclidean(2))


@pytest.mark.parametrize("cls", [Sigmoid, Logit])
@pytest.mark.parametrize("low, high", [(1.0, 0.0), (0.0, math.inf), (float("nan"), 1.0)])
def test_bad_bounds_are_refused(cls, low, high):
    with pytest.raises(ValueError, match=cls.__name__):
        cls(2, low=low, high=high)
