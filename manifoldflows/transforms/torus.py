"""Coupling and autoregressive flows on the torus ``T^n`` built from circle maps.

Both layers transform each angle with a circle diffeomorphism
(:mod:`manifoldflows.transforms.circular`: circular splines, Moebius mixtures, ...) whose
parameters depend on other angles. Conditioners read angles only through the periodic
embedding ``(cos x, sin x)`` (:mod:`manifoldflows.nn.periodic`), so every layer is a smooth
map of the torus, with no seam at ``-pi == pi`` (Rezende et al. 2020, arXiv:2002.02428). The
Jacobian is triangular in the angles (the torus's intrinsic coordinates), so the logdet is the
sum of the circle maps' log-derivatives, in arc length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core import Transform
from ..functional.circle import wrap
from ..nn.mlp import MLP, concat_context
from ..nn.periodic import PeriodicMADE, periodic_embedding
from ..spaces import Torus
from .autoregressive import MODES, AutoregressiveBase
from .circular import CircleMap, make_circle_map

__all__ = ["TorusCoupling", "TorusAutoregressive"]


def _check_features(features, who: str) -> int:
    if isinstance(features, bool) or not isinstance(features, int) or features < 2:
        raise ValueError(
            f"{who}: expected at least 2 angles, got {features!r}; for one angle use an "
            "elementwise circle layer (e.g. CircularSpline(1, context_dim=...))"
        )
    return features


class TorusCoupling(Transform):
    """Coupling layer on ``Torus(n)``: some angles condition circle maps of the others.

    ``y_A = x_A``, ``y_B = f(x_B; theta(cos x_A, sin x_A, context))`` where ``f`` is a circle
    map applied angle by angle and ``theta`` an MLP whose last layer starts at zero (a new
    layer is the identity for splines and rotations, near the identity for Moebius mixtures).

    Arguments:
        features: number of angles ``n >= 2``.
        map: ``"spline"`` (circular rational-quadratic spline), ``"moebius"`` (convex
            combination of Moebius maps), ``"noncompact"``, ``"shift"``, or a
            :class:`~manifoldflows.transforms.circular.CircleMap`.
        mask: ``n`` booleans, ``True`` for the angles that are transformed (default: the last
            ``n - n // 2``). Needs at least one ``True`` and one ``False``.
        swap: transform the complement of ``mask`` instead.
        context_dim: context size (``None`` for an unconditional layer).
        hidden: hidden sizes of the conditioner MLP.
        activation: activation of the conditioner.
        **map_options: options of the circle map (``bins``, ``components``, ``shift``, ...).

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.
        L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP",
        ICLR 2017, arXiv:1605.08803.

    Example:
        >>> layer = TorusCoupling(3, "spline", bins=4, hidden=(16,))
        >>> x = torch.rand(5, 3) * 6 - 3
        >>> y, logdet = layer(x)
        >>> torch.equal(y[:, :1], x[:, :1]), logdet.shape
        (True, torch.Size([5]))
    """

    def __init__(
        self,
        features: int,
        map: str | CircleMap = "spline",
        *,
        mask: Sequence[bool] | Tensor | None = None,
        swap: bool = False,
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        **map_options,
    ):
        who = type(self).__name__
        features = _check_features(features, who)
        if mask is None:
            mask = torch.arange(features) >= features // 2
        else:
            mask = torch.as_tensor(mask)
            if mask.shape != (features,) or mask.dtype != torch.bool:
                raise ValueError(
                    f"{who}: expected a boolean mask of {features} entries, got {mask.tolist()}"
                )
        if swap:
            mask = ~mask
        if bool(mask.all()) or not bool(mask.any()):
            raise ValueError(
                f"{who}: the mask must transform some angles and keep others, got {mask.tolist()}"
            )
        super().__init__(Torus(features), context_dim=context_dim)
        self.features = features
        self.circle_map = make_circle_map(map, **map_options)
        self.register_buffer("transformed", torch.nonzero(mask).flatten())
        self.register_buffer("conditioning", torch.nonzero(~mask).flatten())
        # merge[j]: position of angle j in cat([conditioning, transformed])
        self.register_buffer(
            "merge", torch.argsort(torch.cat([self.conditioning, self.transformed]))
        )
        n_cond, n_trans = len(self.conditioning), len(self.transformed)
        self.conditioner = MLP(
            2 * n_cond + (context_dim or 0),
            n_trans * self.circle_map.params_per_dim,
            hidden,
            activation,
            zero_last=True,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, map={self.circle_map!r}, "
            f"transformed={self.transformed.tolist()}"
        )

    def _run(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        cond = x[..., self.conditioning]
        trans = x[..., self.transformed]
        raw = self.conditioner(concat_context(periodic_embedding(cond), context))
        params = raw.unflatten(-1, (len(self.transformed), self.circle_map.params_per_dim))
        step = self.circle_map.inverse if inverse else self.circle_map.forward
        out, logdet = step(trans, params)
        cond = wrap(cond).expand(*out.shape[:-1], cond.shape[-1])  # pi (accepted) -> -pi
        return torch.cat([cond, out], dim=-1)[..., self.merge], logdet.sum(-1)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._run(y, context, inverse=True)


class TorusAutoregressive(AutoregressiveBase):
    """Autoregressive layer on ``Torus(n)``: ``y_i = f(x_i; theta_i(angles before i, context))``.

    A :class:`~manifoldflows.nn.periodic.PeriodicMADE` reads ``(cos, sin)`` of the angles and
    outputs the parameters of every angle's circle map, row ``i`` depending only on angles
    earlier in ``order``. In ``mode="maf"`` the parameters come from the data side (one pass
    for ``inverse``, the density direction; ``n`` cheap steps for sampling); ``mode="iaf"``
    reads the latent side (one-pass sampling, e.g. for reverse-KL training).

    Arguments:
        features: number of angles ``n >= 2``.
        map: circle map name or object (see :class:`TorusCoupling`).
        mode: ``"maf"`` or ``"iaf"``.
        context_dim: context size.
        hidden: MADE hidden sizes (each at least ``n - 1``).
        activation: MADE activation.
        order: autoregressive order, a permutation of ``1..n`` (default natural order).
        **map_options: options of the circle map.

    References:
        D. J. Rezende et al., "Normalizing Flows on Tori and Spheres", ICML 2020,
        arXiv:2002.02428.
        G. Papamakarios, T. Pavlakou, I. Murray, "Masked Autoregressive Flow for Density
        Estimation", NeurIPS 2017, arXiv:1705.07057.

    Example:
        >>> layer = TorusAutoregressive(3, "moebius", components=2, hidden=(16,))
        >>> x = torch.rand(4, 3) * 6 - 3
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-4)
        True
    """

    def __init__(
        self,
        features: int,
        map: str | CircleMap = "spline",
        *,
        mode: str = "maf",
        context_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        order: Sequence[int] | Tensor | None = None,
        **map_options,
    ):
        who = type(self).__name__
        features = _check_features(features, who)
        if mode not in MODES:
            raise ValueError(f"{who}: mode must be one of {MODES}, got {mode!r}")
        super().__init__(Torus(features), context_dim=context_dim)
        self.features, self.mode = features, mode
        self.circle_map = self.elementwise_map = make_circle_map(map, **map_options)
        self.made = PeriodicMADE(
            features,
            self.circle_map.params_per_dim,
            hidden,
            context_dim=context_dim,
            order=order,
            activation=activation,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, map={self.circle_map!r}, mode={self.mode!r}"
