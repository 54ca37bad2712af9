import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests use tiny tensors: one intra-op thread is as fast, and immune to OpenMP spin-waiting when the
# machine is busy (two threads on a loaded 2-core CPU made single steps 20x slower).
torch.set_num_threads(1)


@pytest.fixture
def g():
    """A seeded torch.Generator."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def hub_dir(tmp_path):
    """Point the torch hub cache at an empty temporary folder for the test, then restore it."""
    old = torch.hub.get_dir()
    (tmp_path / "checkpoints").mkdir()
    torch.hub.set_dir(str(tmp_path))
    yield tmp_path
    torch.hub.set_dir(old)
