"""How well the edits of `smis.editing` work, measured: edit locality, which factor each latent layer moves, the
layer table, the paper's layer-wise split and the "What we learnt" lines of notebook 06.

    edit_locality          share of an object edit's pixel change inside the edited region
    layer_factor_effects   colour vs texture (and shading) change when one layer's code is resampled
    editing_report         over a test set: editable_cases -> locality_summary, layer_effects (per layer)
    layer_table / layer_factor_summary / layer_split   the per-layer table, its plain rows, the paper's split
    read_layer_experiment / experiment_summary / experiment_markdown / experiment_lines / versus_line
                           scripts/layer_experiment.py's JSON
    locality_table / findings   the tables and "What we learnt" lines of notebook 06

Per-layer shares come with 95 % Wilson intervals (`smis.stats.wilson_interval`); whether a layer is used at all
(KL, collapse) is `smis.diagnostics` (`layer_posteriors`, `collapsed_layers`).

    nets = load_or_untrained("checkpoints/synthscenes_clvae.pt")   # smis.models.load_or_untrained
    images, labels, mu = encode_dataset(nets, make_dataset("synthscenes", None, "test", size=64, length=20))
    report = editing_report(nets, labels, mu, torch.Generator().manual_seed(0))

Command line (writes the numbers the README quotes; --out, default benchmarks/results/editing_demo.json):
    python -m smis.edit_measures --model checkpoints/synthscenes_clvae.pt --n 200
"""
from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from smis.checkpoint import load_model, object_factor_of
from smis.data import make_dataset
from smis.data.base import as_hw
from smis.data.synthetic import estimate_factors
from smis.diagnostics import COLLAPSE_KL, LayerDiagnostics, collapsed_layers
from smis.editing import case_mask, encode_dataset, resample_cases, resample_where
from smis.networks import Latents, Networks
from smis.networks.latents import check_class_ids, check_label, code_mask
from smis.progress import Progress
from smis.sampling import chunks
from smis.stats import wilson_interval
from smis.utils import atomic_write_json, device_name, resolve
from smis.viz import to_uint8

# --------------------------------------------------------------------------------------------
# Edit locality and which factor each layer controls

def _class_regions(label: torch.Tensor, classes: torch.Tensor, what: str) -> torch.Tensor:
    """(B, H, W) bool: label == classes[b]; ValueError if a sample's class has no pixel (its edit
    would change nothing and the measurement would be 0 / 0 = NaN). One device sync."""
    if classes.numel() != label.shape[0]:
        raise ValueError(f"{what}: classes must hold one id per sample ({label.shape[0]}), got {classes.tolist()}")
    region = label == classes.to(label.device)[:, None, None]              # (B, H, W)
    found = region.flatten(1).any(1)                                        # (B,)
    if not bool(found.all()):
        b = int((~found).nonzero()[0])
        raise ValueError(f"{what}: class {int(classes[b])} is absent from the mask of sample {b} (it has classes "
                         f"{torch.unique(label[b]).tolist()}); editing it would change nothing. Fix: pick a "
                         "class of that sample's mask (e.g. with edit_cases)")
    return region


def _region_stats(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean of values (B, D, H, W) over the True pixels of region (B, H, W) -> (B, D); NaN if empty."""
    w = region[:, None].to(values.dtype)
    return (values * w).sum((-1, -2)) / w.sum((-1, -2))


def _interior(label: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels whose 4 neighbours share their class (edge-padded, like estimate_factors)."""
    p = F.pad(label[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
    c = p[:, 1:-1, 1:-1]
    return (c == p[:, :-2, 1:-1]) & (c == p[:, 2:, 1:-1]) & (c == p[:, 1:-1, :-2]) & (c == p[:, 1:-1, 2:])


def high_frequency_energy(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean squared 4-neighbour Laplacian of the luminance over region (B, H, W) -> (B,).

    Pass interior pixels as region so the stencil never crosses a class boundary."""
    lum = image.mean(1, keepdim=True)                                       # (B, 1, H, W)
    kernel = lum.new_tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]
    lap = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kernel)     # (B, 1, H, W)
    return _region_stats(lap ** 2, region)[:, 0]


@torch.no_grad()
def edit_locality(nets: Networks, label: torch.Tensor, latents: Latents, classes: torch.Tensor,
                  layers: Sequence[int] | None = None, generator: torch.Generator | None = None,
                  global_code: bool = False, margin: int = 2,
                  before: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Resample class classes[b]'s codes in sample b (the layers given, default all) and measure where
    the image changed. Returns per-sample tensors (B,):

        inside   share of the summed |after - before| that lies inside the edited class's region
        near     the same within `margin` pixels of the region (the generator's convolutions blur edges)
        area     the region's share of the image (what a change spread evenly would score)
        change   mean |after - before| per pixel and channel, in [0, 2] image units

    For a variant without class codes pass global_code=True (the only code it has to resample).
    classes (B,): integer ids in [0, C); classes[b] must occur in label[b] (ValueError otherwise,
    naming the sample, the class and its classes; the measurement would be NaN).
    before (B, 3, H, W): the unedited images G(label, latents) when the caller has them (`reconstructions`:
    one per photo, however many of its classes are edited); None: generated here, with the edits.
    """
    label = check_label(label, nets.spec.num_classes, allow_2d=True)
    classes = check_class_ids(classes, nets.spec.num_classes, label.device)
    region = _class_regions(label, classes, "edit_locality")               # (B, H, W)
    take = None
    if latents.zc is not None:
        take = case_mask(latents, classes) & code_mask(latents.zc.shape[1:3], None, layers, label.device)[None]
    elif not global_code:
        raise ValueError("these latents have no class codes: pass global_code=True to measure resampling z1")
    edited = resample_where(latents, take, generator, global_code)
    before, after = _before_after(nets, label, latents, edited, before)
    diff = (after - before).abs().sum(1)                                    # (B, H, W)
    near = F.max_pool2d(region[:, None].float(), 2 * margin + 1, stride=1, padding=margin)[:, 0] > 0
    total = diff.sum((-1, -2))
    return {"inside": (diff * region).sum((-1, -2)) / total, "near": (diff * near).sum((-1, -2)) / total,
            "area": region.float().mean((-1, -2)), "change": diff.mean((-1, -2)) / 3}


def _before_after(nets: Networks, label: torch.Tensor, latents: Latents, edited: Latents,
                  before: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(G(label, latents), G(label, edited)), each (B, 3, H, W): one generator call for both, or only the
    edits' when `before` is given (checked against the batch)."""
    B = label.shape[0]
    if before is None:
        both = nets.G(torch.cat([label, label]), Latents.cat([latents, edited]))  # one generator call
        return both[:B], both[B:]
    if before.dim() != 4 or before.shape[0] != B or before.shape[2:] != label.shape[1:]:
        raise ValueError(f"before {tuple(before.shape)} must hold one unedited image (3, H, W) per sample of the "
                         f"masks {tuple(label.shape)}. Fix: pass reconstructions(nets, labels, latents)[samples]")
    return before.to(label.device), nets.G(label, edited)


@torch.no_grad()
def reconstructions(nets: Networks, labels: torch.Tensor, latents: Latents, batch_size: int = 64) -> torch.Tensor:
    """The unedited images G(labels, latents) (M, 3, H, W) of M photos, `batch_size` per generator call: what
    every edit of a photo is compared with, generated once per photo instead of once per edited class."""
    labels = check_label(labels, nets.spec.num_classes, allow_2d=True, values=False)
    return torch.cat([nets.G(labels[s], latents[s]) for s in chunks(labels.shape[0], batch_size)])


# The factors a single-class, single-layer edit can change: layer_factor_effects key -> the factor's name.
# "shading_changed" (SynthScenes' object-scale factor) is measured on object-factor data only.
FACTOR_CHANGES = {"mode_changed": "colour mode", "texture_changed": "texture kind", "shading_changed": "shading"}
_ESTIMATE_KEYS = {"mode_changed": "colour_mode", "texture_changed": "texture", "shading_changed": "shading"}


def _estimate(image_uint8: np.ndarray, label: np.ndarray, cls: np.ndarray, estimate: Callable,
              shading: bool = False) -> tuple[list, ...]:
    """Colour mode and texture kind (and with `shading`, the shading direction) of class cls[b] in each
    image (None where not estimated): one list per factor."""
    keys = ("colour_mode", "texture") + (("shading",) if shading else ())
    found = [estimate(im, lab).get(int(c)) for im, lab, c in zip(image_uint8, label, cls)]   # per image (numpy)
    return tuple([None if f is None else f[k] for f in found] for k in keys)


@torch.no_grad()
def layer_factor_effects(nets: Networks, label: torch.Tensor, latents: Latents, classes: torch.Tensor,
                         layers: torch.Tensor, generator: torch.Generator | None = None,
                         estimate: Callable | None = None, before: torch.Tensor | None = None,
                         before_factors: tuple[list, ...] | None = None,
                         object_factor: bool = False) -> dict[str, np.ndarray]:
    """Resample class classes[b]'s code at layer layers[b] only, and measure what changed there.

    Returns per-sample arrays (B,):
        colour_shift   distance between the region's mean RGB (in [0, 1]) before and after
        hf_change      |log2| of the ratio of the region's high-frequency energy after / before
        mode_changed   the estimated colour mode changed (1 / 0; NaN where not estimable)
        texture_changed the estimated texture kind changed (1 / 0; NaN where not estimable)
        shading_changed with `object_factor` (SynthScenes' object-scale factor): the estimated shading
                       direction changed (1 / 0; NaN where not estimable)
    `estimate(image_uint8 (H, W, 3), label (H, W)) -> {class: {"colour_mode", "texture"[, "shading"]}}` reads
    the factors from pixels (default: SynthScenes' `estimate_factors`, with `object_factor` passed on).
    classes / layers (B,): integer ids; classes[b] must occur in label[b] (ValueError otherwise).
    before (B, 3, H, W): the unedited images when the caller has them (see `edit_locality`); before_factors:
    their (colour modes, texture kinds[, shadings]) of class classes[b] when already estimated (`_estimate`).
    """
    if estimate is None:
        estimate = partial(estimate_factors, object_factor=True) if object_factor else estimate_factors
    label = check_label(label, nets.spec.num_classes, allow_2d=True)
    classes = check_class_ids(classes, nets.spec.num_classes, label.device)
    region = _class_regions(label, classes, "layer_factor_effects") & _interior(label)   # (B, H, W)
    edited = resample_cases(latents, classes, layers, generator)
    raw_before, raw_after = _before_after(nets, label, latents, edited, before)
    before, after = (raw_before + 1) / 2, (raw_after + 1) / 2              # [0, 1]
    shift = (_region_stats(after, region) - _region_stats(before, region)).norm(dim=1)
    eps = 1e-6
    hf = (torch.log2(high_frequency_energy(after, region) + eps)
          - torch.log2(high_frequency_energy(before, region) + eps)).abs()
    out = {"colour_shift": shift.cpu().numpy(), "hf_change": hf.cpu().numpy()}
    lab_np, cls_np = label.cpu().numpy(), classes.cpu().numpy()
    f0 = (_estimate(to_uint8(raw_before), lab_np, cls_np, estimate, object_factor) if before_factors is None
          else before_factors)
    f1 = _estimate(to_uint8(raw_after), lab_np, cls_np, estimate, object_factor)
    changed = lambda a, b: np.array([np.nan if x is None or y is None else float(x != y) for x, y in zip(a, b)])
    for key, a, b in zip(FACTOR_CHANGES, f0, f1):   # mode, texture[, shading]
        out[key] = changed(a, b)
    return out


def edit_cases(label: torch.Tensor, num_classes: int, min_pixels: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """All (sample, class) pairs where the class covers at least min_pixels: (sample ids, class ids)."""
    label = check_label(label, num_classes, allow_2d=True)
    counts = F.one_hot(label.reshape(label.shape[0], -1), num_classes).sum(1)   # (B, C)
    return torch.nonzero(counts >= min_pixels, as_tuple=True)


def editable_cases(labels: torch.Tensor,           # (M, H, W) class ids
                   latents: Latents,               # (M, ...) the photos' codes (encoder means)
                   num_classes: int,               # C
                   min_pixels: int = 48,           # a class must cover at least this many pixels
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`edit_cases` less the cases whose class the codes mark absent at every layer (`case_mask` refuses
    those; it happens where a class is in the mask but too small for every latent layer's grid):
    (sample ids, class ids), each (cases,)."""
    samples, classes = edit_cases(labels, num_classes, min_pixels)
    if latents.zc is not None and latents.zc.shape[2] > 1:
        dev = latents.present.device
        seen = latents.present[samples.to(dev), :, classes.to(dev)].any(-1).to(samples.device)   # (cases,)
        samples, classes = samples[seen], classes[seen]
    return samples, classes


def _batched(measure: Callable[[slice], dict], n: int, batch_size: int, cat: Callable, desc: str = "") -> dict:
    """Run measure(s) over chunks s of range(n) and join each returned entry with `cat`; a progress bar
    named `desc` (none for "")."""
    parts = [measure(s) for s in Progress(chunks(n, batch_size), desc=desc, disable=not desc)]   # batches of cases
    return {k: cat([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def locality_summary(nets: Networks, labels: torch.Tensor, latents: Latents, samples: torch.Tensor,
                     classes: torch.Tensor, generator: torch.Generator, batch_size: int = 64,
                     before: torch.Tensor | None = None) -> dict[str, float]:
    """`edit_locality` of every case (sample samples[j], class classes[j]; all its codes resampled, or the
    global code for a variant without class codes), in batches of cases drawing from `generator` in order.
    before (M, 3, H, W): the photos' unedited images (`reconstructions`; None: made here, once per photo).
    Returns the means of inside / near / area / change over the cases that changed the image, and the
    median of inside ("inside_median"), as plain floats."""
    before = reconstructions(nets, labels, latents, batch_size) if before is None else before

    def measure(s):
        i = samples[s]
        r = edit_locality(nets, labels[i], latents[i], classes[s], generator=generator, global_code=latents.zc is None,
                          before=before[i])
        return {k: v.cpu() for k, v in r.items()}
    loc = _batched(measure, len(samples), batch_size, torch.cat,
                   f"edit locality {getattr(nets, 'variant', '')}")       # (cases,) each
    ok = loc["change"] > 0
    return ({k: float(loc[k][ok].mean()) for k in ("inside", "near", "area", "change")}
            | {"inside_median": float(loc["inside"][ok].median())})


def layer_cases(nets: Networks, labels: torch.Tensor, samples: torch.Tensor, classes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every case (samples[j], classes[j]) at every latent layer where the class is visible at that layer's
    scale (`LatentSpec.presence`): (sample ids, class ids, layer positions), case-major."""
    L = len(nets.spec.layers)
    present = nets.spec.presence(labels)[samples, :, classes]            # (cases, L) class at that CSE block's scale
    cases_i = samples.repeat_interleave(L)                                # every case at every layer
    cases_c = classes.repeat_interleave(L)
    cases_l = torch.arange(L, device=samples.device).repeat(len(samples))
    keep = present.reshape(-1)
    return cases_i[keep], cases_c[keep], cases_l[keep]


@torch.no_grad()
def layer_effects(nets: Networks, labels: torch.Tensor, latents: Latents, samples: torch.Tensor,
                  classes: torch.Tensor, generator: torch.Generator, batch_size: int = 64,
                  before: torch.Tensor | None = None,
                  object_factor: bool = False,      # also measure the object-scale factor (shading) changes
                  ) -> list[dict]:
    """`layer_factor_effects` of every case at every layer where its class is visible (`layer_cases`),
    in batches drawing from `generator` in order, summarised per latent layer: one row per layer l with
    its encoder layer, the number of cases and the mean (NaN-skipping) colour shift, hf change and the
    shares of edits whose colour mode / texture kind (with `object_factor`: shading direction) changed.
    Each share `k` comes with `k_n` (the cases where the factor was estimable before and after) and its 95 %
    Wilson interval `k_lo`, `k_hi` over those cases (`wilson_interval`; it treats the cases as independent,
    though a photo contributes one per class), and `moves_most` names the factor with the largest share
    (None when every share is 0 or NaN). before (M, 3, H, W): the photos' unedited images (`reconstructions`;
    None: made here). Each photo's unedited image is generated and its factors estimated once, whatever the
    number of its cases."""
    cases_i, cases_c, cases_l = layer_cases(nets, labels, samples, classes)
    before = reconstructions(nets, labels, latents, batch_size) if before is None else before
    photos = torch.unique(cases_i).tolist()
    lab_np = labels.cpu().numpy()
    unedited = dict(zip(photos, (estimate_factors(im, lab_np[m], object_factor=object_factor)
                                 for m, im in zip(photos, to_uint8(before[photos])))))   # photo -> {class: factors}
    keys = [k for k in FACTOR_CHANGES if object_factor or k != "shading_changed"]

    def measure(s):
        i = cases_i[s]
        found = [unedited[int(m)].get(int(c)) for m, c in zip(i.tolist(), cases_c[s].tolist())]
        factors = tuple([None if f is None else f[_ESTIMATE_KEYS[k]] for f in found] for k in keys)
        return layer_factor_effects(nets, labels[i], latents[i], cases_c[s], cases_l[s], generator,
                                    before=before[i], before_factors=factors, object_factor=object_factor)
    eff = _batched(measure, len(cases_i), batch_size, np.concatenate,
                   f"layer effects {getattr(nets, 'variant', '')}")                       # (layer cases,) each
    lay = cases_l.cpu().numpy()
    rows = []
    for l in range(len(nets.spec.layers)):                              # summary table rows
        m = lay == l
        row = {"layer": l, "encoder_layer": int(nets.spec.layers[l]), "cases": int(m.sum())}
        for k in ("colour_shift", "hf_change", "mode_changed", "texture_changed"):
            row[k] = float(np.nanmean(eff[k][m])) if m.any() else float("nan")
        if object_factor:
            row["shading_changed"] = float(np.nanmean(eff["shading_changed"][m])) if m.any() else float("nan")
        rows.append(row)
    lay_hot = np.eye(len(nets.spec.layers), dtype=bool)[lay]                   # (layer cases, L)
    for k in keys:                                                              # intervals, all layers at once
        ok = ~np.isnan(eff[k])
        n = (lay_hot & ok[:, None]).sum(0)                                      # (L,) estimable cases
        hits = (lay_hot & (ok & (np.nan_to_num(eff[k]) > 0))[:, None]).sum(0)   # (L,) cases that changed it
        lo, hi = wilson_interval(hits, n)
        for row, nn, a, b in zip(rows, n, lo, hi):
            row.update({f"{k}_n": int(nn), f"{k}_lo": float(a), f"{k}_hi": float(b)})
    for row in rows:
        shares = {FACTOR_CHANGES[k]: row[k] for k in keys}
        best = max(shares, key=lambda f: -1.0 if np.isnan(shares[f]) else shares[f])
        row["moves_most"] = best if shares[best] > 0 else None
    return rows


@torch.no_grad()
def editing_report(nets: Networks, labels: torch.Tensor, latents: Latents, generator: torch.Generator,
                   batch_size: int = 64, min_pixels: int = 48, object_factor: bool = False) -> dict:
    """Edit locality over every (image, class) case (`editable_cases`, `locality_summary`) and, for
    class-code models, the colour / texture effect of each layer (`layer_effects`), drawing from
    `generator` in that order. labels (M, H, W), latents (M, ...) (encoder means). `object_factor`: the photos
    are SynthScenes with its object-scale factor; the layer rows also measure shading changes. Returns plain data:
    {"cases", "images", "edit", "locality"} and, with class codes, "layers" (one row per latent layer)."""
    samples, classes = editable_cases(labels, latents, nets.spec.num_classes, min_pixels)
    if not len(samples):
        raise ValueError(f"editing_report: no class covers {min_pixels} pixels in any of the {labels.shape[0]} masks, "
                         "so there is nothing to edit. Fix: pass more or larger masks, or a smaller min_pixels")
    has_codes = latents.zc is not None
    edit = "resample one class's codes at every layer" if has_codes else "resample the global code (no class codes)"
    before = reconstructions(nets, labels, latents, batch_size)           # every photo unedited, once
    report = {"cases": int(len(samples)), "images": int(labels.shape[0]), "edit": edit,
              "locality": locality_summary(nets, labels, latents, samples, classes, generator, batch_size, before)}
    if has_codes:
        report["layers"] = layer_effects(nets, labels, latents, samples, classes, generator, batch_size, before,
                                         object_factor)
    return report


def layer_table(nets: Networks, report: dict, posteriors: dict[str, np.ndarray] | None = None):
    """The layer table (Sec. 4.4.3): one row per latent layer in both terms, the encoder layer it comes
    from and the generator blocks it feeds (`Generator.code_index`), with `editing_report`'s per-layer
    effects (colour shift, colour-mode / texture-kind change, hf change; on object-factor data the shading
    change), each change share with its 95 % Wilson interval ("... lo", "... hi") and estimable cases
    ("... n"), the factor the layer "moves most", and, given `layer_posteriors`, the layer's KL and mean |mu|.
    A pandas DataFrame indexed by latent layer; `layer_factor_summary` reads it back as plain rows."""
    if "layers" not in report:
        raise ValueError("this report has no per-layer rows (a model without class codes); pass a clvae report")
    blocks = {l: [b for b, i in nets.G.code_index.items() if i == l] for l in range(len(nets.spec.layers))}
    t = pd.DataFrame(report["layers"]).set_index("layer")
    t.insert(1, "generator blocks", [", ".join(blocks.get(int(l), [])) or "-" for l in t.index])
    if posteriors is not None:
        t["KL"] = posteriors["kl"][t.index.to_numpy()]
        t["mean |mu|"] = posteriors["mean_abs_mu"][t.index.to_numpy()]
    names = {"encoder_layer": "encoder layer", "colour_shift": "colour shift", "hf_change": "hf change",
             "moves_most": "moves most"}
    for key, factor in FACTOR_CHANGES.items():
        names.update({key: f"{factor} changed", f"{key}_lo": f"{factor} changed lo",
                      f"{key}_hi": f"{factor} changed hi", f"{key}_n": f"{factor} n"})
    return t.rename(columns=names)


def layer_factor_summary(table: pd.DataFrame,   # layer_table(...) (rounded or not)
                         ) -> list[dict]:
    """Per latent layer of a layer table, what resampling its code moves: plain dicts
    {"layer", "moves_most" (factor name, or None when no factor ever changed), "shares" {factor: share of
    edits that changed it}, "intervals" {factor: [low, high], 95 % Wilson}} with the factors measured
    (colour mode, texture kind and, on object-factor data, shading). What the editor shows per layer."""
    factors = [f for f in FACTOR_CHANGES.values() if f"{f} changed" in table.columns]
    if not factors:
        raise ValueError("this table has no factor-change columns. Fix: pass layer_table(nets, editing_report(...))")
    out = []
    for layer, r in table.iterrows():                                   # a handful of rows: plain data
        shares = {f: float(r[f"{f} changed"]) for f in factors}
        intervals = {f: [float(r[f"{f} changed lo"]), float(r[f"{f} changed hi"])] for f in factors
                     if f"{f} changed lo" in table.columns}
        moves = r["moves most"] if "moves most" in table.columns else None
        out.append({"layer": int(layer), "moves_most": None if moves is None or moves != moves else str(moves),
                    "shares": shares, "intervals": intervals})
    return out


APPEARANCE = ("colour mode", "shading")          # global / object-scale appearance: what the paper's coarse codes move
DETAIL = ("texture kind",)                        # texture and edges: what its fine codes move


def layer_split(table: pd.DataFrame,              # layer_table(...) or its JSON records as a DataFrame
                ) -> dict:
    """Whether the paper's layer-wise split (Sec. 4.4.3, Fig. 15) appears in a measured layer table: codes fed
    to the coarse generator blocks move an object's appearance (colour mode or, on object-factor data, its
    shading), codes fed to the fine blocks move its texture. Coarse layers: the upper half (l >= L / 2, the
    first generator blocks); fine: layer 0. Each part holds only where the 95 % Wilson intervals separate: some
    coarse layer changes an appearance factor more often than texture (the low end of the one above the high
    end of the other), and layer 0 changes texture more often than every appearance factor.
    Returns {"appears", "coarse_moves_appearance", "fine_moves_texture", "coarse_layers", "sentence"}."""
    t = table.set_index("layer") if "layer" in table.columns else table
    L = len(t)
    coarse = [int(l) for l in t.index if int(l) >= L / 2]
    have = lambda fs: [f for f in fs if f"{f} changed lo" in t.columns]
    app, det = have(APPEARANCE), have(DETAIL)
    if not app or not det:
        raise ValueError("layer_split needs the factor-change intervals of a layer_table (colour mode, texture kind)")
    lo = lambda l, f: float(t.loc[l, f"{f} changed lo"])
    hi = lambda l, f: float(t.loc[l, f"{f} changed hi"])
    share = lambda l, f: float(t.loc[l, f"{f} changed"])
    pct = lambda x: f"at most {100 * x:.0f} %" if x >= 0.005 else "under 1 %"
    coarse_ok = any(lo(l, a) > max(hi(l, d) for d in det) for l in coarse for a in app)
    fine = t.index[0]
    fine_ok = all(lo(fine, d) > hi(fine, a) for d in det for a in app)
    top = lambda l: max(app + det, key=lambda f: share(l, f))
    best = max(coarse, key=lambda l: max(share(l, f) for f in app + det))
    sentence = (("The paper's split appears: " if coarse_ok and fine_ok else "The paper's split does not appear: ")
                + f"the coarse layers ({', '.join(map(str, coarse))}) change "
                + ("an object's appearance more often than its texture" if coarse_ok else "no appearance factor more "
                   "often than texture")
                + (f" ({pct(share(best, top(best)))} of edits, {top(best)}, layer {best})"
                   if share(best, top(best)) > 0 else " (none of their edits changes a measured factor)")
                + "; layer 0 "
                + ("changes texture more often than appearance" if fine_ok else
                   f"changes {top(fine)} most ({100 * share(fine, top(fine)):.0f} %), texture in "
                   f"{100 * share(fine, det[0]):.0f} %") + ".")
    return {"appears": bool(coarse_ok and fine_ok), "coarse_moves_appearance": bool(coarse_ok),
            "fine_moves_texture": bool(fine_ok), "coarse_layers": coarse, "sentence": sentence}


def read_layer_experiment(path: str | Path,      # scripts/layer_experiment.py's JSON (docs/layer_experiment.json)
                          ) -> dict:
    """The layer-wise experiment as measured: {"models": {name: its entry (model, step, options, photos, edits,
    inactive_layers, verdict)}, "tables": {name: layer table (DataFrame indexed by latent layer)}, "splits": {name:
    layer_split}, "versus": {name: paired rows minus the reference (DataFrame indexed by score)}, "command", "cpu"}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        models = data["models"]
        ref = next((m["versus"]["reference"] for m in models.values() if "versus" in m), None)
        models = {k: models[k] for k in sorted(models, key=lambda k: k != ref)}   # the reference first
        tables = {k: pd.DataFrame(m["layers"]).set_index("layer") for k, m in models.items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no layer experiment there. Fix: run python scripts/layer_experiment.py "
                                "NAME:MODEL ... --out " + str(path)) from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a layer experiment written by scripts/layer_experiment.py ({e!r}). Fix: "
                         "write it again with that script") from None
    versus = {k: pd.DataFrame(m["versus"]["rows"]).set_index("score")[
                 [m["versus"]["reference"], "system", "difference", "CI low", "CI high", "masks"]]
              for k, m in models.items() if "versus" in m}
    return {"models": models, "tables": tables, "splits": {k: layer_split(t) for k, t in tables.items()},
            "versus": versus, "command": data.get("command"), "cpu": data.get("cpu")}


def experiment_summary(experiment: dict,         # read_layer_experiment(...)
                       ) -> pd.DataFrame:
    """One row per (model, latent layer): KL, active units (of the measurable ones), and per measured factor the
    share of single-layer edits that changed it, as "% [low-high]" with its 95 % Wilson interval."""
    rows = {}
    for name, t in experiment["tables"].items():
        factors = [f for f in FACTOR_CHANGES.values() if f"{f} changed" in t.columns]
        for layer, r in t.iterrows():
            row = {"generator blocks": r.get("generator blocks"), "KL": round(float(r["KL"]), 2),
                   "active units": f"{int(r['active units'])} / {int(r['units'])}"}
            for f in factors:
                row[f"{f} changed (%)"] = (f"{100 * r[f'{f} changed']:.0f} [{100 * r[f'{f} changed lo']:.0f}-"
                                           f"{100 * r[f'{f} changed hi']:.0f}]")
            rows[(name, int(layer))] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["model", "layer"])


def experiment_markdown(experiment: dict,        # read_layer_experiment(...)
                        ) -> str:
    """The layer-wise experiment as the README's Markdown table: one row per latent layer (with the generator
    blocks it feeds), one column per model: KL (nats per image), active units, and the % of single-layer edits
    that changed the colour mode / the shading / the texture kind with 95 % Wilson intervals."""
    summary = experiment_summary(experiment)
    names = list(experiment["tables"])
    cols = [c for c in ("colour mode changed (%)", "shading changed (%)", "texture kind changed (%)")
            if c in summary.columns]
    short = {"colour mode changed (%)": "colour", "shading changed (%)": "shading",
             "texture kind changed (%)": "texture"}
    lines = ["| layer (blocks) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for layer in summary.loc[names[0]].index:
        blocks = summary.loc[(names[0], layer), "generator blocks"]
        cells = []
        for n in names:
            r = summary.loc[(n, layer)]
            cells.append(f"KL {r['KL']:.2f}, {r['active units']} AU; "
                         + ", ".join(f"{short[c]} {r[c]}" for c in cols))
        where = f"{layer} ({blocks})" if isinstance(blocks, str) and blocks else str(layer)
        lines.append(f"| {where} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def experiment_lines(experiment: dict,           # read_layer_experiment(...)
                     ) -> str:
    """Per model of the layer-wise experiment (notebook 06): its file, step and options (none: the paper's
    objective) and inactive latent layers, the sentence `layer_split` built from its table, and for a model
    compared with a reference the verdict: what it is worse on (95 % intervals off 0), whether every layer is
    active, and whether it was shipped."""
    lines = []
    for name, m in experiment["models"].items():
        options = " ".join(m.get("options") or []) or "the paper's objective"
        lines.append(f"{name}: {m['model']} (step {m['step']}; {options}); inactive latent layers: "
                     f"{m['inactive_layers'] or 'none'}\n  {experiment['splits'][name]['sentence']}")
        if "verdict" in m:
            v = m["verdict"]
            lines.append(f"  minus {m['versus']['reference']}: worse on {v['worse_on'] or 'nothing'} (95 % intervals "
                         f"off 0); all layers active: {v['all_layers_active']} -> "
                         f"{'shipped' if v['ship'] else 'not shipped'}")
    return "\n".join(lines)


def versus_line(versus: pd.DataFrame,            # read_layer_experiment(...)["versus"][name]: rows by score
                ) -> str:
    """One sentence of a paired comparison: per score the difference with its 95 % interval."""
    parts = []
    for score, r in versus.iterrows():
        ci = "" if pd.isna(r["CI low"]) else f" [{r['CI low']:.3f}, {r['CI high']:.3f}]"
        parts.append(f"{score} {r['difference']:+.3f}{ci}")
    return "; ".join(parts)


def locality_table(reports: dict[str, dict]) -> pd.DataFrame:
    """One row per model of `editing_report`s {name: report}: cases, inside, near, area, change,
    inside_median (the edit-locality table of notebook 06)."""
    t = pd.DataFrame({k: {**r["locality"], "cases": r["cases"]} for k, r in reports.items()}).T
    t.index.name = "model"
    return t[["cases", "inside", "near", "area", "change", "inside_median"]]


def measure_edits(nets: Networks,                  # the class-code model (clvae) edited
                  dataset,                         # its encoded test photos (SynthScenes test split)
                  labels: torch.Tensor,            # (M, H, W) their masks
                  codes: Latents,                  # (M, ...) their encoder means
                  n_eval: int,                     # the first n_eval photos (at most M) are edited
                  seed: int,                       # seed of each report's generator
                  posteriors: dict[str, np.ndarray],   # diagnostics.layer_posteriors over the same photos
                  diagnostics: LayerDiagnostics,   # diagnostics.layer_diagnostics over the same photos
                  baseline: Networks | None = None,    # a model without class codes (gaugan_vae); None: none
                  object_factor: bool = False,     # the photos carry the object-scale factor (shading measured)
                  ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Notebook 06's measurements: `editing_report` of `nets` (key "clvae") and of `baseline` (key "gaugan_vae",
    its codes encoded from the same photos) over the first `n_eval` photos, each drawing from a generator seeded
    `seed`; the locality table (`locality_table`) and the layer table (`layer_table` with the posteriors, joined with
    the diagnostics' active units, units and classes visible), both rounded to 3 decimals. Returns
    (report, locality, layers); `locality_caption` and `layer_effects_caption` describe the tables."""
    n = min(n_eval, len(dataset))
    report = {"clvae": editing_report(nets, labels[:n], codes[:n], torch.Generator().manual_seed(seed),
                                      object_factor=object_factor)}
    if baseline is not None:
        _, _, base_codes = encode_dataset(baseline, dataset, n=n)
        report["gaugan_vae"] = editing_report(baseline, labels[:n], base_codes, torch.Generator().manual_seed(seed),
                                              object_factor=object_factor)
    locality = locality_table(report).round(3)
    layers = layer_table(nets, report["clvae"], posteriors)
    layers = layers.join(diagnostics.table()[["active units", "units", "classes visible"]]).round(3)
    return report, locality, layers


def locality_caption(report: dict) -> str:
    """The locality table's caption (notebook 06): how many photos were edited (`measure_edits`' report)."""
    return (f"Edit locality over every class of {report['clvae']['images']} test photos: share of the pixel change of "
            "an object edit inside the object, within 2 px of it, and the object's share of the image.")


def layer_effects_caption(n_photos: int,     # the encoded test photos the posteriors and diagnostics read
                          ) -> str:
    """The layer table's caption (notebook 06): what each column of `measure_edits`' layer table means."""
    return ("Each latent layer (0 = fine ... L-1 = coarse): the encoder layer it comes from, the generator blocks it "
            "feeds, what resampling one class's code at that layer alone changes in that class's region (colour shift "
            "in RGB [0, 1]; share of edits whose estimated colour mode / texture kind (on object-factor data: shading "
            "direction) changed, with its 95 % Wilson interval over the edits (lo, hi) and the edits where it was "
            "estimable (n), and the factor the layer moves most; |log2| change of high-frequency "
            f"energy), and the layer's KL and mean |mu| over {n_photos} encoded test photos (near 0: collapsed), its "
            "active units (of the measurable class-code dimensions, `units`) and the share of classes visible at its "
            "block size.")


def findings(reports: dict[str, dict],            # {"clvae": editing_report, optional "gaugan_vae": baseline's}
             layers: pd.DataFrame,                 # layer_table(nets, reports["clvae"], posteriors) (as shown)
             editor_ms: float | None = None,       # median editor slider update, ms (`Editor.latency_table`)
             threads: int | None = None,           # torch threads the editor ran with
             ) -> list[str]:
    """The "What we learnt" lines of notebook 06, from this run's numbers: edit locality (against the
    baseline's when given), what the coarsest and finest latent layers change, whether the paper's split
    (coarse codes move colour, fine codes move texture) appears, collapsed layers, the editor's latency."""
    loc = reports["clvae"]["locality"]
    lines = [f"- Object edits are local: resampling one class's codes puts {100 * loc['inside']:.0f} % of the pixel "
             f"change inside the object (which covers {100 * loc['area']:.0f} % of the image on average) and "
             f"{100 * loc['near']:.0f} % within 2 pixels of it"
             + (f"; the baseline without class codes puts {100 * reports['gaugan_vae']['locality']['inside']:.0f} % "
                "inside" if "gaugan_vae" in reports else "") + "."]
    deep, fine = layers.iloc[-1], layers.iloc[0]
    L = len(layers)
    lines.append(f"- Coarsest latent layer ({L - 1}, encoder layer {int(deep['encoder layer'])}, feeds "
                 f"{deep['generator blocks']}): colour mode changed in {100 * deep['colour mode changed']:.0f} % of "
                 f"edits, texture kind in {100 * deep['texture kind changed']:.0f} %, KL {deep['KL']:.3f}. Finest (0, "
                 f"encoder layer {int(fine['encoder layer'])}, feeds {fine['generator blocks']}): colour "
                 f"{100 * fine['colour mode changed']:.0f} %, texture {100 * fine['texture kind changed']:.0f} %, "
                 f"KL {fine['KL']:.3f}.")
    collapsed = [int(layers.index[j]) for j in collapsed_layers(layers["KL"].to_numpy())]
    split = (deep["colour mode changed"] > deep["texture kind changed"]
             and fine["texture kind changed"] > deep["texture kind changed"])
    lines.append("- The paper's split (coarse codes move colour, fine codes move texture) "
                 + ("**appears** here." if split else "**does not appear** here.")
                 + (f" Latent layers {collapsed} have collapsed to the prior (KL < {COLLAPSE_KL}): their codes carry "
                    "nothing." if collapsed else f" No latent layer has collapsed (every KL >= {COLLAPSE_KL})."))
    if editor_ms is not None:
        lines.append(f"- Editor: median {editor_ms:.0f} ms per slider update here "
                     f"({threads} thread(s)), against a 150 ms interactive budget.")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+",
                   default=["checkpoints/synthscenes_clvae.pt", "checkpoints/synthscenes_gaugan_vae.pt"])
    p.add_argument("--n", type=int, default=200, help="SynthScenes test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/editing_demo.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = {"n_images": a.n, "seed": a.seed, "dataset": None,            # the models' test size: set below
               "device": device_name(torch.device("cpu")), "models": {}}
    sizes = []
    for path in a.model:
        t0 = time.time()
        nets = load_model(resolve(path), "cpu")
        size = nets.preset.image_size
        sizes += [] if size in sizes else [size]
        object_factor = object_factor_of(nets)          # the SynthScenes data it trained on
        ds = make_dataset("synthscenes", None, "test", size=size, length=a.n, object_factor=object_factor)
        _, labels, mu = encode_dataset(nets, ds)
        g = torch.Generator().manual_seed(a.seed)
        rep = editing_report(nets, labels, mu, g, object_factor=object_factor)
        rep.update(variant=nets.variant, step=(getattr(nets, "meta", {}) or {}).get("step"),
                   seconds=round(time.time() - t0, 1), **({"object_factor": True} if object_factor else {}))
        results["models"][str(path)] = rep
        print(f"{path}: {rep['locality']}")
        for row in rep.get("layers", []):
            print("  ", row)
    results["dataset"] = f"synthscenes test split, {', '.join(f'{h}x{w}' for h, w in map(as_hw, sizes))}, seed 0"
    atomic_write_json(results, resolve(a.out))
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
