import pytest
import torch

from cxrdoll.engines.determinism import seed_run


@pytest.fixture(autouse=True)
def _restore_cudnn_flags(monkeypatch):
    for name in ("deterministic", "benchmark"):
        monkeypatch.setattr(torch.backends.cudnn, name, getattr(torch.backends.cudnn, name))


def test_default_seeds_and_pins_cudnn_to_deterministic_kernels():
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    seed_run(3)
    first = torch.rand(4)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)
    seed_run(3, False)
    assert torch.equal(torch.rand(4), first)


def test_cudnn_benchmark_keeps_the_seeds_and_lets_cudnn_autotune():
    seed_run(5)
    expected = torch.rand(4)
    seed_run(5, True)
    assert torch.equal(torch.rand(4), expected)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)

