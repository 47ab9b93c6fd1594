"""Root pytest configuration: names available to every doctest."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch
    torch.manual_seed(0)
