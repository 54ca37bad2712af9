"""Run the numbered notebooks headlessly with papermill, one profile of parameters at a time.

    python -m smis.reproduce --profile demo            # SynthScenes demo (the README's main command)
    python -m smis.reproduce --profile smoke           # tiny, CPU, minutes (CI)
    python -m smis.reproduce --profile demo --only 01  # some notebooks only
    python -m smis.reproduce --profile demo --resume   # skip notebooks already run with the same parameters
    python -m smis.reproduce --profile ade20k --set DATA_ROOT=/data/ADEChallengeData2016 05.MODELS=...
    python -m smis.reproduce --profile ade20k --check  # run nothing: list every input and its state

Profiles: `smoke` (CI), `demo` (SynthScenes with the shipped checkpoints in `checkpoints/`), and the
paper's settings `ade20k`, `deepfashion`, `gta5` (K = 40 samples, full test sets; they need the
dataset under `data/` or `--set DATA_ROOT=...`, the authors' CLVAE weights under
`checkpoints/official/<dataset>/latest_net_{G,E}.pth`, and the ablation variants trained with
`python -m smis.train --run-dir outputs/runs/<dataset>_<variant>`; notebook 02 trains the GauGAN-VAE
baseline into the run's folder, `<out>/<profile>/runs/<dataset>_gaugan_vae`). GroupDNet's row of Tables 2-3
(`GROUPDNET_ROW`): ade20k reads its published weights from `checkpoints/groupdnet/ade20k/`; deepfashion a
GroupDNet trained on the profile's 16-class data (their published one has 8 classes).

Preflight (`preflight`, `--check`): every input the planned notebooks read, with its state: each dataset
split (pairs counted, a sample opened by smis.data.check), the published weights (read with safe_load,
every key and shape checked), each training run evaluated (variant, preset, steps trained of the preset's
schedule), the run notebook 02 will train, the mask-fidelity segmenter of a real dataset (optional: absent,
the mask mIoU column reads "not measured"; `smis.real_segmenters`), the GPU, and the estimated GPU hours of
the training still to do. `--check` exits 0 only when every input is in place. A paper profile runs the
preflight first and stops before any folder is created when an input is missing or unusable; a *partial*
input (a run trained fewer steps than the schedule, or with preset fields changed) fails `--check` but lets a
run go on with a warning, and REPORT.md lists it. No GPU is reported, not a failure: the notebooks also run on a CPU.

Everything a run writes lies under `--out` (default `outputs/`), in `<out>/<profile>/`: each executed
notebook as `NN_topic.ipynb`, its figures and tables in `NN_topic/`, SynthScenes in `data/`, training
runs in `runs*/`, and `REPORT.md` gathering every table (`*.md`). A parameter string may hold `{out}`,
replaced by that folder. The parameters that name a folder a notebook writes (`WRITTEN_FOLDERS`) must
lie under it; inputs (datasets, models) may be anywhere.

`--set NAME=VALUE` (VALUE read as JSON, else as a string) overrides a parameter in every notebook of the
run that declares NAME, `--set 05.NAME=VALUE` in the notebooks starting with `05`. A name no notebook
of the run declares (in its cell tagged `parameters`) is an error that lists the valid ones. Everything
(profile, --only, --set, the notebooks and their parameters) is checked before any folder is created.
A failing notebook stops the run with a non-zero exit that names the notebook and the cell. Each `--set` value
must fit the type of the parameter (an annotation such as `STEPS: "Optional[int]" = 300`, else the default's type;
numbers must be finite): `--set SIZE=NaN` is refused. A value a notebook replaces under `SMOKE` is reported.

One run per folder: a run holds `<out>/<profile>/.lock` (smis.rundir) for its whole life, and a second run
on the same folder is refused, naming the holder. Each notebook is executed into a hidden temporary
`.NN_topic.partial.ipynb` and renamed to `NN_topic.ipynb` when it has finished; a failing one is kept as
`NN_topic.failed.ipynb`. Ctrl-C (SIGINT) or SIGTERM stops the run with one line (exit 130 / 143): the
notebook in progress is deleted, those finished are kept, and `--resume` skips them next time. Errors with a
message of their own are printed without a traceback; `SMIS_TRACEBACK=1` shows it.

Threads: kernels run with OMP_WAIT_POLICY=PASSIVE and OPENBLAS_NUM_THREADS=1 unless these are set:
spinning OpenMP / OpenBLAS threads slow every job on a CPU shared with others (measured: benchmarks/RESULTS.md,
"Kernel threads on a shared CPU"). `--threads N` also sets the kernels' torch threads (OMP_NUM_THREADS);
on a busy machine fewer threads can be faster.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import json
import math
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import papermill as pm
import torch
import zmq
from jupyter_client.manager import AsyncKernelManager, KernelManager
from traitlets.config import Config

from smis.config import get_preset
from smis import real_segmenters
from smis.data import DatasetError, ade20k, cityscapes, deepfashion, gta5
from smis.data.check import check_dataset
from smis.models import parse_models
from smis.networks import VARIANTS, build_networks
from smis.networks.crn import cimle_settings
from smis.official import (GROUPDNET_DATASETS, OFFICIAL_DATASETS, CheckpointMismatch, check_state_dict,
                           groupdnet_dataset_of, groupdnet_preset, map_names)
from smis.options import parse_assignment
from smis.progress import CONSOLE_ENV
from smis.rundir import RunDirBusy, RunDirLock
from smis.utils import (CheckpointError, atomic_write_json, atomic_write_text, project_root, resolve, safe_load,
                        show_tracebacks)

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
# must be given (by the profile, `--set`, or for OUT_DIR by reproduce) and lie under the run's folder.
WRITTEN_FOLDERS = ("OUT_DIR", "DATA_DIR", "RUN_DIR", "RUN_ROOT")
# Folder parameters a notebook only reads (a dataset): anywhere. Every *_DIR / *_ROOT parameter of a
# numbered notebook is in one of the two lists (tests/test_reproduce.py checks it).
READ_FOLDERS = ("DATA_ROOT",)


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

# Profiles that run the preflight (`preflight`) before their first notebook: their inputs stand for days of GPU
# training, so a missing file stops them at once instead of hours later. `--check` runs it for any profile.
PAPER_PROFILES = ("ade20k", "deepfashion", "gta5")
PREFLIGHT_SAMPLE = 64          # pairs per split the preflight opens with smis.data.check (a sample: seconds)

# What the GPU estimates start from: smis.train measured on one NVIDIA H100, ADE20K preset, batch 16
# (benchmarks/results/train_step_ade20k_cuda.json, benchmarks/RESULTS.md "Training step"); bf16 means
# `--precision bf16 --channels-last` (with fused Adam, the CUDA default). CPU: this 2-core CPU, batch 1
# (benchmarks/results/train_step_ade20k_cpu_b1.json).
H100_ADE20K_IMAGES_PER_S = {"fp32": 60.8, "bf16": 88.7}
CPU_ADE20K_IMAGES_PER_S = 0.144
# Training cost of one image relative to the ADE20K preset: an estimate, the same for every variant (the generator
# dominates and is shared). Cost = 3 x (G + E forward) + 4.3 x D forward + the perceptual network (VGG19, by pixels),
# with forward FLOPs counted by torch.utils.flop_counter.FlopCounterMode on the full-width networks (G and D at a
# quarter of the side, scaled by the pixels); with the factors 3 and 4.3 it comes within 3 % of the count of a whole
# ADE20K training step (1.31 TFLOP per image, benchmarks/results/profile_flops_ade20k.json).
# G forward, GFLOP per image: ade20k 362,
# gta5 543 (twice the pixels), deepfashion 940 (ngf 160), cityscapes 566, synthscenes 1.15. GPU time does not
# follow FLOPs exactly (wide convolutions run closer to the peak), so the hours are estimates, not measurements.
COST_VS_ADE20K = {"ade20k": 1.0, "gta5": 1.55, "deepfashion": 2.29, "cityscapes": 1.60, "synthscenes": 0.011}
# cIMLE's (family "cimle") cost per trained image relative to the same ADE20K step, counted the same way: its CRN
# at 256 x 512 is 2,195 GFLOP forward (FlopCounterMode on the meta device), 3 x that for the step, VGG19 to relu5_2
# (97 GFLOP) 4 x (fake forward and backward, real forward), and the pool's nearest-code search, 0.4 candidate
# passes (G + VGG19) per trained image at K = 400, m = 10, L = 10,000: ~7.9 TFLOP per image.
CIMLE_COST_VS_ADE20K = {"gta5": 6.03}


def parse_overrides(items: list[str] | None) -> list[tuple[str, str, object]]:
    """`NAME=VALUE` / `NN.NAME=VALUE` -> [(notebook prefix or "", NAME, value)]; VALUE as JSON, else a string."""
    out = []
    for item in items or []:
        kv = parse_assignment(item)
        if kv is None:
            raise SystemExit(f"--set {item!r}: write NAME=VALUE or NN.NAME=VALUE (e.g. N_TEST=50, 05.K=20)")
        prefix, _, name = kv[0].rpartition(".")
        out.append((prefix, name, kv[1]))
    return out


def declared_parameters(notebook: str | Path,   # an .ipynb file
                        ) -> list[str]:
    """The names the notebook's one cell tagged `parameters` assigns at its top level, in order
    (papermill overrides exactly these). SystemExit naming the file when the cell is missing, doubled
    or not Python."""
    notebook = Path(notebook)
    cells = [c for c in json.loads(notebook.read_text())["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{notebook}: {len(cells)} cells tagged 'parameters', reproduce needs exactly one. Fix: tag "
                         "the cell of parameters (`# %% tags=[\"parameters\"]` in notebooks/src) and rebuild.")
    source = cells[0]["source"]
    source = "".join(source) if isinstance(source, list) else source
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise SystemExit(f"{notebook}: its parameters cell is not Python ({e.msg}, line {e.lineno}). "
                         "Fix the cell.") from None
    names: list[str] = []
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        for t in targets:
            for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if isinstance(n, ast.Name) and n.id not in names:
                    names.append(n.id)
    return names


def default_parameters(notebook: str | Path,   # an .ipynb file
                       ) -> dict:
    """The values the notebook's `parameters` cell assigns, for the names assigned a literal (numbers, strings,
    None, lists, dicts); what a run gets for a parameter its profile does not set."""
    notebook = Path(notebook)
    cell = [c for c in json.loads(notebook.read_text())["cells"]
            if "parameters" in c.get("metadata", {}).get("tags", [])]
    declared_parameters(notebook)   # one Python cell, or SystemExit naming the file
    source = cell[0]["source"]
    out = {}
    for node in ast.parse("".join(source) if isinstance(source, list) else source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None
        if isinstance(target, ast.Name):
            try:
                out[target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list, "None": type(None)}


def _annotation_types(node: ast.expr) -> tuple[type, ...] | None:
    """`int`, `str | None`, `Optional[int]` ... as a tuple of types; None when not one of these simple forms."""
    if isinstance(node, ast.Constant) and node.value is None:
        return (type(None),)
    if isinstance(node, ast.Name) and node.id in _TYPE_NAMES:
        return (_TYPE_NAMES[node.id],)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation_types(node.left), _annotation_types(node.right)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):   # "Optional[int]": papermill reads these
        try:
            return _annotation_types(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("Optional", "Union"):
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        found = [_annotation_types(n) for n in parts]
        if any(f is None for f in found):
            return None
        return sum(found, ()) + ((type(None),) if node.value.id == "Optional" else ())
    return None


def parameter_types(notebook: str | Path,   # an .ipynb file
                    ) -> dict[str, tuple[type, ...]]:
    """What each parameter of the notebook's `parameters` cell accepts: its annotation (`STEPS: "Optional[int]" = 300`,
    a string so that papermill also reads the line; `int | None` and `Union[...]` work too),
    else the type of its literal default (a float also takes an int). Parameters whose default is None or not a
    literal, and unusual annotations, are not listed (any value goes)."""
    notebook = Path(notebook)
    declared_parameters(notebook)   # one Python cell, or SystemExit naming the file
    cell = [c for c in json.loads(notebook.read_text())["cells"]
            if "parameters" in c.get("metadata", {}).get("tags", [])][0]
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    types: dict[str, tuple[type, ...]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = _annotation_types(node.annotation)
            if found is not None:
                types[node.target.id] = found
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                default = ast.literal_eval(node.value)
            except ValueError:
                continue
            if default is not None and type(default) in _TYPE_NAMES.values():
                types[node.targets[0].id] = (int, float) if type(default) is float else (type(default),)
    return types


def _fits(value, types: tuple[type, ...]) -> bool:
    """Whether `value` (as --set parsed it) is one of `types`: bool only where bool is named, finite numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, tuple(t for t in types if t is not bool))


def smoke_replaced(notebook: str | Path,   # an .ipynb file
                   ) -> set[str]:
    """The parameters the notebook assigns anew in a top-level `if SMOKE:` block without reading their value
    (`STEPS, BATCH = 4, 2`): under SMOKE a value given for them is not used. (`N = min(N, 2)` reads it: not listed.)"""
    nb = json.loads(Path(notebook).read_text())
    names: set[str] = set()
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "SMOKE"):
                continue
            for stmt in node.body:
                if not isinstance(stmt, ast.Assign):
                    continue
                read = {n.id for n in ast.walk(stmt.value) if isinstance(n, ast.Name)}
                for t in stmt.targets:
                    names |= {n.id for n in (t.elts if isinstance(t, ast.Tuple) else [t])
                              if isinstance(n, ast.Name) and n.id not in read}
    return names


def smoke_report(stem: str, params: dict, notebook: str | Path) -> str | None:
    """A line naming the given parameters the notebook replaces because SMOKE is on (None when there are none)."""
    smoke = params.get("SMOKE", default_parameters(notebook).get("SMOKE"))
    lost = sorted(set(params) & smoke_replaced(notebook)) if smoke is True else []
    if not lost:
        return None
    return (f"{stem}: SMOKE=True sets {', '.join(lost)} itself, so the values given here are not used "
            f"({', '.join(f'{n}={params[n]!r}' for n in lost)}). Fix: --set {stem[:2]}.SMOKE=false to use them.")


# ---------------------------------------------------------------------------------------------
# Preflight: every input a run reads, and its state, before any long work


PREFLIGHT_STATES = {               # state -> meaning; `complete` needs none of partial/missing/invalid
    "ok": "in place",
    "todo": "this run makes it (notebook 02 trains it)",
    "partial": "usable, but short of the paper's schedule or configuration",
    "missing": "absent",
    "invalid": "present but unusable",
    "info": "for information",
}


@dataclass
class Input:
    """One input of a run and its state."""
    state: str                      # a key of PREFLIGHT_STATES
    what: str                       # e.g. "dataset ade20k, split val", "published encoder (ade20k)", "run no_classwise"
    where: str                      # the file or folder ("" when none)
    detail: str                     # counts and steps, or what is wrong and the fix
    gpu_hours: dict | None = None   # training still to do: {"fp32": h, "bf16": h, "cpu": h} (`training_hours`)
    used_by: tuple[str, ...] = ()   # the notebooks that read it


@dataclass
class Preflight:
    """The preflight of one run: `complete` (everything in place, `--check` exits 0) and `runnable` (nothing
    missing or unusable: a profile run may start; partial inputs give a warning)."""
    profile: str
    notebooks: list[str]
    inputs: list[Input]

    @property
    def complete(self) -> bool:
        return not any(i.state in ("partial", "missing", "invalid") for i in self.inputs)

    @property
    def runnable(self) -> bool:
        return not any(i.state in ("missing", "invalid") for i in self.inputs)

    def gpu_hours(self) -> dict[str, float]:
        """The training still to do, summed: {"fp32": h, "bf16": h, "cpu": h} (only inputs with an estimate)."""
        known = [i.gpu_hours for i in self.inputs if i.gpu_hours]
        return {k: sum(h[k] for h in known) for k in ("fp32", "bf16", "cpu")} if known else {}

    def to_text(self) -> str:
        lines = [f"preflight of profile {self.profile!r} ({', '.join(self.notebooks)}): {len(self.inputs)} inputs"]
        for i in self.inputs:
            where = f" {i.where}:" if i.where else ""
            lines.append(f"  {i.state.upper() if i.state in ('partial', 'missing', 'invalid') else i.state:8} "
                         f"{i.what}:{where} {i.detail}")
        hours = self.gpu_hours()
        todo = [i.what for i in self.inputs if i.gpu_hours]
        if hours:
            lines.append(f"training still to do ({', '.join(todo)}): ~{_duration(hours['fp32'])} on one H100 in fp32, "
                         f"~{_duration(hours['bf16'])} in bf16 + channels_last (on a 2-core CPU: "
                         f"~{_duration(hours['cpu'])}). An estimate: the measured ADE20K speed "
                         f"({H100_ADE20K_IMAGES_PER_S['fp32']} / {H100_ADE20K_IMAGES_PER_S['bf16']} images/s) "
                         "scaled by each preset's FLOPs (COST_VS_ADE20K).")
        counts = {s: sum(i.state == s for i in self.inputs) for s in ("partial", "missing", "invalid")}
        bad = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        lines.append("result: COMPLETE, every input is in place" if self.complete else
                     f"result: INCOMPLETE ({bad}); " + ("a run would start, with a warning" if self.runnable else
                                                        "a run stops before its first notebook"))
        return "\n".join(lines)


class PreflightFailed(RuntimeError):
    """A paper profile's inputs are missing or unusable; the message is the preflight's report."""


def training_hours(preset: str,    # a smis.config.PRESETS name (sets the cost per image)
                   images: int,    # images to train (steps x global batch)
                   variant: str = "clvae",   # its family sets the cost table (cimle: CIMLE_COST_VS_ADE20K)
                   ) -> dict[str, float] | None:
    """{"fp32": h, "bf16": h, "cpu": h}: the estimated hours to train `images` images on one H100 (fp32, bf16 +
    channels_last) and on a 2-core CPU, from the measured ADE20K speed and COST_VS_ADE20K. None for a preset
    without a cost ratio."""
    family = VARIANTS[variant].family if variant in VARIANTS else "spade"
    ratio = (CIMLE_COST_VS_ADE20K if family == "cimle" else COST_VS_ADE20K).get(preset)
    if ratio is None:
        return None
    cost = images * ratio / 3600
    return {"fp32": cost / H100_ADE20K_IMAGES_PER_S["fp32"], "bf16": cost / H100_ADE20K_IMAGES_PER_S["bf16"],
            "cpu": cost / CPU_ADE20K_IMAGES_PER_S}


def _duration(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:,.1f} h"


def _hours(h: dict | None) -> str:
    return f"~{_duration(h['fp32'])} on one H100 (fp32; {_duration(h['bf16'])} in bf16)" if h else "no estimate"


def _per_10k(preset) -> str:
    """The schedule's estimated hours per 10,000 training pairs, for when the dataset cannot be counted."""
    h = training_hours(preset.name, preset.epochs * 10_000) if preset is not None else None
    return f"{_hours(h)} per 10,000 training pairs, the dataset not counted yet" if h else "no estimate"


def _splits_of(fmt: str) -> tuple[str, ...]:
    """The splits a complete copy of a dataset format has (what notebook 01 checks)."""
    return {"ade20k": ade20k.SPLITS, "deepfashion": deepfashion.SPLITS, "gta5": gta5.SPLITS,
            "cityscapes": cityscapes.SPLITS}.get(fmt, ("train", "test"))


def _dataset_reads(stem: str, p: dict) -> list[tuple[str, str, str]]:
    """(format, root, split) of every real dataset split notebook `stem` reads with parameters `p`."""
    if "DATA_FORMAT" in p:                                   # 01: checks a dataset when DATA_ROOT is set
        return ([(p["DATA_FORMAT"], p["DATA_ROOT"], s) for s in _splits_of(p["DATA_FORMAT"])]
                if p.get("DATA_ROOT") else [])
    fmt, root = p.get("DATASET", "synthscenes"), p.get("DATA_ROOT") or ""
    if "DATASET" not in p or (fmt == "synthscenes" and not root):   # no dataset, or SynthScenes made on the fly
        return []
    trains = "VARIANT" in p or bool(p.get("TRAIN_STEPS"))       # 02, and 05 when it trains the ablations itself
    return [(fmt, root, s) for s in (["train"] if trains else []) + [p.get("SPLIT", "test")]]


def _check_datasets(reads: dict, sample: int, strict: bool) -> tuple[list[Input], dict]:
    """Inputs for {(format, root): {split: notebooks}}, and {(format, root): train pairs} for the schedules."""
    inputs, n_train = [], {}
    for (fmt, root), splits in reads.items():
        used = tuple(sorted({s for stems in splits.values() for s in stems}))
        if strict and "train" not in splits:
            splits = {"train": (), **splits}                 # the schedules of the runs count its pairs
        if not root:
            inputs.append(Input("missing", f"dataset {fmt}", "", "DATA_ROOT is empty. Fix: --set DATA_ROOT=<the "
                                f"{fmt} folder> (README, 'Reproducing the paper on real data').", used_by=used))
            continue
        path = resolve(root)
        if not path.is_dir():
            inputs.append(Input("missing", f"dataset {fmt} (splits {', '.join(splits)})", root,
                                "no such folder. Fix: download the dataset and unpack it there in the layout of "
                                "README, 'Reproducing the paper on real data', or --set DATA_ROOT=<its folder>.",
                                used_by=used))
            continue
        try:
            report = check_dataset(path, fmt, splits=list(splits), max_files=sample, progress=False)
        except (DatasetError, ValueError) as e:
            inputs.append(Input("invalid", f"dataset {fmt}", root, f"{e}", used_by=used))
            continue
        for split, stems in splits.items():
            r = report.splits[split]
            problems = [q for q in report.problems if q.split == split or q.kind == "nothing_checked"]
            bad_files = {q.path for q in problems if q.kind in ("unreadable", "id_out_of_range", "size_mismatch")}
            if split == "train":
                n_train[(fmt, root)] = r.n_pairs
            state = "missing" if any(q.kind in ("missing_split", "empty_split") for q in problems) else \
                "invalid" if problems else "ok"
            detail = (f"{r.n_pairs:,} pairs; {r.n_checked} opened, {r.n_checked - len(bad_files)} valid"
                      + (f"; {len(problems)} problem(s), e.g. {problems[0].message} (all: python -m smis.data.check "
                         f"{root} --format {fmt})" if problems else ""))
            inputs.append(Input(state, f"dataset {fmt}, split {split}", root, detail,
                                used_by=tuple(sorted(stems)) or ("schedules",)))
    return inputs, n_train


def _official_inputs(dataset: str, folder: str, used: tuple[str, ...], family: str = "official") -> list[Input]:
    """One input per published file: present, readable (safe_load) and matching `dataset`'s configuration
    (checked against networks built on the meta device: no memory, no time). family "official": the CLVAE
    authors' files; "groupdnet": GroupDNet's (the SMIS repository)."""
    known, system = ((OFFICIAL_DATASETS, "") if family == "official" else (GROUPDNET_DATASETS, "GroupDNet "))
    if dataset not in known:
        return [Input("invalid", f"published {system}weights ({dataset})", folder, f"no published {system}checkpoint "
                      f"for {dataset!r}. Fix: {family}:DATASET:FOLDER with DATASET one of {known}.", used_by=used)]
    with torch.device("meta"):
        variant, preset = ("clvae", get_preset(dataset)) if family == "official" else ("groupdnet",
                                                                                     groupdnet_preset(dataset))
        nets = build_networks(variant, preset, discriminator=False, init_gain=None)
    out = []
    for name, module, what in (("latest_net_G.pth", nets.G, "generator"), ("latest_net_E.pth", nets.E, "encoder")):
        path = resolve(folder) / name
        label, where = f"published {system}{what} ({dataset})", str(Path(folder) / name)
        if not path.is_file():
            source = ("the authors' {dataset} checkpoint (latest_net_G.pth and latest_net_E.pth; README, 'Reproducing "
                      "the paper on real data')" if family == "official" else
                      "GroupDNet's {dataset} checkpoint (latest_net_G.pth and latest_net_E.pth from the SMIS "
                      "repository's pretrained models; README, 'Reproducing the paper on real data')")
            out.append(Input("missing", label, where, f"not found. Fix: download {source.format(dataset=dataset)} "
                             f"into {folder}, or point MODELS at {family}:{dataset}:<their folder>.", used_by=used))
            continue
        try:
            state = safe_load(path, mmap=True)                 # shapes only: no 2 GB read
            if not isinstance(state, dict):
                raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors. Fix: use "
                                      "the published latest_net_*.pth files as downloaded.")
            state = map_names(state)
            other = groupdnet_dataset_of(state) if family == "groupdnet" else None
            if other not in (None, dataset):
                raise CheckpointMismatch(f"{path}: the published {other} GroupDNet {what}, not {dataset}'s. Fix: put "
                                         f"the {dataset} files in {folder}")
            check_state_dict(module, state, f"{path}: {system}{dataset} {what}")
        except (CheckpointError, CheckpointMismatch) as e:
            out.append(Input("invalid", label, where, str(e).replace("\n", " "), used_by=used))
            continue
        n = sum(v.numel() for k, v in state.items() if hasattr(v, "numel") and not k.endswith("num_batches_tracked"))
        out.append(Input("ok", label, where, f"loads (weights_only), {len(state)} tensors, {n / 1e6:.2f} M values, "
                         f"every key and shape of the {dataset} configuration", used_by=used))
        del state
    return out


def _schedule(preset, n_train: int | None, batch: int) -> int | None:
    """Steps of the preset's full schedule (its epochs over `n_train` pairs) at `batch`; None without a count."""
    return preset.epochs * math.ceil(n_train / batch) if n_train else None


def _latest_step(run_dir: Path) -> int | None:
    """The step of the run's newest checkpoints/step_*.pt (from its name), None when there is none."""
    steps = [int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt")
             if p.stem.split("_")[1].isdigit()]
    return max(steps) if steps else None


def _run_input(name: str, source: str, dataset: str, root: str, n_train: int | None, strict: bool,
               used: tuple[str, ...]) -> Input:
    """A training run folder (or a model file) a notebook evaluates: present, its variant and preset, steps
    trained of the preset's schedule (from config.json and the newest checkpoint's name)."""
    path = resolve(source)
    label = f"run {name}"
    fix = (f"python -m smis.train --variant {name} --preset {dataset} --dataset {dataset} "
           f"--data-root {root or '<root>'} "
           f"--run-dir {source}" if name in VARIANTS else "train it with python -m smis.train --run-dir " + source)
    try:
        preset = get_preset(dataset)
    except KeyError:
        preset = None
    imle = name in VARIANTS and VARIANTS[name].family == "cimle" and preset is not None
    if imle:        # cIMLE's schedule is its rounds of IMLE steps, not the preset's epochs
        settings = cimle_settings(dataset)
        schedule = lambda n, b: settings.total_steps
        preset = replace(preset, batch_size=settings.batch_size)
    else:
        schedule = lambda n, b: _schedule(preset, n, b)
    full = schedule(n_train, preset.batch_size) if preset else None
    if path.is_file():                                       # an exported model or a checkpoint: present and its step
        return Input("ok", f"model {name}", source, f"a model file ({path.stat().st_size / 2**20:.0f} MiB)",
                     used_by=used)
    step = _latest_step(path) if path.is_dir() else None
    if step is None:
        hours = training_hours(dataset, full * preset.batch_size, name) if full else None
        cost = f"{full:,} steps, {_hours(hours)}" if full else _per_10k(preset)
        return Input("missing", label, source,
                     f"{'no checkpoints/step_*.pt in it' if path.is_dir() else 'no such folder'}"
                     f" (the full schedule: {cost}). Fix: {fix}{_groupdnet_note(name, preset)}", hours, used)
    try:
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        return Input("invalid", label, source, f"config.json is unreadable ({e}). Fix: restore it or retrain the run.",
                     used_by=used)
    variant, run_preset = config.get("variant"), config.get("preset")
    overrides = config.get("preset_overrides") or {}
    if name in VARIANTS and variant and variant != name:
        return Input("invalid", label, source, f"holds a {variant} run, but the profile evaluates it as {name}. Fix: "
                     f"point MODELS at a {name} run ({fix}).", used_by=used)
    if preset is not None and run_preset and run_preset != dataset:
        return Input("invalid", label, source, f"trained with the {run_preset} preset; this run evaluates {dataset}. "
                     f"Fix: {fix}", used_by=used)
    if preset is not None and "image_size" in overrides and tuple(overrides["image_size"]) != tuple(preset.image_size):
        return Input("invalid", label, source,
                     f"trained at image_size {overrides['image_size']}, the notebooks compare "
                     f"models at {list(preset.image_size)}. Fix: {fix}", used_by=used)
    batch = (config.get("resolved") or {}).get("global_batch") or config.get("batch_size") or \
        (preset.batch_size if preset else 1)
    total = schedule(n_train, batch) if preset else None
    of = f"{step:,} of {total:,} steps" if total else f"{step:,} steps"
    short = []
    if total and step < total:
        short.append(f"partial: {of} of {'cIMLE' if imle else 'the preset'}'s schedule (batch {batch})")
    if overrides:
        short.append("preset fields changed from the paper's: "
                     + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())))
    if strict and short:
        if overrides:        # another configuration: only a new run at the paper's gives the paper's model
            hours = training_hours(dataset, full * preset.batch_size, name) if full else None
            rest = f"; a run at the paper's configuration: {_hours(hours)}. Fix: {fix} (a new --run-dir)"
        else:
            hours = training_hours(dataset, (total - step) * batch, name) if total else None
            rest = f"; {_hours(hours)} to finish. Fix: the command that trained it, with --resume"
        return Input("partial", label, source, "; ".join(short) + rest, hours, used)
    return Input("ok", label, source, f"{variant or 'a'} run, {of}" + (f" ({'; '.join(short)})" if short else ""),
                 used_by=used)


def _groupdnet_note(name: str, preset) -> str:
    """For a GroupDNet run of a dataset whose published GroupDNet has other classes: why that one does not apply."""
    if name != "groupdnet" or preset is None or preset.name not in GROUPDNET_DATASETS:
        return ""
    published = groupdnet_preset(preset.name).num_classes
    if published == preset.num_classes:
        return f" (or use the published GroupDNet: MODELS groupdnet:groupdnet:{preset.name}:FOLDER)"
    return (f" (the published {preset.name} GroupDNet does not apply: it has {published} classes, the authors' own "
            f"version of the data, and this profile's data has {preset.num_classes}; the estimate is the preset's "
            "cost per image, measured for the SPADE generator)")


def _planned_run(p: dict, n_train: int | None, strict: bool) -> Input:
    """The run notebook 02 trains (RUN_DIR): what it will train and the estimated hours."""
    run_dir, label = p["RUN_DIR"], f"run {p.get('VARIANT')} (notebook 02 trains it)"
    try:
        preset = get_preset(p.get("PRESET", "synthscenes"), **(p.get("PRESET_SET") or {}))
    except (KeyError, TypeError, ValueError) as e:
        return Input("invalid", label, run_dir, f"PRESET / PRESET_SET: {e}", used_by=("02_train",))
    batch = p.get("BATCH") or preset.batch_size
    total = p.get("STEPS") or _schedule(preset, n_train, batch)
    done = 0 if p.get("FRESH", True) else (_latest_step(resolve(run_dir)) or 0)
    hours = training_hours(preset.name, max(0, total - done) * batch) if total else None
    what = (f"{total:,} steps of batch {batch}: {_hours(hours)}" if total
            else f"the preset's schedule: {_per_10k(preset)}")
    detail = f"will train {what}" + (f" (continuing from step {done:,})" if done else "")
    short = []
    if p.get("STEPS") and n_train and p["STEPS"] < (_schedule(preset, n_train, batch) or 0):
        short.append(f"STEPS={p['STEPS']} is short of the preset's schedule "
                     f"({_schedule(preset, n_train, batch):,} steps)")
    if p.get("PRESET_SET"):
        short.append("preset fields changed from the paper's: "
                     + ", ".join(f"{k}={v}" for k, v in sorted(p["PRESET_SET"].items())))
    if strict and short:
        return Input("partial", label, run_dir, "; ".join(short) + "; " + detail, hours, ("02_train",))
    return Input("todo", label, run_dir, detail, hours, ("02_train",))


def _gpu_input() -> Input:
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        return Input("ok", "GPU", "", f"{n} x {props.name}, {props.total_memory / 2**30:.0f} GiB")
    return Input("info", "GPU", "", "none: the notebooks will run on the CPU (seconds per image at the paper's sizes); "
                 "the training estimates are for one H100, with the CPU's beside them")


def preflight(profile: str,                            # the profile's name (a paper profile is judged strictly)
              plan: list[tuple[str, dict]],            # plan_profile's [(notebook stem, parameters)]
              notebook_dir: Path | None = None,        # where the NN_topic.ipynb files are; None: notebooks/
              sample: int = PREFLIGHT_SAMPLE,          # pairs per split opened by the dataset checker
              strict: bool | None = None,              # judge runs against the paper's schedule and configuration;
                                                       # None: for PAPER_PROFILES
              ) -> Preflight:
    """Every input the planned notebooks read, with its state (see PREFLIGHT_STATES): each dataset split (pairs
    counted, a sample of `sample` opened by smis.data.check), the published weights (read with safe_load and
    checked key by key against the configuration), each model or training run evaluated (variant, preset, steps
    of the preset's schedule), the run notebook 02 trains, and the GPU; with the estimated training hours still
    to do. Reads only; writes nothing."""
    strict = profile in PAPER_PROFILES if strict is None else strict
    nb_dir = notebook_dir or project_root() / "notebooks"
    full = {stem: {**default_parameters(nb_dir / f"{stem}.ipynb"), **params} for stem, params in plan}
    reads: dict = {}
    for stem, p in full.items():
        for fmt, root, split in _dataset_reads(stem, p):
            reads.setdefault((fmt, root), {}).setdefault(split, set()).add(stem)
    inputs, n_train = _check_datasets(reads, sample, strict)
    trains = {str(resolve(p["RUN_DIR"]).resolve()): (stem, p) for stem, p in full.items()
              if "VARIANT" in p and p.get("RUN_DIR")}
    models: dict = {}                                        # (name, source) -> (dataset, root, notebooks)
    for stem, p in full.items():
        if "MODELS" in p and not p.get("TRAIN_STEPS"):
            wanted = [v.strip() for v in str(p.get("VARIANTS", "")).split(",") if v.strip()]
            for name, source in parse_models(p["MODELS"]).items():
                if wanted and name not in wanted:
                    continue
                key = (name, source)
                models.setdefault(key, (p.get("DATASET", "synthscenes"), p.get("DATA_ROOT") or "", set()))[2].add(stem)
        for key in ("MODEL", "BASELINE"):                    # 06: one model file each
            if isinstance(p.get(key), str) and p[key] and "MODELS" not in p and "VARIANT" not in p:
                models.setdefault((key.lower(), p[key]), ("synthscenes", "", set()))[2].add(stem)
    done_official = set()
    for (name, source), (dataset, root, stems) in models.items():
        used = tuple(sorted(stems))
        if source.startswith(("official:", "groupdnet:")):
            family, ds, folder = (source.split(":", 2) + ["", ""])[:3]
            if (family, ds, folder) not in done_official:
                done_official.add((family, ds, folder))
                inputs += _official_inputs(ds, folder, used, family)
            continue
        if str(resolve(source).resolve()) in trains:
            continue                                          # the run of notebook 02, below
        inputs.append(_run_input(name, source, dataset, root, n_train.get((dataset, root)), strict, used))
    for stem, p in trains.values():
        inputs.append(_planned_run(p, n_train.get((p.get("DATASET"), p.get("DATA_ROOT") or "")), strict))
    inputs += [Input(*line[:4], used_by=line[4]) for line in real_segmenters.preflight_inputs(full)]
    inputs.append(_gpu_input())
    return Preflight(profile, [stem for stem, _ in plan], inputs)


class NotebookFailed(RuntimeError):
    pass


class RunInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped the run; the message says what is kept. `signum`: the signal."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def _digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def run_profile(profile: str,                          # a key of `profiles`
                only: list[str] | None = None,         # notebook numbers / name prefixes to run; None: all
                resume: bool = False,                  # skip notebooks already run with the same parameters
                out_root: str | Path = "outputs",      # the run writes only under out_root/profile
                                                       # (relative: to the repo)
                kernel: str = "smis",                  # Jupyter kernel name
                log=print,                             # progress lines go here
                profiles: dict | None = None,          # profile -> stem -> parameters; None: PROFILES
                notebook_dir: Path | None = None,      # where the NN_topic.ipynb files are; None: notebooks/
                overrides: list[str] | None = None,    # `--set` items: NAME=VALUE or NN.NAME=VALUE
                threads: int | None = None,            # the kernels' torch threads; None: torch's default
                check_inputs: bool | None = None,      # run the preflight first; None: for PAPER_PROFILES
                ) -> Path:
    """Execute the profile's notebooks in order; return the profile's output folder. Every argument and
    parameter is checked (`plan_profile`) before the first folder is created; a paper profile then runs the
    preflight and raises PreflightFailed, before any folder exists, when an input is missing or unusable
    (partial inputs, such as runs trained fewer steps than the schedule, give a warning and the run goes on)."""
    if threads is not None and threads < 1:
        raise SystemExit(f"--threads {threads}: give at least 1")
    out, plan = plan_profile(profile, only, out_root, profiles, notebook_dir, overrides)
    report = None
    if check_inputs if check_inputs is not None else profile in PAPER_PROFILES:
        report = preflight(profile, plan, notebook_dir)
        log("[reproduce] " + report.to_text().replace("\n", "\n[reproduce] "))
        if not report.runnable:
            raise PreflightFailed(report.to_text())
        if not report.complete:
            log("[reproduce] WARNING: some inputs are partial (above): the tables will not be the paper's setting.")
    nb_dir = notebook_dir or project_root() / "notebooks"
    for stem, params in plan:
        said = smoke_report(stem, params, nb_dir / f"{stem}.ipynb")
        if said:
            log(f"[reproduce] NOTE: {said}")
    with _kernel_env(threads), RunDirLock(out, fix="pass another --out"):
        return _run_plan(profile, out, plan, resume, kernel, log, nb_dir, report)


def plan_profile(profile: str,                         # a key of `profiles`
                 only: list[str] | None = None,        # notebook numbers / name prefixes to run; None: all
                 out_root: str | Path = "outputs",     # the run's folder is out_root/profile
                 profiles: dict | None = None,         # profile -> stem -> parameters; None: PROFILES
                 notebook_dir: Path | None = None,     # where the NN_topic.ipynb files are; None: notebooks/
                 overrides: list[str] | None = None,   # `--set` items: NAME=VALUE or NN.NAME=VALUE
                 ) -> tuple[Path, list[tuple[str, dict]]]:
    """(the run's folder, [(notebook stem, its final papermill parameters)]) without writing anything.
    SystemExit, naming the value and the fix, for an unknown profile or --only, a --set prefix or name no
    notebook of the run declares, a missing notebook, a profile parameter its notebook does not declare,
    or a written folder (WRITTEN_FOLDERS) that is not given or not under the run's folder."""
    sets = parse_overrides(overrides)
    profiles = PROFILES if profiles is None else profiles
    if profile not in profiles:
        raise SystemExit(f"unknown profile {profile!r}. Fix: use one of {sorted(profiles)}.")
    root = project_root()
    out_root = Path(out_root).expanduser()
    out = Path(os.path.normpath(out_root / profile if out_root.is_absolute() else root / out_root / profile))
    notebooks = profiles[profile]
    if only:
        unknown = [o for o in only if not any(nb.startswith(o) for nb in notebooks)]
        if unknown:
            raise SystemExit(f"--only {unknown} matches no notebook of profile {profile!r}: {list(notebooks)}")
        notebooks = {nb: p for nb, p in notebooks.items() if any(nb.startswith(o) for o in only)}
    bad = sorted({p for p, _, _ in sets if p and not any(nb.startswith(p) for nb in notebooks)})
    if bad:
        raise SystemExit(f"--set prefixes {bad} match no notebook to run: {list(notebooks)}")
    nb_dir = notebook_dir or root / "notebooks"
    absent = [stem for stem in notebooks if not (nb_dir / f"{stem}.ipynb").exists()]
    if absent:
        raise SystemExit(f"notebooks {absent} of profile {profile!r} are not in {nb_dir}. Fix: build them with "
                         "`python scripts/build_notebooks.py`, or leave them out with --only.")
    declared = {stem: declared_parameters(nb_dir / f"{stem}.ipynb") for stem in notebooks}
    for stem, params in notebooks.items():
        undeclared = sorted(set(params) - set(declared[stem]))
        if undeclared:
            raise SystemExit(f"profile {profile!r} gives {stem} the parameters {undeclared}, which "
                             f"{nb_dir / f'{stem}.ipynb'} does not declare (it has {declared[stem]}). "
                             f"Fix: declare them in its parameters cell (notebooks/src/{stem}.py, then rebuild) "
                             "or drop them from the profile.")
        if "OUT_DIR" not in declared[stem]:
            raise SystemExit(f"{nb_dir / f'{stem}.ipynb'} declares no OUT_DIR parameter, so reproduce cannot keep its "
                             "outputs in the run's folder. Fix: add `OUT_DIR = \"...\"` to its parameters cell.")
    targets = []   # per --set item: the notebooks it goes to
    for prefix, name, _ in sets:
        key = f"{prefix}.{name}" if prefix else name
        if name == "OUT_DIR":
            raise SystemExit(f"--set {key}: reproduce sets OUT_DIR itself, to <out>/<profile>/NN_topic. "
                             "Fix: choose the folder with --out.")
        scope = [stem for stem in notebooks if stem.startswith(prefix)]
        takers = [stem for stem in scope if name in declared[stem]]
        if not takers:
            valid = sorted({n for stem in scope for n in declared[stem]} - {"OUT_DIR"})
            close = difflib.get_close_matches(name, valid, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            where = f"notebooks {scope}" if prefix else f"any notebook of this run ({', '.join(scope)})"
            raise SystemExit(f"--set {key}: {name} is not a parameter of {where}.{hint} "
                             f"Valid names: {', '.join(valid)}. "
                             "Fix: use one of them (a notebook's parameters are its first code cell).")
        targets.append(takers)
    out_str = str(out.relative_to(root)) if out.is_relative_to(root) else str(out)
    plan = []
    for stem, params in notebooks.items():
        given = {n: v for (_, n, v), takers in zip(sets, targets) if stem in takers}
        types = parameter_types(nb_dir / f"{stem}.ipynb")
        for name, value in {**params, **given}.items():
            if name in types and not _fits(value, types[name]):
                want = " or ".join("None" if t is type(None) else t.__name__ for t in types[name])
                origin = f"--set {stem[:2]}.{name}" if name in given else f"profile {profile!r}: {stem}.{name}"
                default = default_parameters(nb_dir / f"{stem}.ipynb").get(name)
                raise SystemExit(f"{origin}={value!r}: {stem} declares {name} as {want}"
                                 f"{' (a finite number)' if float in types[name] else ''}, and {value!r} is not. "
                                 f"Fix: give a value of that type (its default is {json.dumps(default)}; "
                                 f"notebooks/src/{stem}.py declares it).")
        params = {**params, **given}
        params = {k: v.replace("{out}", out_str) if isinstance(v, str) else v for k, v in params.items()}
        params["OUT_DIR"] = f"{out_str}/{stem}"
        for name in WRITTEN_FOLDERS:
            if name not in declared[stem]:
                continue
            if not isinstance(params.get(name), str) or not params[name]:
                raise SystemExit(f"profile {profile!r} gives {stem} no {name}: its default would write outside "
                                 f"the run's folder {out}. Fix: set it under '{{out}}' in the profile or with "
                                 f"--set {stem[:2]}.{name}=...")
            if not resolve(params[name]).resolve().is_relative_to(out.resolve()):
                raise SystemExit(f"{stem}: {name}={params[name]!r} is outside the run's folder {out}, and a run writes "
                                 f"only there. Fix: a path under it ('{{out}}/...' in --set or the profile), "
                                 "or another --out.")
        plan.append((stem, params))
    return out, plan


@contextmanager
def _kernel_env(threads: int | None):
    """Thread settings the kernels inherit (see the module docstring); the caller's environment is restored."""
    keys = ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", CONSOLE_ENV)
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _QuietShutdownKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, except that it does not interrupt the kernel when shutting it down after the
    notebook has run (the kernel is idle then): jupyter_client sends SIGINT first, which ipykernel logged as
    "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." at the end of every notebook."""

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()


def _engine_kwargs() -> dict:
    """papermill/nbclient options: the quiet-shutdown kernel manager; CurveZMQ transport encryption for kernels
    whose kernelspec declares it (ipykernel's does), which also silences the kernel's "running over TCP without
    encryption" warning (not on a jupyter_client without the option or a pyzmq without CurveZMQ)."""
    kwargs = {"kernel_manager_class": _QuietShutdownKernelManager}
    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return kwargs
    return {**kwargs, "config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def _run_plan(profile: str, out: Path, plan: list[tuple[str, dict]], resume: bool, kernel: str, log,
              nb_dir: Path, report: Preflight | None = None) -> Path:
    root = project_root()
    out.mkdir(parents=True, exist_ok=True)
    if report is not None:
        atomic_write_text(report.to_text() + "\n", out / "preflight.txt")
    state_path = out / ".completed.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    engine = _engine_kwargs()
    for stem, params in plan:
        key = _digest(params)
        if resume and state.get(stem) == key and (out / f"{stem}.ipynb").exists():
            log(f"[reproduce] {stem}: already done with these parameters, skipped (--resume)")
            continue
        src = nb_dir / f"{stem}.ipynb"
        dst = out / f"{stem}.ipynb"
        log(f"[reproduce] {profile}: running {stem} with {params}")
        t0 = time.time()
        os.environ[CONSOLE_ENV] = stem   # the kernel's progress bars also print here, tagged (smis.progress)
        _execute(stem, src, dst, params, kernel, root, engine, done=[s for s, _ in plan[:plan.index((stem, params))]])
        state[stem] = key
        atomic_write_json(state, state_path)
        timings_path = out / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        timings[stem] = round(time.time() - t0, 1)
        atomic_write_json(timings, timings_path)
        log(f"[reproduce] {stem} done in {time.time() - t0:.0f} s -> "
            f"{dst.relative_to(root) if dst.is_relative_to(root) else dst}")
    write_report(out, profile)
    return out


def _execute(stem: str, src: Path, dst: Path, params: dict, kernel: str, root: Path, engine: dict,
             done: list[str]) -> None:
    """Execute `src` into a hidden temporary beside `dst` (papermill writes it cell by cell) and rename it to `dst`
    when it has run; a failing notebook is kept as NN_topic.failed.ipynb (NotebookFailed), an interrupted one
    is deleted (RunInterrupted). `dst` from an earlier run stays until the new one has finished."""
    tmp = dst.with_name(f".{stem}.partial.ipynb")
    failed = dst.with_name(f"{stem}.failed.ipynb")
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name=kernel, cwd=str(root),
                            progress_bar=False, log_output=False, **engine)
    except pm.PapermillExecutionError as e:
        os.replace(tmp, failed)
        raise NotebookFailed(f"notebook {stem} failed in cell {e.cell_index} (execution count {e.exec_count}): "
                             f"{e.ename}: {e.evalue}. The executed copy with the traceback is {failed}.") from None
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        kept = f"the notebooks finished before it are kept ({', '.join(done)})" if done else "none had finished"
        raise RunInterrupted(f"interrupted while running {stem}: its partial notebook was deleted, {kept}; rerun "
                             "with --resume to skip the finished ones.", _signal_received or signal.SIGINT) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    failed.unlink(missing_ok=True)


_signal_received: int | None = None


def _sigterm_as_interrupt(signum, frame):
    """SIGTERM handler of the CLI: stop like Ctrl-C (KeyboardInterrupt), remembering the signal for the exit code."""
    global _signal_received
    _signal_received = signum
    raise KeyboardInterrupt


def write_report(out: Path, profile: str) -> Path:
    """REPORT.md: every Markdown table the notebooks wrote, under its notebook's heading."""
    parts = [f"# smis report: profile `{profile}`\n",
             "Tables written by the notebooks (metric and backbone names as measured; a fallback metric is never "
             "reported under the paper's name).\n"]
    timings_path = out / "timings.json"
    if timings_path.exists():
        timings = json.loads(timings_path.read_text())
        parts.append("\nWall time of the last run of each notebook: "
                     + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(timings.items())) + ".\n")
    if (out / "preflight.txt").exists():   # what the tables were made from: partial inputs are named here
        parts.append(f"\n## Inputs (preflight)\n\n```\n{(out / 'preflight.txt').read_text().strip()}\n```\n")
    for nb_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        tables = sorted(nb_dir.glob("*.md"), key=lambda t: (t.stat().st_mtime_ns, t.name))   # the order written
        if not tables:
            continue
        parts.append(f"\n## {nb_dir.name}\n")
        for t in tables:
            parts.append(f"\n### {t.stem}\n\n{t.read_text().strip()}\n")
        figs = sorted(nb_dir.glob("*.png"))
        if figs:
            parts.append("\nFigures: " + ", ".join(f"[{f.name}]({nb_dir.name}/{f.name})" for f in figs) + "\n")
    return atomic_write_text("".join(parts), out / "REPORT.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", help=f"one of {sorted(PROFILES)}")
    p.add_argument("--only", nargs="+", help="notebook numbers or names to run (e.g. 01 03)")
    p.add_argument("--resume", action="store_true", help="skip notebooks already run with the same parameters")
    p.add_argument("--out", default="outputs",
                   help="output root (relative to the repository); a run writes only under OUT/PROFILE")
    p.add_argument("--kernel", default="smis", help="Jupyter kernel name")
    p.add_argument("--set", nargs="+", metavar="[NN.]NAME=VALUE", help="override notebook parameters (VALUE as JSON)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads in the notebooks (default: torch's)")
    p.add_argument("--check", action="store_true",
                   help="run nothing: list every input of the run and its state (exit 0 only when all are in place)")
    a = p.parse_args(argv)
    if a.check:
        _, plan = plan_profile(a.profile, a.only, a.out, overrides=a.set)
        report = preflight(a.profile, plan)
        print(report.to_text())
        return 0 if report.complete else 1
    global _signal_received
    _signal_received = None
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        out = run_profile(a.profile, a.only, a.resume, a.out, a.kernel, overrides=a.set, threads=a.threads)
    except RunInterrupted as e:
        print(f"[reproduce] {signal.Signals(e.signum).name}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:   # between notebooks (the preflight, the report)
        sig = _signal_received or signal.SIGINT
        print(f"[reproduce] {signal.Signals(sig).name}: interrupted; the notebooks finished so far are kept; rerun "
              "with --resume to skip them.", file=sys.stderr)
        return 128 + sig
    except PermissionError as e:
        if show_tracebacks():
            raise
        print(f"[reproduce] ERROR: cannot write {e.filename or a.out}: {e.strerror or e}. Fix: choose an --out you may "
              "write to (SMIS_TRACEBACK=1 shows the traceback).", file=sys.stderr)
        return 2
    except (RunDirBusy, DatasetError, CheckpointError) as e:
        if show_tracebacks():
            raise
        print(f"[reproduce] ERROR: {e} (SMIS_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 2
    except PreflightFailed:
        print(f"[reproduce] STOPPED before the first notebook: inputs are missing or unusable (above). Fix them, "
              f"then check with `python -m smis.reproduce --profile {a.profile} --check`.", file=sys.stderr)
        return 1
    except NotebookFailed as e:
        print(f"[reproduce] FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"[reproduce] profile {a.profile} complete: {out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
