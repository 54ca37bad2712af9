"""The preflight (`--check`, and before every paper profile's run): every input a planned run reads, and its state.

Owns `preflight` and its report (`Preflight`, one `Input` a line, `PREFLIGHT_STATES`): each dataset split a notebook
reads (pairs counted, a sample opened by smis.data.check), the published weights (read with safe_load, every key
and shape checked), each model or training run evaluated (variant, preset, steps trained of the preset's schedule),
the run notebook 02 will train, the mask-fidelity segmenter of a real dataset (smis.real_segmenters), the GPU,
and the estimated training hours still to do (smis.reproduce.plan). Which parameters of a notebook name these
inputs is its declaration in smis.reproduce.profiles.NOTEBOOK_INPUTS. Reads only; writes nothing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from smis import real_segmenters
from smis.checkpoint import checkpoint_step, list_checkpoints
from smis.config import get_preset
from smis.data import DatasetError, ade20k, cityscapes, deepfashion, gta5
from smis.data.check import check_dataset
from smis.models import parse_models
from smis.networks import VARIANTS, build_networks
from smis.networks.crn import cimle_settings
from smis.official import (GROUPDNET_DATASETS, OFFICIAL_DATASETS, CheckpointMismatch, check_state_dict,
                           groupdnet_dataset_of, groupdnet_preset, map_names)
from smis.reproduce.parameters import default_parameters
from smis.reproduce.plan import duration_text, hours_text, measured_speeds, no_estimate, training_hours
from smis.reproduce.profiles import NOTEBOOK_INPUTS, PAPER_PROFILES, NotebookInputs
from smis.utils import CheckpointError, project_root, resolve, safe_load

PREFLIGHT_SAMPLE = 64          # pairs per split the preflight opens with smis.data.check (a sample: seconds)

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
            speeds = measured_speeds()
            lines.append(f"training still to do ({', '.join(todo)}): ~{duration_text(hours['fp32'])} on one H100 in "
                         f"fp32, ~{duration_text(hours['bf16'])} in bf16 + channels_last (on a 2-core CPU: "
                         f"~{duration_text(hours['cpu'])}). An estimate: the measured ADE20K speed "
                         f"({speeds['fp32']} / {speeds['bf16']} images/s) "
                         "scaled by each preset's FLOPs (COST_VS_ADE20K).")
        counts = {s: sum(i.state == s for i in self.inputs) for s in ("partial", "missing", "invalid")}
        bad = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        lines.append("result: COMPLETE, every input is in place" if self.complete else
                     f"result: INCOMPLETE ({bad}); " + ("a run would start, with a warning" if self.runnable else
                                                        "a run stops before its first notebook"))
        return "\n".join(lines)


class PreflightFailed(RuntimeError):
    """A paper profile's inputs are missing or unusable; the message is the preflight's report."""


def _per_10k(preset) -> str:
    """The schedule's estimated hours per 10,000 training pairs, for when the dataset cannot be counted."""
    h = training_hours(preset.name, preset.epochs * 10_000) if preset is not None else None
    return f"{hours_text(h)} per 10,000 training pairs, the dataset not counted yet" if h else no_estimate()


def _splits_of(fmt: str) -> tuple[str, ...]:
    """The splits a complete copy of a dataset format has (what notebook 01 checks)."""
    return {"ade20k": ade20k.SPLITS, "deepfashion": deepfashion.SPLITS, "gta5": gta5.SPLITS,
            "cityscapes": cityscapes.SPLITS}.get(fmt, ("train", "test"))


def _inputs_of(stem: str,   # a notebook's stem (NN_topic)
               ) -> NotebookInputs:
    """The notebook's declaration of its inputs; SystemExit naming the fix for a notebook without one."""
    if stem not in NOTEBOOK_INPUTS:
        raise SystemExit(f"notebook {stem} declares no inputs, so the preflight cannot check what it reads. Fix: add "
                         "its entry to NOTEBOOK_INPUTS in smis/reproduce/profiles.py (its dataset, model and run "
                         "parameters), or leave it out with --only.")
    return NOTEBOOK_INPUTS[stem]


def _trains(decl: NotebookInputs, p: dict) -> bool:
    """Whether the notebook trains with parameters `p` (then it reads the dataset's train split, and no models)."""
    return bool(decl.trains_run) or bool(decl.trains_if and p.get(decl.trains_if))


def _dataset_of(decl: NotebookInputs, p: dict) -> tuple[str, str]:
    """(format, root) of the dataset the notebook reads with parameters `p`; ("synthscenes", "") for SynthScenes
    generated on the fly."""
    fmt = p.get(decl.dataset, "synthscenes") if decl.dataset else "synthscenes"
    return fmt, (p.get(decl.data_root) or "") if decl.data_root else ""


def _declared_dataset_reads(decl: NotebookInputs, p: dict) -> list[tuple[str, str, str]]:
    """(format, root, split) of every real dataset split the notebook declared by `decl` reads with parameters `p`."""
    fmt, root = _dataset_of(decl, p)
    if not decl.dataset or (fmt == "synthscenes" and not root):   # no dataset, or SynthScenes made on the fly
        return []
    if not decl.split:                                       # 01: checks every split of a dataset it is given
        return [(fmt, root, s) for s in _splits_of(fmt)] if root else []
    return [(fmt, root, s) for s in (["train"] if _trains(decl, p) else []) + [p.get(decl.split, "test")]]


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
    """The step of the run's newest checkpoint (smis.checkpoint.list_checkpoints), None when there is none."""
    found = list_checkpoints(run_dir)
    return checkpoint_step(found[-1]) if found else None


def _run_input(name: str, source: str, dataset: str, root: str, n_train: int | None, strict: bool,
               used: tuple[str, ...]) -> Input:
    """A training run folder (or a model file) a notebook evaluates: present, its variant and preset, steps
    trained of the preset's schedule (from config.json and the newest checkpoint's name)."""
    path = resolve(source)
    label = f"run {name}"
    fix = (f"python -m smis.train --variant {name} --preset {dataset} --dataset {dataset} "
           f"--data-root {root or '<root>'} "
           f"--run-dir {source}" if name in VARIANTS else "train it with python -m smis.train --run-dir " + source)
    if path.suffix == ".pt":             # a model file (the demo's shipped models), not a run folder
        label = f"model {name}"
        fix = (f"restore the shipped file (git checkout -- {source}) or train the demo models again "
               f"(python scripts/train_demo_models.py{f' --variants {name}' if name in VARIANTS else ''}), "
               "or point the parameter at your exported model or run folder")
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
        cost = f"{full:,} steps, {hours_text(hours)}" if full else _per_10k(preset)
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
            rest = f"; a run at the paper's configuration: {hours_text(hours)}. Fix: {fix} (a new --run-dir)"
        else:
            hours = training_hours(dataset, (total - step) * batch, name) if total else None
            rest = f"; {hours_text(hours)} to finish. Fix: the command that trained it, with --resume"
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


def _planned_run(stem: str,                 # the notebook that trains it (02_train)
                 p: dict,                   # its parameters (notebook 02's training parameters)
                 decl: NotebookInputs,      # its declaration (trains_run: the run folder's parameter)
                 n_train: int | None,       # the training split's pairs; None: not counted
                 strict: bool,              # judge it against the paper's schedule and configuration
                 ) -> Input:
    """The run a notebook trains (02's RUN_DIR): what it will train and the estimated hours."""
    run_dir, label = p[decl.trains_run], f"run {p.get('VARIANT')} (notebook {stem[:2]} trains it)"
    try:
        preset = get_preset(p.get("PRESET", "synthscenes"), **(p.get("PRESET_SET") or {}))
    except (KeyError, TypeError, ValueError) as e:
        return Input("invalid", label, run_dir, f"PRESET / PRESET_SET: {e}", used_by=(stem,))
    batch = p.get("BATCH") or preset.batch_size
    total = p.get("STEPS") or _schedule(preset, n_train, batch)
    done = 0 if p.get("FRESH", True) else (_latest_step(resolve(run_dir)) or 0)
    hours = training_hours(preset.name, max(0, total - done) * batch) if total else None
    what = (f"{total:,} steps of batch {batch}: {hours_text(hours)}" if total
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
        return Input("partial", label, run_dir, "; ".join(short) + "; " + detail, hours, (stem,))
    return Input("todo", label, run_dir, detail, hours, (stem,))


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
    declared = {stem: _inputs_of(stem) for stem in full}
    reads: dict = {}
    for stem, p in full.items():
        for fmt, root, split in _declared_dataset_reads(declared[stem], p):
            reads.setdefault((fmt, root), {}).setdefault(split, set()).add(stem)
    inputs, n_train = _check_datasets(reads, sample, strict)
    trains = {str(resolve(p[declared[stem].trains_run]).resolve()): (stem, p) for stem, p in full.items()
              if declared[stem].trains_run and p.get(declared[stem].trains_run)}
    models: dict = {}                                        # (name, source) -> (dataset, root, notebooks)
    for stem, p in full.items():
        decl = declared[stem]
        if decl.models and not _trains(decl, p):             # a notebook that trains loads no models
            only = str(p.get(decl.only_models, "")) if decl.only_models else ""
            wanted = [v.strip() for v in only.split(",") if v.strip()]
            for name, source in parse_models(p[decl.models]).items():
                if wanted and name not in wanted:
                    continue
                models.setdefault((name, source), (*_dataset_of(decl, p), set()))[2].add(stem)
        for key in decl.model_files:                         # one model file each, named after the parameter
            if isinstance(p.get(key), str) and p[key]:
                models.setdefault((key.lower(), p[key]), (*_dataset_of(decl, p), set()))[2].add(stem)
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
        inputs.append(_planned_run(stem, p, declared[stem], n_train.get(_dataset_of(declared[stem], p)), strict))
    inputs += [Input(*line[:4], used_by=line[4]) for line in real_segmenters.preflight_inputs(full)]
    inputs.append(_gpu_input())
    return Preflight(profile, [stem for stem, _ in plan], inputs)

