r"""Training: the ready-made loop :func:`fit`, and the pieces it is made of, for your own loops.

* :func:`fit` — progress bar, gradient clipping, validation with early stopping, atomic
  checkpoints that resume to bit-identical results, a :class:`History` with a plot;
* :func:`training_step` — zero_grad, backward, clipping, NaN/inf check (:class:`NonFiniteLoss`
  naming what went non-finite), optimizer step;
* objectives ``(model, step) -> loss`` (:class:`Objective`): :func:`maximum_likelihood`,
  :class:`MinibatchLoss`, :class:`ReverseKL`, :func:`annealed_reverse_kl` with
  :func:`geometric_annealing`; data in :class:`Minibatches`, validation by :func:`mean_nll`;
* energy-based training that reports its budget: :class:`KLObjective` (forward, reverse, mixed
  and annealed KL, dropping samples with NaN/inf energy), :class:`FAB` (flow annealed
  importance sampling bootstrap, :func:`fab_annealed_importance_sampling`) with a
  :class:`PrioritisedReplayBuffer`; :class:`Monitor` (progress bar with loss, ESS and energy
  evaluations, a :class:`TrainingRecord`) and :class:`CountedTarget`;
* :class:`EarlyStopping` — patience, best weights restored;
* files — :func:`save_checkpoint` / :func:`load_checkpoint` (with :class:`RandomStates`),
  :func:`save_model` / :func:`load_model`, :func:`atomic_save`.

A custom loop built from these pieces:

Example:
    >>> import torch
    >>> from manifoldflows.distributions import DiagNormal
    >>> g = torch.Generator().manual_seed(0)
    >>> x, v = 2.0 + torch.randn(400, 1, generator=g), 2.0 + torch.randn(100, 1, generator=g)
    >>> q = DiagNormal(1)
    >>> objective = maximum_likelihood(x, batch_size=100, generator=g)
    >>> optimizer = torch.optim.Adam(q.parameters(), lr=0.05)
    >>> stop = EarlyStopping(patience=5)
    >>> for step in range(1000):
    ...     loss = training_step(q, optimizer, objective(q, step), clip_grad_norm=10.0)
    ...     if (step + 1) % 20 == 0:
    ...         _ = stop.update(mean_nll(q, v), q, step + 1)
    ...         if stop.should_stop:
    ...             break
    >>> stop.restore(q) and abs(q.loc.item() - 2.0) < 0.2
    True
"""

from __future__ import annotations

from .batches import Minibatches, mean_nll, to_model
from .checkpoint import (
    RandomStates,
    atomic_save,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from .early_stopping import EarlyStopping
from .fab import FAB, FABSamples, fab_annealed_importance_sampling
from .fit import fit
from .history import History
from .kl import KLObjective, robust_reverse_kl
from .monitor import CountedTarget, Monitor, TrainingRecord
from .objectives import (
    MinibatchLoss,
    Objective,
    ReverseKL,
    annealed_reverse_kl,
    geometric_annealing,
    maximum_likelihood,
)
from .replay import PrioritisedReplayBuffer, ReplayBatch
from .step import NonFiniteLoss, training_step

__all__ = [
    "fit",
    "History",
    "training_step",
    "NonFiniteLoss",
    "Objective",
    "MinibatchLoss",
    "maximum_likelihood",
    "ReverseKL",
    "annealed_reverse_kl",
    "geometric_annealing",
    "KLObjective",
    "robust_reverse_kl",
    "FAB",
    "FABSamples",
    "fab_annealed_importance_sampling",
    "PrioritisedReplayBuffer",
    "ReplayBatch",
    "Monitor",
    "TrainingRecord",
    "CountedTarget",
    "Minibatches",
    "mean_nll",
    "to_model",
    "EarlyStopping",
    "save_checkpoint",
    "load_checkpoint",
    "RandomStates",
    "atomic_save",
    "save_model",
    "load_model",
]
