# %% [markdown]
# # 02 · Train
#
# In this notebook we train the class- and layer-wise VAE (or one of its baselines and ablations) with
# the paper's objective, watch the losses live, and look at samples. The same trainer runs from a shell
# (`python -m smis.train ...`) and on many GPUs (`torchrun --nproc_per_node=N -m smis.train ...`).
#
# Objective (Eq. 7 with the KL of Eq. 18): hinge GAN + 10 x feature matching + 10 x perceptual
# + 0.05 x KL, a generator+encoder step then a discriminator step each iteration, Adam with betas
# (0, 0.9), learning rates of the published code (G/E 1e-4, D 4e-4; `paper_text_lr=True` gives the
# paper's text, G/E 4e-4, D 1e-4), constant then linearly decayed to zero.
#
# Speed: on a GPU set `PRECISION = "bf16"`; on a CPU keep fp32 (bf16 is slower there without AMX or
# AVX512-BF16). `CHANNELS_LAST` (NHWC convolutions, on by default) helps on both: this notebook's 300 demo
# steps run 1.11x faster with it on the 2-core CPU. What each option gains, in images/s and GiB, on a GPU and
# on this CPU: `benchmarks/RESULTS.md` ("Training step" and "Notebook 02's speed advice").

# %% tags=["parameters"]
from typing import Optional       # the type of STEPS and BATCH (reproduce checks --set values against it)

VARIANT = "clvae"              # clvae, gaugan_vae, gaugan, no_classwise, no_layerwise, clvae_L3..L5
PRESET = "synthscenes"         # synthscenes (CPU), ade20k, deepfashion, gta5, cityscapes
DATASET = "synthscenes"        # a smis.data.DATASETS name
DATA_ROOT = ""                 # empty: SynthScenes generated on the fly
SPLIT = "test"                 # split the sample figure draws its masks from (Cityscapes: "val")
STEPS: "Optional[int]" = 300   # iterations; None: the preset's full schedule (epochs)
BATCH: "Optional[int]" = 8     # global batch; None: the preset's
PRESET_SET = {}                # preset fields to override, e.g. {"ngf": 16} (`smis.train --set`); {}: the paper's
DEVICE = "auto"                # auto picks CUDA when there is one
PRECISION = "fp32"             # fp32, bf16 (GPU), fp16
CHANNELS_LAST = True           # NHWC convolutions: faster on GPU and CPU (see above)
RUN_DIR = "outputs/runs/nb02_clvae"   # checkpoints, losses.csv, tensorboard/, config.json
OUT_DIR = "outputs/demo/02_train"     # figures
DEMO_MODEL = "checkpoints/synthscenes_clvae.pt"  # the shipped model, for comparison
CURVES = "checkpoints/synthscenes_curves.json"   # the shipped models' training curves (eval_curves.py); "": skip
KL_FREE_BITS = 0.0             # options against collapse of the latent layers (README, "Training"); 0 / 0 / "none":
KL_WARMUP_STEPS = 0            # the paper's objective. Free bits (nats per image per layer), KL warm-up (steps),
KL_BALANCE = "none"            # KL balancing across layers: "none", "warmup" (needs KL_WARMUP_STEPS), "always"
FRESH = True                   # True: start RUN_DIR anew (deletes its previous run's files); False: continue it
SMOKE = False                  # a few tiny CPU steps

# %% [markdown]
# ## Set up the run
# One `TrainConfig` holds every option; `Trainer` builds the networks, optimizers, losses and data from it.
# `SMOKE` shrinks the networks and the run to a few CPU seconds; `FRESH = False` continues `RUN_DIR`.

# %%
import pandas as pd
from IPython.display import Markdown, display

from smis import curves, eval_figures
from smis import evaluate as ev
from smis.config import TINY
from smis.diagnostics import layer_diagnostics
from smis.findings import training_findings
from smis.models import shipped_steps
from smis.progress import Progress
from smis.train import TrainConfig, Trainer
from smis.utils import resolve
from smis.viz import LiveLossPlot, save_figure

overrides = {}
if SMOKE:
    STEPS, BATCH = 4, 2
    overrides = dict(TINY)
overrides = {**overrides, **PRESET_SET}
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
run_dir = resolve(RUN_DIR)
cfg = TrainConfig(run_dir=str(run_dir), variant=VARIANT, preset=PRESET, preset_overrides=overrides, dataset=DATASET,
                  data_root=DATA_ROOT or None, steps=STEPS, batch_size=BATCH, device=DEVICE, precision=PRECISION,
                  channels_last=CHANNELS_LAST, kl_free_bits=KL_FREE_BITS, kl_warmup_steps=KL_WARMUP_STEPS,
                  kl_balance=KL_BALANCE, perceptual="none" if SMOKE else "auto", log_every=1 if SMOKE else 10,
                  image_every=0 if SMOKE else 100,
                  ckpt_every=max(1, STEPS // 3) if STEPS else 1000, progress=False)   # the bar below instead
trainer = Trainer(cfg)
print(trainer.nets.param_counts(), "| perceptual backbone:", trainer.perceptual_name, "| device:", trainer.device)

# %% [markdown]
# Above: the parameter count of each network (G generator, E encoder, D discriminator), the backbone of the
# perceptual loss and the device the run trains on.
#
# ## Train, with live loss curves

# %%
plot = LiveLossPlot(every=2 if SMOKE else 5)
# FRESH deletes the previous run's files under the run folder's lock (refused while another run holds it, or when
# the folder holds no smis run); FRESH = False continues the run, like `python -m smis.train --resume`
bar = Progress(total=trainer.total_steps, initial=trainer.step, desc=f"train {VARIANT}")   # kept in the saved notebook


def on_log(trainer, step, losses):   # every logged step: the live plot, then the bar
    plot(trainer, step, losses)
    bar.set_postfix(g=f"{losses['g_total']:.2f}", d=f"{losses['d_hinge']:.2f}", ips=f"{losses['images_per_s']:.1f}")
    bar.update_to(step)


with bar:
    trainer.fit(resume=not FRESH, fresh=FRESH, callback=on_log)
save_figure(plot.figure(), out_dir / "losses.png")
losses = pd.read_csv(run_dir / "losses.csv")
losses.tail()

# %% [markdown]
# Above: the losses redrawn every few steps while training (the generator's hinge GAN loss, feature matching,
# perceptual loss and KL; the discriminator's hinge loss), then the last rows of `losses.csv`, which logs every
# term at each logged step (with each latent layer's KL per image, `kl_l0` ... for models with class codes,
# and with an option against collapse the KL term it trains on, `kl_reg`). The run folder also holds the
# checkpoints, TensorBoard logs and `config.json`.
#
# ## Samples from the prior
# Four test masks, each with its real image and four samples from the prior (`smis.sampling.sample_prior`,
# one seed per mask, the same for every model; `gaugan` has no latents: one image per mask).
# The shipped demo model (trained longer with `scripts/train_demo_models.py`) follows on the same masks.

# %%
test, indices = ev.test_set(DATASET, DATA_ROOT, SPLIT, trainer.preset.image_size, n=4)
image, label = ev.load_pairs(test, indices, trainer.device)
trainer.nets.eval()   # sample in inference mode; `fit` switches back to training mode
eval_figures.training_samples_figures(trainer.nets, VARIANT, trainer.step, label, image, indices, test.info.palette,
                                      out_dir, DEMO_MODEL, PRESET);   # this run's model, then the shipped one

# %% [markdown]
# Above: one figure per model, a row per mask (its colour-coded mask, the real image, the samples); each
# figure is saved as a PNG in `OUT_DIR`.
#
# ## Is each latent layer used?
# Per latent layer of this run's model (0 = fine, feeding `up_2`, ... 4 = coarse, feeding `head_0`), on 64 test
# photos: its KL (nats per image), its active units (code dimensions whose encoder mean varies across the photos
# where the class is present, variance > 0.01, Burda et al. 2016) and the share of an image's classes still visible
# at the size of the generator block it feeds (`smis.diagnostics.layer_diagnostics`). An inactive layer's codes
# carry (almost) nothing: resampling them changes little or nothing.

# %%
if trainer.nets.E is not None and trainer.nets.spec.has_class_codes:
    diag_test, diag_indices = ev.test_set(DATASET, DATA_ROOT, SPLIT, trainer.preset.image_size, n=4 if SMOKE else 64)
    diagnostics = layer_diagnostics(trainer.nets, *ev.load_pairs(diag_test, diag_indices, trainer.device))
    display(diagnostics.table().round(3))
    print("inactive latent layers:", diagnostics.inactive or "none")
else:
    diagnostics = None
    print(f"{VARIANT} has no class- and layer-wise codes: no latent layers to diagnose")

# %% [markdown]
# Above: the table of this run's latent layers and the list of the inactive ones.
#
# ## Did the shipped models train long enough?
# Every variant of the paper's comparison was trained by `scripts/train_demo_models.py` (same data, schedule
# and seed; the steps each trained for are printed first, read from its provenance, the JSON beside the model)
# and `scripts/eval_curves.py` scored each kept checkpoint on the same test masks and seeds. A score has flattened
# when its change over the last quarter of training is a small share of its range over the run. The dashed lines
# are the real images.

# %%
print(shipped_steps())
plateau, layer_kl, by_step = curves.training_curves(CURVES, out_dir / "training_curves.png")   # None: no file
if plateau is not None:
    display(plateau.round(3))
    print(curves.LAYER_DIAGNOSTICS_NOTE)
    display(by_step.round(3))

# %% [markdown]
# Above: the shipped models' training steps (`smis.models.shipped_steps`); per variant, its steps and
# checkpoints in the curves and, per score, the value at the last checkpoint and its change
# over the last quarter as a share of the run's range (flattened: at most `curves.FLAT_SHARE`); then the
# diagnostics of each of clvae's latent layers at every checkpoint; and one panel per score against the training
# step, one line per variant.
#
# ## What we learnt

# %%
Markdown("\n".join(training_findings(trainer.step, VARIANT, plateau, layer_kl)))
