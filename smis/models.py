"""Loading the models an evaluation compares, by source string, and the segmenter that scores mask fidelity.

    nets = load_networks("checkpoints/synthscenes_clvae.pt")     # an export, a checkpoint, a run folder
    nets = load_networks("official:ade20k:weights/ade20k")       # the authors' published G and E
    nets = load_networks("groupdnet:deepfashion:weights/smis_df")   # GroupDNet's published G and E (SMIS)
    nets = load_or_untrained("")                                # an untrained seeded clvae (machinery checks)
    parse_models("clvae:checkpoints/a.pt, gaugan_vae:outputs/runs/b")   # {name: source}: notebooks' MODELS
    shipped_provenance()["clvae"]["steps"]                       # how the shipped models were trained (8000)
    seg = load_segmenter_for("synthscenes")                      # the shipped one
    seg = load_segmenter_for("ade20k")                           # CSAIL's UperNet-ResNet101 (smis.real_segmenters)

A source is one of: an exported model or training checkpoint (`smis.train.load_model`), a training run
folder (its latest `checkpoints/step_*.pt`), "official:DATASET:FOLDER" (`smis.official.load_official`
on FOLDER/latest_net_G.pth and latest_net_E.pth), or "groupdnet:DATASET:FOLDER" (`smis.official.load_groupdnet`:
GroupDNet's published files, DATASET in deepfashion, cityscapes, ade20k).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from smis.config import get_preset
from smis.networks import VARIANTS, Networks, build_networks
from smis.official import GROUPDNET_DATASETS, groupdnet_preset, load_groupdnet, load_official
from smis.real_segmenters import NO_SEGMENTER, PROTOCOLS, load_real_segmenter, not_measured, parse_source
from smis.segmenter import Segmenter, load_segmenter
from smis.checkpoint import list_checkpoints, load_model
from smis.utils import pick_device, resolve

SEGMENTERS = {"synthscenes": "checkpoints/synthscenes_segmenter.pt"}   # scripts/train_segmenter.py


def load_networks(source: str | Path,                                # see the module docstring
                  device: str | torch.device | None = "cpu",
                  ) -> Networks:
    """G and E in eval mode from
    - an exported model (.pt) or a training checkpoint (`smis.train.load_model`);
    - a run folder: its latest `checkpoints/step_*.pt`;
    - "official:DATASET:FOLDER": the authors' published latest_net_G.pth / latest_net_E.pth
      (DATASET in ade20k, deepfashion, gta5; `smis.official.load_official`);
    - "groupdnet:DATASET:FOLDER": GroupDNet's published latest_net_G.pth / latest_net_E.pth (the SMIS
      repository; DATASET in deepfashion, cityscapes, ade20k; `smis.official.load_groupdnet`). Their
      deepfashion model has 8 classes (the authors' version), cityscapes 35 label ids."""
    source = str(source)
    for prefix in ("official:", "groupdnet:"):
        if source.startswith(prefix):
            _, dataset, folder = (source.split(":", 2) + ["", ""])[:3]
            if prefix == "groupdnet:" and dataset not in GROUPDNET_DATASETS:
                raise ValueError(f"model source {source!r}: no published GroupDNet for {dataset!r}. Fix: "
                                 f"groupdnet:DATASET:FOLDER with DATASET one of {GROUPDNET_DATASETS}")
            if not folder:
                raise ValueError(f"model source {source!r} names no folder. Fix: {prefix}{dataset or 'DATASET'}"
                                 ":FOLDER, FOLDER holding latest_net_G.pth and latest_net_E.pth")
            folder = resolve(folder)
            files = (folder / "latest_net_G.pth", folder / "latest_net_E.pth")
            if prefix == "official:":
                G, E = load_official(*files, dataset, pick_device(device))
                nets = Networks(G, E, None, G.spec, "clvae", get_preset(dataset))
            else:
                G, E = load_groupdnet(*files, dataset, pick_device(device))
                nets = Networks(G, E, None, G.spec, "groupdnet", groupdnet_preset(dataset))
            nets.meta = {"step": None, "provenance": {"source": source}}
            return nets.eval()
    path = resolve(source)
    if path.is_dir():
        ckpts = list_checkpoints(path)
        if not ckpts:
            raise FileNotFoundError(f"run folder {path} has no checkpoints/step_*.pt. Fix: train it first "
                                    "(python -m smis.train --run-dir ...) or pass a model file.")
        path = ckpts[-1]
    elif not path.exists():
        raise FileNotFoundError(f"model {path} does not exist. Fix: pass an exported model (checkpoints/*.pt), a "
                                "training checkpoint, a run folder or official:DATASET:FOLDER; "
                                "scripts/train_demo_models.py makes the demo models.")
    return load_model(path, device)


def load_or_untrained(source: str | Path,       # an exported model or training checkpoint; "": untrained
                      variant: str = "clvae",    # the untrained model's variant
                      dataset: str = "synthscenes",   # the untrained model's preset
                      seed: int = 0,             # torch.manual_seed before building the untrained model
                      device: str | torch.device | None = "cpu",
                      ) -> Networks:
    """The model to edit: `smis.checkpoint.load_model(source)`, or for source "" an UNTRAINED seeded one
    (right shapes, meaningless images: it checks the machinery only; instance norm, so no running
    statistics). A missing file is a FileNotFoundError naming the fix."""
    if not source:
        torch.manual_seed(seed)
        return build_networks(variant, get_preset(dataset, norm_G="instance"), discriminator=False).eval()
    path = resolve(source)
    if not path.exists():
        raise FileNotFoundError(f"{source} not found. Fix: run `python scripts/train_demo_models.py` (about two hours "
                                "on 2 CPU cores), pass an exported model, or '' for an untrained one")
    return load_model(path, device)


def parse_models(spec: str) -> dict[str, str]:
    """'clvae:checkpoints/a.pt, gaugan_vae:outputs/runs/b' -> {name: source}, split at each entry's
    first ':' (a source may be official:DATASET:FOLDER or groupdnet:DATASET:FOLDER); entries with an empty
    source are dropped."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, source = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"model entry {item!r} must read NAME:SOURCE, e.g. clvae:checkpoints/synthscenes_clvae.pt")
        if source.strip():
            out[name.strip()] = source.strip()
    return out


def parse_variants(spec: str,             # "clvae,no_classwise,...": notebook 05's VARIANTS
                   ) -> list[str]:
    """The variant names of a comma-separated list, each checked against smis.networks.VARIANTS."""
    variants = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"VARIANTS names unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    return variants


def variants_plan(variants: list[str],     # parse_variants(...)
                  train_steps: int = 0,    # > 0: each is trained for this many steps; 0: loaded
                  ) -> str:
    """Notebook 05's first line: the variants and whether they are trained here or loaded."""
    return f"variants: {variants}; {'train ' + str(train_steps) + ' steps each' if train_steps else 'load checkpoints'}"


def variant_sources(variants: list[str],   # the variants to load (parse_variants)
                    spec: str,             # "NAME:source,...": notebook 05's MODELS (parse_models)
                    ) -> dict[str, str]:
    """`parse_models(spec)`, checked to give a source for every variant in `variants` (it may name more)."""
    sources = parse_models(spec)
    missing = [v for v in variants if v not in sources]
    if missing:
        raise ValueError(f"MODELS lacks {missing}; give NAME:path for every variant in VARIANTS")
    return sources


def shipped_provenance(folder: str | Path = "checkpoints",   # where the exported models lie
                       dataset: str = "synthscenes",          # their file names' prefix: <dataset>_<variant>.pt
                       ) -> dict[str, dict]:
    """{variant: provenance} of the shipped models, in VARIANTS' order: the JSON beside each exported model
    (`<folder>/<dataset>_<variant>.json`, written by scripts/train_demo_models.py: its command, steps, batch, seed,
    wall time, device). Variants without one are left out; {} when none is shipped."""
    folder = resolve(folder)
    return {v: json.loads(path.read_text()) for v in VARIANTS if (path := folder / f"{dataset}_{v}.json").is_file()}


def shipped_steps(folder: str | Path = "checkpoints",   # where the exported models lie
                  dataset: str = "synthscenes",          # their file names' prefix
                  ) -> str:
    """The line naming each shipped model's training steps (`shipped_provenance`), notebook 02's first printout
    about them."""
    return (f"the shipped models' training steps ({folder}/{dataset}_<variant>.json): "
            + (", ".join(f"{v} {p['steps']}" for v, p in shipped_provenance(folder, dataset).items())
               or "no shipped models"))


def trained(nets: Networks) -> str:
    """How a model was trained, for captions: "N steps", or "the authors' published weights"."""
    source = str((nets.meta.get("provenance") or {}).get("source", ""))
    published = source.startswith(("official:", "groupdnet:"))
    return "the authors' published weights" if published else f"{nets.meta.get('step')} steps"


def load_segmenter_for(dataset: str,                                 # smis.data.DATASETS key
                       source: str | Path | None = "auto",           # a file, "auto" (SEGMENTERS), "" / None: none
                       device: str | torch.device | None = "cpu",
                       ) -> Segmenter | None:
    """The mask-fidelity segmenter of `dataset`: `source` a file from scripts/train_segmenter.py, "auto"
    the shipped one (SEGMENTERS; None for datasets without one), "" / None: no mask fidelity. On ade20k,
    cityscapes and gta5 the field's published segmenter (`smis.real_segmenters.load_real_segmenter`: "auto"
    its default path, None while that file is absent; or a file / folder, optionally "@S1,S2" scales); on
    deepfashion None (no standard segmenter exists)."""
    if not source:
        return None
    if dataset in NO_SEGMENTER:                            # the mIoU column reads real_segmenters.not_measured
        return None
    if dataset in PROTOCOLS:                               # real data: the field's published segmenter
        if parse_source(str(source))[0] == "auto" and not_measured(dataset, str(source)):
            return None                                    # its default file is absent: "not measured (missing ..)"
        return load_real_segmenter(dataset, str(source), device)
    if source == "auto":
        if dataset not in SEGMENTERS:
            return None
        source = SEGMENTERS[dataset]
    path = resolve(str(source))
    if not path.exists():
        raise FileNotFoundError(f"segmenter {path} does not exist. Fix: train one (python scripts/train_segmenter.py) "
                                "or pass SEGMENTER='' to skip mask fidelity")
    seg = load_segmenter(path, device)
    seg.source = str(source)
    return seg
