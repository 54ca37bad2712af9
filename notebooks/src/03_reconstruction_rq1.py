# %% [markdown]
# # 03 · Reconstruction (RQ1)
#
# In this notebook we measure how faithfully each trained variant reproduces a test image from its
# own latent codes (the paper's Sec. 4.2, Table 1 and Fig. 6). The encoder reads the mask M and the
# image I; we take its **means** (no sampling) and decode them: G(M, E(M, I)). Two scores:
#
# - **GT-similarity**: LPIPS between the reconstruction and I, per image (lower is closer);
# - **FD**: the Fréchet distance between the reconstructions and the real test images (lower is more realistic).
#
# The paper's metrics are LPIPS-AlexNet and FID (InceptionV3). Without their weights the workbook
# uses EfficientNet-Lite0 versions named `lpips_effnet` and `fd_effnet`; every column says which one
# was measured, and a fallback number is never comparable with the paper's.

# %% tags=["parameters"]
MODELS = "clvae:checkpoints/synthscenes_clvae.pt,gaugan_vae:checkpoints/synthscenes_gaugan_vae.pt"  # NAME:model, comma-separated
DATASET = "synthscenes"   # smis.data.DATASETS key
DATA_ROOT = ""            # dataset root; empty: SynthScenes generated on the fly
SPLIT = "test"            # evaluation split
N_TEST = 200              # test pairs (0: the whole split)
DATA_SEED = 0             # SynthScenes seed (the demo models were trained on seed 0's train split)
LPIPS_BACKBONE = "auto"   # "auto" (AlexNet if cached, else EfficientNet-Lite0), "alex", "effnet"
FD_BACKBONE = "auto"      # "auto" (Inception if cached, else EfficientNet-Lite0), "inception", "effnet"
BATCH = 32                # images per network pass
SEGMENTER = "auto"        # mask-fidelity segmenter: "auto" (the shipped one for SynthScenes), a file, "" (none)
DEVICE = "auto"           # "auto", "cpu", "cuda"
N_SHOW = 6                # masks in the figure
OUT_DIR = "outputs/demo/03_reconstruction_rq1"  # figures and tables
SMOKE = False             # tiny and fast (CI)

# %%
import time

import pandas as pd
import torch

from smis import evaluate as ev
from smis.metrics import LPIPS
from smis.utils import pick_device, resolve
from smis.metrics import plot_score_histograms
from smis.viz import save_grid


def trained(nets) -> str:
    """How a model was trained, for the captions: its steps, or the authors' published weights."""
    source = str((nets.meta.get("provenance") or {}).get("source", ""))
    return "the authors' published weights" if source.startswith("official:") else f"{nets.meta.get('step')} steps"


if SMOKE:
    N_TEST, N_SHOW, BATCH = 6, 3, 6
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
device = pick_device(DEVICE)
torch.manual_seed(0)
models = {name: ev.load_networks(src, device) for name, src in ev.parse_models(MODELS).items()}
sizes = {tuple(n.preset.image_size) for n in models.values()}
assert len(sizes) == 1, f"the models were trained at different sizes {sizes}; compare models of one dataset"
test, indices = ev.test_set(DATASET, DATA_ROOT, SPLIT, sizes.pop(), N_TEST, DATA_SEED)
for name, nets in models.items():
    print(f"{name}: variant {nets.variant}, {trained(nets)}")
print(f"{len(indices)} {DATASET} {SPLIT} pairs on {device}")

# %% [markdown]
# ## Metrics
# One LPIPS network scores every variant, and the real images' feature statistics are computed once.

# %%
metric = LPIPS(LPIPS_BACKBONE, device=device)
fd_real = ev.real_frechet(test, indices, FD_BACKBONE, device, BATCH)
segmenter = ev.load_segmenter_for(DATASET, SEGMENTER, device)
print("GT-similarity metric:", metric.name, "| Fréchet distance:", fd_real.name, "| mask fidelity:",
      getattr(segmenter, "source", "none"))

# %% [markdown]
# ## Reconstruct every test pair
# `gaugan` has no encoder and is left out: it cannot reconstruct.

# %%
results, seconds = {}, {}
for name, nets in models.items():
    if nets.E is None:
        print(f"{name}: no encoder, skipped")
        continue
    t0 = time.perf_counter()
    results[name] = ev.evaluate_reconstruction(nets, test, indices, metric, fd_real, batch=BATCH, keep=N_SHOW,
                                               segmenter=segmenter)
    seconds[name] = time.perf_counter() - t0
    print(f"{name}: {seconds[name]:.1f} s")

# %% [markdown]
# ## Table 1: reconstruction
# Lower GT-similarity means the reconstruction is closer to the ground truth; `std` is over images and
# `±95%` the half-width of the 95 % interval of the mean. Mask mIoU (a segmenter trained on real images)
# says whether the reconstruction still follows its mask; the real images give the ceiling row.

# %%
table1 = ev.reconstruction_table(results)
if segmenter is not None:
    table1.loc["real test images (ceiling)"] = pd.Series(ev.miou_columns(ev.real_mask_fidelity(segmenter, test, indices, BATCH)))
caption = (f"Table 1 style: reconstruction G(M, E(M, I)) with encoder means on {len(indices)} {DATASET} {SPLIT} pairs. "
           f"GT-similarity = {metric.name} to the ground truth (lower is closer); FD = {fd_real.name} of the "
           "reconstructions to the real test images (lower is better); ±95% = half-width of the 95 % interval over "
           "images. " + ("mask mIoU = the segmenter's labels of each reconstruction against its mask (95 % bootstrap "
                         "interval over images); the real-image row is the ceiling. " if segmenter is not None else "")
           + ("lpips_effnet / fd_effnet are EfficientNet-Lite0 stand-ins, not the paper's LPIPS / FID. "
              if "effnet" in metric.name + fd_real.name else "")
           + "Models: " + ", ".join(f"{k} ({trained(m)})" for k, m in models.items() if k in results) + ".")
ev.write_table(table1, out_dir, "table1_reconstruction", caption)
print(caption)
table1

# %% [markdown]
# ## Fig. 6: mask | ground truth | reconstructions
# Columns after the ground truth follow the table's rows.

# %%
image, label = ev.load_pairs(test, indices[:N_SHOW])
figure = ev.example_grid(label, image, [r.examples for r in results.values()], test.info.palette)
save_grid(figure, out_dir / "fig6_reconstructions.png", ["mask", "real"] + [f"{k} recon." for k in results],
          [f"test pair {i}" for i in indices[:N_SHOW]], "reconstructions G(M, E(M, I)) with the encoder's means")

# %% [markdown]
# ## Per-image scores
# The spread matters as much as the mean: a variant can be close on most images and fail on a few.

# %%
col = f"GT-similarity ({metric.name})"
plot_score_histograms({k: r.per_image[col].to_numpy() for k, r in results.items()},
                      out_dir / "reconstruction_histogram.png", xlabel=col)
for k, r in results.items():
    print(f"{k}: median {r.per_image[col].median():.3f}, worst image {r.per_image[col].idxmax()} "
          f"({r.per_image[col].max():.3f})")

# %% [markdown]
# ## What we learnt
# Reconstruction tests the encoder and the generator together: a code that carries the image's appearance
# brings G(M, E(M, I)) back close to I. The class- and layer-wise encoder gives one code per class and per
# layer; `gaugan_vae` squeezes the whole image into one global code. The numbers below are this run's.

# %%
from IPython.display import Markdown

lines = [f"- {k} ({trained(models[k])}): GT-similarity {table1.loc[k, col]:.3f} ± {table1.loc[k, col + ' ±95%']:.3f}"
         + (f", FD {table1.loc[k, f'FD ({fd_real.name})']:.1f}" if f"FD ({fd_real.name})" in table1 else "")
         + (f", mask mIoU {table1.loc[k, ev.MIOU]:.3f}" if ev.MIOU in table1 else "") for k in results]
if len(results) >= 2:
    a, b = list(results)[:2]
    d, lo, hi = ev.paired_ci(results[a].per_image[col], results[b].per_image[col])
    lines.append(f"- Paired over the same {len(indices)} pairs, {a} - {b}: {d:+.3f} (95 % CI [{lo:.3f}, {hi:.3f}]; negative: "
                 f"{a} reconstructs closer)" + (": the masks support the gap." if lo > 0 or hi < 0 else ": no clear gap."))
if "real test images (ceiling)" in table1.index:
    lines.append(f"- The segmenter's mIoU on the real images is {table1.loc['real test images (ceiling)', ev.MIOU]:.3f}: "
                 "the ceiling a perfect reconstruction would reach.")
lines.append(f"- These are {metric.name} / {fd_real.name} numbers" + (" (EfficientNet-Lite0 stand-ins: compare across "
             "variants here, never with the paper's LPIPS or FID)." if "effnet" in metric.name + fd_real.name else "."))
Markdown("\n".join(lines))
