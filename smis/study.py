"""One evaluation study: the models a notebook compares, the test masks they share, the metrics and the
mask-fidelity segmenter, set up by one call (notebooks 03, 04 and 05).

    study = load_study("clvae:checkpoints/synthscenes_clvae.pt,gaugan_vae:checkpoints/synthscenes_gaugan_vae.pt",
                       "synthscenes", "", "test", n_test=100)
    res = {name: evaluate_prior(nets, study.dataset, study.indices, study.metric, PriorOptions(k=20),
                                study.fd_real, study.segmenter) for name, nets in study.models.items()}
    table = study.add_ceiling(diversity_table(res))     # + the segmenter's mIoU on the real images
    study.columns.diversity                             # "diversity (lpips_effnet)": the tables' score columns

The loops of notebooks 03-05 over the study's models are its methods: `evaluate_prior` (every model, K prior
samples per mask), `evaluate_reconstruction` (every model with an encoder), `evaluate_ablations` (both per
variant), `evaluate_style` (style-guided synthesis against its chance level, every model that can), and the tables
built from them that need the study (`factor_rows` with the real images' row, `ablation_table`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from smis.capabilities import UnsupportedEdit, require_edit
from smis.checkpoint import object_factor_of
from smis.evaluate import (Columns, PriorEval, PriorOptions, ReconEval, evaluate_prior, evaluate_reconstruction,
                           evaluate_style, evaluation_layout, load_pairs, real_frechet, real_mask_fidelity, test_set)
from smis.factors import factor_rows
from smis.metrics import LPIPS, FrechetDistance
from smis.models import load_networks, load_segmenter_for, parse_models, trained
from smis.networks import Networks
from smis.segmenter import Segmenter
from smis.real_segmenters import not_measured
from smis.tables import (ABLATION_LABELS, CEILING, COLOUR_IN, MIOU, TEXTURE_IN, diversity_table, factor_table,
                         miou_columns, reconstruction_table)
from smis.utils import pick_device
from smis.viz import to_uint8

STAND_IN_NOTE = "lpips_effnet / fd_effnet are EfficientNet-Lite0 stand-ins, not the paper's LPIPS / FID."


@dataclass
class Study:
    """Models compared on the same test masks with the same metrics (`load_study` builds one)."""

    models: dict[str, Networks]          # name -> networks (eval mode, on `device`), in the order given
    dataset: object                      # the evaluation split (smis.data dataset) at the models' image size
    indices: list[int]                   # its items evaluated (masks)
    metric: LPIPS                        # GT-similarity / diversity metric
    fd_real: FrechetDistance             # real images' feature statistics: the reference of every FD
    segmenter: Segmenter | None          # mask fidelity (None: the dataset has none, or SEGMENTER="")
    device: torch.device
    batch: int = 64                      # images per network pass for the real-image statistics
    fidelity_note: str | None = None     # without a segmenter: what the mIoU column reads ("not measured (...)")
    _ceiling: dict | None = field(default=None, repr=False)

    @property
    def columns(self) -> Columns:
        """The tables' score column names for this study's metrics."""
        return Columns(self.metric.name, self.fd_real.name)

    @property
    def stand_ins(self) -> bool:
        """True when the scores are the EfficientNet-Lite0 stand-ins, never comparable with the paper's."""
        return "effnet" in self.metric.name + self.fd_real.name

    def trained(self, name: str) -> str:
        """How model `name` was trained, for captions (`smis.models.trained`)."""
        return trained(self.models[name])

    def models_caption(self, names=None) -> str:
        """'clvae (3000 steps), gaugan_vae (3000 steps)' for the models `names` (default: all)."""
        return ", ".join(f"{k} ({self.trained(k)})" for k in self.models if names is None or k in names)

    def ceiling(self) -> dict:
        """miou_columns of the segmenter on the real images of the study's masks (computed once); {} without
        a segmenter."""
        if self.segmenter is None:
            return {}
        if self._ceiling is None:
            self._ceiling = miou_columns(real_mask_fidelity(self.segmenter, self.dataset, self.indices, self.batch))
        return self._ceiling

    def add_ceiling(self, table: pd.DataFrame, row: str = CEILING) -> pd.DataFrame:
        """`table` with the real images' mask mIoU as row `row` (the ceiling of the mIoU column). Without a
        segmenter but with a `fidelity_note` (real data whose segmenter file is absent, or DeepFashion) the mIoU
        column and the row read that note; otherwise unchanged. Modifies and returns `table`."""
        if self.segmenter is not None:
            table.loc[row] = pd.Series(self.ceiling())
        elif self.fidelity_note:
            table[MIOU] = self.fidelity_note
            table.loc[row, MIOU] = self.fidelity_note
        return table

    def fidelity_caption(self) -> str:
        """The sentence a table's caption gets about mask fidelity: the segmenter, its file(s) and the scales it ran
        at (real data), or what the mIoU column's "not measured" means; "" without either."""
        if self.segmenter is not None and hasattr(self.segmenter, "protocol"):
            return f"Segmenter: {self.segmenter.source}. "
        return f"Mask mIoU {self.fidelity_note}. " if self.fidelity_note else ""

    def metrics_note(self) -> str:
        """What every table caption of notebooks 03-05 says about its metrics: `fidelity_caption()` and, for the
        EfficientNet-Lite0 stand-ins, STAND_IN_NOTE, each sentence followed by a space; "" when neither applies."""
        return self.fidelity_caption() + (STAND_IN_NOTE + " " if self.stand_ins else "")

    def reconstruction_caption(self,
                               results: Mapping[str, ReconEval],   # model -> reconstructions (Table 1's rows)
                               dataset: str,                       # smis.data.DATASETS key, as the caption names it
                               split: str,                         # the evaluation split
                               ) -> str:
        """Table 1's caption (notebook 03): what is reconstructed on how many pairs, the metrics, mask mIoU with a
        segmenter, `metrics_note()` and the models reconstructed with their training."""
        return (f"Table 1 style: reconstruction G(M, E(M, I)) with encoder means on {len(self.indices)} {dataset} "
                f"{split} pairs. GT-similarity = {self.metric.name} to the ground truth (lower is closer); FD = "
                f"{self.fd_real.name} of the reconstructions to the real test images (lower is better); ±95% = "
                "half-width of the 95 % interval over images. "
                + ("mask mIoU = the segmenter's labels of each reconstruction against its mask (95 % bootstrap "
                   "interval over images); the real-image row is the ceiling. " if self.segmenter is not None else "")
                + self.metrics_note()
                + "Models: " + self.models_caption(results) + ".")

    def diversity_caption(self,
                          dataset: str,     # smis.data.DATASETS key, as the caption names it
                          split: str,       # the evaluation split
                          k: int,           # prior samples per mask
                          seed: int,        # seed of the prior codes
                          ) -> str:
        """Tables 2-4's caption (notebook 04): masks, K and seed, the scores' definitions, mask mIoU with a
        segmenter, `metrics_note()` and every model with its training."""
        return (f"Tables 2-4 style on {dataset} ({len(self.indices)} {split} masks, K = {k} prior samples each, seed "
                f"{seed}): diversity = mean pairwise {self.metric.name} of a mask's samples (higher is more varied); "
                f"top-1 GT-similarity = {self.metric.name} to the ground truth of the sample nearest to it in L1 "
                f"(lower is closer); FD = {self.fd_real.name} of one sample per mask to the real images. std over "
                "masks; ±95% = half-width of the 95 % interval of the mean over masks. "
                + ("mask mIoU = mIoU of the segmenter's labels of every sample against its mask (higher follows the "
                   "mask; 95 % bootstrap interval over masks); its real-image row is the ceiling. "
                   if self.segmenter is not None else "")
                + self.metrics_note()
                + "Models: " + self.models_caption() + ".")

    def ablation_caption(self,
                         dataset: str,                    # smis.data.DATASETS key, as the caption names it
                         split: str,                      # the evaluation split
                         k: int,                          # prior samples per mask
                         sources: Mapping[str, object],   # variant -> the model file or run folder it was loaded from
                         train_steps: int = 0,            # > 0: every variant was trained here for this many steps
                         train_batch: int = 0,            # ... with this batch,
                         preset: str = "",                # ... preset
                         train_seed: int = 0,             # ... and seed (on the study's device)
                         ) -> str:
        """Table 5's caption (notebook 05): masks and K, how the models came about (trained here: the schedule and
        that one short run per variant is noisy; loaded: each source with its steps), the scores' metrics, mask mIoU
        with a segmenter and `metrics_note()`."""
        how = (f"all trained here from scratch for the same short schedule ({train_steps} steps, batch {train_batch}, "
               f"{preset} preset, {self.device}, seed {train_seed}): far from converged, and one training seed only, "
               "so differences between rows can be training noise" if train_steps > 0
               else "loaded from checkpoints: " + ", ".join(f"{name}={source} ({self.models[name].meta.get('step')} "
                                                            "steps)" for name, source in sources.items()))
        return (f"Table 5 style ablation on {dataset} ({len(self.indices)} {split} masks, K = {k}); models {how}. "
                "Diversity (higher: more varied), top-1 and reconstruction GT-similarity (lower: closer) in "
                f"{self.metric.name}; FD in {self.fd_real.name}; ±95% = half-width of the 95 % interval over masks"
                + ("; mask mIoU = the segmenter's labels of the samples against their masks (95 % bootstrap interval)"
                   if self.segmenter is not None else "") + "."
                + (" " + self.metrics_note().rstrip() if self.metrics_note() else ""))

    def summary(self) -> str:
        """One line per model (variant, training) and one for the metrics, for the notebook's first output."""
        lines = [f"{name}: variant {nets.variant}, {trained(nets)}"
                 + ("" if nets.spec.takes_latents else " (no latents: one image per mask, diversity 0 by construction)")
                 for name, nets in self.models.items()]
        lines.append(f"{len(self.indices)} test masks on {self.device}; LPIPS: {self.metric.name} | Fréchet distance: "
                     f"{self.fd_real.name} | mask fidelity: "
                     + getattr(self.segmenter, "source", self.fidelity_note or "none (no segmenter for this dataset)"))
        return "\n".join(lines)

    def latent_structure(self) -> str:
        """One line per model: its latent layers, codes per layer, encoder depth and generator size (notebook 05's
        variants side by side)."""
        return "\n".join(f"{v}: {len(nets.spec.layers)} latent layers, K = {nets.spec.code_classes} codes per layer, "
                         f"encoder depth {nets.E.depth}, {sum(p.numel() for p in nets.G.parameters()) / 1e6:.2f} M G "
                         "parameters" for v, nets in self.models.items())

    # -----------------------------------------------------------------------------------------
    # The evaluation loops over the study's models (printing each model's line as it finishes)

    def evaluate_prior(self, options: PriorOptions) -> dict[str, PriorEval]:
        """`smis.evaluate.evaluate_prior` of every model on the study's masks, FD and segmenter (notebook 04),
        printing each model's wall time."""
        results = {}
        for name, nets in self.models.items():
            results[name] = evaluate_prior(nets, self.dataset, self.indices, self.metric, options, self.fd_real,
                                           self.segmenter)
            print(f"{name}: {results[name].seconds:.0f} s")
        return results

    def evaluate_reconstruction(self, keep: int = 0) -> dict[str, ReconEval]:
        """`smis.evaluate.evaluate_reconstruction` of every model with an encoder (notebook 03; `keep`: the first
        reconstructions kept for the figure), with FD and mask fidelity; printing each model's wall time, or that it
        has no encoder and is skipped (gaugan, cimle: they cannot reconstruct)."""
        results = {}
        for name, nets in self.models.items():
            if nets.E is None:
                print(f"{name}: no encoder, skipped")
                continue
            t0 = time.perf_counter()
            results[name] = evaluate_reconstruction(nets, self.dataset, self.indices, self.metric, self.fd_real,
                                                    batch=self.batch, keep=keep, segmenter=self.segmenter)
            print(f"{name}: {time.perf_counter() - t0:.1f} s")
        return results

    def evaluate_ablations(self, options: PriorOptions) -> tuple[dict[str, PriorEval], dict[str, ReconEval]]:
        """Notebook 05's scores of every variant, one variant after the other: its prior samples
        (`evaluate_prior` with FD and segmenter) and its reconstructions (GT-similarity only, one kept).
        Returns ({variant: PriorEval}, {variant: ReconEval})."""
        prior, recon = {}, {}
        for v, nets in self.models.items():
            prior[v] = evaluate_prior(nets, self.dataset, self.indices, self.metric, options, self.fd_real,
                                      self.segmenter)
            recon[v] = evaluate_reconstruction(nets, self.dataset, self.indices, self.metric, None, batch=self.batch,
                                               keep=1)
        return prior, recon

    def evaluate_style(self, n_pairs: int, seed: int = 0) -> dict[str, pd.DataFrame]:
        """Style-guided synthesis on the first `n_pairs` masks, each with the previous test image as its reference
        (the first with the last): per model that can do it, `smis.evaluate.evaluate_style` guided
        ("NAME: guided") and with plain prior samples of the same seeds ("NAME: prior (chance)"), the rows of
        `smis.tables.style_table`. A model without an encoder is skipped with a printed line naming why
        (`smis.capabilities.require_edit`)."""
        targets = self.indices[:n_pairs]
        refs = list(np.roll(np.array(targets), 1))          # each mask's reference is another test image
        rows = {}
        for name, nets in self.models.items():
            try:
                require_edit(nets, "style-guided synthesis")
            except UnsupportedEdit as e:                  # no encoder (gaugan, cimle): skipped, with the reason
                print(f"{name}: skipped: {e}")
                continue
            rows[f"{name}: guided"] = evaluate_style(nets, self.dataset, targets, refs, seed, True, self.batch)
            rows[f"{name}: prior (chance)"] = evaluate_style(nets, self.dataset, targets, refs, seed, False,
                                                             self.batch)
        return rows

    def factor_rows(self, results: Mapping[str, PriorEval]) -> dict[str, pd.DataFrame]:
        """The rows of `smis.tables.factor_table`: "real test images" (the factor estimator on the real images of
        the study's masks: the ceiling), then every model's samples (`results`, evaluated with factors)."""
        real_img, real_lab = load_pairs(self.dataset, self.indices)
        rows = {"real test images": factor_rows(to_uint8(real_img), real_lab.numpy())}
        rows.update({k: r.factors for k, r in results.items()})
        return rows

    def ablation_table(self,
                       prior: Mapping[str, PriorEval],     # variant -> prior samples (`evaluate_ablations`)
                       recon: Mapping[str, ReconEval],     # variant -> reconstructions, same variants
                       train_steps: int = 0,               # > 0: the variants were trained here for this many steps
                       train_seconds: Mapping[str, float] | None = None,   # variant -> its training wall time
                       ) -> pd.DataFrame:
        """Table 5: per variant its diversity table row, its reconstruction scores (prefixed "reconstruction "),
        the real images' mask mIoU (row "real", `add_ceiling`), on SynthScenes the factor rates, and with
        `train_steps` the steps and seconds trained; rows named by `smis.tables.ABLATION_LABELS` plus the variant
        key ("full (L = 6) [clvae]"), index named "variant"."""
        table = diversity_table(prior).join(
            reconstruction_table(recon).drop(columns="images").add_prefix("reconstruction "))
        self.add_ceiling(table, "real")
        if all(r.factors is not None for r in prior.values()):
            table = table.join(factor_table({v: r.factors for v, r in prior.items()})[[COLOUR_IN, TEXTURE_IN]])
        if train_steps > 0:
            table["training steps"] = train_steps
            table["training s"] = pd.Series(dict(train_seconds or {})).round(0)
        table.index = [ABLATION_LABELS.get(v, v) + (f" [{v}]" if v in self.models else "") for v in table.index]
        table.index.name = "variant"
        return table


def load_study(models: str | Mapping[str, str],   # "NAME:source,..." (smis.models.parse_models) or {name: source}
               dataset: str,                        # smis.data.DATASETS key
               data_root: str | None,               # its root; "" / None: SynthScenes generated on the fly
               split: str = "test",                 # evaluation split
               n_test: int = 0,                     # masks (0: the whole split)
               data_seed: int = 0,                  # SynthScenes seed
               lpips: str = "auto",                 # LPIPS backbone: "auto", "alex", "effnet"
               fd: str = "auto",                    # FD backbone: "auto", "inception", "effnet"
               segmenter: str | None = "auto",      # "auto" (shipped one), a file, "" (no mask fidelity)
               device: str | torch.device = "auto",
               batch: int = 64,                     # images per pass for the real images' statistics
               ) -> Study:
    """Load every model, check they share one image size, build the test split at that size, the LPIPS
    metric, the real images' FD statistics and the segmenter: what notebooks 03-05 compare with. A published
    segmenter (real data, `smis.real_segmenters`) is loaded first and scores the real images (the ceiling) here,
    so that a wrong file or mask fails before any generator pass."""
    device = pick_device(device)
    seg = load_segmenter_for(dataset, segmenter, device)
    note = not_measured(dataset, str(segmenter)) if seg is None and segmenter else None
    sources = parse_models(models) if isinstance(models, str) else dict(models)
    if not sources:
        raise ValueError(f"no models in {models!r}. Fix: pass NAME:SOURCE entries, e.g. "
                         "clvae:checkpoints/synthscenes_clvae.pt")
    nets = {name: load_networks(src, device) for name, src in sources.items()}
    sizes = {tuple(n.preset.image_size) for n in nets.values()}
    if len(sizes) != 1:
        raise ValueError(f"the models were trained at different sizes {sorted(sizes)}; compare models of one dataset "
                         "and preset")
    for n in nets.values():                                   # faster generators for evaluation (evaluate.py)
        evaluation_layout(n)
    test, indices = test_set(dataset, data_root, split, sizes.pop(), n_test, data_seed,
                             object_factor=object_factor_of(nets.values()))
    metric = LPIPS(lpips, device=device)
    if hasattr(seg, "check_dataset"):
        seg.check_dataset(test.info.num_classes, f"{dataset} {split} split under {data_root}")
    fd_real = real_frechet(test, indices, fd, device, batch)
    study = Study(nets, test, indices, metric, fd_real, seg, device, batch, note)
    if hasattr(seg, "check_dataset"):
        study.ceiling()                  # every test mask's ids checked against the segmenter's classes here
    return study
