"""Image layers of Glow and the RealNVP multi-scale architecture.

All layers act on :class:`~manifoldflows.spaces.Image` spaces: points are tensors of shape
``(..., C, H, W)`` with any batch shape. One *level* of Glow, written in the encoding
(data -> latent, i.e. ``inverse``) direction, is::

    squeeze -> K x [ActNorm2d -> InvertibleConv1x1 -> AffineCoupling2d] -> split

and the next level works on the kept half at half the resolution. Since ``forward`` maps
latent -> data here, a level is built as ``Chain(Squeeze, SplitPrior(inner=next level),
steps..., Inverse(Squeeze))`` with each step ``Chain(AffineCoupling2d, InvertibleConv1x1,
ActNorm2d)``; see :func:`manifoldflows.presets.Glow`.

**Split with a learned prior as a bijection.** Glow factors out half of the channels at the end
of each level and models them with a Gaussian ``N(mu(h_keep), sigma(h_keep)^2)`` whose
parameters depend on the kept half. Here the factored-out channels are not dropped: the
:class:`SplitPrior` layer standardises them, ``z_out = (h_out - mu) / sigma``, an affine
coupling conditioned on the kept channels, and leaves ``z_out`` alone afterwards, while the
kept channels go on through deeper levels. With a standard normal base,
``log N(z_out; 0, I) - sum(log sigma) = log N(h_out; mu, sigma^2)``, so the flow's density is
exactly that of the multi-scale model with the learned conditional prior, while every
dimension stays in one tensor and the usual :class:`~manifoldflows.core.Flow` applies.

References:
    Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1x1 Convolutions,
    arXiv:1807.03039.
    Dinh, Sohl-Dickstein & Bengio 2016, Density estimation using Real NVP, arXiv:1605.08803.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import positive_int
from ..core import Transform
from ..errors import SpaceMismatch
from ..functional.affine import affine, affine_inverse, soft_clamp
from ..nn.conv import ConvNet
from ..spaces.image import Image
from .linear import LULinear
from .normalization import ActNorm

__all__ = ["Squeeze", "ActNorm2d", "InvertibleConv1x1", "AffineCoupling2d", "SplitPrior"]


def _image(owner: str, channels: int, height: int, width: int) -> Image:
    """Build ``Image(channels, height, width)``, naming ``owner`` in the error message."""
    try:
        return Image(channels, height, width)
    except ValueError as err:  # InvalidInput from positive_int
        raise type(err)(f"{owner}: {err}") from None


def _hidden(owner: str, hidden: int | Sequence[int]) -> tuple[int, ...]:
    """``64 -> (64, 64)``; a sequence is taken as the hidden channel sizes."""
    try:
        return (operator.index(hidden),) * 2  # type: ignore[arg-type]
    except TypeError:
        pass
    try:
        return tuple(hidden)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"{owner}: expected hidden to be an int or a sequence of ints, got {hidden!r}"
        ) from None


def _sum_pixels(t: Tensor) -> Tensor:
    """Sum a ``(..., C, H, W)`` tensor over its last three dimensions."""
    return t.flatten(-3).sum(-1)


def _batch_logdet(value: Tensor, x: Tensor) -> Tensor:
    """Broadcast a scalar logdet to the batch shape of the image tensor ``x``."""
    return value.expand(x.shape[:-3]).clone()


def _cat_channels(first: Tensor, second: Tensor) -> Tensor:
    """Concatenate along the channel axis, broadcasting the batch shapes."""
    batch = torch.broadcast_shapes(first.shape[:-3], second.shape[:-3])
    return torch.cat(
        [first.expand(*batch, *first.shape[-3:]), second.expand(*batch, *second.shape[-3:])],
        dim=-3,
    )


def _check_split(owner: str, channels: int, split: int | None) -> int:
    if channels < 2:
        raise ValueError(f"{owner}: needs at least 2 channels to split, got {channels}")
    split = channels // 2 if split is None else split
    if isinstance(split, bool) or int(split) != split or not 0 < split < channels:
        raise ValueError(f"{owner}: split must be an integer in [1, {channels - 1}], got {split!r}")
    return int(split)


class Squeeze(Transform):
    """Space-to-depth reshaping ``(C, H, W) -> (f^2 C, H/f, W/f)``: a pure permutation.

    Every ``f x f`` block of pixels becomes ``f^2`` channels at one pixel:
    ``y[c f^2 + a f + b, i, j] = x[c, f i + a, f j + b]`` (``torch.nn.functional.pixel_unshuffle``
    order). It trades spatial resolution for channels so that channel-wise couplings and 1x1
    convolutions can mix neighbouring pixels. ``log|det J| = 0`` and the inverse
    (depth-to-space) is exact.

    Arguments:
        channels, height, width: shape ``(C, H, W)`` of the domain; ``H`` and ``W`` must be
            divisible by ``factor``.
        factor: block size ``f`` (2 in Glow and RealNVP).

    References:
        Dinh, Sohl-Dickstein & Bengio 2016, Real NVP, arXiv:1605.08803 (squeezing operation).

    Example:
        >>> layer = Squeeze(1, 2, 2)
        >>> y, logdet = layer(torch.arange(4.0).reshape(1, 2, 2))
        >>> y.flatten().tolist(), y.shape, logdet.item()
        ([0.0, 1.0, 2.0, 3.0], torch.Size([4, 1, 1]), 0.0)
    """

    def __init__(self, channels: int, height: int, width: int, factor: int = 2):
        name = type(self).__name__
        domain = _image(name, channels, height, width)
        f = positive_int(factor, "factor", name)
        if height % f or width % f:
            raise ValueError(
                f"{name}: expected height and width divisible by {f} (each {f}x{f} block of "
                f"pixels becomes {f * f} channels), got an image of {height}x{width} pixels"
            )
        codomain = Image(channels * f * f, height // f, width // f)
        super().__init__(domain, codomain)
        self.factor = f

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return F.pixel_unshuffle(x, self.factor), x.new_zeros(x.shape[:-3])

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return F.pixel_shuffle(y, self.factor), y.new_zeros(y.shape[:-3])


class ActNorm2d(ActNorm):
    """Per-channel affine map of images with data-dependent initialisation (Glow's actnorm).

    The image version of :class:`~manifoldflows.transforms.ActNorm`: one scale and one shift per
    channel, shared by all pixels::

        y[c, i, j] = x[c, i, j] exp(a_c) + b_c,        log|det dy/dx| = H W sum_c a_c.

    As for :class:`~manifoldflows.transforms.ActNorm`, initialisation happens only when asked
    for (:func:`~manifoldflows.transforms.initialize_actnorm` on a flow, or :meth:`initialize`):
    ``b`` and ``a`` are then set so that the latents of the batch have zero mean and unit
    variance per channel, over all batch dimensions and pixels. ``forward`` and ``inverse``
    never initialise; an uninitialised layer is the identity. The same rules for degenerate
    batches apply (fewer than two pixel values per channel or non-finite values raise; a
    constant channel is only centred). The ``initialized`` buffer is saved in the
    ``state_dict``, so a reloaded layer is not re-initialised.

    Arguments:
        channels, height, width: the image shape ``(C, H, W)``.
        eps: relative spread below which a channel counts as constant.

    References:
        Kingma & Dhariwal 2018, Glow, arXiv:1807.03039.

    Example:
        >>> from manifoldflows.transforms import initialize_actnorm
        >>> layer = ActNorm2d(2, 3, 3)
        >>> data = torch.randn(64, 2, 3, 3) * torch.tensor([3.0, 0.5]).view(2, 1, 1) + 1.0
        >>> initialize_actnorm(layer, data)
        1
        >>> z, logdet = layer.inverse(data)
        >>> torch.allclose(z.mean((0, 2, 3)), torch.zeros(2), atol=1e-5)
        True
        >>> torch.allclose(z.std((0, 2, 3), correction=0), torch.ones(2), atol=1e-5)
        True
    """

    def __init__(self, channels: int, height: int, width: int, eps: float = 1e-6):
        space = _image(type(self).__name__, channels, height, width)
        super().__init__(space.channels, eps)
        self.domain = self.codomain = space
        self.pixels = space.height * space.width

    def _rows(self, data: Tensor) -> Tensor:
        """One row of ``C`` values per image and pixel."""
        return data.movedim(-3, -1).reshape(-1, self.features)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x * torch.exp(self.log_scale)[:, None, None] + self.shift[:, None, None]
        return y, _batch_logdet(self.pixels * self.log_scale.sum(), x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._maybe_initialize(y)
        x = (y - self.shift[:, None, None]) * torch.exp(-self.log_scale)[:, None, None]
        return x, _batch_logdet(-self.pixels * self.log_scale.sum(), y)


class InvertibleConv1x1(LULinear):
    """Invertible 1x1 convolution in LU form: the same ``C x C`` matrix ``W`` at every pixel.

    ``y[:, i, j] = W x[:, i, j] (+ b)`` with ``W = P L U`` as in
    :class:`~manifoldflows.transforms.LULinear` (``P`` a fixed permutation, ``L`` unit lower
    triangular, ``U`` upper triangular with diagonal ``exp(s)``), so::

        log|det J| = H W log|det W| = H W sum_c s_c,

    and the inverse is two triangular solves per pixel. By default ``W`` starts as a random
    rotation and there is no bias (Glow; the following actnorm has the offset). The
    convolution kernel is ``weight()[:, :, None, None]``.

    Arguments:
        channels, height, width: the image shape ``(C, H, W)``.
        bias: learn a per-channel offset ``b``.
        identity_init: start as the identity instead of a random rotation.
        generator: optional :class:`torch.Generator` (CPU) for the random initialisation.

    References:
        Kingma & Dhariwal 2018, Glow, arXiv:1807.03039 (Section 3.2, LU decomposition).

    Example:
        >>> layer = InvertibleConv1x1(3, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        *,
        bias: bool = False,
        identity_init: bool = False,
        generator: torch.Generator | None = None,
    ):
        space = _image(type(self).__name__, channels, height, width)
        super().__init__(
            space.channels, bias=bias, identity_init=identity_init, generator=generator
        )
        self.domain = self.codomain = space
        self.pixels = space.height * space.width

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, _ = super()._forward(x.movedim(-3, -1), None)
        return y.movedim(-1, -3), _batch_logdet(self.pixels * self.logabsdet(), x)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, _ = super()._inverse(y.movedim(-3, -1), None)
        return x.movedim(-1, -3), _batch_logdet(-self.pixels * self.logabsdet(), y)


class AffineCoupling2d(Transform):
    """Affine coupling of images along channels, with a convolutional conditioner.

    The channels are split into a conditioning block ``x_A`` (the first ``split`` channels, or
    the rest with ``swap=True``) and a transformed block ``x_B``::

        (t, s_raw) = ConvNet(x_A, context),     s = c tanh(s_raw / c),
        y_A = x_A,     y_B = x_B exp(s) + t,    log|det J| = sum_{channels, pixels} s.

    The conditioner is :class:`~manifoldflows.nn.ConvNet` (3x3, 1x1, 3x3 convolutions; the
    context enters as a linear projection broadcast over the first feature maps); its last
    convolution is zero-initialised, so a new layer is the identity. Glow's coupling uses a
    sigmoid scale; the soft-clamped exponential of RealNVP used here is equivalent in
    expressiveness and keeps the scales in ``(e^-c, e^c)``.

    Arguments:
        channels, height, width: the image shape ``(C, H, W)``, ``C >= 2``.
        context_dim: context size (``None`` for an unconditional layer).
        hidden: hidden channels of the conditioner (an int ``h`` means ``(h, h)``).
        activation: activation of the conditioner.
        kernel_size: size of its first and last convolutions.
        split: number of channels in the first block (default ``C // 2``).
        swap: transform the first block instead of the second.
        scale_bound: the bound ``c`` of the log-scales.

    References:
        Dinh, Sohl-Dickstein & Bengio 2016, Real NVP, arXiv:1605.08803;
        Kingma & Dhariwal 2018, Glow, arXiv:1807.03039.

    Example:
        >>> layer = AffineCoupling2d(2, 4, 4, hidden=8, context_dim=3)
        >>> x = torch.randn(5, 2, 4, 4)
        >>> y, logdet = layer(x, context=torch.randn(5, 3))
        >>> torch.equal(y[:, :1], x[:, :1]), logdet.shape
        (True, torch.Size([5]))
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        *,
        context_dim: int | None = None,
        hidden: int | Sequence[int] = (64, 64),
        activation: str = "relu",
        kernel_size: int = 3,
        split: int | None = None,
        swap: bool = False,
        scale_bound: float = 5.0,
    ):
        name = type(self).__name__
        space = _image(name, channels, height, width)
        split = _check_split(name, space.channels, split)
        if not scale_bound > 0:
            raise ValueError(f"{name}: expected scale_bound > 0, got {scale_bound!r}")
        super().__init__(space, context_dim=context_dim)
        self.split, self.swap, self.scale_bound = split, bool(swap), float(scale_bound)
        first, second = split, space.channels - split
        self.n_cond, self.n_trans = (second, first) if swap else (first, second)
        self.net = ConvNet(
            self.n_cond,
            2 * self.n_trans,
            _hidden(name, hidden),
            context_dim=context_dim,
            activation=activation,
            kernel_size=kernel_size,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, split={self.split}, swap={self.swap}"

    def _blocks(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[..., : self.split, :, :], x[..., self.split :, :, :]
        return (b, a) if self.swap else (a, b)

    def _merge(self, cond: Tensor, trans: Tensor) -> Tensor:
        return _cat_channels(trans, cond) if self.swap else _cat_channels(cond, trans)

    def _params(self, cond: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raw = self.net(cond, context)
        n = self.n_trans
        return raw[..., :n, :, :], soft_clamp(raw[..., n:, :, :], self.scale_bound)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        cond, trans = self._blocks(x)
        shift, log_scale = self._params(cond, context)
        out, logdet = affine(trans, shift, log_scale)
        return self._merge(cond, out), _sum_pixels(logdet)

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        cond, trans = self._blocks(y)
        shift, log_scale = self._params(cond, context)
        out, logdet = affine_inverse(trans, shift, log_scale)
        return self._merge(cond, out), _sum_pixels(logdet)


class SplitPrior(Transform):
    """Multi-scale split: deeper levels on the kept channels, a learned conditional Gaussian
    prior on the factored-out channels, written as one bijection of the full image.

    The first ``split`` channels are *kept* and the rest *factored out*. In the encoding
    (``inverse``, data -> latent) direction, with ``h = (h_keep, h_out)``::

        (mu, s) = ConvNet(h_keep, context)            (s softly clamped to (-c, c))
        z_out   = (h_out - mu) exp(-s)                 log|det| = -sum s
        z_keep  = inner.inverse(h_keep)                (the deeper levels; identity if None)

    and ``forward`` (latent -> data) undoes this: ``h_keep = inner(z_keep)``, then
    ``h_out = mu(h_keep) + exp(s(h_keep)) z_out``. Under a standard normal base this is
    exactly Glow's split with a learned prior: ``log N(z_out; 0, I) - sum s =
    log N(h_out; mu(h_keep), exp(2 s))``, the factored channels are Gaussian given the kept
    ones (and the context), and the deeper levels model ``h_keep`` alone. Since all channels
    stay in the tensor, the whole multi-scale model is an ordinary
    :class:`~manifoldflows.core.Flow` with one latent of the data's shape. The prior network
    is zero-initialised (``N(0, I)`` at the start), a single 3x3 convolution by default, as in
    Glow.

    With ``learned=False`` the factored-out channels keep the plain standard normal prior
    (RealNVP's multi-scale factorisation) and the layer only routes the kept channels through
    ``inner``.

    Arguments:
        channels, height, width: the image shape ``(C, H, W)``, ``C >= 2``.
        inner: transform on ``Image(split, H, W)`` (domain and codomain) applied to the kept
            channels, typically the next level; ``None`` for the identity.
        split: number of kept channels (default ``C // 2``).
        learned: use the learned conditional prior on the factored channels.
        context_dim: context size of the prior network (``None``: unconditional prior). The
            context is also handed to ``inner`` when it uses one; both must agree.
        hidden: hidden channels of the prior network (default ``()``: one convolution).
        activation, kernel_size: of the prior network.
        scale_bound: the bound ``c`` of the prior's log-scales.

    References:
        Kingma & Dhariwal 2018, Glow, arXiv:1807.03039 (split with a learned prior);
        Dinh, Sohl-Dickstein & Bengio 2016, Real NVP, arXiv:1605.08803 (multi-scale
        architecture).

    Example:
        >>> from manifoldflows import Flow
        >>> from manifoldflows.distributions import ImageStandardNormal
        >>> flow = Flow(ImageStandardNormal(4, 2, 2), SplitPrior(4, 2, 2, context_dim=1))
        >>> x, log_q = flow.sample_and_log_prob((3,), context=torch.zeros(1))
        >>> x.shape, torch.allclose(log_q, flow.log_prob(x, torch.zeros(1)), atol=1e-5)
        (torch.Size([3, 4, 2, 2]), True)
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        *,
        inner: Transform | None = None,
        split: int | None = None,
        learned: bool = True,
        context_dim: int | None = None,
        hidden: int | Sequence[int] = (),
        activation: str = "relu",
        kernel_size: int = 3,
        scale_bound: float = 5.0,
    ):
        name = type(self).__name__
        space = _image(name, channels, height, width)
        split = _check_split(name, space.channels, split)
        keep = Image(split, space.height, space.width)
        if inner is not None:
            if not isinstance(inner, Transform):
                raise TypeError(f"{name}: inner must be a Transform, got {type(inner).__name__}")
            if inner.domain != keep or inner.codomain != keep:
                raise SpaceMismatch(
                    f"{name}: the kept channels live on {keep!r}, but inner maps "
                    f"{inner.domain!r} -> {inner.codomain!r}"
                )
        if not learned and context_dim is not None:
            raise ValueError(
                f"{name}: context_dim={context_dim} conditions the learned prior, but "
                "learned=False (the context of inner is taken from inner)"
            )
        if not scale_bound > 0:
            raise ValueError(f"{name}: expected scale_bound > 0, got {scale_bound!r}")
        inner_dim = None if inner is None else inner.context_dim
        if context_dim is not None and inner_dim is not None and context_dim != inner_dim:
            raise ValueError(
                f"{name}: the prior expects context size {context_dim} but inner expects "
                f"{inner_dim}"
            )
        super().__init__(space, context_dim=inner_dim if context_dim is None else context_dim)
        self.inner = inner
        self.split, self.learned, self.scale_bound = split, bool(learned), float(scale_bound)
        self.n_out = space.channels - split
        self.prior_net = (
            ConvNet(
                split,
                2 * self.n_out,
                _hidden(name, hidden),
                context_dim=context_dim,
                activation=activation,
                kernel_size=kernel_size,
            )
            if learned
            else None
        )
        self.stochastic = inner is not None and inner.stochastic

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, split={self.split}, learned={self.learned}"

    def prior_params(self, keep: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation of the prior on the factored-out channels.

        Arguments:
            keep: the data-side kept channels ``h_keep``, shape ``(..., split, H, W)``.
            context: ``(..., context_dim)`` when the prior is conditional.

        Returns:
            ``(mu, log_sigma)``, each of shape ``batch + (C - split, H, W)``; zeros without a
            learned prior.
        """
        if self.prior_net is None:
            zeros = keep.new_zeros(*keep.shape[:-3], self.n_out, *keep.shape[-2:])
            return zeros, zeros
        raw = self.prior_net(keep, context if self.prior_net.context_dim is not None else None)
        n = self.n_out
        return raw[..., :n, :, :], soft_clamp(raw[..., n:, :, :], self.scale_bound)

    def _inner_context(self, context: Tensor | None) -> Tensor | None:
        return None if self.inner is None or self.inner.context_dim is None else context

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, out = x[..., : self.split, :, :], x[..., self.split :, :, :]
        logdet = x.new_zeros(x.shape[:-3])
        if self.inner is not None:
            keep, ld = self.inner._forward(keep, self._inner_context(context))
            logdet = logdet + ld
        if self.prior_net is not None:
            mu, log_sigma = self.prior_params(keep, context)
            out, ld = affine(out, mu, log_sigma)
            logdet = logdet + _sum_pixels(ld)
        y = _cat_channels(keep, out)
        return y, logdet.expand(y.shape[:-3]).clone()

    def _inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        keep, out = y[..., : self.split, :, :], y[..., self.split :, :, :]
        logdet = y.new_zeros(y.shape[:-3])
        if self.prior_net is not None:
            mu, log_sigma = self.prior_params(keep, context)
            out, ld = affine_inverse(out, mu, log_sigma)
            logdet = logdet + _sum_pixels(ld)
        if self.inner is not None:
            keep, ld = self.inner._inverse(keep, self._inner_context(context))
            logdet = logdet + ld
        x = _cat_channels(keep, out)
        return x, logdet.expand(x.shape[:-3]).clone()
