"""The training loop: it learns, stops early, resumes bit-exactly and fails safely."""

from __future__ import annotations

import math
import os

import pytest
import torch

from manifoldflows.distributions import DiagNormal, GaussianMixture
from manifoldflows.errors import InvalidInput, NonFiniteOutput
from manifoldflows.losses import forward_kl
from manifoldflows.training import (
    History,
    NonFiniteLoss,
    fit,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gaussian_data(n, loc, scale, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc, scale = torch.as_tensor(loc, dtype=dtype), torch.as_tensor(scale, dtype=dtype)
    return loc + scale * torch.randn(n, loc.numel(), generator=g, dtype=dtype)


def params_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------ learning


def test_forward_kl_learns_gaussian_mean_and_scale(dtype, device):
    # data stays on the CPU in float64: minibatches are moved to the model's device and dtype
    x = gaussian_data(2000, [1.0, -2.0], [0.5, 2.0])
    q = DiagNormal(2).to(dtype=dtype, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    h = fit(q, x, steps=400, batch_size=256, lr=0.05, progress=False, generator=g)
    assert len(h.step) == len(h.train_loss) == 400 and h.step[-1] == 400
    assert h.train_loss[-1] < h.train_loss[0]
    mean, std = x.mean(0), x.std(0)
    assert torch.allclose(q.loc.detach().cpu().double(), mean, atol=0.05)
    assert torch.allclose(q.log_scale.detach().exp().cpu().double(), std, rtol=0.05)


def test_reverse_kl_learns_gaussian_target(device):
    mu = torch.tensor([2.0, -1.0], device=device)
    sigma = torch.tensor([0.5, 1.5], device=device)

    def u(x):
        return 0.5 * (((x - mu) / sigma) ** 2).sum(-1)

    q = DiagNormal(2).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    h = fit(q, target=u, steps=400, batch_size=128, lr=0.05, progress=False, generator=g)
    assert torch.allclose(q.loc.detach(), mu, atol=0.1)
    assert torch.allclose(q.log_scale.detach().exp(), sigma, rtol=0.1)
    # at the optimum the loss is KL - log Z = -log Z
    log_z = float(torch.log(sigma).sum() + math.log(2 * math.pi))
    assert abs(sum(h.train_loss[-50:]) / 50 + log_z) < 0.05


def test_custom_loss_gets_matching_rows_of_data_and_context():
    x = torch.arange(40, dtype=torch.float32).reshape(20, 2)  # float32 data, float64 model
    c = 10.0 * x[:, :1]
    seen = []

    def loss_fn(model, batch, batch_context):
        assert model.training
        seen.append(batch[:, 0].tolist())
        assert batch.dtype == torch.float64 and batch_context.dtype == torch.float64
        assert torch.equal(batch_context[:, 0], 10.0 * batch[:, 0])
        return forward_kl(model, batch)

    q = DiagNormal(2).double().eval()
    fit(q, x, context=c, loss_fn=loss_fn, steps=10, batch_size=8, progress=False)
    assert not q.training  # the caller's mode is restored
    assert all(len(rows) == 8 for rows in seen)
    # epochs of permutations: the first 16 rows drawn are distinct
    first = [r for rows in seen[:2] for r in rows]
    assert len(set(first)) == 16


def test_loss_fn_without_data_and_scheduler_factory():
    q = DiagNormal(1)
    calls = []

    def loss_fn(model, batch, batch_context):
        calls.append((batch, batch_context))
        return ((model.loc - 3.0) ** 2).sum()

    h = fit(
        q,
        loss_fn=loss_fn,
        steps=20,
        lr=0.1,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1),
        progress=False,
    )
    assert len(calls) == 20 and calls[0] == (None, None)
    assert h.train_loss[-1] < h.train_loss[0]


# ------------------------------------------------------------------ validation


def test_early_stopping_restores_best_weights():
    # The model walks from 0 towards the training data at +4; the validation data sit at +1,
    # so the validation loss falls, then rises: early stopping must fire and rewind.
    x = gaussian_data(1000, [4.0], [1.0], seed=0)
    v = gaussian_data(500, [1.0], [1.0], seed=1)
    q = DiagNormal(1).double()
    h = fit(
        q,
        x,
        val_data=v,
        steps=2000,
        batch_size=1000,
        lr=0.02,
        val_every=10,
        patience=3,
        progress=False,
    )
    assert h.stopped_early
    assert h.step[-1] < 2000
    assert h.val_step[-1] == h.step[-1]
    best = min(range(len(h.val_loss)), key=h.val_loss.__getitem__)
    assert h.best_val_loss == h.val_loss[best] and h.best_step == h.val_step[best]
    assert len(h.val_loss) - 1 - best == 3  # stopped after exactly `patience` bad rounds
    # the returned weights are those of the best round, not the last one
    with torch.no_grad():
        assert forward_kl(q, v).item() == pytest.approx(h.best_val_loss, rel=1e-12)
    assert h.val_loss[-1] > h.best_val_loss  # so the final weights were indeed rewound


def test_validation_is_recorded_without_patience_and_at_the_last_step():
    x = gaussian_data(100, [0.0], [1.0])
    q = DiagNormal(1).double()
    h = fit(q, x, val_data=x[:30], steps=25, val_every=10, progress=False)
    assert h.val_step == [10, 20, 25]
    assert not h.stopped_early and h.best_step in h.val_step


# ------------------------------------------------------------------ checkpoints


class Interrupt(Exception):
    pass


def make_model(seed):
    torch.manual_seed(seed)
    return GaussianMixture(2, 3).double()


def run(model, mode, checkpoint=None, crash_at=None, resume=False, seed=0, **kwargs):
    """One fit of a small mixture, forward or reverse KL, optionally crashing at a step."""
    calls = {"n": 0}

    def tick():
        calls["n"] += 1
        if crash_at is not None and calls["n"] == crash_at:
            raise Interrupt

    settings = dict(
        steps=30,
        batch_size=48,
        lr=0.03,
        progress=False,
        checkpoint=checkpoint,
        checkpoint_every=7 if checkpoint else None,
        resume=resume,
        generator=torch.Generator().manual_seed(seed),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=9, gamma=0.5),
    )
    settings.update(kwargs)
    if mode == "forward":
        x = gaussian_data(100, [1.0, -1.0], [0.7, 0.3])

        def loss_fn(m, batch, ctx):
            tick()
            return forward_kl(m, batch)

        return fit(model, x, loss_fn=loss_fn, val_data=x[:40], val_every=5, patience=50, **settings)

    def target(x):
        tick()
        return 0.5 * ((x - 1.0) ** 2).sum(-1)

    return fit(model, target=target, **settings)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, mode):
    reference_model = make_model(0)
    reference = run(reference_model, mode)

    path = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        run(make_model(0), mode, checkpoint=path, crash_at=18)
    assert load_checkpoint(path, make_model(1))["step"] == 14  # last periodic checkpoint

    # A fresh model with other weights and another generator seed: all comes from the file.
    resumed_model = make_model(123)
    resumed = run(resumed_model, mode, checkpoint=path, resume=True, seed=99)
    assert_same_params(params_of(resumed_model), params_of(reference_model))
    for name in ("step", "train_loss", "val_step", "val_loss", "best_val_loss", "best_step"):
        assert getattr(resumed, name) == getattr(reference, name), name
    assert resumed.wall_time > 0

    # The final checkpoint of a finished run: resuming it returns at once, same weights.
    again_model = make_model(7)
    again = run(again_model, mode, checkpoint=path, resume=True, crash_at=1)  # no step runs
    assert again.train_loss == reference.train_loss
    assert_same_params(params_of(again_model), params_of(reference_model))
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temporary files left


def test_checkpoint_helpers_round_trip_and_write_atomically(tmp_path):
    model = make_model(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    forward_kl(model, gaussian_data(10, [0.0, 0.0], [1.0, 1.0])).backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, note="hello", step=3)
    other = make_model(1)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.1)
    state = load_checkpoint(path, other, other_opt)
    assert state["note"] == "hello" and state["step"] == 3
    assert_same_params(params_of(other), params_of(model))
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]

    # a save that fails half way (an unpicklable entry) leaves the old file intact
    with pytest.raises(Exception):  # noqa: B017 - pickling errors vary by version
        save_checkpoint(path, model, bad=lambda: None)
    assert load_checkpoint(path, make_model(2))["note"] == "hello"
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]
    with pytest.raises(FileNotFoundError, match="load_checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", model)


def test_save_and_load_whole_model(tmp_path):
    model = make_model(0)
    path = save_model(model, tmp_path / "sub" / "model.pt")
    loaded = load_model(path)
    assert type(loaded) is GaussianMixture
    x = gaussian_data(5, [0.0, 0.0], [1.0, 1.0])
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))


# ------------------------------------------------------------------ failures


def test_non_finite_loss_raises_and_leaves_weights_untouched():
    x = gaussian_data(200, [1.0], [1.0])

    calls = []

    def loss_fn(model, batch, ctx):
        calls.append(1)
        loss = forward_kl(model, batch)
        return loss * math.nan if len(calls) == 5 else loss

    reference = DiagNormal(1).double()
    fit(reference, x, steps=4, lr=0.1, progress=False, generator=torch.Generator().manual_seed(0))
    model = DiagNormal(1).double()
    with pytest.raises(NonFiniteLoss, match=r"fit: step 5: the loss is nan; .* after step 4"):
        fit(
            model,
            x,
            loss_fn=loss_fn,
            steps=10,
            lr=0.1,
            progress=False,
            generator=torch.Generator().manual_seed(0),
        )
    assert_same_params(params_of(model), params_of(reference))


def test_non_finite_gradient_raises_before_the_update():
    model = DiagNormal(1).double()
    before = params_of(model)

    def loss_fn(m, batch, ctx):  # finite value, infinite gradient (sqrt at 0)
        return (m.loc - m.loc.detach()).abs().sqrt().sum() + forward_kl(m, batch)

    with pytest.raises(NonFiniteLoss, match="fit: step 1: the gradient norm is"):
        fit(model, gaussian_data(10, [0.0], [1.0]), loss_fn=loss_fn, steps=3, progress=False)
    assert_same_params(params_of(model), before)
    assert all(p.grad is None for p in model.parameters())


def test_non_finite_energy_in_reverse_kl_names_the_step():
    def u(x):
        return torch.where(x[..., 0] > 3.0, math.inf, 0.5 * (x**2).sum(-1))

    model = DiagNormal(1, loc=3.0)
    with pytest.raises(NonFiniteLoss, match=r"fit: step 1: reverse_kl: .* NaN/inf at \d+ of 64"):
        fit(model, target=u, batch_size=64, steps=5, progress=False)
    assert issubclass(NonFiniteLoss, NonFiniteOutput)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "fit: expected data, target or loss_fn, got none of them"),
        (dict(data=torch.zeros(3, 1), target=lambda x: x.sum(-1)), "either data .* or target"),
        (dict(data=torch.zeros(3, 1), patience=2), "early stopping .* needs val_data"),
        (dict(data=torch.zeros(3, 1), context=torch.zeros(4, 2)), "one row per data row"),
        (dict(data=torch.zeros(0, 1)), "at least one row"),
        (dict(data=torch.zeros(3, 1), steps=-1), "non-negative integer number of steps"),
        (dict(data=torch.zeros(3, 1), batch_size=0), "positive integer batch_size"),
        (dict(data=torch.zeros(3, 1), resume=True), "need a checkpoint path"),
        (dict(data=torch.zeros(3, 1), clip_grad_norm=0.0), "positive clip_grad_norm"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        fit(DiagNormal(1), progress=False, **kwargs)


# ------------------------------------------------------------------ output


def test_progress_false_prints_nothing_and_true_shows_a_bar(capfd):
    x = gaussian_data(50, [0.0], [1.0], dtype=torch.float32)
    fit(DiagNormal(1), x, steps=5, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    fit(DiagNormal(1), x, steps=5, progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "5/5" in err and "loss=" in err


def test_history_plot_writes_png(tmp_path):
    x = gaussian_data(100, [0.0], [1.0])
    h = fit(DiagNormal(1).double(), x, val_data=x, steps=20, val_every=5, progress=False)
    ax = h.plot(tmp_path / "curves.png")
    assert len(ax.lines) >= 3
    data = (tmp_path / "curves.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    restored = History.from_state_dict(h.state_dict())
    assert restored == h


def test_plateau_scheduler_is_stepped_with_the_validation_loss():
    x = gaussian_data(100, [0.0], [1.0])
    q = DiagNormal(1).double()
    opt = torch.optim.SGD(q.parameters(), lr=0.0)  # no progress: every round is a plateau
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    opt.param_groups[0]["lr"] = 1.0e-12
    fit(q, x, val_data=x, optimizer=opt, scheduler=plateau, steps=30, val_every=10, progress=False)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0e-12 * 0.5**2)  # rounds 2 and 3
    with pytest.raises(InvalidInput, match="ReduceLROnPlateau scheduler needs val_data"):
        fit(q, x, optimizer=opt, scheduler=plateau, steps=1, progress=False)
