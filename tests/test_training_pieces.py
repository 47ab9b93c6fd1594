"""The public pieces of ``manifoldflows.training``, used on their own and through ``fit``."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from manifoldflows.distributions import DiagNormal
from manifoldflows.errors import InvalidInput
from manifoldflows.losses import forward_kl, reverse_kl
from manifoldflows.presets import RealNVP
from manifoldflows.training import (
    EarlyStopping,
    Minibatches,
    NonFiniteLoss,
    Objective,
    RandomStates,
    ReverseKL,
    annealed_reverse_kl,
    fit,
    geometric_annealing,
    load_checkpoint,
    maximum_likelihood,
    mean_nll,
    save_checkpoint,
    training_step,
)
from manifoldflows.transforms import ActNorm
from manifoldflows.transforms.normalization import initialize_actnorm

from .test_training import assert_same_params, gaussian_data, params_of

# ------------------------------------------------------------------ training_step


class Linear(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))


@pytest.mark.parametrize("clip", [None, 0.5, 1e6])
def test_training_step_clips_the_gradient_norm(clip):
    model = Linear(4)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = 100.0 * model.w.sum() + 7.0  # gradient (100, 100, 100, 100): norm 200
    value = training_step(model, opt, loss, clip_grad_norm=clip)
    assert value == 7.0  # the loss before the update
    moved = float(model.w.detach().norm())
    assert moved == pytest.approx(200.0 if clip in (None, 1e6) else clip, rel=1e-6)
    # the direction is kept: every component moved by the same amount, downhill
    assert torch.allclose(model.w, torch.full_like(model.w, -moved / 2))


def test_training_step_refuses_a_non_finite_loss_before_touching_anything():
    model = DiagNormal(1).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    before = params_of(model)
    loss = forward_kl(model, gaussian_data(8, [0.0], [1.0])) * math.inf
    with pytest.raises(NonFiniteLoss, match=r"^training_step: the loss is inf; the weights were"):
        training_step(model, opt, loss)
    assert_same_params(params_of(model), before)
    assert all(p.grad is None for p in model.parameters())
    assert opt.state_dict()["state"] == {}  # no optimizer step was taken


def test_training_step_names_the_parameter_with_a_non_finite_gradient():
    model = DiagNormal(1).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = params_of(model)
    # finite value, infinite gradient with respect to loc only (sqrt at 0)
    loss = (model.loc - model.loc.detach()).abs().sqrt().sum() + model.log_scale.sum()
    with pytest.raises(NonFiniteLoss, match=r"step 3: the gradient norm is .*gradient in loc\)"):
        training_step(model, opt, loss, clip_grad_norm=1.0, step=3, who="mine")
    assert_same_params(params_of(model), before)
    assert all(p.grad is None for p in model.parameters())


def test_training_step_argument_errors():
    model = Linear(2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(InvalidInput, match="training_step: expected the loss to be a scalar"):
        training_step(model, opt, model.w * 2.0)
    with pytest.raises(InvalidInput, match="positive clip_grad_norm or None, got -1"):
        training_step(model, opt, model.w.sum(), clip_grad_norm=-1)


# ------------------------------------------------------------------ early stopping


def test_early_stopping_counts_rounds_and_restores_the_best_weights():
    net = Linear(1)
    stop = EarlyStopping(patience=2)
    losses = [5.0, 3.0, 4.0, math.nan, 2.0, 2.0, 2.5]
    improved = []
    for step, loss in enumerate(losses, start=1):
        with torch.no_grad():
            net.w.fill_(float(step))
        improved.append(stop.update(loss, net, step))
        if step == 4:
            assert stop.should_stop  # 3.0 at step 2, then 4.0 and NaN: two bad rounds
    assert improved == [True, True, False, False, True, False, False]
    assert stop.should_stop and stop.bad_rounds == 2
    assert (stop.best_loss, stop.best_step) == (2.0, 5)  # a tie does not improve
    assert stop.restore(net) and net.w.item() == 5.0

    # checkpointable: a fresh object continues where this one was
    again = EarlyStopping(patience=2)
    again.load_state_dict(stop.state_dict())
    assert (again.best_loss, again.best_step, again.bad_rounds) == (2.0, 5, 2)
    with torch.no_grad():
        net.w.fill_(-1.0)
    assert again.restore(net) and net.w.item() == 5.0


def test_early_stopping_without_patience_only_records():
    net = Linear(1)
    stop = EarlyStopping()
    for step, loss in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        stop.update(loss, net, step)
    assert not stop.should_stop and stop.best_step == 1 and stop.best_state is None
    assert not stop.restore(net)
    with pytest.raises(InvalidInput, match="EarlyStopping: expected a positive integer patience"):
        EarlyStopping(patience=0)


# ------------------------------------------------------------------ data and validation


def test_minibatches_resume_exactly_and_keep_context_rows():
    x = torch.arange(14.0).reshape(7, 2)
    c = x[:, :1] * 10.0
    g = torch.Generator().manual_seed(3)
    batches = Minibatches(x, c, batch_size=3, generator=g)
    for _ in range(4):
        batch, ctx = next(batches)
        assert torch.equal(ctx[:, 0], 10.0 * batch[:, 0])
    saved, rng = batches.state_dict(), RandomStates(g).state_dict()
    ahead = [next(batches)[0] for _ in range(5)]

    g2 = torch.Generator().manual_seed(99)
    other = Minibatches(x, c, batch_size=3, generator=g2)
    other.load_state_dict(saved)
    RandomStates(g2).load_state_dict(rng)
    for expected in ahead:
        assert torch.equal(next(other)[0], expected)


def test_mean_nll_is_the_forward_kl_in_any_chunking_and_keeps_the_mode():
    x = gaussian_data(101, [1.0, -1.0], [0.5, 2.0], dtype=torch.float32)
    q = DiagNormal(2, loc=0.3).double().train()
    exact = forward_kl(q, x.double()).item()
    for chunk in (1, 7, 1000):
        assert mean_nll(q, x, batch_size=chunk) == pytest.approx(exact, rel=1e-12)
    assert q.training


# ------------------------------------------------------------------ objectives


def test_reverse_kl_objective_uses_the_temperature_of_the_step_it_is_given():
    def u(x):
        return 0.5 * ((x - 1.0) ** 2).sum(-1)

    schedule = geometric_annealing(8.0, 1.0, steps=3)
    assert [schedule(k) for k in range(5)] == pytest.approx([8.0, 4.0, 2.0, 1.0, 1.0])
    model = DiagNormal(2, loc=0.5).double()
    objective = ReverseKL(u, 16, temperature=schedule, generator=torch.Generator())
    assert isinstance(objective, Objective)
    values = {}
    for step in (2, 0, 7, 1):  # any order: the value depends on the step, not on a counter
        objective.generator.manual_seed(5)
        got = objective(model, step)
        g = torch.Generator().manual_seed(5)
        t = schedule(step)
        expected = reverse_kl(model, lambda x, t=t: u(x) / t, 16, generator=g)
        assert torch.equal(got, expected), step
        values[step] = got.item()
    assert len(set(values.values())) == 4  # the four temperatures differ, and so do the losses

    with pytest.raises(InvalidInput, match="ReverseKL: expected a positive finite number"):
        ReverseKL(u, 16, temperature=lambda step: -1.0)(model, 0)


def test_fit_tells_the_objective_the_step_and_resumes_the_schedule(tmp_path):
    """A step-aware objective needs no counter: the resumed run passes the same steps."""

    class Interrupt(Exception):
        pass

    def run(model, seen, crash_at=None, resume=False):
        inner = annealed_reverse_kl(lambda x: 0.5 * (x**2).sum(-1), 32, start=4.0, steps=10)

        def objective(m, step):
            seen.append((step, inner.temperature_at(step)))
            if crash_at is not None and len(seen) == crash_at:
                raise Interrupt
            return inner(m, step)

        torch.manual_seed(0)  # reverse_kl draws from the run's generator: seeded below
        return fit(
            model,
            objective=objective,
            steps=15,
            lr=0.05,
            progress=False,
            checkpoint=tmp_path / "ck.pt",
            checkpoint_every=4,
            resume=resume,
            generator=torch.Generator().manual_seed(1),
        )

    reference_seen = []
    reference_model = DiagNormal(2).double()
    reference = run(reference_model, reference_seen)
    assert [s for s, _ in reference_seen] == list(range(15))
    assert reference_seen[0][1] == 4.0 and reference_seen[10][1] == 1.0
    (tmp_path / "ck.pt").unlink()

    with pytest.raises(Interrupt):
        run(DiagNormal(2).double(), [], crash_at=11)
    resumed_seen = []
    resumed_model = DiagNormal(2, loc=9.0).double()
    resumed = run(resumed_model, resumed_seen, resume=True)
    assert resumed_seen == reference_seen[8:]  # the last checkpoint was after step 8
    assert resumed.train_loss == reference.train_loss
    assert_same_params(params_of(resumed_model), params_of(reference_model))


def test_fit_refuses_to_drop_a_context_or_data_given_with_an_objective():
    def objective(m, step):
        return forward_kl(m, torch.zeros(2, 1))

    with pytest.raises(InvalidInput, match="objective.* gets no context from fit"):
        fit(DiagNormal(1), objective=objective, context=torch.zeros(2, 3), progress=False)
    with pytest.raises(InvalidInput, match="expected an objective alone, got it with data"):
        fit(DiagNormal(1), torch.zeros(2, 1), objective=objective, progress=False)
    with pytest.raises(TypeError, match="expected an objective callable"):
        fit(DiagNormal(1), objective=3, progress=False)


# ------------------------------------------------------------------ fit: mode and ActNorm


def actnorm_layers(flow):
    return [m for m in flow.modules() if isinstance(m, ActNorm)]


def test_fit_initialises_actnorm_on_the_first_batch_and_returns_in_eval_mode():
    torch.manual_seed(0)
    x = gaussian_data(300, [3.0, -2.0], [2.0, 0.5], dtype=torch.float32)
    flow = RealNVP(2, layers=2, actnorm=True)
    assert len(actnorm_layers(flow)) == 2 and flow.training
    by_hand = copy.deepcopy(flow)

    # no learning (lr = 0): the weights after fit are those of the initialisation alone
    opt = torch.optim.SGD(flow.parameters(), lr=0.0)
    fit(flow, x, steps=2, batch_size=64, optimizer=opt, progress=False,
        generator=torch.Generator().manual_seed(4))  # fmt: skip
    assert not flow.training  # left in eval mode
    assert all(bool(layer.initialized) for layer in actnorm_layers(flow))

    first = next(Minibatches(x, batch_size=64, generator=torch.Generator().manual_seed(4)))[0]
    assert initialize_actnorm(by_hand, first) == 2
    assert_same_params(params_of(flow), params_of(by_hand))

    # and a later log_prob (eval mode) leaves the flow as it is
    before = params_of(flow)
    flow.log_prob(x[:1])
    assert_same_params(params_of(flow), before)


def test_fit_by_reverse_kl_or_custom_loss_does_not_initialise_actnorm():
    torch.manual_seed(0)
    flow = RealNVP(2, layers=1, actnorm=True)
    fit(flow, target=lambda x: 0.5 * (x**2).sum(-1), steps=2, batch_size=16, progress=False)
    assert not flow.training
    assert not any(bool(layer.initialized) for layer in actnorm_layers(flow))


def test_fit_leaves_eval_mode_after_a_failure_too():
    q = DiagNormal(1).double().train()

    def objective(m, step):
        return forward_kl(m, torch.zeros(2, 1, dtype=torch.float64)) * math.nan

    with pytest.raises(NonFiniteLoss, match="fit: step 1: the loss is nan"):
        fit(q, objective=objective, steps=3, progress=False)
    assert not q.training


def test_maximum_likelihood_objective_in_a_hand_written_loop_matches_fit():
    x = gaussian_data(200, [1.0], [2.0])
    q_fit, q_loop = DiagNormal(1).double(), DiagNormal(1).double()
    fit(q_fit, x, steps=25, batch_size=50, lr=0.05, progress=False,
        generator=torch.Generator().manual_seed(2))  # fmt: skip

    objective = maximum_likelihood(x, batch_size=50, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(q_loop.parameters(), lr=0.05)
    for step in range(25):
        training_step(q_loop, opt, objective(q_loop, step), clip_grad_norm=10.0)
    assert_same_params(params_of(q_loop), params_of(q_fit))


# ------------------------------------------------------------------ checkpoint files


def test_checkpoint_restores_every_stateful_piece_in_one_call(tmp_path):
    q = DiagNormal(1).double()
    stop = EarlyStopping(patience=3)
    stop.update(1.5, q, 10)
    x = torch.arange(10.0).unsqueeze(-1)
    objective = maximum_likelihood(x, batch_size=3, generator=torch.Generator().manual_seed(0))
    objective(q, 0)
    path = save_checkpoint(tmp_path / "ck.pt", q, stopper=stop, objective=objective, step=10)

    other_stop = EarlyStopping(patience=3)
    other_objective = maximum_likelihood(x, batch_size=3, generator=torch.Generator())
    other_objective.batches.generator.set_state(objective.batches.generator.get_state())
    state = load_checkpoint(
        path, DiagNormal(1).double(), stopper=other_stop, objective=other_objective
    )
    assert state["step"] == 10 and other_stop.best_step == 10
    assert torch.equal(next(other_objective.batches)[0], next(objective.batches)[0])
    with pytest.raises(InvalidInput, match="holds no history state"):
        load_checkpoint(path, DiagNormal(1).double(), history=EarlyStopping())


def test_fit_refuses_a_checkpoint_of_another_format(tmp_path):
    q = DiagNormal(1)
    path = save_checkpoint(tmp_path / "old.pt", q, format="manifoldflows.fit/1", step=3)
    with pytest.raises(InvalidInput, match=r"checkpoint written by fit \(manifoldflows.fit/2\)"):
        fit(q, torch.zeros(4, 1), steps=5, checkpoint=path, resume=True, progress=False)


def test_reverse_kl_objective_refuses_a_non_target():
    with pytest.raises(TypeError, match="expected a target callable"):
        ReverseKL(3.0)
    with pytest.raises(InvalidInput, match="positive integer batch_size"):
        ReverseKL(lambda x: x.sum(-1), 0)


class FixedSampler(torch.nn.Module):
    """Samples all equal to one, log q = 0: the reverse-KL loss is the mean energy."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def sample_and_log_prob(self, shape, context=None, generator=None):
        cbatch = () if context is None else context.shape[:-1]
        x = torch.ones(*shape, *cbatch, 2, dtype=torch.float64) + self.p
        return x, torch.zeros(x.shape[:-1], dtype=torch.float64) * self.p


def test_tempered_target_still_receives_the_context():
    def u(x, context):  # a conditional target: one energy scale per context row
        return (x * context).sum(-1)

    c = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    objective = ReverseKL(u, 4, temperature=lambda step: 2.0 if step == 0 else 1.0, context=c)
    model = FixedSampler()
    assert objective(model, 0).item() == pytest.approx(2.0)  # mean of 2 c / T at T = 2
    assert objective(model, 1).item() == pytest.approx(4.0)  # and at T = 1
