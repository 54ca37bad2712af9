"""Write docs/demo_samples.png: for 4 SynthScenes test masks, mask | real | 4 prior samples of clvae | 4 of
gaugan_vae (same seeds), tiles enlarged to 128 px, every row and column labelled."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis import evaluate as ev  # noqa: E402
from smis.models import load_networks  # noqa: E402
from smis.sampling import sample_prior  # noqa: E402
from smis.viz import example_grid, save_grid  # noqa: E402


def main(n_masks: int = 4, k: int = 4, variants=("clvae", "gaugan_vae")):
    models = {v: load_networks(ROOT / "checkpoints" / f"synthscenes_{v}.pt") for v in variants}
    test, indices = ev.test_set("synthscenes", "", "test", (64, 64), n_masks)
    image, label = ev.load_pairs(test, indices)
    with torch.no_grad():
        samples = [sample_prior(nets, label, k, [ev.mask_seed(0, i) for i in indices]) for nets in models.values()]
    figure = example_grid(label, image, samples, test.info.palette)
    steps = {v: n.meta.get("step") for v, n in models.items()}
    cols = ["mask", "real"] + [f"{v} {j + 1}" for v in models for j in range(k)]
    title = ("SynthScenes test masks: " + ", ".join(f"{v} ({s} steps)" for v, s in steps.items())
             + f", {k} prior samples each, the same seeds for both")
    save_grid(figure, ROOT / "docs" / "demo_samples.png", cols, [f"test mask {i}" for i in indices], title)
    return ROOT / "docs" / "demo_samples.png"


if __name__ == "__main__":
    print(main())
