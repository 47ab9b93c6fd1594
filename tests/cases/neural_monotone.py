"""Checker cases for the neural autoregressive (DSF) and Flow++ logistic-mixture layers."""

from manifoldflows.transforms.flowpp import LogisticMixtureCoupling
from manifoldflows.transforms.neural_autoregressive import NeuralAutoregressive

from . import Case

# Mixture parameters get a larger perturbation so that the components differ visibly.
MIXTURE = {"perturb": 0.3}

CASES = [
    Case(
        "naf-dsf-maf",
        NeuralAutoregressive,
        lambda: NeuralAutoregressive(3, sigmoid_units=4, hidden=(16,)),
        MIXTURE,
    ),
    Case(
        "naf-dsf-iaf-deep-context",
        NeuralAutoregressive,
        lambda: NeuralAutoregressive(
            3, sigmoid_units=3, sigmoid_layers=2, hidden=(16,), mode="iaf", context_dim=2
        ),
        MIXTURE,
    ),
    Case(
        "naf-dsf-maf-context-analytic-forward",
        NeuralAutoregressive,
        lambda: NeuralAutoregressive(
            2, sigmoid_units=5, hidden=(16,), context_dim=1, analytic="forward"
        ),
        MIXTURE,
    ),
    Case(
        "flowpp-logistic-mixture-coupling",
        LogisticMixtureCoupling,
        lambda: LogisticMixtureCoupling(4, components=5, hidden=(16,)),
        MIXTURE,
    ),
    Case(
        "flowpp-logistic-mixture-coupling-context-swap",
        LogisticMixtureCoupling,
        lambda: LogisticMixtureCoupling(
            3, components=3, hidden=(16,), context_dim=2, swap=True, analytic="forward"
        ),
        MIXTURE,
    ),
]
