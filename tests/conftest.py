"""Fixtures shared by test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two OpenMP threads
    per process make every op wait: run a module on one (`pytestmark = pytest.mark.usefixtures
    ("one_thread")`), then restore torch's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
