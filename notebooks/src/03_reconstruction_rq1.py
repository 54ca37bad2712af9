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
# MODELS: NAME:model, comma-separated (an exported model, a run folder or official:DATASET:FOLDER)
MODELS = "clvae:checkpoints/synthscenes_clvae.pt,gaugan_vae:checkpoints/synthscenes_gaugan_vae.pt"
DATASET = "synthscenes"   # smis.data.DATASETS key
DATA_ROOT = ""            # dataset root; empty: SynthScenes generated on the fly
SPLIT = "test"            # evaluation split
N_TEST = 200              # test pairs (0: the whole split)
DATA_SEED = 0             # SynthScenes seed (the demo models were trained on seed 0's train split)
LPIPS_BACKBONE = "auto"   # "auto" (AlexNet if cached, else EfficientNet-Lite0), "alex", "effnet"
FD_BACKBONE = "auto"      # "auto" (Inception if cached, else EfficientNet-Lite0), "inception", "effnet"
BATCH = 32                # images per network pass
SEGMENTER = "auto"        # mask-fidelity segmenter: "auto" (SynthScenes: the shipped one; ade20k, gta5, cityscapes:
                          # the published one in checkpoints/segmenters/, see README "Mask fidelity and FID on
                          # real data"), a file or folder (may end in @SHORT_SIDE), "" (none)
DEVICE = "auto"           # "auto", "cpu", "cuda"
N_SHOW = 6                # masks in the figure
OUT_DIR = "outputs/demo/03_reconstruction_rq1"  # figures and tables
SMOKE = False             # tiny and fast (CI)

# %%
from IPython.display import Markdown

from smis import eval_figures
from smis import tables
from smis.findings import reconstruction_findings
from smis.study import load_study
from smis.utils import resolve

if SMOKE:
    N_TEST, N_SHOW, BATCH = 6, 3, 6
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
study = load_study(MODELS, DATASET, DATA_ROOT, SPLIT, N_TEST, DATA_SEED, LPIPS_BACKBONE, FD_BACKBONE, SEGMENTER,
                   DEVICE, BATCH)
cols = study.columns
print(study.summary())

# %% [markdown]
# Above: each model's variant and training, and the metrics every variant is scored with: one LPIPS network,
# the real images' feature statistics (computed once) and the mask-fidelity segmenter.
#
# ## Reconstruct every test pair
# `gaugan` has no encoder and is left out: it cannot reconstruct.

# %%
results = study.evaluate_reconstruction(keep=N_SHOW)   # {name: ReconEval}; prints each model's seconds or skip

# %% [markdown]
# ## Table 1: reconstruction
# Lower GT-similarity means the reconstruction is closer to the ground truth; `std` is over images and
# `±95%` the half-width of the 95 % interval of the mean. Mask mIoU (a segmenter trained on real images)
# says whether the reconstruction still follows its mask; the real images give the ceiling row.

# %%
table1 = study.add_ceiling(tables.reconstruction_table(results))
caption = study.reconstruction_caption(results, DATASET, SPLIT)
tables.write_table(table1, out_dir, "table1_reconstruction", caption)
print(caption)
table1

# %% [markdown]
# ## Fig. 6: mask | ground truth | reconstructions
# Columns after the ground truth follow the table's rows.

# %%
eval_figures.reconstruction_figure(study, results, N_SHOW, out_dir / "fig6_reconstructions.png")

# %% [markdown]
# ## Per-image scores
# The spread matters as much as the mean: a variant can be close on most images and fail on a few.

# %%
print(eval_figures.reconstruction_histogram(results, cols.gt_similarity, out_dir / "reconstruction_histogram.png"))

# %% [markdown]
# Above: each variant's median GT-similarity and its worst test pair; the histogram is saved beside the tables.
#
# ## What we learnt
# Reconstruction tests the encoder and the generator together: a code that carries the image's appearance
# brings G(M, E(M, I)) back close to I. The class- and layer-wise encoder gives one code per class and per
# layer; `gaugan_vae` squeezes the whole image into one global code. The lines below are computed from this
# run's Table 1 and per-image scores.

# %%
Markdown("\n".join(reconstruction_findings(study, results, table1)))
