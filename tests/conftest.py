"""Fixtures shared by test modules."""
import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (`-n auto`) every core already runs a worker: a worker's own OpenMP
    # threads would only contend with the others (2 workers × 2 threads on 2 cores thrash), so
    # each worker computes on one.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two OpenMP threads
    per process make every op wait: run a module on one (`pytestmark = pytest.mark.usefixtures
    ("one_thread")`), then restore torch's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
