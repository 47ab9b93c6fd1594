"""Counts are checked by the one shared checker (manifoldflows._checks.positive_int)."""

from __future__ import annotations

import pytest

from manifoldflows.errors import InvalidInput
from manifoldflows.spaces import Image
from manifoldflows.transforms import ActNorm2d, PlanarFlow, RadialFlow, Squeeze, SylvesterFlow


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Image(0, 2, 2), "Image: expected a positive integer number of channels, got 0"),
        (lambda: Image(1, True, 2), "Image: expected a positive integer height, got True"),
        (lambda: Image(1, 2, 2.0), "Image: expected a positive integer width, got 2.0"),
        (
            lambda: ActNorm2d(1, 0, 2),
            "ActNorm2d: Image: expected a positive integer height, got 0",
        ),
        (lambda: Squeeze(1, 2, 2, factor=0), "Squeeze: expected a positive integer factor, got 0"),
        (
            lambda: RadialFlow(2, context_dim=0),
            "RadialFlow: expected a positive integer context_dim, got 0",
        ),
        (
            lambda: PlanarFlow(2, hidden=(8, -1)),
            "PlanarFlow: expected a positive integer hidden size, got -1",
        ),
        (
            lambda: SylvesterFlow(3, kind="householder", num_householder=0),
            "SylvesterFlow: expected a positive integer num_householder, got 0",
        ),
    ],
)
def test_counts_raise_invalid_input_with_the_shared_message(build, message):
    with pytest.raises(InvalidInput) as info:
        build()
    assert str(info.value) == message
