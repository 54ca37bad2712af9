"""Is each latent layer used? Per-layer diagnostics of a model's posterior (issue 22, item 1).

    d = layer_diagnostics(nets, images, labels)       # images (M, 3, H, W), labels (M, H, W): M ~ 64 is enough
    d.table()                                          # one row per latent layer: KL, active units, classes visible
    d.inactive                                         # [layer, ...] whose codes carry nothing
    d.describe(3)   # "layer 3 is inactive (KL 0.004, 0/64 active units): its codes carry (almost) nothing ..."
    layer_posteriors(nets, images, labels)             # per layer: KL and mean |mu| (notebook 06's printout)
    collapsed_layers(kl)                               # the posterior-collapse diagnostic: layers with KL < COLLAPSE_KL

Per latent layer l (0 = the finest, feeding up_2; L - 1 the coarsest, feeding head_0):

- **KL**: Eq. 18's class term at that layer, the mean over the classes present of each class code's KL, averaged
  over the images (nats; `smis.losses.kl_terms`).
- **Active units** (Burda et al. 2016, "Importance Weighted Autoencoders"): a code dimension is active when
  its posterior mean varies across the data, A_u = Var_x(E_q[u | x]) > 0.01 (`ACTIVE_VAR`). Counted per class code,
  over the images where that class is present at the layer (a class seen in fewer than 2 images has no variance
  to measure and is left out of `units`); reported as a count and a share of the measurable units.
- **Classes visible**: the share of an image's classes still present in the label map at the size of the generator
  block this layer feeds (`LatentSpec.presence`: the CSE map of encoder layer l is at 1/2^l of the label, the same
  grid as the block it conditions), averaged over images. A class missing there has no pixels for its code to act on.

A layer is **inactive** when its KL is below `COLLAPSE_KL` or none of its units is active: its codes carry (almost)
nothing about the photo, and resampling them changes little or nothing. Everything is batched over classes,
dimensions and layers; only the images go in batches.

Which factor each layer moves is an expensive measurement (many edits, a factor estimator), so it is stored beside
the checkpoint, `<checkpoint stem>.layers.json` (`layer_factors_path`), and read back by the editor:

    {"format": "smis.layer_factors/1", "model": "synthscenes_clvae.pt",
     "layers": [{"layer": 0, "moves_most": "texture kind", "shares": {"colour mode": 0.08, "texture kind": 0.41},
                 "intervals": {...}}, ...],      # edit_measures.layer_factor_summary(table): one entry per latent layer
                                                 # (moves_most null: no measured factor changed)
     ...}                                        # anything else: provenance (command, images, seed, intervals)

`write_layer_factors(checkpoint, summary, **provenance)` writes it (atomically), `read_layer_factors(checkpoint)`
reads it (None when there is none).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from smis.losses import kl_terms
from smis.networks import Networks, label_presence
from smis.utils import atomic_write_json, resolve

COLLAPSE_KL = 0.05     # nats per image: a latent layer whose KL is below this has collapsed to the prior
ACTIVE_VAR = 0.01      # Burda et al. 2016: a unit is active when Var_x(E_q[u | x]) exceeds this
LAYER_FACTORS_FORMAT = "smis.layer_factors/1"   # the JSON beside a checkpoint: which factor each layer moves


@dataclass(frozen=True)
class LayerDiagnostics:
    """The diagnostics of one model's latent layers (arrays of length L, index = latent layer)."""

    kl: np.ndarray                 # (L,) KL per image, Eq. 18's class term at the layer
    active_units: np.ndarray       # (L,) class-code dimensions with Var_x(mu) > ACTIVE_VAR
    units: np.ndarray              # (L,) measurable class-code dimensions (classes present in >= 2 images) x N
    classes_visible: np.ndarray    # (L,) mean share of an image's classes present at the layer's block size
    images: int                    # M, the images measured

    @property
    def active_share(self) -> np.ndarray:
        """(L,) active units / measurable units (NaN where nothing is measurable)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.units > 0, self.active_units / np.maximum(self.units, 1), np.nan)

    @property
    def active(self) -> np.ndarray:
        """(L,) bool: KL >= COLLAPSE_KL and at least one active unit."""
        return (self.kl >= COLLAPSE_KL) & (self.active_units > 0)

    @property
    def inactive(self) -> list[int]:
        """Latent layers whose codes carry nothing (see `active`)."""
        return [int(l) for l in np.flatnonzero(~self.active)]

    def describe(self, layer: int) -> str:
        """One line for the editor: 'layer 3 is inactive (KL 0.004, 0/64 active units): its codes carry (almost)
        nothing about the photo, resampling it changes little or nothing', or 'layer 0 is active (KL 1.31, 37/64 active
        units)'. ("Little": G was trained on prior noise at a collapsed layer and may still answer it a little;
        on the shipped clvae, resampling one class at layer 2, 3 or 4 of 8 test photos moved the image by 0.04 to 6
        grey levels (mean |change|, 0-255), against 8-21 at layer 0.)"""
        if not 0 <= layer < len(self.kl):
            raise ValueError(f"latent layer {layer} does not exist; this model has layers 0..{len(self.kl) - 1}")
        stats = f"KL {self.kl[layer]:.3g}, {int(self.active_units[layer])}/{int(self.units[layer])} active units"
        if self.active[layer]:
            return f"layer {layer} is active ({stats})"
        return (f"layer {layer} is inactive ({stats}): its codes carry (almost) nothing about the photo, "
                "resampling it changes little or nothing")

    def table(self) -> pd.DataFrame:
        """One row per latent layer: KL, active units, units, active share, classes visible, active."""
        t = pd.DataFrame({"KL": self.kl, "active units": self.active_units, "units": self.units,
                          "active share": self.active_share, "classes visible": self.classes_visible,
                          "active": self.active})
        t.index.name = "latent layer"
        return t

    def columns(self) -> dict[str, float]:
        """Flat {name: value} for a curve row: 'KL layer l', 'active units layer l', 'active share layer l',
        'classes visible layer l' (smis.curves.checkpoint_scores)."""
        out = {}
        for name, values in (("KL", self.kl), ("active units", self.active_units),
                             ("active share", self.active_share), ("classes visible", self.classes_visible)):
            out.update({f"{name} layer {l}": float(v) for l, v in enumerate(values)})
        return out

    def to_json(self) -> dict:
        """Plain lists (a JSON beside a checkpoint, `from_json` reads it back)."""
        return {"kl": self.kl.tolist(), "active_units": self.active_units.tolist(), "units": self.units.tolist(),
                "classes_visible": self.classes_visible.tolist(), "images": self.images}

    @classmethod
    def from_json(cls, d: dict) -> "LayerDiagnostics":
        return cls(np.asarray(d["kl"], float), np.asarray(d["active_units"], int), np.asarray(d["units"], int),
                   np.asarray(d["classes_visible"], float), int(d["images"]))


def active_units(mu: torch.Tensor,          # (M, L, K, N) posterior means of the class codes
                 present: torch.Tensor,     # (M, L, K) bool: class k present at layer l in image m
                 threshold: float = ACTIVE_VAR,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(active (L,), units (L,)): per layer, the class-code dimensions whose mean varies across the images where
    the class is present (unbiased variance > threshold; Burda et al. 2016), and the dimensions measurable at
    all (classes present in >= 2 images, x N)."""
    p = present.to(mu.dtype)[..., None]                                  # (M, L, K, 1)
    n = p.sum(0)                                                         # (L, K, 1) images per class code
    mean = (mu * p).sum(0) / n.clamp(min=1)                              # (L, K, N)
    var = ((mu - mean).pow(2) * p).sum(0) / (n - 1).clamp(min=1)         # (L, K, N) over the images present
    measurable = (n >= 2).expand_as(var)                                 # (L, K, N)
    active = (var > threshold) & measurable
    return active.sum((1, 2)), measurable.sum((1, 2))                    # (L,), (L,)


def classes_visible(nets: Networks, labels: torch.Tensor) -> torch.Tensor:
    """(L,) mean over images of the share of the image's classes present at each latent layer's block size
    (`LatentSpec.presence`, classwise, at the label's size)."""
    spec = nets.spec if nets.spec.classwise else replace(nets.spec, classwise=True)
    at_layer = spec.presence(labels).float().sum(-1)                     # (M, L) classes left at each layer's size
    full = label_presence(labels, spec.num_classes).float().sum(-1)      # (M,) classes of the full-size mask
    return (at_layer / full.clamp(min=1)[:, None]).mean(0)               # (L,)


@torch.no_grad()
def layer_diagnostics(nets: Networks,
                      images: torch.Tensor,          # (M, 3, H, W) in [-1, 1] (M >= 2: variances need two)
                      labels: torch.Tensor,          # (M, H, W) class ids
                      batch_size: int = 64,          # images per encoder call
                      ) -> LayerDiagnostics:
    """KL, active units and classes visible of each latent layer (module docstring) over these photos."""
    if nets.E is None or not nets.spec.has_class_codes:
        raise ValueError(f"variant {nets.variant!r} has no class codes, so it has no latent layers to diagnose; "
                         "use a clvae-family or groupdnet model")
    if images.shape[0] != labels.shape[0] or images.shape[0] < 2:
        raise ValueError(f"layer_diagnostics needs matching images and labels, at least 2 (got {images.shape[0]} "
                         f"images, {labels.shape[0]} labels): active units are variances across images")
    mus, presents, kls = [], [], []
    for s in range(0, images.shape[0], batch_size):                      # batches of photos
        mu, logvar = nets.E(images[s:s + batch_size], labels[s:s + batch_size])
        mu, logvar = mu.map(lambda t: t.float()), logvar.map(lambda t: t.float())
        kls.append(kl_terms(mu, logvar, nets.spec.class_kl)[1])         # (B, L)
        mus.append(mu.zc), presents.append(mu.present)
    mu, present = torch.cat(mus), torch.cat(presents)                    # (M, L, K, N), (M, L, K)
    au, units = active_units(mu, present)
    return LayerDiagnostics(kl=torch.cat(kls).mean(0).cpu().numpy(), active_units=au.cpu().numpy(),
                            units=units.cpu().numpy(), classes_visible=classes_visible(nets, labels).cpu().numpy(),
                            images=int(images.shape[0]))


@torch.no_grad()
def layer_posteriors(nets: Networks, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64
                     ) -> dict[str, np.ndarray]:
    """Is each latent layer used? Per latent layer l (L,): `kl`, the KL of Eq. 18's class term at that layer
    (mean over the classes present, then over the images), and `mean_abs_mu`, the mean |encoder mean| over
    present classes and code entries. A layer whose KL is near 0 has collapsed to the prior: its codes
    carry nothing about the photo. images (M, 3, H, W), labels (M, H, W)."""
    if nets.E is None or not nets.spec.has_class_codes:
        raise ValueError(f"variant {nets.variant!r} has no class codes, so it has no latent layers to inspect")
    kl, absmu, count = 0.0, 0.0, 0
    for s in range(0, images.shape[0], batch_size):                          # batches of photos
        mu, logvar = nets.E(images[s:s + batch_size], labels[s:s + batch_size])
        present = mu.present.to(mu.zc.dtype)                                  # (B, L, K)
        n = present.sum(-1).clamp(min=1)                                      # (B, L)
        per = -0.5 * (1 + logvar.zc - mu.zc.pow(2) - logvar.zc.exp()).sum(-1)  # (B, L, K)
        kl = kl + ((per * present).sum(-1) / n).sum(0)                         # (L,)
        absmu = absmu + ((mu.zc.abs().mean(-1) * present).sum(-1) / n).sum(0)
        count += mu.zc.shape[0]
    return {"kl": (kl / count).cpu().numpy(), "mean_abs_mu": (absmu / count).cpu().numpy()}


def collapsed_layers(kl,                          # (L,) per-layer KL: layer_posteriors(...)["kl"] or a table's "KL"
                     threshold: float = COLLAPSE_KL,
                     ) -> list[int]:
    """The posterior-collapse diagnostic: latent layers whose KL is below `threshold` (their codes carry
    nothing about the photo)."""
    return [int(l) for l, v in enumerate(np.asarray(kl, dtype=float)) if v < threshold]


# --------------------------------------------------------------------------------------------
# Which factor each layer moves: measured once per model, stored beside its checkpoint


def layer_factors_path(checkpoint: str | os.PathLike) -> Path:
    """`<checkpoint stem>.layers.json` beside the checkpoint (relative paths from the repository root); a path
    that already ends in .json is returned as it is."""
    p = resolve(checkpoint)
    return p if p.suffix == ".json" else p.with_name(p.stem + ".layers.json")


def _check_summary(summary: Sequence[dict], where: str) -> list[dict]:
    """The entries as plain dicts, each with an integer "layer" and a "moves_most" factor name (None: no measured
    factor changed, as `edit_measures.layer_factor_summary` writes it); a ValueError naming `where` and the fix
    otherwise."""
    fix = ("Fix: write it with smis.diagnostics.write_layer_factors(checkpoint, "
           "edit_measures.layer_factor_summary(table))")
    if not isinstance(summary, (list, tuple)):
        raise ValueError(f"{where}: 'layers' must be a list of {{'layer', 'moves_most', 'shares'}} entries, got "
                         f"{type(summary).__name__}. {fix}")
    out = []
    for entry in summary:
        if not isinstance(entry, dict) or not isinstance(entry.get("layer"), int) or isinstance(entry["layer"], bool) \
                or not isinstance(entry.get("moves_most", ""), (str, type(None))):
            raise ValueError(f"{where}: entry {entry!r} needs an integer 'layer' and a 'moves_most' factor name (or "
                             f"null: no measured factor changed). {fix}")
        out.append(dict(entry))
    return out


def write_layer_factors(checkpoint: str | os.PathLike,      # the model's checkpoint (or the JSON path itself)
                        summary: Sequence[dict],            # edit_measures.layer_factor_summary(table): per layer
                        **provenance,                       # command, images, seed, ... kept as they are
                        ) -> Path:
    """Write the layer-factor JSON beside `checkpoint` (atomically: a temporary file, then a rename); its path."""
    path = layer_factors_path(checkpoint)
    layers = _check_summary(summary, str(path))
    model = provenance.pop("model", Path(checkpoint).name)               # the checkpoint's file name by default
    atomic_write_json({**provenance, "format": LAYER_FACTORS_FORMAT, "model": model, "layers": layers}, path)
    return path


def read_layer_factors(checkpoint: str | os.PathLike) -> list[dict] | None:
    """The per-layer factor summary stored beside `checkpoint` (`layer_factors_path`), or None when there is no
    such file. A file that is not such a JSON is a ValueError naming it and the fix."""
    path = layer_factors_path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}). Fix: delete it, or regenerate it with "
                         "smis.diagnostics.write_layer_factors") from None
    if not isinstance(data, dict) or data.get("format") != LAYER_FACTORS_FORMAT:
        raise ValueError(f"{path}: format {data.get('format') if isinstance(data, dict) else None!r}, expected "
                         f"{LAYER_FACTORS_FORMAT!r}. Fix: regenerate it with smis.diagnostics.write_layer_factors")
    return _check_summary(data.get("layers"), str(path))
