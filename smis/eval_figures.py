"""The paper's evaluation figures (Figs. 6, 7-9, 10, 11) from a study's results: each function arranges the kept
examples (or the per-image scores) of the study's models on its test masks, saves the figure as a labelled PNG
(`smis.viz.save_grid`, plus the bare `_raw.png`; or a histogram) and returns the figure or what it shows as text.

    study = load_study(...)                                   # smis.study: models, masks, metrics
    results = study.evaluate_prior(PriorOptions(k=20, keep=4))
    prior_samples_figures(study, results, n_show=4, n_samples=6, out_dir=out)         # Figs. 7-9, one per model
    all_systems_figure(study, results, 4, 2, out / "fig_all_systems.png")            # every model side by side
    print(score_histograms(results, {study.columns.diversity: out / "fig10_hist_diversity.png"}))   # Fig. 10
    recon = study.evaluate_reconstruction(keep=6)
    reconstruction_figure(study, recon, 6, out / "fig6_reconstructions.png")          # Fig. 6
    print(reconstruction_histogram(recon, study.columns.gt_similarity, out / "reconstruction_histogram.png"))
    ablation_samples_figure(study, prior, variants, 6, out / "fig11_ablation_samples.png")   # Fig. 11

Rows are the study's first test masks (`study.indices`), the same masks and seeds for every model. Notebook 02's
samples of the run it trained, beside the shipped model's, need no study:

    training_samples_figures(trainer.nets, "clvae", trainer.step, label, image, indices, palette, out, shipped)
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from smis.evaluate import PriorEval, ReconEval, load_pairs
from smis.metrics import plot_score_histograms
from smis.models import load_networks
from smis.networks import Networks
from smis.sampling import sample_prior
from smis.study import Study
from smis.tables import ABLATION_LABELS
from smis.utils import resolve
from smis.viz import example_grid, save_grid


def reconstruction_figure(study: Study,
                          results: Mapping[str, ReconEval],   # model -> reconstructions with >= n_show examples kept
                          n_show: int,                        # masks (rows): the study's first
                          path: str | Path,                   # PNG written
                          ):
    """Fig. 6: per test pair, mask | ground truth | each model's reconstruction G(M, E(M, I)) (columns in the order
    of `results`). Returns the labelled matplotlib figure."""
    image, label = load_pairs(study.dataset, study.indices[:n_show])
    figure = example_grid(label, image, [r.examples for r in results.values()], study.dataset.info.palette)
    return save_grid(figure, path, ["mask", "real"] + [f"{k} recon." for k in results],
                     [f"test pair {i}" for i in study.indices[:n_show]],
                     "reconstructions G(M, E(M, I)) with the encoder's means")


def prior_samples_figures(study: Study,
                          results: Mapping[str, PriorEval],   # model -> prior samples with >= n_show masks kept
                          n_show: int,                        # masks (rows): the study's first
                          n_samples: int,                     # samples per mask (columns after mask and real)
                          out_dir: str | Path,                # figures written as fig7_samples_<model>.png
                          ) -> dict[str, Path]:
    """Figs. 7-9: one figure per model, a row per mask: mask | ground truth | its first samples (a model without
    latents has one). Returns {model: PNG path}."""
    image, label = load_pairs(study.dataset, study.indices[:n_show])
    paths = {}
    for name, r in results.items():
        figure = example_grid(label, image, [r.examples[:, :n_samples]], study.dataset.info.palette)
        n = min(n_samples, r.k)
        paths[name] = Path(out_dir) / f"fig7_samples_{name}.png"
        save_grid(figure, paths[name], ["mask", "real"] + [f"sample {j + 1}" for j in range(n)],
                  [f"test mask {i}" for i in study.indices[:n_show]],
                  f"{name} ({study.trained(name)}): {n} prior samples per mask, seeds shared by every variant")
    return paths


def all_systems_figure(study: Study,
                       results: Mapping[str, PriorEval],   # model -> prior samples with >= n_show masks kept
                       n_show: int,                        # masks (rows): the study's first
                       n_samples: int,                     # samples per model and mask
                       k: int,                             # prior samples per mask drawn (the title's count)
                       path: str | Path,                   # PNG written
                       ):
    """Every model side by side on the same masks and seeds: mask | real | the first `n_samples` samples of each
    model (columns named "<model> <j>"; a model without latents has one). Returns the labelled figure."""
    image, label = load_pairs(study.dataset, study.indices[:n_show])
    compared = {name: r.examples[:, :n_samples] for name, r in results.items() if r.examples is not None}
    figure = example_grid(label, image, list(compared.values()), study.dataset.info.palette)
    return save_grid(figure, path,
                     ["mask", "real"] + [f"{name} {j + 1}" for name, x in compared.items() for j in range(x.shape[1])],
                     [f"test mask {i}" for i in study.indices[:n_show]],
                     f"Every system on the same masks and seeds ({min(n_samples, k)} prior samples each)")


def ablation_samples_figure(study: Study,
                            prior: Mapping[str, PriorEval],   # variant -> prior samples with the first mask kept
                            variants: Sequence[str],          # the rows, in this order
                            n_samples: int,                   # samples per variant
                            path: str | Path,                 # PNG written
                            ):
    """Fig. 11: the study's first test mask and the same prior seeds through every variant, a row each (named by
    `smis.tables.ABLATION_LABELS`): mask | ground truth | samples. Returns the labelled figure."""
    image, label = load_pairs(study.dataset, study.indices[:1])
    rows = torch.cat([prior[v].examples[:1, :n_samples] for v in variants])       # (V, n, 3, H, W)
    figure = example_grid(label.expand(len(variants), -1, -1), image.expand(len(variants), -1, -1, -1), [rows],
                          study.dataset.info.palette)
    return save_grid(figure, path, ["mask", "real"] + [f"sample {j + 1}" for j in range(rows.shape[1])],
                     [ABLATION_LABELS.get(v, v) for v in variants],
                     f"test mask {study.indices[0]}: the same prior seeds through every variant")


def training_samples_figures(nets: Networks,                 # the model just trained (in eval mode)
                             variant: str,                   # its variant, for the title
                             step: int,                      # the steps it trained, for the title
                             label: torch.Tensor,            # (B, H, W) test masks, on the model's device
                             image: torch.Tensor,            # (B, 3, H, W) their real images in [-1, 1]
                             seeds: Sequence[int],           # one prior seed per mask (the masks' test indices)
                             palette: Sequence[Sequence[int]],   # (C, 3) mask colours
                             out_dir: str | Path,            # figures written as samples_this_run.png, ...
                             shipped: str | Path = "",       # the shipped model to compare with; "": none
                             preset: str = "synthscenes",    # the run's preset: the shipped models are SynthScenes'
                             ) -> dict[str, Path]:
    """Notebook 02's samples: per model, a row per mask: mask | real | four samples from the prior
    (`smis.sampling.sample_prior`, the same seeds for every model; `gaugan` has one). First the model just trained
    (samples_this_run.png), then the shipped model `shipped` (samples_demo_model.png) when it is a file and the run
    is on the SynthScenes preset; otherwise says so. Returns {figure title: PNG path}."""
    models = {f"{variant} after {step} steps (this run)": (nets, "samples_this_run.png")}
    if shipped and resolve(shipped).is_file() and preset == "synthscenes":
        demo = load_networks(shipped, label.device)
        models[f"shipped {demo.variant}, {demo.meta['step']} steps"] = (demo, "samples_demo_model.png")
    else:
        print(f"no shipped model at {str(shipped)!r} (or another preset): train one with "
              "`python scripts/train_demo_models.py`.")
    paths = {}
    for title, (model, name) in models.items():
        samples = sample_prior(model, label, k=4, seeds=seeds)      # (B, 4, 3, H, W); gaugan: 1 sample
        columns = ["mask", "real"] + [f"sample {j + 1}" for j in range(samples.shape[1])]
        paths[title] = Path(out_dir) / name
        save_grid(example_grid(label, image, [samples], palette), paths[title], columns, title=title)
    return paths


def score_histograms(results: Mapping[str, PriorEval | ReconEval],   # model -> per-image scores
                     figures: Mapping[str, str | Path],   # score column -> its PNG (overlaid histograms, shared bins)
                     ) -> str:
    """Fig. 10: per score column, the models' per-mask scores as overlaid histograms. Returns one line per figure:
    its file stem and each model's median (3 decimals)."""
    lines = []
    for col, path in figures.items():
        plot_score_histograms({k: r.per_image[col].to_numpy() for k, r in results.items()}, path, xlabel=col)
        medians = {k: round(float(r.per_image[col].median()), 3) for k, r in results.items()}
        lines.append(f"{Path(path).stem} {medians}")
    return "\n".join(lines)


def reconstruction_histogram(results: Mapping[str, ReconEval],   # model -> per-image reconstruction scores
                             col: str,                           # the score column (GT-similarity)
                             path: str | Path,                   # PNG written
                             ) -> str:
    """The models' per-image reconstruction scores as overlaid histograms (notebook 03). Returns one line per model:
    its median and its worst image (index and score; higher is worse)."""
    plot_score_histograms({k: r.per_image[col].to_numpy() for k, r in results.items()}, path, xlabel=col)
    return "\n".join(f"{k}: median {r.per_image[col].median():.3f}, worst image {r.per_image[col].idxmax()} "
                     f"({r.per_image[col].max():.3f})" for k, r in results.items())
