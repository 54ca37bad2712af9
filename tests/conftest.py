import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests use tiny tensors: one intra-op thread is as fast, and immune to OpenMP spin-waiting when the
# machine is busy (two threads on a loaded 2-core CPU made single steps 20x slower).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# The user's results and datasets: no test may write here (tests write under tmp_path).
GUARDED = ("outputs", "data")


class RepoSnapshot:
    """`snap(root)`: relative path -> (mtime_ns, size) of everything under root/outputs and root/data,
    those folders included (absent ones: nothing). `changes(before, after)`: the paths added, removed or
    modified, sorted. A walk of the folders' metadata only: milliseconds for thousands of files."""

    def __call__(self, root: Path = REPO) -> dict[str, tuple[int, int]]:
        snap = {}
        for top in GUARDED:
            base = root / top
            paths = [str(base)] if base.exists() else []
            for dirpath, dirnames, filenames in os.walk(base):
                paths += [os.path.join(dirpath, name) for name in dirnames + filenames]
            for path in paths:
                try:
                    st = os.lstat(path)
                except FileNotFoundError:      # removed during the walk
                    continue
                snap[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size)
        return snap

    @staticmethod
    def changes(before: dict, after: dict) -> list[str]:
        return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


@pytest.fixture(scope="session")
def repo_snapshot() -> RepoSnapshot:
    """The snapshot function of the repository's outputs/ and data/ (see RepoSnapshot)."""
    return RepoSnapshot()


@pytest.fixture(scope="session", autouse=True)
def _repository_outputs_and_data_untouched(repo_snapshot):
    """Fail the session (an error at the last test's teardown, non-zero exit) when any test added, removed
    or modified something under the repository's outputs/ or data/, naming the paths."""
    before = repo_snapshot()
    yield
    changed = repo_snapshot.changes(before, repo_snapshot())
    if changed:
        shown = ", ".join(changed[:20]) + (f" and {len(changed) - 20} more" if len(changed) > 20 else "")
        pytest.fail(f"the tests changed the repository's outputs/ or data/ ({REPO}): {shown}. Fix: write under tmp_path "
                    "(e.g. --out / --run-dir / OUT_DIR to a temporary folder); a test must never touch a user's results.",
                    pytrace=False)


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
