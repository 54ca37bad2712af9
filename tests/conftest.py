import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def g():
    """A seeded torch.Generator."""
    return torch.Generator().manual_seed(0)
