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
# Speed: on a GPU set `PRECISION = "bf16"` and `CHANNELS_LAST = True`. On an NVIDIA H100 the ADE20K preset
# at batch 16 then trains at 88.7 images/s in 16.7 GiB, against 60.8 images/s and 21.3 GiB in fp32 (the
# authors' code: 5.0 images/s, 23.1 GiB); batch 4 is launch-bound at about 39 images/s whatever the options.
# On this 2-core CPU keep fp32 (bf16 is slower without AMX); `CHANNELS_LAST` still gains about 12 %.
# Details: `benchmarks/RESULTS.md`.

# %% tags=["parameters"]
VARIANT = "clvae"              # clvae, gaugan_vae, gaugan, no_classwise, no_layerwise, clvae_L3..L5
PRESET = "synthscenes"         # synthscenes (CPU), ade20k, deepfashion, gta5, cityscapes
DATASET = "synthscenes"        # a smis.data.DATASETS name
DATA_ROOT = ""                 # empty: SynthScenes generated on the fly
SPLIT = "test"                 # split the sample figure draws its masks from (Cityscapes: "val")
STEPS = 300                    # iterations; None: the preset's full schedule (epochs)
BATCH = 8                      # global batch; None: the preset's
PRESET_SET = {}                # preset fields to override, e.g. {"ngf": 16} (`smis.train --set`); {}: the paper's
DEVICE = "auto"                # auto picks CUDA when there is one
PRECISION = "fp32"             # fp32, bf16 (GPU), fp16
CHANNELS_LAST = False          # NHWC convolutions: faster on GPU and CPU (see above)
RUN_DIR = "outputs/runs/nb02_clvae"   # checkpoints, losses.csv, tensorboard/, config.json
OUT_DIR = "outputs/demo/02_train"     # figures
DEMO_MODEL = "checkpoints/synthscenes_clvae.pt"  # the shipped model, for comparison
CURVES = "checkpoints/synthscenes_curves.json"   # the shipped models' training curves (scripts/eval_curves.py); "": skip
FRESH = True                   # True: start RUN_DIR anew; False: continue its latest checkpoint
SMOKE = False                  # a few tiny CPU steps

# %%
import shutil

import pandas as pd
import torch

from smis.networks import Latents
from smis.train import TrainConfig, Trainer, load_model
from smis.utils import resolve
from smis.viz import LiveLossPlot, colorize, grid, save_png, show, to_uint8

overrides = {}
if SMOKE:
    STEPS, BATCH = 4, 2
    overrides = {"ngf": 8, "nef": 8, "ndf": 8, "spade_hidden": 16, "z_dim": 8, "z_dim_local": 4}
overrides = {**overrides, **PRESET_SET}
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
run_dir = resolve(RUN_DIR)
if FRESH and run_dir.exists():  # FRESH = False continues the run instead, like `python -m smis.train --resume`
    shutil.rmtree(run_dir)
cfg = TrainConfig(run_dir=str(run_dir), variant=VARIANT, preset=PRESET, preset_overrides=overrides, dataset=DATASET,
                  data_root=DATA_ROOT or None, steps=STEPS, batch_size=BATCH, device=DEVICE, precision=PRECISION,
                  channels_last=CHANNELS_LAST,
                  perceptual="none" if SMOKE else "auto", log_every=1 if SMOKE else 10, image_every=0 if SMOKE else 100,
                  ckpt_every=max(1, STEPS // 3) if STEPS else 1000, progress=True)
trainer = Trainer(cfg)
print(trainer.nets.param_counts(), "| perceptual backbone:", trainer.perceptual_name, "| device:", trainer.device)

# %% [markdown]
# ## Train, with live loss curves

# %%
plot = LiveLossPlot(every=2 if SMOKE else 5)
trainer.fit(resume=not FRESH, callback=plot)
losses = pd.read_csv(run_dir / "losses.csv")
from smis.viz import save_figure

save_figure(plot.figure(), out_dir / "losses.png")
losses.tail()

# %% [markdown]
# ## Samples: mask | real | 4 samples from the prior

# %%
def sample_rows(nets, dataset, n=4, k=4, seed=0):
    """One row per mask (the dataset's first n, fewer when it is shorter): mask | real | k prior samples."""
    nets.eval()
    device = next(nets.G.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    rows = []
    with torch.no_grad():
        for i in range(min(n, len(dataset))):  # one mask per row, its k samples in one batch
            s = dataset[i]
            lab = s["label"][None].expand(k, -1, -1).to(device)
            has_latents = nets.spec.z_dim or nets.spec.has_class_codes
            fakes = nets.G(lab, Latents.prior(nets.spec, lab, generator=g)) if has_latents else nets.G(lab)
            rows.append([colorize(s["label"], dataset.info.palette), to_uint8(s["image"])] + list(to_uint8(fakes.cpu())))
    return grid(rows)


from smis.data import make_dataset

size = trainer.preset.image_size
# on-the-fly SynthScenes takes a length; a dataset on disk is as long as its split
test = (make_dataset(DATASET, None, SPLIT, size=size, length=8) if DATASET == "synthscenes" and not DATA_ROOT
        else make_dataset(DATASET, DATA_ROOT, SPLIT, size=size))
figure = sample_rows(trainer.nets, test)
save_png(figure, out_dir / "samples_this_run.png")
show(figure, f"{VARIANT} after {trainer.step} steps", scale=2 if trainer.preset.image_size[0] <= 64 else 1);

# %% [markdown]
# The shipped demo model (trained longer with `scripts/train_demo_models.py`) on the same masks:

# %%
if DEMO_MODEL and resolve(DEMO_MODEL).is_file() and PRESET == "synthscenes":
    demo = load_model(resolve(DEMO_MODEL))
    figure = sample_rows(demo, make_dataset("synthscenes", None, "test", size=demo.preset.image_size, length=8))
    save_png(figure, out_dir / "samples_demo_model.png")
    show(figure, f"shipped {demo.variant}, {demo.meta['step']} steps", scale=2);
else:
    print(f"no shipped model at {DEMO_MODEL!r} (or another preset): train one with `python scripts/train_demo_models.py`.")

# %% [markdown]
# ## Did the shipped models train long enough?
# Every variant of the paper's comparison was trained by `scripts/train_demo_models.py` (same data, schedule
# and seed; 8,000 steps for clvae and gaugan_vae, 3,000 for the others) and `scripts/eval_curves.py` scored
# each kept checkpoint on the same test masks and seeds. A score has flattened when its change over the last
# quarter of training is a small share of its range over the run. The dashed lines are the real images.

# %%
import json

from IPython.display import Markdown, display

from smis import curves

curve_data = json.loads(resolve(CURVES).read_text()) if CURVES and resolve(CURVES).is_file() else None
if curve_data is None:
    print(f"no curves file at {CURVES!r}: score a set of runs with `python scripts/eval_curves.py --runs ...`")
else:
    rows = pd.DataFrame(curve_data["rows"])
    fig = curves.curves_figure(rows, out_dir / "training_curves.png", real=curve_data.get("real"))
    plateau = curves.plateau_table(rows)
    display(plateau[[c for c in plateau.columns if not c.endswith("last-quarter change")]].round(3))
    layer_kl = curves.layer_kl_table(rows, "clvae")
    print("clvae: KL of each latent layer (0 = fine ... 4 = coarse) at each checkpoint; near 0 = collapsed")
    display(layer_kl.round(3))

# %% [markdown]
# ## What we learnt

# %%
lines = ["- One trainer serves the notebook, the shell and `torchrun`; its runs are plain folders (checkpoints, "
         "`losses.csv`, TensorBoard logs, `config.json`) that `--resume` continues exactly.",
         f"- This run: {trainer.step} steps of {VARIANT}; its samples are above, next to the shipped model's."]
if curve_data is not None:
    flat = {v: [s for s in curves.SCORES if r[f"{s}: share of range"] <= 0.25] for v, r in plateau.iterrows()}
    for v, r in plateau.iterrows():
        moving = [s for s in curves.SCORES if s not in flat[v]]
        lines.append(f"- `{v}` ({int(r['steps'])} steps, {int(r['checkpoints'])} checkpoints): "
                     + (f"flattened on {', '.join(flat[v])}" if flat[v] else "nothing flattened")
                     + (f"; still moving over the last quarter: {', '.join(moving)}" if moving else "") + ".")
    last = layer_kl.iloc[-1]
    first = layer_kl.iloc[0]
    lines.append(f"- Longer training and the collapsed layers (clvae): KL per latent layer at step {layer_kl.index[0]}: "
                 + ", ".join(f"{v:.3f}" for v in first) + f"; at step {layer_kl.index[-1]}: "
                 + ", ".join(f"{v:.3f}" for v in last) + ". "
                 + ("Layers above the finest stay collapsed however long it trains."
                    if (last.iloc[1:] < 0.05).all() else "Coarser layers carry information by the end."))
Markdown("\n".join(lines))
