"""Write docs/demo_samples.png: for 4 SynthScenes test masks, mask | real | 5 prior samples of each shipped model."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis.data import make_dataset  # noqa: E402
from smis.networks import Latents  # noqa: E402
from smis.train import load_model  # noqa: E402
from smis.viz import colorize, grid, save_png, to_uint8  # noqa: E402


def main(n_masks: int = 4, k: int = 5):
    models = {v: load_model(ROOT / "checkpoints" / f"synthscenes_{v}.pt") for v in ("clvae", "gaugan_vae")}
    test = make_dataset("synthscenes", None, "test", size=64, length=n_masks)
    rows = []
    with torch.no_grad():
        for i in range(n_masks):
            s = test[i]
            lab = s["label"][None].expand(k, -1, -1)
            row = [colorize(s["label"], test.info.palette), to_uint8(s["image"])]
            for nets in models.values():
                g = torch.Generator().manual_seed(i)
                row += list(to_uint8(nets.G(lab, Latents.prior(nets.spec, lab, generator=g))))
            rows.append(row)
    return save_png(grid(rows), ROOT / "docs" / "demo_samples.png")


if __name__ == "__main__":
    print(main())
