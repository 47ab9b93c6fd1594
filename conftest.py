"""Root pytest configuration: names available to every doctest, thread count."""

import pytest
import torch


def pytest_configure(config):
    # The tests use small tensors: one intra-op thread avoids thread-pool overhead and makes the
    # run independent of other load on the machine.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch
    torch.manual_seed(0)
