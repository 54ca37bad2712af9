# %% [markdown]
# # 05 · Ablations (Table 5, Fig. 11)
#
# In this notebook we take the class- and layer-wise VAE apart, as the paper's ablation does:
#
# | variant | what changes |
# |---|---|
# | `clvae` | the full model: one code per class and per encoder layer, encoder depth L = 6 |
# | `no_classwise` | one code per layer shared by all classes (no class-wise pooling) |
# | `no_layerwise` | one latent layer (the middle one) feeds every generator block |
# | `clvae_L3`, `clvae_L5` | a shallower encoder: L = 3 or 5 conv layers (fewer latent layers) |
#
# Each variant is scored like notebooks 03 and 04: diversity and Top-1 GT-similarity of K prior
# samples, reconstruction GT-similarity, FD, mask mIoU (a segmenter trained on real images) and on
# SynthScenes the factor-aware scores, each with a 95 % interval over masks; every ablation is then
# compared with the full model mask by mask (paired: same masks, same seeds).
#
# In the **demo** profile the variants are the shipped SynthScenes models (`checkpoints/`, trained by
# `scripts/train_demo_models.py` with one data set, schedule and seed), so nothing is trained here; the
# paper profiles load the user's training runs. `TRAIN_STEPS > 0` trains every variant here instead
# (the smoke profile does, for 2 steps).

# %% tags=["parameters"]
VARIANTS = "clvae,no_classwise,no_layerwise,clvae_L3,clvae_L5"  # smis.networks.VARIANTS keys
TRAIN_STEPS = 0           # > 0: train every variant here for this many steps; 0: load MODELS
TRAIN_BATCH = 8           # training batch
TRAIN_SEED = 0            # training seed (weights, data order, noise)
PRESET = "synthscenes"    # preset for the training
PERCEPTUAL = "auto"       # perceptual loss network: "auto" (VGG19 if cached, else EfficientNet-Lite0), "none"
RUN_ROOT = "outputs/demo/runs_ablation"   # where the short training runs go
# MODELS, if TRAIN_STEPS is 0: NAME:model file or run folder, comma-separated
MODELS = ("clvae:checkpoints/synthscenes_clvae.pt,no_classwise:checkpoints/synthscenes_no_classwise.pt,"
          "no_layerwise:checkpoints/synthscenes_no_layerwise.pt,clvae_L3:checkpoints/synthscenes_clvae_L3.pt,"
          "clvae_L5:checkpoints/synthscenes_clvae_L5.pt")
DATASET = "synthscenes"   # smis.data.DATASETS key (training and evaluation)
DATA_ROOT = ""            # dataset root; empty: SynthScenes generated on the fly
SPLIT = "test"            # evaluation split
N_TEST = 100              # test masks (0: the whole split)
K = 10                    # prior samples per mask (the paper: 40)
SEED = 0                  # seed of the prior codes
DATA_SEED = 0             # SynthScenes seed
LPIPS_BACKBONE = "auto"   # "auto", "alex", "effnet"
FD_BACKBONE = "auto"      # "auto", "inception", "effnet"
SEGMENTER = "auto"        # mask-fidelity segmenter: "auto" (SynthScenes: the shipped one; ade20k, gta5, cityscapes:
                          # the published one in checkpoints/segmenters/, see README "Mask fidelity and FID on
                          # real data"), a file or folder (may end in @SHORT_SIDE), "" (none)
PAPER_ORDER = "clvae,clvae_L5,no_layerwise,clvae_L3,no_classwise"   # the paper's diversity ranking (Table 5)
BATCH = 64                # images per generator pass
DEVICE = "auto"           # "auto", "cpu", "cuda"
N_SHOW_SAMPLES = 6        # samples per variant in Fig. 11
OUT_DIR = "outputs/demo/05_ablations"  # figures and tables
SMOKE = False             # tiny and fast (CI)

# %%
from IPython.display import Markdown, display

from smis import eval_figures
from smis import evaluate as ev
from smis import tables
from smis.config import TINY
from smis.findings import ablation_findings
from smis.models import parse_variants, variant_sources, variants_plan
from smis.study import load_study
from smis.train import TrainConfig, train_variants
from smis.utils import pick_device, resolve

overrides = {}
if SMOKE:  # tiny networks, a couple of steps
    TRAIN_STEPS, TRAIN_BATCH, N_TEST, K, N_SHOW_SAMPLES, PERCEPTUAL = min(TRAIN_STEPS, 2), 2, 3, 3, 3, "none"
    overrides = dict(TINY)
    RUN_ROOT = RUN_ROOT.rstrip("/") + "_smoke"
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
device = pick_device(DEVICE)
variants = parse_variants(VARIANTS)                   # raises on a name smis.networks.VARIANTS lacks
print(variants_plan(variants, TRAIN_STEPS))

# %% [markdown]
# ## Train (demo) or load (paper profiles)
# A run folder holds the steps in its name; rerunning the notebook resumes or reuses finished runs.

# %%
if TRAIN_STEPS > 0:
    base = TrainConfig(run_dir=RUN_ROOT, preset=PRESET, preset_overrides=overrides, perceptual=PERCEPTUAL,
                       dataset=DATASET, data_root=DATA_ROOT or None, data_length=4000, data_seed=DATA_SEED,
                       steps=TRAIN_STEPS, batch_size=TRAIN_BATCH, seed=TRAIN_SEED, device=str(device),
                       log_every=max(1, TRAIN_STEPS // 10), image_every=0, ckpt_every=TRAIN_STEPS, keep_last=1,
                       tensorboard=False)
    runs = train_variants(variants, RUN_ROOT, base)          # {variant: (run folder, seconds)}; prints the seconds
    sources = {v: run for v, (run, _) in runs.items()}
    train_seconds = {v: s for v, (_, s) in runs.items()}
else:
    sources, train_seconds = variant_sources(variants, MODELS), {}   # raises when MODELS lacks a variant
study = load_study({v: sources[v] for v in variants}, DATASET, DATA_ROOT, SPLIT, N_TEST, DATA_SEED, LPIPS_BACKBONE,
                   FD_BACKBONE, SEGMENTER, device, BATCH)
indices, metric, cols = study.indices, study.metric, study.columns
print(study.latent_structure())
print(study.summary())

# %% [markdown]
# Above: each variant's latent structure and size, then the test masks and the metrics they are all scored with.
#
# ## Score every variant on the same masks and seeds

# %%
factors = DATASET == "synthscenes"
options = ev.PriorOptions(k=K, seed=SEED, chunk=BATCH, per_class=False, factors=factors, keep=1)
prior, recon = study.evaluate_ablations(options)      # {variant: PriorEval}, {variant: ReconEval}

# %% [markdown]
# ## Table 5

# %%
table5 = study.ablation_table(prior, recon, TRAIN_STEPS, train_seconds)   # Table 5's rows and columns
caption = study.ablation_caption(DATASET, SPLIT, K, sources, TRAIN_STEPS, TRAIN_BATCH, PRESET, TRAIN_SEED)
tables.write_table(table5, out_dir, "table5_ablations", caption)
print(caption)
table5

# %% [markdown]
# ## Every ablation against the full model, mask by mask
# Differences ablation - full model on the same masks and seeds, with 95 % intervals (normal approximation
# over masks; paired bootstrap for mask mIoU). An interval that excludes 0 is a difference the masks support.

# %%
paired5 = tables.ablations_vs_full(prior)            # None without the full model (clvae)
if paired5 is not None:
    tables.write_table(paired5, out_dir, "table5_paired_vs_full",
                       f"Ablation minus full model (clvae), per mask on the same {len(indices)} masks and seeds: mean "
                       "difference and 95 % interval of each score.")
    display(paired5.T.round(3))

# %% [markdown]
# ### Does the paper's ordering hold?
# The paper ranks diversity full > L = 5 > w/o layer-wise > L = 3 > w/o class-wise at comparable quality.
# For each neighbouring pair of that ranking: the paired diversity difference and whether its interval is
# above 0 (holds), below 0 (reversed) or straddles it (not resolved by these masks).

# %%
ordering, observed = tables.diversity_ordering(prior, PAPER_ORDER.split(","))
if len(ordering):
    tables.write_table(ordering, out_dir, "table5_ordering",
                       f"The paper's diversity ordering, pair by pair, paired over {len(indices)} masks "
                       f"({metric.name}). Observed order by mean diversity: {' > '.join(observed)}.")
    display(ordering)
print("observed order by mean diversity:", " > ".join(observed))

# %% [markdown]
# ## Fig. 11: the same mask and seeds through every variant
# Rows: variants (in the table's order); columns: mask | ground truth | samples.

# %%
eval_figures.ablation_samples_figure(study, prior, variants, N_SHOW_SAMPLES, out_dir / "fig11_ablation_samples.png")

# %% [markdown]
# ## What we learnt
# Every ablation is a constructor argument of one builder (`smis.networks.VARIANTS`), trained and scored
# by the same code, so differences come from the latent structure only. The findings below are computed
# from this run's tables.

# %%
Markdown("\n".join(ablation_findings(ordering, observed, paired5, cols, TRAIN_STEPS)))
