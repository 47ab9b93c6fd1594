"""Flow++ coupling: the logit of a mixture of logistic CDFs as the coupling transformer.

Half of the coordinates (and the context) feed an MLP that outputs, for every coordinate of the
other half, the parameters of ``y = exp(a) logit(MixLogCDF(x; pi, mu, s)) + b``
(Ho et al. 2019, arXiv:1902.00275). The map is monotone for any parameters; its density
direction is closed form and the sampling direction is solved by the bracketed Newton/bisection
root finder of :mod:`manifoldflows.functional.monotonic`.
"""

from __future__ import annotations

from typing import Any

from .._checks import positive_int as _positive_int
from ..spaces import Space
from .coupling import Coupling
from .maps.real import LogisticMixtureMap

__all__ = ["LogisticMixtureCoupling"]


class LogisticMixtureCoupling(Coupling):
    r"""Flow++ mixture-of-logistics CDF coupling layer.

    ``y_A = x_A`` and, for every coordinate ``i`` of the transformed block,

    .. math::

        y_i = e^{a_i}\,\operatorname{logit}\Big(\sum_{k=1}^{K} \pi_{ik}\,
        \sigma\big((x_i - \mu_{ik}) / s_{ik}\big)\Big) + b_i

    with ``(pi, mu, s, a, b)`` from an MLP of ``x_A`` and the context. The logdet is the sum of
    ``a_i + log d/dx logit F``, computed in log space (finite for any finite input; affine
    tails). With ``analytic="inverse"`` (default, as in Flow++) ``inverse``/``log_prob`` is closed
    form and ``forward`` (sampling) root-finds; ``analytic="forward"`` swaps them.

    Arguments:
        dim: dimension ``d`` (at least 2).
        components: number of logistic components ``K``.
        analytic: closed-form direction, ``"inverse"`` or ``"forward"``.
        iterations: maximum root-finder iterations (default: enough for machine precision).
        **options: see :class:`~manifoldflows.transforms.Coupling` (``context_dim``, ``hidden``,
            ``activation``, ``split``, ``swap``).

    References:
        J. Ho, X. Chen, A. Srinivas, Y. Duan, P. Abbeel, "Flow++: Improving Flow-Based
        Generative Models with Variational Dequantization and Architecture Design", ICML 2019,
        arXiv:1902.00275.

    Example:
        >>> layer = LogisticMixtureCoupling(2, components=4, hidden=(16,), context_dim=1)
        >>> x, c = torch.randn(5, 2), torch.randn(5, 1)
        >>> z, logdet = layer.inverse(x, context=c)
        >>> torch.allclose(layer(z, context=c)[0], x, atol=1e-4)
        True
    """

    def __init__(
        self,
        space: Space | int,
        *,
        components: int = 8,
        analytic: str = "inverse",
        iterations: int | None = None,
        **options: Any,
    ):
        who = type(self).__name__
        _positive_int(components, "number of components", who)
        if analytic not in ("inverse", "forward"):
            raise ValueError(f"{who}: analytic must be 'inverse' or 'forward', got {analytic!r}")
        monotone_map = LogisticMixtureMap(components, analytic=analytic, iterations=iterations)
        super().__init__(space, monotone_map, **options)
