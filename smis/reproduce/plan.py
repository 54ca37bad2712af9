"""Planning a run: each notebook's final parameters before anything is written, and the training hours still to do.

Owns `plan_profile` (profile, --only and --set checked and resolved into [(notebook, parameters)], every written
folder under the run's folder) and the GPU-hour estimates (`training_hours`): the measured speed of one ADE20K
training step (`measured_speeds`, read from the benchmark JSON of benchmarks/results, `SPEED_SOURCES`) scaled by
each preset's training FLOPs (`COST_VS_ADE20K`).
"""
from __future__ import annotations

import difflib
import functools
import json
import os
from pathlib import Path

from smis.networks import VARIANTS
from smis.reproduce.parameters import (declared_parameters, default_parameters, parameter_types, parse_set_arguments,
                                       value_fits)
from smis.reproduce.profiles import PROFILES, WRITTEN_FOLDERS
from smis.utils import project_root, resolve

# ---------------------------------------------------------------------------------------------
# GPU-hour estimates

# The measured speeds the estimates start from: setting -> (file of benchmarks/results written by
# benchmarks/bench_train_step.py, batch, its `config`), smis.train's step on the ADE20K preset
# (benchmarks/RESULTS.md "Training step"). fp32 and bf16: one NVIDIA H100 at batch 16, bf16 meaning
# `--precision bf16 --channels-last` with fused Adam (the CUDA default), measured in a second process; cpu: the
# 2-core CPU at batch 1.
SPEED_SOURCES = {"fp32": ("train_step_ade20k_cuda.json", 16, "fp32"),
                 "bf16": ("train_step_ade20k_cuda_compile.json", 16, "bf16+channels_last+fused_adam"),
                 "cpu": ("train_step_ade20k_cpu_b1.json", 1, "fp32")}
BENCHMARK_RESULTS = project_root() / "benchmarks" / "results"
# Training cost of one image relative to the ADE20K preset: an estimate, the same for every variant (the generator
# dominates and is shared). Cost = 3 x (G + E forward) + 4.3 x D forward + the perceptual network (VGG19, by pixels),
# with forward FLOPs counted by torch.utils.flop_counter.FlopCounterMode on the full-width networks (G and D at a
# quarter of the side, scaled by the pixels); with the factors 3 and 4.3 it comes within 3 % of the count of a whole
# ADE20K training step (1.31 TFLOP per image, benchmarks/results/profile_flops_ade20k.json).
# G forward, GFLOP per image: ade20k 362,
# gta5 543 (twice the pixels), deepfashion 940 (ngf 160), cityscapes 566, synthscenes 1.15. GPU time does not
# follow FLOPs exactly (wide convolutions run closer to the peak), so the hours are estimates, not measurements.
# Counts, not timings: benchmarks/results holds the ADE20K count only (profile_flops_ade20k.json), not the other
# presets', so these ratios stay written here.
COST_VS_ADE20K = {"ade20k": 1.0, "gta5": 1.55, "deepfashion": 2.29, "cityscapes": 1.60, "synthscenes": 0.011}
# cIMLE's (family "cimle") cost per trained image relative to the same ADE20K step, counted the same way: its CRN
# at 256 x 512 is 2,195 GFLOP forward (FlopCounterMode on the meta device), 3 x that for the step, VGG19 to relu5_2
# (97 GFLOP) 4 x (fake forward and backward, real forward), and the pool's nearest-code search, 0.4 candidate
# passes (G + VGG19) per trained image at K = 400, m = 10, L = 10,000: ~7.9 TFLOP per image.
CIMLE_COST_VS_ADE20K = {"gta5": 6.03}


@functools.cache
def _read_speeds(results: Path) -> tuple[dict[str, float], tuple[str, ...]]:
    speeds, missing = {}, []
    for setting, (name, batch, config) in SPEED_SOURCES.items():
        path = results / name
        try:
            rows = json.loads(path.read_text())["results"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            missing.append(f"{setting}: {path} is unreadable ({type(e).__name__})")
            continue
        found = [r.get("images_per_s") for r in rows if r.get("batch") == batch and r.get("config") == config]
        if len(found) != 1 or not isinstance(found[0], (int, float)) or found[0] <= 0:
            missing.append(f"{setting}: {path} has {len(found)} rows of batch {batch}, config {config!r}, "
                           "with a positive images_per_s (want one)")
            continue
        speeds[setting] = float(f"{found[0]:.3g}")
    return speeds, tuple(missing)


def measured_speeds(results: Path | None = None,   # the benchmark JSON's folder; None: BENCHMARK_RESULTS
                    ) -> dict[str, float]:
    """{"fp32": images/s, "bf16": images/s, "cpu": images/s} of one ADE20K training step, read from the rows that
    SPEED_SOURCES names, to three significant figures as benchmarks/RESULTS.md reports them (60.8, 88.7, 0.144);
    a setting whose measurement is absent is left out (`missing_speeds` says why)."""
    return dict(_read_speeds(Path(results or BENCHMARK_RESULTS))[0])


def missing_speeds(results: Path | None = None,    # the benchmark JSON's folder; None: BENCHMARK_RESULTS
                   ) -> list[str]:
    """The measurements of SPEED_SOURCES the estimates need and do not find, each as "setting: file and what is
    wrong"; [] when all are there."""
    return list(_read_speeds(Path(results or BENCHMARK_RESULTS))[1])


def training_hours(preset: str,    # a smis.config.PRESETS name (sets the cost per image)
                   images: int,    # images to train (steps x global batch)
                   variant: str = "clvae",   # its family sets the cost table (cimle: CIMLE_COST_VS_ADE20K)
                   results: Path | None = None,   # the benchmark JSON's folder; None: BENCHMARK_RESULTS
                   ) -> dict[str, float] | None:
    """{"fp32": h, "bf16": h, "cpu": h}: the estimated hours to train `images` images on one H100 (fp32, bf16 +
    channels_last) and on a 2-core CPU, from the measured ADE20K speeds (measured_speeds) and COST_VS_ADE20K.
    None for a preset without a cost ratio, or when a speed is not measured (no_estimate says which)."""
    family = VARIANTS[variant].family if variant in VARIANTS else "spade"
    ratio = (CIMLE_COST_VS_ADE20K if family == "cimle" else COST_VS_ADE20K).get(preset)
    speeds = measured_speeds(results)
    if ratio is None or len(speeds) < len(SPEED_SOURCES):
        return None
    cost = images * ratio / 3600
    return {setting: cost / speed for setting, speed in speeds.items()}


def duration_text(hours: float) -> str:
    """Hours as "12.3 min" below one hour, else "1,234.5 h"."""
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:,.1f} h"


def no_estimate(results: Path | None = None) -> str:
    """What stands where training_hours gives None: "no estimate", naming the speeds not measured if any."""
    missing = missing_speeds(results)
    return "no estimate" + (f" (no measured speed: {'; '.join(missing)})" if missing else "")


def hours_text(h: dict | None,   # training_hours' result
               ) -> str:
    """"~9.1 h on one H100 (fp32; 6.3 h in bf16)", or no_estimate()."""
    return f"~{duration_text(h['fp32'])} on one H100 (fp32; {duration_text(h['bf16'])} in bf16)" if h else no_estimate()


# ---------------------------------------------------------------------------------------------
# The plan of a run


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
    sets = parse_set_arguments(overrides)
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
            if name in types and not value_fits(value, types[name]):
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

