# %% [markdown]
# # 01 · Prepare data
#
# In this notebook we generate **SynthScenes**, the workbook's built-in procedural dataset, look at
# its masks and images, and check that its ground-truth appearance factors can be read back from the
# pixels. Every other notebook trains and evaluates on it when no real dataset is on disk.
#
# SynthScenes is built for this method: one mask has *many* correct images. Each image has a global
# factor (time of day: a tint and a brightness) and, per class present, an independent colour drawn
# from that class's own multi-modal distribution (a box is reddish *or* bluish), a texture kind from
# that class's own set (flat, stripes, checker, smooth noise) and a contrast. Colour is global and
# low-frequency, texture local and high-frequency, so layer-wise editing can later be measured.
# With `OBJECT_FACTOR = True` each class region also gets an object-scale factor, a shading direction (a
# brightness ramp across the whole region, brightest at the top, bottom, left or right, from that class's own
# set), which the coarse latent layers could carry; the masks and the other factors stay those of the default.

# %% tags=["parameters"]
SIZE = 128            # image side (64..512)
N_TRAIN = 2000        # training images
N_TEST = 200          # test images
SEED = 0              # dataset seed
OBJECT_FACTOR = False  # add the object-scale factor (shading direction per class region; opt-in)
DATA_DIR = "data/synthscenes"      # where SynthScenes is written (relative to the repo root)
OUT_DIR = "outputs/demo/01_prepare_data"  # figures and tables
DATA_ROOT = ""        # root folder of a real dataset; empty means none
DATA_FORMAT = ""      # its format: ade20k, deepfashion, gta5, cityscapes or folder
SMOKE = False         # tiny and fast (CI)

# %%
from IPython.display import Markdown, display

from smis.data import make_dataset, synthetic
from smis.data.check import check_dataset, plot_class_histogram, plot_samples, sample_pairs
from smis.data.stats import classes_per_image, label_histograms, plot_label_statistics
from smis.findings import data_findings
from smis.tables import write_table
from smis.utils import resolve
from smis.viz import save_png, show

if SMOKE:
    SIZE, N_TRAIN, N_TEST = 64, 24, 8
    DATA_DIR = DATA_DIR.rstrip("/") + "_smoke"
data_dir, out_dir = resolve(DATA_DIR), resolve(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
print(f"SynthScenes {SIZE}x{SIZE}: {N_TRAIN} train / {N_TEST} test -> {data_dir}")

# %% [markdown]
# ## Generate
# `write_synthscenes` writes the generic `folder` layout (images, id-PNG labels, `classes.json`) plus a
# factor record per image (`factors.jsonl`). It writes into a temporary folder and renames it at the
# end, so an interrupted run leaves nothing half-written; a second run with the same settings returns
# at once.

# %%
synthetic.write_synthscenes(data_dir, N_TRAIN, N_TEST, SIZE, SEED, object_factor=OBJECT_FACTOR)
train = make_dataset("synthscenes", data_dir, "train", size=SIZE)
test = make_dataset("synthscenes", data_dir, "test", size=SIZE)
info = train.info
print(len(train), "train,", len(test), "test;", info.num_classes, "classes:", ", ".join(info.class_names))

# %% [markdown]
# Above: the size of each split as read back from disk, and the classes with their ids' order.
#
# ## Masks and images
# Eight training samples, each pair the image and its label map drawn with the class palette.

# %%
figure = sample_pairs(train, n=8)
save_png(figure, out_dir / "samples.png")
show(figure, "SynthScenes: image | mask", scale=1.5 if SIZE <= 64 else 1.0);

# %% [markdown]
# ## One mask, many images
# The first training mask, its dataset image, then the same layout rendered with five other draws of the
# appearance factors: this is the diversity the class- and layer-wise VAE must learn to produce from one mask.

# %%
figure = synthetic.factor_draws(0, SIZE, SEED, n=5)
save_png(figure, out_dir / "one_mask_many_images.png")
show(figure, "mask | dataset image | 5 other factor draws", scale=1.5 if SIZE <= 64 else 1.0);

# %% [markdown]
# ## Label statistics

# %%
hist = label_histograms(train)
fig = plot_label_statistics(hist, info.class_names, out_dir / "label_statistics.png")
print(classes_per_image(hist))

# %% [markdown]
# Above: the share of all training pixels that each class covers, how many classes an image holds, and that
# count's minimum, mean and maximum.
#
# ## The factor record, and reading it back from pixels
# `estimate_factors` recovers each class region's colour mode and texture kind from the pixels alone.
# The factor-aware metrics of later notebooks use it on generated images. Here it reads every region of
# the written test images back, against their factor records (`synthetic.factor_recovery`).

# %%
summary = synthetic.factor_recovery(data_dir, "test")
write_table(summary, out_dir, "factor_recovery")
summary

# %% [markdown]
# Above: per class, and over every region ("all"), the share of regions whose colour mode and texture kind
# are read back right (with `OBJECT_FACTOR`, also the shading direction, and the count of regions scored).

# %% [markdown]
# ## The paper's datasets
# The paper trains on three real datasets; we add Cityscapes, which has the same 20 classes as GTA-5.
# Their licences forbid redistribution, so download them yourself and point `DATA_ROOT` at one of
# them (with `DATA_FORMAT` naming its layout). Every loader below is `smis.data.make_dataset(FORMAT,
# root, split)`, and yields the same sample dicts as SynthScenes.
#
# | `DATA_FORMAT` | classes C | sample size (H x W) | preprocessing |
# |---|---|---|---|
# | `ade20k` | 151 (150 + unknown at 150) | 256 x 256 | train: resize 286, random crop 256, flip; val: resize 256 |
# | `deepfashion` | 16 (0 = background) | 256 x 256 | pad with white to a square, resize 256 |
# | `gta5` | 20 (19 Cityscapes classes + others) | 256 x 512 | as stored; flip when training |
# | `cityscapes` | 20 (as GTA-5) | 256 x 512 | resize from 1024 x 2048; flip when training |
#
# **ADE20K** (MIT Scene Parsing benchmark, `ADEChallengeData2016.zip` from sceneparsing.csail.mit.edu).
# Unpacked, the folder holds
# ```
# ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
# ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   0 = unknown, 1..150 = classes
# ```
# The ids are shifted to 0..149 and unknown goes to 150, as in the paper. Split names `train` /
# `training` and `val` / `validation` / `test` are all accepted.
#
# **DeepFashion** (In-shop Clothes Retrieval photos, mmlab.ie.cuhk.edu.hk/projects/DeepFashion/, with
# the paper's 16-class parsing maps):
# ```
# deepfashion/{train,test}/<stem>.jpg
# deepfashion/{train,test}/<stem>_label.png          ids 0..15
# deepfashion/color_palette.txt                      optional: the 16 colours, [[0,0,0],[144,238,144],...]
# ```
# The class names are not published, so the classes are `background`, `class_1` ... `class_15`.
# `smis.data.deepfashion.remove_padding(x, original_size)` takes the white padding off a result.
#
# **GTA-5** (the pre-processed 512 x 256 frames of the cIMLE repository,
# github.com/zth667/Diverse-Image-Synthesis-from-Semantic-Layout, made from Playing for Data):
# ```
# gta5/RGB256Full/{train,test}/*.png
# gta5/LabelgrayFull20/{train,test}/*.png           ids 0..19 (255 is read as 19 = others)
# ```
# `smis.data.gta5.rarity_weights(histograms)` gives per-image weights for a `WeightedRandomSampler`
# so that frames with rare classes are drawn more often.
#
# **Cityscapes** (www.cityscapes-dataset.com, `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip`):
# ```
# cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
# cityscapes/gtFine/{train,val}/<city>/*_gtFine_labelIds.png
# ```
# Label ids go through the standard labelId -> trainId table; everything outside the 19 classes is 19 = others.

# %% [markdown]
# ### Check a dataset before training on it
# A week of training should not die on image 17,000. `check_dataset` opens and decodes every file once
# (in DataLoader workers) and lists every finding with the file at fault and the fix: missing or empty
# splits, unpaired images or labels, unreadable files, ids out of range, image/label size mismatches.
# It also counts pixels per class. The same scan runs from a shell:
# `python -m smis.data.check ROOT --format ade20k --workers 4` (exit status 1 when there are problems).
# This section runs only when `DATA_ROOT` is set, e.g.
# `papermill ... -p DATA_ROOT /data/ADEChallengeData2016 -p DATA_FORMAT ade20k`.

# %%
report = None
if DATA_ROOT:
    report = check_dataset(DATA_ROOT, DATA_FORMAT, num_workers=2, max_files=32 if SMOKE else None)
    report.save_json(out_dir / f"check_{DATA_FORMAT}.json")
    display(Markdown(report.to_markdown()))
    plot_class_histogram(report, path=out_dir / f"class_histogram_{DATA_FORMAT}.png")
else:
    print("DATA_ROOT is empty: no real dataset to check. Set DATA_ROOT and DATA_FORMAT to scan one.")

# %% [markdown]
# A few training samples after the paper's preprocessing, image over mask.

# %%
if report is not None and report.ok:
    split = next(iter(report.splits))
    real = make_dataset(DATA_FORMAT, DATA_ROOT, split)
    plot_samples(real, n=4 if SMOKE else 6, path=out_dir / f"samples_{DATA_FORMAT}.png")
elif report is not None:
    print(f"{len(report.problems)} problem(s) above: fix them before loading {DATA_FORMAT}.")

# %% [markdown]
# ## What we learnt

# %%
Markdown("\n".join(data_findings(summary, len(test))))
