# %% [markdown]
# # 04 · Diversity and Top-1 GT-similarity (RQ2)
#
# In this notebook we draw K samples from the prior for every test mask and ask the paper's second
# question (Sec. 4.3): does the class- and layer-wise VAE (`clvae`) produce **more diverse** images
# than a single global latent code (`gaugan_vae`), while staying as **close to the ground truth**?
#
# - **Diversity**: mean LPIPS over all pairs of the K samples of a mask, averaged over masks (higher is more varied).
# - **Top-1 GT-similarity**: of the K samples, the one with the least L1 distance to the ground truth; its
#   LPIPS to it (lower is closer).
# - **FD**: Fréchet distance of one sample per mask to the real test images (realism).
# - **Mask mIoU**: a segmenter trained on real images only (`smis.segmenter`) labels every sample; its
#   mIoU against the mask says whether the image follows its mask. The same segmenter on the real test
#   images gives the ceiling row.
#
# Every mean comes with a 95 % interval over masks; the comparisons are paired (same masks, same seeds).
#
# The demo adds the paper's other systems (Tables 2 and 4): GauGAN-VAE* (`gaugan_vae_lowkl`, a weak KL),
# GroupDNet (`groupdnet`, per-class codes by group convolutions) and cIMLE (`cimle`, a cascaded-refinement
# network trained by conditional IMLE, no encoder). Each is compared with `clvae` on every score, and the
# paper's statements about them are measured and stated as holding or not.
#
# Every variant sees the same masks and the same seeds. We also look at the per-image score
# distributions (Fig. 10), at which classes vary (per-class diversity), and, on SynthScenes where
# the true appearance factors are known, at whether samples stay inside each class's own colour and
# texture distribution and whether style-guided synthesis copies the reference's factors.
#
# Metric names: `lpips_alex` / `fid` are the paper's; `lpips_effnet` / `fd_effnet` are the offline
# EfficientNet-Lite0 stand-ins. They are reported under their own names only.

# %% tags=["parameters"]
# MODELS: NAME:model, comma-separated (an exported model, a run folder or official:DATASET:FOLDER)
MODELS = ("clvae:checkpoints/synthscenes_clvae.pt,gaugan_vae:checkpoints/synthscenes_gaugan_vae.pt,"
          "gaugan:checkpoints/synthscenes_gaugan.pt")
DATASET = "synthscenes"   # smis.data.DATASETS key
DATA_ROOT = ""            # dataset root; empty: SynthScenes generated on the fly
SPLIT = "test"            # evaluation split
N_TEST = 100              # test masks (0: the whole split)
K = 20                    # prior samples per mask (the paper: 40)
SEED = 0                  # seed of the prior codes (per mask: smis.evaluate.mask_seed)
DATA_SEED = 0             # SynthScenes seed
LPIPS_BACKBONE = "auto"   # "auto" (AlexNet if cached, else EfficientNet-Lite0), "alex", "effnet"
FD_BACKBONE = "auto"      # "auto" (Inception if cached, else EfficientNet-Lite0), "inception", "effnet"
MASKS_PER_BATCH = 8       # masks sampled together (K images each)
BATCH = 64                # images per generator pass
PER_CLASS = True          # per-class diversity
FACTORS = True            # factor-aware scores (SynthScenes only)
SEGMENTER = "auto"        # mask-fidelity segmenter: "auto" (SynthScenes: the shipped one; ade20k, gta5, cityscapes:
                          # the published one in checkpoints/segmenters/, see README "Mask fidelity and FID on
                          # real data"), a file or folder (may end in @SHORT_SIDE), "" (none)
N_STYLE = 100             # style-guided pairs for the factor check
BASELINE = "gaugan_vae"   # the variant clvae is compared with
DEVICE = "auto"           # "auto", "cpu", "cuda"
N_SHOW = 4                # masks in the sample figures
N_SHOW_SAMPLES = 6        # samples per mask in the figures
N_COMPARE_SAMPLES = 2     # samples per system and mask in the all-systems comparison figure
OUT_DIR = "outputs/demo/04_diversity_rq2"  # figures and tables
SMOKE = False             # tiny and fast (CI)

# %%
from IPython.display import Markdown, display

from smis import comparison as cmp
from smis import eval_figures
from smis import evaluate as ev
from smis import tables
from smis.factors import COLOUR_TOLERANCE
from smis.findings import diversity_claim, diversity_findings
from smis.study import load_study
from smis.utils import resolve
from smis.viz import per_class_figure

if SMOKE:
    N_TEST, K, N_STYLE, N_SHOW, N_SHOW_SAMPLES, MASKS_PER_BATCH, N_COMPARE_SAMPLES = 4, 3, 4, 2, 3, 2, 2
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
study = load_study(MODELS, DATASET, DATA_ROOT, SPLIT, N_TEST, DATA_SEED, LPIPS_BACKBONE, FD_BACKBONE, SEGMENTER,
                   DEVICE, BATCH)
test, indices, metric, cols = study.dataset, study.indices, study.metric, study.columns
FACTORS = FACTORS and DATASET == "synthscenes"
print(study.summary())
print(f"K = {K} samples per mask")

# %% [markdown]
# Above: each model's variant and training (a variant without latents draws one image per mask), the
# number of test masks and the metrics every variant is scored with.
#
# ## Sample and score
# For each mask: K prior samples in one batch, their pairwise LPIPS (diversity), the Top-1 sample's
# LPIPS to the ground truth, the per-class diversity, and (SynthScenes) the factors of every sample.

# %%
options = ev.PriorOptions(k=K, seed=SEED, masks_per_batch=MASKS_PER_BATCH, chunk=BATCH, per_class=PER_CLASS,
                          factors=FACTORS, keep=N_SHOW)
results = study.evaluate_prior(options)          # {name: PriorEval}; prints each model's seconds

# %% [markdown]
# ## Tables 2-4: diversity and Top-1 GT-similarity
# The paper reports these per dataset (with FID); here, one table for this profile's dataset.

# %%
table2 = study.add_ceiling(tables.diversity_table(results))   # + the segmenter on the real images of the same masks
caption = study.diversity_caption(DATASET, SPLIT, K, SEED)
tables.write_table(table2, out_dir, "table2_diversity_top1", caption)
print(caption)
table2

# %% [markdown]
# ### Is clvae more diverse at a similar Top-1 GT-similarity?
# Paired over the same masks and seeds: the difference clvae - baseline of each per-mask score, with
# a 95 % confidence interval.

# %%
paired = None
if "clvae" in results and BASELINE in results:
    paired = tables.paired_comparison(results["clvae"], results[BASELINE])
    tables.write_table(paired, out_dir, "paired_clvae_vs_baseline",
                       f"Per-mask paired differences clvae - {BASELINE} ({len(indices)} masks, same seeds), "
                       "95 % confidence intervals (normal approximation over masks; paired bootstrap for mask mIoU).")
    print(diversity_claim(paired, BASELINE))
    display(paired)

# %% [markdown]
# ### Every system against clvae
# The same paired differences for each other system (system minus clvae): diversity, Top-1 GT-similarity,
# the factor rates, mask mIoU (paired bootstrap over masks) and FD (one pooled value per system; its interval
# from a paired leave-one-mask-out jackknife of the FD features).

# %%
versus = None
if cmp.REFERENCE in results and len(results) > 1:
    versus = cmp.systems_vs_reference(results, seed=SEED, fd_real=study.fd_real)
    tables.write_table(versus, out_dir, "systems_vs_clvae",
                       f"Every system minus clvae, paired over {len(indices)} masks (same seeds), K = {K}: difference "
                       "and 95 % interval (normal approximation over masks; paired bootstrap for mask mIoU; FD is "
                       "pooled over masks, so its difference has no interval).")
    display(versus)

# %% [markdown]
# ## Figs. 7-9: one mask, many images
# Each row: mask | ground truth | the first samples of that mask. Rows are the same masks and seeds for every variant.

# %%
fig7 = eval_figures.prior_samples_figures(study, results, N_SHOW, N_SHOW_SAMPLES, out_dir)   # {name: PNG}

# %% [markdown]
# ### Every system side by side
# The same masks and the same seeds for every system: mask | real | the first samples of each system
# (GauGAN draws one image per mask).

# %%
eval_figures.all_systems_figure(study, results, N_SHOW, N_COMPARE_SAMPLES, K, out_dir / "fig_all_systems.png")

# %% [markdown]
# ## Fig. 10: per-image scores
# Histograms of the per-mask diversity and Top-1 GT-similarity of every variant on shared bins.

# %%
print(eval_figures.score_histograms(results, {cols.diversity: out_dir / "fig10_hist_diversity.png",
                                              cols.top1: out_dir / "fig10_hist_top1_GTsimilarity.png"}))

# %% [markdown]
# ## Which classes vary
# LPIPS diversity restricted to each class region, averaged over the masks that contain the class.
# A class-wise latent space should let every class vary, not only the large ones. The table keeps the
# classes some test mask holds, without the dataset's "don't care" class (ADE20K's `unknown`, whose
# pixels carry no class); the figure shows the `MAX_CLASSES_SHOWN` classes found in the most masks.

# %%
MAX_CLASSES_SHOWN = 30
if PER_CLASS:
    per_class, left_out = tables.held_classes(tables.per_class_table(results), test.info.dontcare,
                                              test.info.class_names)
    tables.write_table(per_class, out_dir, "per_class_diversity",
                       f"Per-class diversity: {metric.name} of the K = {K} samples restricted to each class region, "
                       f"mean over the masks holding the class ({len(indices)} masks).{left_out}")
    per_class_figure(per_class, {name: f"{name}: {cols.diversity}" for name in results}, cols.diversity,
                     out_dir / "per_class_diversity.png", MAX_CLASSES_SHOWN)
    display(per_class)

# %% [markdown]
# ## Factor-aware scores (SynthScenes)
# SynthScenes knows what a correct image looks like: each class draws its colour from its own few
# colour modes and its texture from its own set of kinds. Per class region of a sample we estimate
# the colour and texture from the pixels (`smis.data.synthetic.estimate_factors`, without the global
# factor) and check that they belong to that class's distribution. Real test images give the
# ceiling of this estimator.

# %%
factors = None
if FACTORS:
    factors = tables.factor_table(study.factor_rows(results))   # the real test images first: the ceiling
    tables.write_table(factors, out_dir, "factors_in_distribution",
                       f"Share of class regions whose estimated colour is within {COLOUR_TOLERANCE} (RGB) of one of "
                       "the class's colour modes under some tint and brightness, and whose texture kind is one of the "
                       f"class's own; all K = {K} samples of {len(indices)} masks.")
    display(factors)

# %% [markdown]
# ### Style-guided synthesis: are the reference's factors copied?
# Mask n receives the encoder's codes of another test image (the reference) for every class both
# share, at every layer, plus its global code; other classes keep prior codes. We count how often a
# shared class's estimated colour mode and texture kind equal the reference's. The same masks with
# plain prior samples give the chance level.

# %%
style = None
if FACTORS:
    style = tables.style_table(study.evaluate_style(N_STYLE, SEED))   # prints the models that cannot, and why
    tables.write_table(style, out_dir, "style_guided_factors",
                       f"Style-guided synthesis on {len(indices[:N_STYLE])} mask / reference pairs: share of shared "
                       "class regions whose estimated colour mode / texture kind equals the reference's; prior rows use"
                       " no reference.")
    display(style)

# %% [markdown]
# ## The paper's statements about the other systems (SynthScenes)
# Measured with the factor records and the per-mask scores above (`smis.comparison`; its docstring defines
# each test):
# - *cIMLE varies colour globally*: per mask, over pairs of its samples, when one class changes colour mode,
#   how often another class changes too (the class co-change rate); cIMLE's above clvae's, paired interval.
# - *GroupDNet suffers from a large number of classes*: diversity per number of classes in the mask, and the
#   slope of log(diversity groupdnet / clvae) against that number with a bootstrap interval over masks.
# - *GauGAN-VAE\* is more diverse but worse on top-1, FD and mask mIoU* than GauGAN-VAE: paired intervals.

# %%
found = None
if FACTORS:
    n_classes = cmp.classes_per_mask(test, indices)
    co_change = cmp.class_independence_table(results)
    tables.write_table(co_change, out_dir, "class_independence",
                       f"Class co-change rate per system ({len(indices)} masks, K = {K}): over pairs of a mask's "
                       "samples, when one class changes its estimated colour mode, the share of the other classes "
                       "that change too (1: colour changes are global; 0: classes change alone); mean over masks "
                       "with 95 % interval, and the paired difference to clvae.")
    display(co_change)
    if "groupdnet" in results and cmp.REFERENCE in results:
        bins, trend = cmp.class_count_trend(results["groupdnet"], results[cmp.REFERENCE], n_classes, seed=SEED)
        tables.write_table(bins, out_dir, "groupdnet_diversity_by_classes",
                           f"Diversity ({metric.name}) of groupdnet and clvae per number of classes in the mask, 95 % "
                           "intervals, paired difference; slope of log(diversity ratio) per class "
                           f"{trend['slope']:+.3f} "
                           f"(95 % bootstrap CI [{trend['CI low']:.3f}, {trend['CI high']:.3f}]).")
        display(bins)
    found = cmp.statements(results, n_classes, seed=SEED, fd_real=study.fd_real)
    if len(found):
        tables.write_table(found.set_index(["statement", "part"]), out_dir, "statements",
                           "The paper's statements about the comparison systems, measured on this run: per part, the "
                           "measure, its value and 95 % interval, the verdict, and the sentence built from them.")
        display(Markdown("\n".join("- " + t for t in cmp.findings(found))))

# %% [markdown]
# ## What we learnt
# Built from this run's tables above (nothing pasted from an earlier run).

# %%
Markdown("\n".join(diversity_findings(study, results, table2, BASELINE, K, paired, factors, style, found, versus)))
