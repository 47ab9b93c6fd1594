"""Ready-made flows. Every preset returns a :class:`~manifoldflows.core.Flow` (base distribution
plus a :class:`~manifoldflows.core.Chain`, ready to train) and takes ``context_dim`` for
conditional density estimation.

One module per family: :mod:`.builders` (``build_flow``, the one builder on any space, and the
pieces it shares with the others), :mod:`.map_flows` (RealNVP, NSF, MAF, IAF, NAF, Flow++,
torus flows), :mod:`.residual` (residual, planar, Sylvester), :mod:`.glow`, :mod:`.sphere`
and :mod:`.snf`.
"""

from .builders import (
    alternate_halves,
    autoregressive_orders,
    build_flow,
    coupling_masks,
    default_base,
    stack,
)
from .glow import Glow
from .map_flows import IAF, MAF, NAF, NSF, FlowPP, RealNVP, TorusMoebius, TorusNSF
from .residual import Planar, ResidualFlow, Sylvester
from .snf import SNF
from .sphere import SphereFlow

__all__ = [
    "default_base",
    "build_flow",
    "alternate_halves",
    "autoregressive_orders",
    "coupling_masks",
    "RealNVP",
    "NSF",
    "MAF",
    "IAF",
    "stack",
    "Glow",
    "ResidualFlow",
    "NAF",
    "FlowPP",
    "Planar",
    "Sylvester",
    "TorusNSF",
    "TorusMoebius",
    "SphereFlow",
    "SNF",
]
