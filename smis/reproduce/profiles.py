"""The reproduce profiles as data, and what each numbered notebook reads and writes.

Owns `PROFILES` (profile -> notebook stem -> papermill parameters), the paper profiles' systems
(`PAPER_SYSTEMS`, `GROUPDNET_ROW`), `WRITTEN_FOLDERS` (the folder parameters a run keeps under its folder) and
`NOTEBOOK_INPUTS`, each notebook's declaration of the parameters through which it reads datasets, models and
training runs (what the preflight checks). Nothing here reads a file.
"""
from __future__ import annotations

from dataclasses import dataclass

# The shipped SynthScenes demo models (scripts/train_demo_models.py).
DEMO_MODELS = ("clvae:checkpoints/synthscenes_clvae.pt,gaugan_vae:checkpoints/synthscenes_gaugan_vae.pt,"
               "gaugan:checkpoints/synthscenes_gaugan.pt")
# Notebook 04 of the demo: the shipped models of every system of the paper's Tables 2 and 4 (issue 21), the
# three above first (their rows and seeds do not depend on what follows: smis.evaluate.mask_seed).
DEMO_SYSTEMS = DEMO_MODELS + "".join(f",{v}:checkpoints/synthscenes_{v}.pt"
                                     for v in ("gaugan_vae_lowkl", "groupdnet", "cimle"))
ABLATION_MODELS = ",".join(f"{v}:checkpoints/synthscenes_{v}.pt"
                           for v in ("clvae", "no_classwise", "no_layerwise", "clvae_L3", "clvae_L5"))
ABLATIONS = "clvae,no_classwise,no_layerwise,clvae_L3,clvae_L5"

# Notebook parameters naming a folder the notebook writes into: in a run, each one a notebook declares
# must be given (by the profile, `--set`, or for OUT_DIR by reproduce) and lie under the run's folder. A rule on
# names, so that it holds for every notebook, a new one too; every other *_DIR / *_ROOT parameter of a numbered
# notebook is one it reads, declared in NOTEBOOK_INPUTS (tests/test_reproduce_profiles.py checks both).
WRITTEN_FOLDERS = ("OUT_DIR", "DATA_DIR", "RUN_DIR", "RUN_ROOT")


@dataclass(frozen=True)
class NotebookInputs:
    """The parameters through which one numbered notebook reads the inputs a run checks (`smis.reproduce.preflight`);
    each field names a parameter of the notebook's `parameters` cell, "" for none. Files of the repository a
    notebook reads for comparison (02's DEMO_MODEL and CURVES, 06's LAYER_EXPERIMENT) are shipped, not checked."""
    dataset: str = ""          # the dataset's format (a smis.data.DATASETS name; "synthscenes" with an empty root
                               # is SynthScenes generated on the fly: nothing to check)
    data_root: str = ""        # the dataset's root folder (read only, anywhere); empty value: no real dataset
    split: str = ""            # the split it evaluates; "" with a dataset: every split of the format (01 checks them)
    trains_run: str = ""       # the run folder it trains (02; its training parameters are notebook 02's:
                               # VARIANT, PRESET, PRESET_SET, STEPS, BATCH, FRESH); training also reads the train split
    trains_if: str = ""        # a parameter that, when true, makes it train instead of loading `models` (05's
                               # TRAIN_STEPS); training reads the train split
    models: str = ""           # NAME:SOURCE,... it evaluates (smis.models.parse_models): model files, run folders,
                               # official:/groupdnet: weights
    only_models: str = ""      # comma-separated names that restrict `models` to those listed (empty value: all)
    model_files: tuple[str, ...] = ()   # parameters naming one model file each, checked under the parameter's name
                                        # in lower case (SynthScenes models)


# notebook stem -> its inputs. Every numbered notebook has an entry (tests/test_reproduce_profiles.py), and the
# preflight refuses a notebook without one.
NOTEBOOK_INPUTS: dict[str, NotebookInputs] = {
    # checks a real dataset when DATA_ROOT is set (every split of DATA_FORMAT); writes SynthScenes into DATA_DIR
    "01_prepare_data": NotebookInputs(dataset="DATA_FORMAT", data_root="DATA_ROOT"),
    "02_train": NotebookInputs(dataset="DATASET", data_root="DATA_ROOT", split="SPLIT", trains_run="RUN_DIR"),
    "03_reconstruction_rq1": NotebookInputs(dataset="DATASET", data_root="DATA_ROOT", split="SPLIT", models="MODELS"),
    "04_diversity_rq2": NotebookInputs(dataset="DATASET", data_root="DATA_ROOT", split="SPLIT", models="MODELS"),
    "05_ablations": NotebookInputs(dataset="DATASET", data_root="DATA_ROOT", split="SPLIT", trains_if="TRAIN_STEPS",
                                   models="MODELS", only_models="VARIANTS"),
    # SynthScenes generated on the fly; two exported models
    "06_interactive_editing": NotebookInputs(model_files=("MODEL", "BASELINE")),
}


# The comparison systems of each paper table besides GauGAN-VAE, GroupDNet and Ours, as the user's training runs
# (outputs/runs/<dataset>_<variant>, read only): Table 2 (ADE20K) compares GauGAN-VAE* (gaugan_vae_lowkl),
# Table 4 (GTA-5) cIMLE.
PAPER_SYSTEMS = {"ade20k": ("gaugan_vae_lowkl",), "gta5": ("cimle",)}

# GroupDNet's row of the paper's prior-sample tables (Table 2 ADE20K, Table 3 DeepFashion): ADE20K uses the authors'
# published GroupDNet (its 151 classes are the profile's); their DeepFashion GroupDNet has 8 classes (their own
# version of the data), not the profile's 16, so that row needs GroupDNet trained on the profile's data (a run).
GROUPDNET_ROW = {"ade20k": "groupdnet:ade20k:checkpoints/groupdnet/ade20k",
                 "deepfashion": "outputs/runs/deepfashion_groupdnet"}


def _paper_profile(dataset: str, root: str, split: str, batch: int) -> dict[str, dict]:
    """The paper's evaluation of one dataset: full test split, K = 40, the published CLVAE weights,
    GauGAN-VAE trained by notebook 02 into the run's folder, the ablations and the table's other systems
    (PAPER_SYSTEMS) from the user's training runs (outputs/runs/<dataset>_<variant>, read only)."""
    runs = f"outputs/runs/{dataset}"
    baseline = f"{{out}}/runs/{dataset}_gaugan_vae"
    data = {"DATASET": dataset, "DATA_ROOT": root, "SPLIT": split, "N_TEST": 0, "BATCH": batch}
    clvae = f"clvae:official:{dataset}:checkpoints/official/{dataset}"
    systems = "".join(f",{v}:{runs}_{v}" for v in PAPER_SYSTEMS.get(dataset, ()))
    prior_models = f"{clvae},gaugan_vae:{baseline}{systems}"
    if dataset in GROUPDNET_ROW:                             # Tables 2 / 3 compare GroupDNet too
        prior_models += f",groupdnet:{GROUPDNET_ROW[dataset]}"
    return {
        # 01 checks the dataset and draws its samples; its SynthScenes part (unused here) stays small
        "01_prepare_data": {"DATA_ROOT": root, "DATA_FORMAT": dataset, "DATA_DIR": "{out}/data/synthscenes",
                            "SIZE": 64, "N_TRAIN": 64, "N_TEST": 16},
        # the baseline has no published weights: 02 trains it (the preset's full schedule; GPUs)
        "02_train": {"VARIANT": "gaugan_vae", "PRESET": dataset, "DATASET": dataset, "DATA_ROOT": root, "SPLIT": split,
                     "STEPS": None, "BATCH": None, "RUN_DIR": baseline, "FRESH": False},
        "03_reconstruction_rq1": {**data, "MODELS": f"{clvae},gaugan_vae:{baseline}"},
        "04_diversity_rq2": {**data, "MODELS": prior_models, "K": 40, "N_STYLE": 0,
                             "FACTORS": False, "MASKS_PER_BATCH": 4},
        "05_ablations": {**data, "TRAIN_STEPS": 0, "K": 40, "VARIANTS": ABLATIONS, "RUN_ROOT": "{out}/runs_ablation",
                         "MODELS": ",".join([clvae] + [f"{v}:{runs}_{v}" for v in ABLATIONS.split(",")[1:]])},
    }


# profile -> notebook stem -> papermill parameters (OUT_DIR is added per notebook). Every parameter must
# be declared by its notebook; every folder the notebooks write is under {out} (WRITTEN_FOLDERS).
# Notebooks 03-06 read no files of 01: without DATA_ROOT they generate SynthScenes on the fly
# (deterministic from seed, split and index).
PROFILES: dict[str, dict[str, dict]] = {
    "smoke": {
        "01_prepare_data": {"SMOKE": True, "DATA_DIR": "{out}/data/synthscenes"},
        "02_train": {"SMOKE": True, "VARIANT": "clvae", "RUN_DIR": "{out}/runs/02_clvae"},
        "03_reconstruction_rq1": {"SMOKE": True, "MODELS": DEMO_MODELS},
        "04_diversity_rq2": {"SMOKE": True, "MODELS": DEMO_MODELS},
        "05_ablations": {"SMOKE": True, "TRAIN_STEPS": 2, "RUN_ROOT": "{out}/runs_ablation"},
        "06_interactive_editing": {"SMOKE": True},
    },
    "demo": {
        "01_prepare_data": {"SIZE": 128, "N_TRAIN": 2000, "N_TEST": 200, "DATA_DIR": "{out}/data/synthscenes"},
        "02_train": {"STEPS": 300, "VARIANT": "clvae", "RUN_DIR": "{out}/runs/02_clvae"},
        "03_reconstruction_rq1": {"MODELS": DEMO_MODELS, "N_TEST": 200},
        "04_diversity_rq2": {"MODELS": DEMO_SYSTEMS, "N_TEST": 100, "K": 20, "N_STYLE": 100},
        # the shipped models of every ablation (scripts/train_demo_models.py): nothing is trained here
        "05_ablations": {"VARIANTS": ABLATIONS, "TRAIN_STEPS": 0, "MODELS": ABLATION_MODELS, "N_TEST": 100, "K": 10,
                         "RUN_ROOT": "{out}/runs_ablation"},
        "06_interactive_editing": {"N_TEST": 200, "N_EVAL": 100},
    },
    "ade20k": _paper_profile("ade20k", "data/ADEChallengeData2016", "val", 16),
    "deepfashion": _paper_profile("deepfashion", "data/deepfashion", "test", 16),
    "gta5": _paper_profile("gta5", "data/gta5", "test", 8),
}

# Profiles that run the preflight (smis.reproduce.preflight) before their first notebook: their inputs stand for
# days of GPU training, so a missing file stops them at once instead of hours later. `--check` runs it for any
# profile.
PAPER_PROFILES = ("ade20k", "deepfashion", "gta5")
