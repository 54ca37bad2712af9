# %% [markdown]
# # 06 · Interactive editing
#
# In this notebook we use the class- and layer-wise latent codes for the paper's three applications
# (Sec. 4.4): **diverse synthesis** from one mask, **style-guided synthesis** from a reference photo,
# and **object / material editing** of a photo, one class and one layer at a time. We measure how local
# an object edit is and which appearance factor (colour or texture) each latent layer controls, and
# finish with a live editor.
#
# Every figure below is a few calls into `smis.editing`, whose functions are pure: latents in, new
# latents out, randomness from a seeded `torch.Generator`. The editor's buttons and sliders call the
# same functions (its tests check that they produce exactly the same images).

# %% tags=["parameters"]
MODEL = "checkpoints/synthscenes_clvae.pt"           # exported clvae model; empty: untrained (checks the machinery)
BASELINE = "checkpoints/synthscenes_gaugan_vae.pt"   # without class codes, for the locality comparison; empty: none
N_TEST = 200          # SynthScenes test photos encoded (PCA directions, references, measurements)
N_EVAL = 100          # photos whose every class is edited for the measurements
N_SAMPLES = 6         # samples per mask in the figures
SEED = 0              # seed of every prior draw
THREADS = 1           # torch intra-op threads of the editor (1 is fastest for batch-1 edits on a busy 2-core CPU)
BATCH_THREADS = 0     # torch threads of the batched work (encoding, measurements); 0: torch's default (the cores)
LAYER_EXPERIMENT = "docs/layer_experiment.json"     # the layer-wise experiment's measured tables; empty: skip
LAYER_CURVES = "docs/layer_experiment_curves.json"  # its two runs' curves (eval_curves.py); empty: skip
OUT_DIR = "outputs/demo/06_interactive_editing"      # figures and tables
SMOKE = False         # tiny and fast (CI)

# %% [markdown]
# The model and the test photos: the printout names the model, its latent layers and the size of
# each class code. With `MODEL = ""` the notebook runs on an untrained, seeded model (right shapes,
# meaningless images) and says so first.

# %%
import numpy as np
import torch
from IPython.display import Markdown, display

from smis import curves, edit_figures, edit_measures, editing
from smis.data import make_dataset
from smis.checkpoint import object_factor_of
from smis.diagnostics import COLLAPSE_KL, collapsed_layers, layer_diagnostics, layer_posteriors
from smis.models import load_or_untrained
from smis.tables import write_table
from smis.utils import atomic_write_json, resolve
from smis.viz import save_png, show
from smis.widgets import Editor, benchmark_summary

if SMOKE:
    N_TEST, N_EVAL, N_SAMPLES = 12, 4, 4
if BATCH_THREADS:     # the generator's images do not depend on the thread count, only its speed does
    torch.set_num_threads(BATCH_THREADS)
out_dir = resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)

if not MODEL:
    print("no clvae model given: an UNTRAINED clvae (figures show the machinery, not the method)")
nets = load_or_untrained(MODEL, "clvae", seed=SEED)
OBJECT_FACTOR = object_factor_of(nets)   # trained on SynthScenes with its object-scale factor: test on the same data
test = make_dataset("synthscenes", None, "test", size=nets.preset.image_size, length=N_TEST,
                    object_factor=OBJECT_FACTOR)
info = test.info
images, labels, codes = editing.encode_dataset(nets, test)            # (M, 3, H, W), (M, H, W), encoder means
directions = editing.principal_directions(codes, k=3)                  # PCA per (layer, class)
names, L = info.class_names, len(nets.spec.layers)
step = (getattr(nets, "meta", None) or {}).get("step")
print(f"{nets.variant} model{'' if step is None else f' at step {step}'}: {L} latent layers "
      f"(encoder layers {nets.spec.layers}), codes of N = {nets.spec.z_dim_local} per class; "
      f"{len(test)} test photos encoded")
scale = 2 if nets.preset.image_size[0] <= 64 else 1

# %% [markdown]
# ## Diverse synthesis: many images for one mask (Fig. 12)
# Each row: mask, the test photo, then samples whose every code (global and per class and layer) is a
# prior draw. One batched generator call per mask.

# %%
edit_figures.diverse_samples_figure(nets, images, labels, info.palette, N_SAMPLES, SEED,
                                    out_dir / "diverse_samples.png")   # three masks, one row each

# %% [markdown]
# ## Style-guided synthesis (Sec. 4.4.1, Fig. 13)
# The reference photo's codes (encoder means) are used for the classes that both masks contain, at
# the layers where the encoder saw them; all other codes come from the prior. Top row: target masks;
# each further row: a reference photo, then each mask in its style. The last row takes only the
# deepest layer's codes (colour) and no global code.

# %%
targets, refs = [3, 4, 5], [6, 7, 8]
shared = edit_figures.style_guided_figure(nets, images, labels, codes, info.palette, names, targets, refs, SEED,
                                          out_dir / "style_guided.png")
print("classes shared with reference", refs[0], ":", shared)

# %% [markdown]
# ## Object editing (Sec. 4.4.2, Fig. 14)
# One class's codes are resampled at every layer while every other code stays exactly as encoded from
# the photo. Each row: the class region (white), the reconstruction, four edits. The last row edits
# the first class again but copies every *other* class's pixels from the photo (`paste_classes`, as
# the paper keeps faces and skin in DeepFashion), so only the edited object is synthesised.

# %%
src = 0
edit_classes = edit_figures.object_editing_figure(nets, images, labels, codes, names, src, SEED,
                                                  out_dir / "object_editing.png")   # the photo's 3 largest classes
print("edited classes (rows):", [names[c] for c in edit_classes], "; last row pastes all but", names[edit_classes[0]])

# %% [markdown]
# ## Material editing (Sec. 4.4.3, Fig. 15)
# One class's code at one layer is moved along the first principal direction of that class's codes
# at that layer (over the encoded test set) by -3 ... +3 (in code units: the prior's standard deviation
# is 1), for the deepest layer (coarse) and the shallowest (fine). The printed standard deviation of the
# encoded codes along that direction tells how much of that range the photos themselves use. Last row:
# the class's codes at all layers interpolated from this photo's to another photo's. The second
# printout is the posterior-collapse diagnostic (`diagnostics.layer_posteriors`): per latent layer the KL
# of the class codes and the mean |mu|; near 0, the layer's codes carry nothing about the photo. The table
# after it is `smis.diagnostics.layer_diagnostics` over the same photos: per latent layer its KL, its active
# units (code dimensions whose encoder mean varies across the photos where the class is present, variance
# > 0.01, Burda et al. 2016: count, measurable units and share) and the share of an image's classes still
# visible at the size of the generator block the layer feeds; *active* is False for a layer whose codes carry
# nothing.

# %%
c = edit_classes[0]
other = edit_figures.material_editing_figure(nets, labels, codes, directions, names, src, c,
                                             out_dir / "material_editing.png")   # the photo interpolated to
print(f"class {names[c]}: sd of its encoded codes along PC1 at layer {L - 1}: {directions.std[L - 1, c, 0]:.3f}, "
      "at layer 0: "
      f"{directions.std[0, c, 0]:.3f} ({int(directions.count[0, c])} codes); interpolation towards photo {other}")
posteriors = layer_posteriors(nets, images, labels)
print("per latent layer, 0 (fine) .. L-1 (coarse): KL", ", ".join(f"{v:.3f}" for v in posteriors["kl"]),
      "| mean |mu|", ", ".join(f"{v:.3f}" for v in posteriors["mean_abs_mu"]), "(near 0: collapsed to the prior)")
print(f"collapsed latent layers (KL < {COLLAPSE_KL}):", collapsed_layers(posteriors["kl"]) or "none")
diagnostics = layer_diagnostics(nets, images, labels)                  # KL, active units, classes visible per layer
print("inactive latent layers (KL below it or no active unit):", diagnostics.inactive or "none")
display(diagnostics.table().round(3))

# %% [markdown]
# ### One layer at a time
# The same class resampled at a single layer per column (layer 0 = fine ... L-1 = coarse), four draws
# per layer in the rows. If the layers split the factors as the paper finds, the deep columns change
# the colour and the shallow ones the texture.

# %%
edit_figures.layerwise_resampling_figure(nets, labels, codes, names, src, c, SEED, out_dir / "layerwise_resampling.png")

# %% [markdown]
# ## Measured: edit locality and what each layer controls
# Over the first `N_EVAL` test photos, every class covering at least 48 pixels is edited in turn.
#
# * **Locality**: the class's codes are resampled at every layer; *inside* is the share of the total
#   pixel change |after - before| that falls inside the class's region, *near* the share within 2
#   pixels of it, *area* the region's share of the image (what a change spread evenly would score).
#   The baseline without class codes (GauGAN-VAE) can only resample its global code.
# * **Layers**: the class's code is resampled at one layer only (cases where the class is visible at
#   that layer's scale). *colour shift* is the distance between the region's mean RGB before and
#   after (in [0, 1] units); *hf change* the |log2| ratio of its high-frequency (Laplacian) energy;
#   *mode / texture changed* the share of edits where SynthScenes' factor estimator reads a different
#   colour mode / texture kind from the pixels (on data with the object-scale factor, also *shading
#   changed*), each with a 95 % Wilson interval over the edits, and *moves most* the factor with the
#   largest share (`edit_measures.layer_factor_summary` gives the same per layer as plain data).
#
# Shown below: the locality table (one row per model), then the layer table (one row per latent
# layer, with the generator blocks it feeds, its KL and mean |mu| and its active units and classes visible
# from the diagnostics above).
# Both are written as CSV and Markdown under `OUT_DIR`, with the whole report as `editing_report.json`.

# %%
base = load_or_untrained(BASELINE, "gaugan_vae", seed=SEED) if BASELINE else None
report, locality, layers = edit_measures.measure_edits(nets, test, labels, codes, N_EVAL, SEED, posteriors, diagnostics,
                                                       base, OBJECT_FACTOR)   # the reports and their two tables
write_table(locality, out_dir, "edit_locality", edit_measures.locality_caption(report))
write_table(layers, out_dir, "layer_effects", edit_measures.layer_effects_caption(len(test)))
atomic_write_json(report, out_dir / "editing_report.json")
display(locality)
layers

# %% [markdown]
# ## The layer-wise experiment: the paper's objective against free bits
# Three of the five latent layers of the shipped `clvae` carry nothing (the diagnostics above). The experiment
# behind that (issue 22) trained clvae twice on SynthScenes with its object-scale factor (a shading direction per
# object, `SynthScenes(object_factor=True)`), same data, seed, batch and 8,000 steps: once with the paper's
# objective, once with free bits (a KL floor of 1 nat per image and latent layer, Kingma et al. 2016, the option
# that kept every layer informative in the pilots). `scripts/layer_experiment.py` measured both on the same
# test photos and edit seed; its JSON is `LAYER_EXPERIMENT`. Per model and latent layer: KL, active units, and the
# share of single-class, single-layer resamplings that changed the colour mode, the texture kind and the shading
# direction, % with 95 % Wilson intervals. Then the sentence `edit_measures.layer_split` builds from each table (does
# the paper's split, coarse codes -> appearance and fine codes -> texture, appear?), and the free-bits model
# minus the paper's, paired over the same masks and seeds (notebook 04's scores), with the shipping verdict.
# Last, the diagnostics of both runs at every 1,000-step checkpoint (`LAYER_CURVES`, `scripts/eval_curves.py`):
# whether a layer ever came alive.

# %%
if LAYER_EXPERIMENT:
    experiment = edit_measures.read_layer_experiment(resolve(LAYER_EXPERIMENT))
    summary = edit_measures.experiment_summary(experiment)
    write_table(summary, out_dir, "layer_experiment",
                "The layer-wise experiment (" + (experiment["command"] or "") + "): per model and latent layer "
                "(0 = fine ... 4 = coarse) its KL, active units, and the share of single-layer edits that changed "
                "each factor, % with 95 % Wilson intervals.")
    print(edit_measures.experiment_lines(experiment))   # per model: options, inactive layers, split, verdict
    for name, v in experiment["versus"].items():
        display(v.round(3))
    display(summary)
if LAYER_EXPERIMENT and LAYER_CURVES:                 # item 1's diagnostics at every checkpoint of both runs
    for line, table in curves.layer_diagnostics_by_run(LAYER_CURVES).items():   # one table per run
        print(line)
        display(table.round(3))

# %% [markdown]
# ## The live editor
# Pick a photo, a class (by name) and a latent layer (each labelled active or INACTIVE, with its KL and active
# units from the diagnostics above, and the factor it moves most in the layer table above; selecting an
# inactive layer says so); the sliders move that
# class's code along the top three principal directions of its codes at that layer (in code units, the prior's
# standard deviation; `slider_unit="pca"` uses the encoded codes' instead). *resample* draws
# a new code for the class at this layer (or all layers); *apply style* does style-guided synthesis from
# the reference photo; *undo* steps back; *save PNG* writes mask | before | after under `OUT_DIR`.
# Without a running kernel (e.g. in a saved or papermill-executed copy) the editor cannot respond, so
# a static panel of the same edit follows it.

# %%
torch.set_num_threads(THREADS)   # the editor's batch-1 edits from here on
editor = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, directions=directions,
                index=src, seed=SEED, out_dir=out_dir / "editor", diagnostics=diagnostics,
                layer_factors=edit_measures.layer_factor_summary(layers))   # the layer table measured above
editor.cls.value, editor.layer.value = edit_classes[0], 0
display(editor.widget)

# %% [markdown]
# Driving an editor from Python (as its tests do): a second, undisplayed `Editor` on the same photo
# takes a slider drag of 30 updates along the first principal direction, timed end to end (edit,
# generator, PNG encoding for display), then an undo. (Setting a *displayed* slider from the kernel
# while the browser renders races with the browser's own updates, so the live one above is left to you.)
# Shown below: the latency table (median and 90th percentile per update), the benchmark's numbers on
# the demo model when `benchmarks/results/editor_cpu.json` exists, the panel after the drag, and the
# status line after the undo.

# %%
probe = Editor(nets, images, labels, info.class_names, info.palette, codes=codes, directions=directions,
               index=src, seed=SEED, out_dir=out_dir / "editor", diagnostics=diagnostics)
panel = probe.drag(edit_classes[0], layer=0, values=np.linspace(-2.5, 2.5, 30))   # 30 timed slider updates
save_png(panel, out_dir / "editor_panel.png")
latency = probe.latency_table()
write_table(latency, out_dir, "editor_latency", "Editor slider update, end to end (edit, generator, PNG encoding).")
display(latency)
if (summary := benchmark_summary()) is not None:
    print(summary)
show(panel, "editor: mask | before | after (+2.5 along PC1 at layer 0)", scale=scale)
print(probe.undo_line(codes[src]))                                    # undo: back to the photo's own codes

# %% [markdown]
# ## What we learnt
# From this run's measurements above (`edit_measures.findings`: locality, the coarsest and finest layers'
# effects, whether the paper's colour / texture split appears, collapsed layers, the editor's latency).

# %%
Markdown("\n".join(edit_measures.findings(report, layers, latency["median_ms"].iloc[0], torch.get_num_threads())))
