"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015, arXiv:1502.03509).

A feed-forward network whose outputs for coordinate ``i`` depend only on inputs that come
before ``i`` in a given order, obtained by masking the weights of ordinary linear layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import make_activation

__all__ = ["MaskedLinear", "MADE", "made_masks", "hidden_degrees"]


def hidden_degrees(features: int, hidden: Sequence[int], conditional: bool) -> list[Tensor]:
    """Degrees of the hidden units of each layer.

    Degrees cycle through ``1..d-1`` so that every degree is represented. With a context they
    cycle through ``0..d-1``: degree-0 units see only the context, which lets the first
    coordinate's parameters depend on the context too (without them, the first coordinate of a
    conditional MADE would be unconditional).
    """
    if conditional:
        return [torch.arange(size) % features for size in hidden]
    return [torch.arange(size) % max(features - 1, 1) + 1 for size in hidden]


def made_masks(
    order: Tensor,
    hidden: Sequence[int],
    outputs_per_input: int,
    param_major: bool = False,
    conditional: bool = False,
) -> list[Tensor]:
    """Connectivity masks for MADE.

    Arguments:
        order: ``(d,)`` degrees of the inputs, a permutation of ``1..d``.
        hidden: hidden layer sizes.
        outputs_per_input: ``P``, outputs per input coordinate; output ``(i, p)`` has degree
            ``order[i]``.
        param_major: lay outputs out as ``p * d + i`` (all first parameters, then all second
            ones, ...) instead of ``i * P + p``.
        conditional: whether a context feeds the first hidden layer (see
            :func:`hidden_degrees`).

    Returns:
        One ``(out, in)`` 0/1 mask per linear layer.
    """
    d = order.numel()
    degrees = [order, *hidden_degrees(d, hidden, conditional)]
    masks = [
        (deg_out[:, None] >= deg_in[None, :]) for deg_in, deg_out in zip(degrees[:-1], degrees[1:])
    ]
    if param_major:
        out_degrees = order.repeat(outputs_per_input)
    else:
        out_degrees = order.repeat_interleave(outputs_per_input)
    masks.append(out_degrees[:, None] > degrees[-1][None, :])
    return [m.to(torch.get_default_dtype()) for m in masks]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask.

    Outside autograd (``torch.no_grad`` or a weight without ``requires_grad``) the masked weight
    is cached and reused until the weight changes (tracked by its in-place version counter), so
    inference and sampling loops pay for the mask once.
    """

    def __init__(self, mask: Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.clone())
        self._cache: tuple | None = None

    def masked_weight(self) -> Tensor:
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return w * self.mask
        key = (w.data_ptr(), w._version, self.mask.data_ptr(), self.mask._version, w.dtype)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, (w * self.mask).detach())
        return self._cache[1]

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight(), self.bias)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state["_cache"] = None
        return state


class MADE(nn.Module):
    """Autoregressive network: outputs ``(..., d, P)``, row ``i`` depends on ``x_j`` with
    ``order[j] < order[i]`` and on the context.

    Arguments:
        features: input dimension ``d``.
        outputs_per_input: ``P``.
        hidden: hidden layer sizes (each should be at least ``d - 1``).
        context_dim: context features, fed (unmasked) into the first hidden layer.
        order: input degrees, a permutation of ``1..d`` (default ``1..d``).
        activation: activation name.
        zero_last: zero-initialise the output layer.
        param_major: store the ``P`` parameters of all coordinates in ``P`` contiguous blocks, so
            that ``out[..., p]`` is a cheap view (good for small ``P`` such as affine maps).
        embedding: optional module mapping ``(..., d)`` inputs to ``(..., d * m)`` features whose
            columns ``m i .. m (i + 1) - 1`` depend on input ``i`` only (e.g. the periodic
            ``[cos, sin]`` embedding of angles); those columns share input ``i``'s degree.
        embedding_width: ``m``, features per input produced by ``embedding``.

    Example:
        >>> made = MADE(3, 2, hidden=(16,))
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
    """

    def __init__(
        self,
        features: int,
        outputs_per_input: int,
        hidden: Sequence[int] = (64, 64),
        *,
        context_dim: int | None = None,
        order: Tensor | None = None,
        activation: str = "relu",
        zero_last: bool = True,
        param_major: bool = False,
        embedding: nn.Module | None = None,
        embedding_width: int = 1,
    ):
        super().__init__()
        name = type(self).__name__
        if not hidden:
            raise ValueError(f"{name}: needs at least one hidden layer")
        order = torch.arange(1, features + 1) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(1, features + 1)):
            raise ValueError(
                f"{name}: order must be a permutation of 1..{features}, got {order.tolist()}"
            )
        self.features, self.outputs_per_input = features, outputs_per_input
        self.param_major = bool(param_major)
        self.register_buffer("order", order.clone())
        conditional = context_dim is not None
        masks = made_masks(order, hidden, outputs_per_input, self.param_major, conditional)
        self.embedding, self.embedding_width = embedding, int(embedding_width)
        masks[0] = masks[0].repeat_interleave(self.embedding_width, dim=1)
        for i, degrees in enumerate(hidden_degrees(features, hidden, conditional)):
            self.register_buffer(f"_degrees{i}", degrees, persistent=False)
        self.layers = nn.ModuleList(MaskedLinear(m) for m in masks)
        self.activation = make_activation(activation)
        # forward() applies it right after linear layers, where overwriting is safe
        self._activation_inplace = make_activation(activation, inplace=True)
        self.context_layer = None if context_dim is None else nn.Linear(context_dim, hidden[0])
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def _shape_output(self, h: Tensor) -> Tensor:
        d, p = self.features, self.outputs_per_input
        if self.param_major:
            return h.unflatten(-1, (p, d)).transpose(-1, -2)
        return h.unflatten(-1, (d, p))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.layers[0](x if self.embedding is None else self.embedding(x))
        if self.context_layer is not None and context is not None:
            h = h + self.context_layer(context)
        for layer in self.layers[1:]:
            h = layer(self._activation_inplace(h))
        return self._shape_output(h)

    def solve(
        self,
        x: Tensor,
        context: Tensor | None,
        step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    ) -> tuple[Tensor, Tensor]:
        """Solve ``out_i = step(x_i, theta_i(out_<i))`` coordinate by coordinate.

        This is the sequential direction of an autoregressive flow (sampling for MAF, density
        evaluation for IAF). Instead of ``d`` full network passes it exploits the masks:

        * the first layer's pre-activation is updated by a rank-one term per solved coordinate;
        * hidden units are sorted by degree, and the parameters of a coordinate of degree ``k``
          only need the units of degree ``< k`` in every hidden layer (a leading block of the
          sorted weight matrices), so early coordinates are cheap;
        * only the output rows of the coordinate being solved are evaluated.

        Arguments:
            x: ``(..., d)`` inputs of the elementwise maps.
            context: context or ``None``.
            step: ``(x_i, params_i) -> (out_i, logabsdet_i)`` with ``x_i`` of shape ``(...)``
                and ``params_i`` of shape ``(..., P)``.

        Returns:
            ``(out, logabsdet)`` with ``out`` like ``x`` and the logdet summed over coordinates.
        """
        d, p = self.features, self.outputs_per_input
        hidden_layers = len(self.layers) - 1
        degrees = [getattr(self, f"_degrees{i}") for i in range(hidden_layers)]
        sort = [torch.argsort(deg, stable=True) for deg in degrees]
        sorted_degrees = [deg[idx] for deg, idx in zip(degrees, sort)]
        # Weights with hidden units in degree order (rows: this layer, columns: previous layer);
        # the first layer's as (d, m, H): the m embedding columns of each input.
        m = self.embedding_width
        w_first_t = self.layers[0].masked_weight()[sort[0]].t().reshape(d, m, -1).contiguous()
        pre = self.layers[0].bias[sort[0]]
        if self.context_layer is not None and context is not None:
            pre = pre + self.context_layer(context)[..., sort[0]]
        middle = []
        for l in range(1, hidden_layers):
            w = self.layers[l].masked_weight()[sort[l]][:, sort[l - 1]]
            middle.append((w, self.layers[l].bias[sort[l]]))
        w_last = self.layers[-1].masked_weight()[:, sort[-1]]
        b_last = self.layers[-1].bias
        batch = torch.broadcast_shapes(x.shape[:-1], pre.shape[:-1])
        in_place = not (torch.is_grad_enabled() and (x.requires_grad or w_first_t.requires_grad))
        pre = pre.expand(*batch, pre.shape[-1])
        if in_place:
            pre = pre.clone()
        x = x.expand(*batch, d)
        coordinates = torch.argsort(self.order)  # in autoregressive order
        # counts[l][k]: number of units of layer l with degree < degree of the k-th coordinate
        counts = [
            torch.searchsorted(sd, self.order[coordinates], right=False).tolist()
            for sd in sorted_degrees
        ]
        outputs: list[Tensor | None] = [None] * d
        total = None
        for k, i in enumerate(coordinates.tolist()):
            n = [c[k] for c in counts]
            h = self.activation(pre[..., : n[0]])
            for l, (w, b) in enumerate(middle, start=1):
                h = self.activation(F.linear(h, w[: n[l], : n[l - 1]], b[: n[l]]))
            rows = slice(i, None, d) if self.param_major else slice(i * p, (i + 1) * p)
            params = F.linear(h, w_last[rows, : n[-1]], b_last[rows])
            out, logdet = step(x[..., i], params)
            outputs[i] = out
            total = logdet if total is None else total + logdet
            features = out.unsqueeze(-1)
            if self.embedding is not None:
                features = self.embedding(features)
            if m == 1 and in_place:
                pre.addcmul_(features, w_first_t[i, 0])
            elif m == 1:
                pre = torch.addcmul(pre, features, w_first_t[i, 0])
            else:
                pre = pre + features @ w_first_t[i]
        return torch.stack(outputs, dim=-1), total
