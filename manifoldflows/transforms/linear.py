"""Linear layers on ``R^d``: fixed permutations and a learnable LU-factorised linear map.

Permutations only reorder coordinates (``log|det| = 0``) and are placed between coupling or
autoregressive layers so that every coordinate gets transformed. :class:`LULinear` is the
"invertible 1x1 convolution" of Glow in its LU-decomposed form, which makes the determinant and
the inverse cost ``O(d)`` and ``O(d^2)`` per point instead of ``O(d^3)``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Transform
from ..spaces import Euclidean

__all__ = ["Permutation", "Reverse", "RandomPermutation", "LULinear"]


def _check_features(owner: str, features: object) -> int:
    """Validate a feature count (a positive integer) and return it as ``int``."""
    try:
        value = operator.index(features)  # type: ignore[arg-type]
    except TypeError:
        value = None
    if isinstance(features, bool) or value is None or value < 1:
        raise ValueError(f"{owner}: expected a positive integer dimension dim, got {features!r}")
    return value


def _batch_logdet(value: Tensor, x: Tensor) -> Tensor:
    """Broadcast a scalar logdet to the batch shape of ``x`` (a fresh, writable tensor)."""
    return value.expand(x.shape[:-1]).clone()


class Permutation(Transform):
    """A fixed reordering of the coordinates of ``R^d``.

    ``y_i = x_{p(i)}`` for a permutation ``p`` of ``{0, ..., d-1}``; the inverse applies
    ``p^{-1}``. The Jacobian is a permutation matrix, so ``log|det J| = 0``.

    Arguments:
        permutation: a sequence or 1-D integer tensor holding each of ``0, ..., d-1`` exactly
            once; ``d`` is its length. Stored (with its inverse) as a buffer, so it moves with
            ``.to()`` and is saved in the ``state_dict``.

    Inputs of ``forward``/``inverse`` have shape ``(..., d)``; the logdet has shape ``(...)``.

    References:
        Dinh, Sohl-Dickstein & Bengio 2016, Density estimation using Real NVP,
        arXiv:1605.08803 (permutations between coupling layers).

    Example:
        >>> import torch
        >>> layer = Permutation([2, 0, 1])
        >>> y, logdet = layer(torch.tensor([10.0, 20.0, 30.0]))
        >>> y.tolist(), logdet.item()
        ([30.0, 10.0, 20.0], 0.0)
        >>> layer.inverse(y)[0].tolist()
        [10.0, 20.0, 30.0]
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Sequence[int] | Tensor):
        perm = self._validated(permutation)
        d = perm.numel()
        super().__init__(Euclidean(d))
        self.features = d
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def _validated(self, permutation: Sequence[int] | Tensor) -> Tensor:
        owner = type(self).__name__
        try:
            perm = torch.as_tensor(permutation)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{owner}: expected a sequence of integers forming a permutation, got "
                f"{permutation!r}"
            ) from None
        if perm.numel() == 0:
            raise ValueError(f"{owner}: expected a non-empty permutation, got {permutation!r}")
        if perm.dtype == torch.bool or perm.is_floating_point() or perm.is_complex():
            raise ValueError(
                f"{owner}: expected integer entries for the permutation, got dtype {perm.dtype}"
            )
        if perm.dim() != 1:
            raise ValueError(f"{owner}: expected a 1-D permutation, got shape {tuple(perm.shape)}")
        perm = perm.detach().to(device="cpu", dtype=torch.long)
        d = perm.numel()
        if not torch.equal(torch.sort(perm).values, torch.arange(d)):
            shown = perm.tolist() if d <= 20 else f"{perm[:20].tolist()}..."
            raise ValueError(
                f"{owner}: expected a permutation of range({d}) (each of 0..{d - 1} exactly "
                f"once), got {shown}"
            )
        return perm.clone()

    def extra_repr(self) -> str:
        shown = self.permutation.tolist() if self.features <= 10 else "..."
        return f"{super().extra_repr()}, permutation={shown}"

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x.index_select(-1, self.permutation.to(x.device))
        return y, x.new_zeros(x.shape[:-1])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = y.index_select(-1, self.inverse_permutation.to(y.device))
        return x, y.new_zeros(y.shape[:-1])


class Reverse(Permutation):
    """Reverse the order of the coordinates: ``y_i = x_{d-1-i}`` (``log|det J| = 0``).

    Arguments:
        dim: dimension ``d``.

    References:
        Dinh, Sohl-Dickstein & Bengio 2016, Real NVP, arXiv:1605.08803.

    Example:
        >>> import torch
        >>> Reverse(3)(torch.tensor([[1.0, 2.0, 3.0]]))[0].tolist()
        [[3.0, 2.0, 1.0]]
    """

    def __init__(self, dim: int):
        d = _check_features(type(self).__name__, dim)
        super().__init__(torch.arange(d - 1, -1, -1))

    def extra_repr(self) -> str:
        return Transform.extra_repr(self)


class RandomPermutation(Permutation):
    """A permutation of ``R^d`` drawn uniformly at random once, at construction.

    Arguments:
        dim: dimension ``d``.
        generator: optional :class:`torch.Generator` (on the CPU) for a reproducible draw.

    References:
        Papamakarios, Pavlakou & Murray 2017, Masked Autoregressive Flow, arXiv:1705.07057.

    Example:
        >>> import torch
        >>> layer = RandomPermutation(4, generator=torch.Generator().manual_seed(0))
        >>> sorted(layer.permutation.tolist())
        [0, 1, 2, 3]
    """

    def __init__(self, dim: int, generator: torch.Generator | None = None):
        d = _check_features(type(self).__name__, dim)
        super().__init__(torch.randperm(d, generator=generator))


class LULinear(Transform):
    """Invertible linear map ``y = W x + b`` with ``W = P L U`` (Glow's LU-decomposed 1x1 conv).

    ``P`` is a fixed permutation matrix (a buffer), ``L`` is unit lower triangular (its
    strictly lower entries are parameters) and ``U`` is upper triangular with strictly upper
    entries as parameters and a positive diagonal ``exp(s)``. Hence::

        log|det W| = sum_i s_i,        x = U^-1 L^-1 P^T (y - b),

    exactly, and the inverse is two triangular solves (no matrix inverse is formed). The
    positive diagonal fixes the sign of ``det W`` to that of ``det P``; this loses nothing,
    since the set of invertible matrices of one sign is connected and gradient descent can
    never cross ``det W = 0`` anyway.

    Arguments:
        dim: dimension ``d``.
        bias: learn the offset ``b`` (initialised to zero).
        identity_init: start as the identity (``P = L = U = I``). Otherwise ``W`` starts as a
            random rotation, as in Glow: ``P``, ``L``, ``U`` come from the pivoted LU
            decomposition of a random orthogonal matrix (whose columns are sign-flipped so
            that ``U`` has a positive diagonal).
        generator: optional :class:`torch.Generator` (CPU) for the random initialisation.

    Inputs have shape ``(..., d)`` (any batch shape, including none); the logdet has shape
    ``(...)``.

    References:
        Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1x1 Convolutions,
        arXiv:1807.03039.

    Example:
        >>> import torch
        >>> layer = LULinear(3, identity_init=False, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(5, 3)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
        >>> bool(logdet.abs().max() < 1e-5)  # it starts as a rotation: volume-preserving
        True
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(
        self,
        dim: int,
        bias: bool = True,
        identity_init: bool = True,
        generator: torch.Generator | None = None,
    ):
        d = _check_features(type(self).__name__, dim)
        super().__init__(Euclidean(d))
        self.features = d
        dtype = torch.get_default_dtype()
        if identity_init:
            perm = torch.arange(d)
            lower = torch.zeros(d, d)
            upper = torch.zeros(d, d)
            log_diag = torch.zeros(d)
        else:
            gauss = torch.randn(d, d, generator=generator, dtype=torch.float64)
            q, r = torch.linalg.qr(gauss)
            q = q * torch.sign(torch.diagonal(r))  # Haar-distributed rotation
            p_mat, l_mat, u_mat = torch.linalg.lu(q)
            signs = torch.sign(torch.diagonal(u_mat))
            u_mat = u_mat * signs  # flip columns: q * signs = P L (U * signs), still orthogonal
            perm = p_mat.argmax(dim=1)  # P[i, perm[i]] = 1, so (P v)_i = v[perm[i]]
            lower = torch.tril(l_mat, -1)
            upper = torch.triu(u_mat, 1)
            log_diag = torch.log(torch.diagonal(u_mat))
        self.register_buffer("permutation", perm.long())
        self.register_buffer("inverse_permutation", torch.argsort(perm).long())
        self.lower = nn.Parameter(lower.to(dtype))
        self.upper = nn.Parameter(upper.to(dtype))
        self.log_diag = nn.Parameter(log_diag.to(dtype))
        self.bias = nn.Parameter(torch.zeros(d, dtype=dtype)) if bias else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias={self.bias is not None}"

    # ------------------------------------------------------------------ factors
    def lower_matrix(self) -> Tensor:
        """The unit lower triangular factor ``L``, shape ``(d, d)``."""
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        return torch.tril(self.lower, -1) + eye

    def upper_matrix(self) -> Tensor:
        """The upper triangular factor ``U`` with diagonal ``exp(log_diag)``, shape ``(d, d)``."""
        return torch.triu(self.upper, 1) + torch.diag_embed(torch.exp(self.log_diag))

    def permutation_matrix(self) -> Tensor:
        """The permutation matrix ``P`` (``P[i, perm[i]] = 1``), shape ``(d, d)``."""
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        return eye[self.permutation]

    def weight(self) -> Tensor:
        """The matrix ``W = P L U``, shape ``(d, d)``."""
        return (self.lower_matrix() @ self.upper_matrix())[self.permutation]

    def logabsdet(self) -> Tensor:
        """``log|det W| = sum(log_diag)`` (a scalar)."""
        return self.log_diag.sum()

    # ------------------------------------------------------------------ maps
    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = F.linear(x, self.weight(), self.bias)
        return y, _batch_logdet(self.logabsdet(), x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        w = y if self.bias is None else y - self.bias
        w = w.index_select(-1, self.inverse_permutation)  # P^T (y - b)
        rows = w.reshape(-1, self.features)
        # Row-vector form: L z = w  <=>  z^T L^T = w^T, and U x = z  <=>  x^T U^T = z^T.
        z = torch.linalg.solve_triangular(
            self.lower_matrix().mT, rows, upper=True, left=False, unitriangular=True
        )
        x = torch.linalg.solve_triangular(self.upper_matrix().mT, z, upper=False, left=False)
        return x.reshape(y.shape), _batch_logdet(-self.logabsdet(), y)
