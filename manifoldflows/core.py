"""The flow protocol: :class:`Transform`, :class:`Chain`, :class:`Inverse` and :class:`Flow`.

Conventions (see ``docs/concepts.md``):

* ``forward`` maps latent -> data (the sampling direction); ``Flow.log_prob`` runs ``inverse``.
* Both directions return ``(y, logdet)``; ``logdet`` has the batch shape and is
  ``log|det J|`` between orthonormal tangent bases of ``domain`` and ``codomain``.
* Stochastic layers put the path weight ``log q_back(x|y) - log q_fwd(y|x)`` in the logdet
  slot (Wu, Koehler & Noe 2020, arXiv:2002.06707), so chains simply sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from ._checks import all_finite, check_context, check_points
from ._validation import validate_flag
from .distributions.base import Distribution, Shape
from .errors import (
    InvalidInput,
    InverseNotAvailable,
    NonFiniteOutput,
    SpaceMismatch,
    StochasticFlowError,
)
from .spaces import Space
from .targets import Target, check_target_space, energy_fn, target_energy

__all__ = [
    "Transform",
    "Chain",
    "Inverse",
    "Flow",
    "SpaceMismatch",
    "InverseNotAvailable",
    "InvalidInput",
    "NonFiniteOutput",
    "StochasticFlowError",
    "energy_fn",
    "check_target_space",
]


class Transform(nn.Module):
    """An invertible (or stochastic) map from ``domain`` to ``codomain``.

    Subclasses implement ``_forward(x, context)`` and, where an inverse exists,
    ``_inverse(y, context)``, each returning ``(output, logdet)``. The public :meth:`forward`
    and :meth:`inverse` validate the input (shape, dtype, device, finiteness, membership of the
    space, context shape) and the output (finiteness) and then call them, so implementations
    contain only the math.

    Arguments:
        domain: space of the inputs of ``forward``.
        codomain: space of its outputs (defaults to ``domain``).
        context_dim: number of context features the layer uses, or ``None`` if it ignores
            context.

    Attributes:
        stochastic: ``True`` for layers whose output is random (the logdet slot then holds a
            path weight).
        validate: run the input/output checks on public calls: ``True``/``False`` for this
            layer, or ``None`` (the default) to follow the package-wide switch
            (:func:`manifoldflows.set_validation`, on unless switched off).

    Example:
        >>> import torch
        >>> from manifoldflows.transforms import AffineCoupling
        >>> layer = AffineCoupling(4)
        >>> y, logdet = layer(torch.randn(10, 4))
        >>> y.shape, logdet.shape
        (torch.Size([10, 4]), torch.Size([10]))
    """

    stochastic: bool = False
    validate = validate_flag()

    def __init__(
        self, domain: Space, codomain: Space | None = None, *, context_dim: int | None = None
    ):
        super().__init__()
        if not isinstance(domain, Space) or (
            codomain is not None and not isinstance(codomain, Space)
        ):
            raise TypeError(f"{type(self).__name__}: domain and codomain must be Space instances")
        self.domain = domain
        self.codomain = domain if codomain is None else codomain
        self.context_dim = context_dim

    @property
    def name(self) -> str:
        """The class name, used in error messages."""
        return type(self).__name__

    def extra_repr(self) -> str:
        ctx = "" if self.context_dim is None else f", context_dim={self.context_dim}"
        return f"{self.domain!r} -> {self.codomain!r}{ctx}"

    # ------------------------------------------------------------------ public API
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent-side points ``x`` to ``(y, log|det dy/dx|)``."""
        return self._call(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data-side points ``y`` back to ``(x, log|det dx/dy|)``."""
        return self._call(y, context, inverse=True)

    @property
    def inv(self) -> Inverse:
        """This transform with its directions swapped."""
        return Inverse(self)

    # ------------------------------------------------------------------ to implement
    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{self.name} does not implement _forward")

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise InverseNotAvailable(f"{self.name} has no inverse")

    # ------------------------------------------------------------------ machinery
    def _call(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        space = self.codomain if inverse else self.domain
        method = "inverse" if inverse else "forward"
        who = f"{self.name}.{method}"
        validate = self.validate
        if validate:
            check_points(self, x, space, who)
            check_context(context, self.context_dim, space.batch_shape(x), x, who)
        if self.context_dim is None:
            context = None  # implementations only ever see a context they asked for
        out, logdet = (self._inverse if inverse else self._forward)(x, context)
        if validate and not all_finite(out, logdet):
            raise self._nonfinite_error(x, context, inverse)
        return out, logdet

    def _nonfinite_error(self, x: Tensor, context: Tensor | None, inverse: bool) -> NonFiniteOutput:
        method = "inverse" if inverse else "forward"
        return NonFiniteOutput(
            f"{self.name}.{method}: produced NaN/inf from finite inputs "
            f"(input range [{x.min().item():.4g}, {x.max().item():.4g}], shape {tuple(x.shape)})"
        )


class Chain(Transform):
    """Composition of transforms: ``Chain(f1, f2, f3).forward = f3 o f2 o f1``.

    Checks at construction that each layer's ``codomain`` equals the next layer's ``domain``
    (raising :class:`SpaceMismatch` naming both), passes ``context`` to every layer and sums
    the logdets. ``inverse`` runs the layers backwards.

    Example:
        >>> import torch
        >>> from manifoldflows.transforms import ActNorm, Reverse
        >>> chain = Chain(ActNorm(3).initialize(torch.randn(50, 3)), Reverse(3))
        >>> x = torch.randn(5, 3)
        >>> y, logdet = chain(x)
        >>> torch.allclose(chain.inverse(y)[0], x, atol=1e-6)
        True
    """

    def __init__(self, *layers: Transform):
        if len(layers) == 1 and not isinstance(layers[0], Transform):
            layers = tuple(layers[0])  # Chain([a, b, c])
        if not layers:
            raise ValueError("Chain: expected at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Transform):
                raise TypeError(f"Chain: layer {i} is a {type(layer).__name__}, not a Transform")
        for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
            if a.codomain != b.domain:
                raise SpaceMismatch(
                    f"Chain: layer {i} ({a.name}) outputs points of {a.codomain!r} but layer "
                    f"{i + 1} ({b.name}) expects {b.domain!r}"
                )
        dims = {layer.context_dim for layer in layers} - {None}
        if len(dims) > 1:
            raise ValueError(f"Chain: layers expect different context sizes {sorted(dims)}")
        super().__init__(
            layers[0].domain, layers[-1].codomain, context_dim=dims.pop() if dims else None
        )
        self.layers = nn.ModuleList(layers)
        self.stochastic = any(layer.stochastic for layer in layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Transform:
        return self.layers[index]

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.layers)

    def extra_repr(self) -> str:
        return ""

    def _run(
        self, layers: Iterable[Transform], x: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        total = None
        for layer in layers:
            ctx = None if layer.context_dim is None else context
            x, logdet = layer._inverse(x, ctx) if inverse else layer._forward(x, ctx)
            total = logdet if total is None else total + logdet
        return x, total

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(self.layers, x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(reversed(self.layers), y, context, inverse=True)

    def _nonfinite_error(self, x: Tensor, context: Tensor | None, inverse: bool) -> NonFiniteOutput:
        # Re-run layer by layer (only on this error path) to name the culprit.
        order = list(enumerate(self.layers))
        if inverse:
            order.reverse()
        with torch.no_grad():
            for i, layer in order:
                ctx = None if layer.context_dim is None else context
                out, logdet = layer._inverse(x, ctx) if inverse else layer._forward(x, ctx)
                if not all_finite(out, logdet):
                    err = layer._nonfinite_error(x, context, inverse)
                    return NonFiniteOutput(f"Chain layer {i}: {err}")
                x = out
        return super()._nonfinite_error(x, context, inverse)


class Inverse(Transform):
    """The transform ``t`` with ``forward`` and ``inverse`` swapped.

    Example:
        >>> import torch
        >>> from manifoldflows.transforms import Sigmoid
        >>> logit = Inverse(Sigmoid(2))
        >>> logit.domain, logit.codomain
        (Interval(0, 1, 2), Euclidean(2))
    """

    def __init__(self, transform: Transform):
        super().__init__(transform.codomain, transform.domain, context_dim=transform.context_dim)
        self.transform = transform
        self.stochastic = transform.stochastic

    @property
    def inv(self) -> Transform:
        """The wrapped transform (the inverse of an inverse)."""
        return self.transform

    def extra_repr(self) -> str:
        return ""

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.transform._inverse(x, context)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.transform._forward(y, context)


class Flow(Distribution):
    """A normalizing flow: a base distribution pushed forward through a transform.

    ``log q(y) = log p_base(z) + log|det dz/dy|`` with ``z = transform.inverse(y)``.

    Arguments:
        base: distribution on ``transform.domain``.
        transform: the latent -> data map (typically a :class:`Chain`).

    Example:
        >>> import torch
        >>> from manifoldflows.distributions import StandardNormal
        >>> from manifoldflows.transforms import AffineCoupling, Reverse
        >>> flow = Flow(StandardNormal(2), Chain(AffineCoupling(2), Reverse(2)))
        >>> x, log_q = flow.sample_and_log_prob((8,))
        >>> torch.allclose(log_q, flow.log_prob(x), atol=1e-5)
        True
    """

    def __init__(self, base: Distribution, transform: Transform):
        if base.space != transform.domain:
            raise SpaceMismatch(
                f"Flow: base distribution {base.name} lives on {base.space!r} but the transform "
                f"{transform.name} expects inputs on {transform.domain!r}"
            )
        dims = {base.context_dim, transform.context_dim} - {None}
        if len(dims) > 1:
            raise ValueError(
                f"Flow: base expects context size {base.context_dim}, "
                f"transform {transform.context_dim}"
            )
        super().__init__(transform.codomain, context_dim=dims.pop() if dims else None)
        self.base = base
        self.transform = transform

    @property
    def stochastic(self) -> bool:
        """Whether the transform contains stochastic layers (then there is no log_prob)."""
        return self.transform.stochastic

    def _require_deterministic(self, what: str) -> None:
        if self.transform.stochastic:
            raise StochasticFlowError(
                f"Flow.{what}: the transform contains stochastic layers, so the flow has no "
                "tractable density; use sample_and_log_weight(target, ...) instead"
            )

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self._require_deterministic("log_prob")
        if self.validate:
            check_context(context, self.context_dim, self.space.batch_shape(x), x, "Flow.log_prob")
        return self._log_prob(x, context)

    def _transform_context(self, context: Tensor | None) -> Tensor | None:
        # The flow's context goes to the transform only if the transform takes one (the base
        # may be the conditional part); an unconditional transform refuses any context.
        return None if self.transform.context_dim is None else context

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        # transform.inverse validates x and the finiteness of z; the base need not check z again
        z, logdet = self.transform.inverse(x, self._transform_context(context))
        return self.base._log_prob(z, context) + logdet

    def _rsample(
        self,
        shape: tuple[int, ...],
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        z = self.base._rsample(shape, context, generator)
        return self.transform(z, self._transform_context(context))[0]

    def _sample_and_log_prob(
        self,
        shape: tuple[int, ...],
        context: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        z, log_p = self.base._sample_and_log_prob(shape, context, generator)
        y, logdet = self.transform(z, self._transform_context(context))
        return y, log_p - logdet

    def sample_and_log_prob(
        self,
        shape: Shape = (),
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        self._require_deterministic("sample_and_log_prob")
        return super().sample_and_log_prob(shape, context, generator)

    def sample_and_log_weight(
        self,
        target: Target,
        shape: Shape = (),
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log importance weights ``log w = -u(y) - log q(y)``.

        For stochastic chains ``log q`` is replaced by ``log p_base(z) - sum(path weights)``,
        whose importance weights are unbiased for the target (Wu et al. 2020). ``target``
        follows the protocol of :mod:`manifoldflows.targets` (a callable or an object with
        ``.energy``; it receives ``context`` when it takes one). Estimates with error bars
        from these weights: :mod:`manifoldflows.estimators`.
        """
        who = "Flow.sample_and_log_weight"
        check_target_space(self, target, who)
        self._check_sample_context(context)
        z, log_p = self.base._sample_and_log_prob(
            self._full_shape(shape, context), context, generator
        )
        y, logdet = self.transform(z, self._transform_context(context))
        log_q = log_p - logdet
        return y, -target_energy(target, y, log_q.shape, context, who) - log_q
