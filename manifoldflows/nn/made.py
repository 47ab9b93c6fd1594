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


def hidden_degrees(dim: int, hidden: Sequence[int], conditional: bool) -> list[Tensor]:
    """Degrees of the hidden units of each layer.

    Degrees cycle through ``1..d-1`` so that every degree is represented. With a context they
    cycle through ``0..d-1``: degree-0 units see only the context, which lets the first
    coordinate's parameters depend on the context too (without them, the first coordinate of a
    conditional MADE would be unconditional).
    """
    if conditional:
        return [torch.arange(size) % dim for size in hidden]
    return [torch.arange(size) % max(dim - 1, 1) + 1 for size in hidden]


def made_masks(
    order: Tensor,
    hidden: Sequence[int],
    output_coordinates: Tensor,
    conditional: bool = False,
    input_coordinates: Tensor | None = None,
) -> list[Tensor]:
    """Connectivity masks for MADE.

    Arguments:
        order: ``(d,)`` degrees of the coordinates, a permutation of ``1..d``.
        hidden: hidden layer sizes.
        output_coordinates: ``(R,)`` the coordinate each output row parameterises; row ``r``
            has degree ``order[output_coordinates[r]]`` and sees inputs of lower degree.
        conditional: whether a context feeds the first hidden layer (see
            :func:`hidden_degrees`).
        input_coordinates: ``(F,)`` the coordinate each input feature belongs to (an embedding
            may give a coordinate several features); default one feature per coordinate.

    Returns:
        One ``(out, in)`` 0/1 mask per linear layer.
    """
    d = order.numel()
    inputs = torch.arange(d) if input_coordinates is None else input_coordinates
    degrees = [order[inputs], *hidden_degrees(d, hidden, conditional)]
    masks = [
        (deg_out[:, None] >= deg_in[None, :]) for deg_in, deg_out in zip(degrees[:-1], degrees[1:])
    ]
    out_degrees = order[output_coordinates]
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

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_cache"] = None
        return state


class MADE(nn.Module):
    """Autoregressive network: output rows of coordinate ``i`` depend only on the coordinates
    ``j`` with ``order[j] < order[i]`` and on the context.

    Arguments:
        dim: number of coordinates ``d``.
        outputs: either ``P``, outputs per coordinate (the output then has shape
            ``(..., d, P)``), or a sequence giving for each output row the coordinate it belongs
            to (flat output ``(..., R)``; autoregressive layers pass the rows of their
            :class:`~manifoldflows.nn.conditioner.ParameterLayout`).
        hidden: hidden layer sizes (each should be at least ``d - 1``).
        context_dim: context features, fed (unmasked) into the first hidden layer.
        order: coordinate degrees, a permutation of ``1..d`` (default ``1..d``).
        activation: activation name.
        zero_last: zero-initialise the output layer's weights.
        embedding: optional module mapping ``(..., d)`` inputs to conditioner features whose
            ``feature_coordinate`` buffer names the coordinate of each feature and whose
            ``embed_one(i, x_i)`` embeds one coordinate (a
            :class:`~manifoldflows.nn.embedding.CoordinateEmbedding`: ``(cos, sin)`` of angles,
            rescaled intervals, ...).
        initial_bias: initial value of the output bias (default zeros).

    Example:
        >>> made = MADE(3, 2, hidden=(16,))
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
    """

    def __init__(
        self,
        dim: int,
        outputs: int | Sequence[int] | Tensor,
        hidden: Sequence[int] = (64, 64),
        *,
        context_dim: int | None = None,
        order: Tensor | Sequence[int] | None = None,
        activation: str = "relu",
        zero_last: bool = True,
        embedding: nn.Module | None = None,
        initial_bias: Tensor | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        if not hidden:
            raise ValueError(f"{name}: needs at least one hidden layer")
        order = torch.arange(1, dim + 1) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(1, dim + 1)):
            raise ValueError(
                f"{name}: order must be a permutation of 1..{dim}, got {order.tolist()}"
            )
        self.features = dim
        if isinstance(outputs, int):
            self.outputs_per_input: int | None = outputs
            rows = torch.arange(dim).repeat_interleave(outputs)
        else:
            self.outputs_per_input = None
            rows = torch.as_tensor(outputs, dtype=torch.long)
        self.register_buffer("order", order.clone())
        self.register_buffer("output_coordinates", rows, persistent=False)
        self._row_blocks: tuple[Tensor, list[slice]] | None = None
        self.embedding = embedding
        inputs = None if embedding is None else embedding.feature_coordinate.cpu()
        conditional = context_dim is not None
        masks = made_masks(order, hidden, rows, conditional, inputs)
        for i, degrees in enumerate(hidden_degrees(dim, hidden, conditional)):
            self.register_buffer(f"_degrees{i}", degrees, persistent=False)
        self.layers = nn.ModuleList(MaskedLinear(m) for m in masks)
        self.activation = make_activation(activation)
        # forward() applies it right after linear layers, where overwriting is safe
        self._activation_inplace = make_activation(activation, inplace=True)
        self.context_layer = None if context_dim is None else nn.Linear(context_dim, hidden[0])
        if zero_last:
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)
        if initial_bias is not None:
            with torch.no_grad():
                self.layers[-1].bias.copy_(initial_bias)

    def _shape_output(self, h: Tensor) -> Tensor:
        if self.outputs_per_input is None:
            return h
        return h.unflatten(-1, (self.features, self.outputs_per_input))

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
        step: Callable[[int, Tensor, Tensor], tuple[Tensor, Tensor]],
    ) -> tuple[Tensor, Tensor]:
        """Solve ``out_i = step(i, x_i, theta_i(out_<i))`` coordinate by coordinate.

        This is the sequential direction of an autoregressive flow (sampling for MAF, density
        evaluation for IAF). Instead of ``d`` full network passes it exploits the masks:

        * the first layer's pre-activation is updated by a rank-one term (rank ``w`` for a
          coordinate embedded in ``w`` features) per solved coordinate;
        * hidden units are sorted by degree, and the parameters of a coordinate of degree ``k``
          only need the units of degree ``< k`` in every hidden layer (a leading block of the
          sorted weight matrices), so early coordinates are cheap;
        * only the output rows of the coordinate being solved are evaluated.

        Arguments:
            x: ``(..., d)`` inputs of the element-wise maps.
            context: context or ``None``.
            step: ``(i, x_i, params_i) -> (out_i, logabsdet_i)`` with ``x_i`` of shape ``(...)``
                and ``params_i`` the ``(..., R_i)`` output rows of coordinate ``i``, in order.

        Returns:
            ``(out, logabsdet)`` with ``out`` like ``x`` and the logdet summed over coordinates.
        """
        d = self.features
        hidden_layers = len(self.layers) - 1
        degrees = [getattr(self, f"_degrees{i}") for i in range(hidden_layers)]
        sort = [torch.argsort(deg, stable=True) for deg in degrees]
        sorted_degrees = [deg[idx] for deg, idx in zip(degrees, sort)]
        # First layer with hidden units in degree order, transposed: (features, H).
        w_first_t = self.layers[0].masked_weight()[sort[0]].t().contiguous()
        if self.embedding is None:
            columns = [[i] for i in range(d)]
        else:
            columns = [self.embedding.feature_columns(i) for i in range(d)]
        pre = self.layers[0].bias[sort[0]]
        if self.context_layer is not None and context is not None:
            pre = pre + self.context_layer(context)[..., sort[0]]
        middle = []
        for l in range(1, hidden_layers):
            w = self.layers[l].masked_weight()[sort[l]][:, sort[l - 1]]
            middle.append((w, self.layers[l].bias[sort[l]]))
        # Output rows grouped by coordinate (stable, so each coordinate keeps its layout order):
        # coordinate i's rows are then one contiguous block, a view instead of a gather.
        by_coordinate, blocks = self._rows_by_coordinate()
        w_last = self.layers[-1].masked_weight()[by_coordinate][:, sort[-1]]
        b_last = self.layers[-1].bias[by_coordinate]
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
            rows = blocks[i]
            params = F.linear(h, w_last[rows, : n[-1]], b_last[rows])
            out, logdet = step(i, x[..., i], params)
            outputs[i] = out
            total = logdet if total is None else total + logdet
            if len(columns[i]) == 1 and self.embedding is None:
                features, weight = out.unsqueeze(-1), w_first_t[columns[i][0]]
            else:
                features = self.embedding.embed_one(i, out)
                weight = w_first_t[columns[i]]
            if weight.dim() == 1 and in_place:
                pre.addcmul_(features, weight)
            elif weight.dim() == 1:
                pre = torch.addcmul(pre, features, weight)
            else:
                pre = pre + features @ weight
        return torch.stack(outputs, dim=-1), total

    def _rows_by_coordinate(self) -> tuple[Tensor, list[slice]]:
        """Output rows sorted by coordinate, and each coordinate's block in that order."""
        if self._row_blocks is None:
            order = torch.argsort(self.output_coordinates.cpu(), stable=True)
            counts = torch.bincount(self.output_coordinates.cpu(), minlength=self.features)
            ends = torch.cumsum(counts, 0).tolist()
            starts = [0, *ends[:-1]]
            self._row_blocks = (order, [slice(a, b) for a, b in zip(starts, ends)])
        order, blocks = self._row_blocks
        return order.to(self.output_coordinates.device), blocks
