"""Training curves of the shipped models: every variant's checkpoints scored on the same masks and seeds.

    rows = checkpoint_scores({"clvae": "outputs/runs/demo_clvae", ...}, n_masks=64, k=4)
    plateau_table(rows)                      # change over the last quarter of training, per score
    plateau_findings(plateau_table(rows))    # Markdown bullets: which scores flattened, per variant
    curves_figure(rows, "docs/training_curves.png")

Does a schedule train long enough? Diversity, FD, the in-class colour rate and mask mIoU of prior samples
are computed at each kept checkpoint (`scripts/train_demo_models.py` keeps 5 or 8 evenly spaced ones) and
drawn against the step; a score has flattened when its change over the last quarter of the steps is small
next to its change over the run. `scripts/eval_curves.py` runs this and writes the JSON + figure that
notebook 02 and the README show. Each class-code model's row also holds its latent layers' diagnostics
(`smis.diagnostics.layer_diagnostics` on the same masks' photos: KL, active units, classes visible per layer;
`layer_diagnostics_table`); rows scored before these existed get them filled in from their checkpoint when it is
still there, and show NaN otherwise.

    plateau, layer_kl, by_step = training_curves("checkpoints/synthscenes_curves.json", "training_curves.png")
    layer_diagnostics_by_run("docs/layer_experiment_curves.json")   # {header: table} per run (notebook 06)
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from smis import evaluate as ev
from smis.diagnostics import COLLAPSE_KL, layer_diagnostics
from smis.factors import factor_rows
from smis.metrics import LPIPS
from smis.models import load_segmenter_for
from smis.tables import COLOUR_IN, MIOU, TEXTURE_IN, miou_columns
from smis.checkpoint import checkpoint_step, list_checkpoints, load_model, object_factor_of
from smis.utils import resolve
from smis.viz import save_figure, to_uint8

SCORES = ("diversity", "FD", COLOUR_IN, TEXTURE_IN, MIOU)
FLAT_SHARE = 0.25      # a score has flattened when its last-quarter change is at most this share of the run's range
DIAGNOSTICS = ("KL", "active units", "active share", "classes visible")   # per latent layer: "<name> layer <l>"
# what notebook 02 prints above clvae's layer_diagnostics_table
LAYER_DIAGNOSTICS_NOTE = ("clvae: each latent layer (0 = fine ... 4 = coarse) at each checkpoint: KL (near 0 = "
                          "collapsed), active units, active share, classes visible at its block size (NaN: a row "
                          "scored before these were measured)")


def run_object_factor(run_dir: str | Path) -> bool:
    """Whether a training run trained on SynthScenes with its object-scale factor (its config.json's
    synth_object_factor; False when the run predates the option)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist. Fix: pass the --run-dir of a python -m smis.train run.")
    return bool(json.loads(path.read_text()).get("synth_object_factor", False))


@torch.no_grad()
def checkpoint_scores(runs: Mapping[str, str | Path],     # variant name -> run folder
                      n_masks: int = 64,                  # SynthScenes test masks (the same for every checkpoint)
                      k: int = 4,                         # prior samples per mask
                      seed: int = 0,                      # prior codes' seed (smis.evaluate.mask_seed)
                      lpips: str = "auto", fd: str = "auto", segmenter: str = "auto",
                      done: pd.DataFrame | None = None,   # rows already scored (same settings): skipped
                      device: str | torch.device = "cpu",
                      progress: bool = True) -> pd.DataFrame:
    """One row per (variant, step): diversity, top-1 GT-similarity, FD, factor rates and mask mIoU of
    K prior samples per mask, and for class-code models each latent layer's diagnostics ("KL layer l", "active
    units layer l", "active share layer l", "classes visible layer l": `LayerDiagnostics.columns`, on the photos of
    the same masks). Columns name the metric backbone in `lpips` / `fd_name`. Rows of `done` that lack the
    diagnostics get them from their checkpoint when the run still holds it (NaN otherwise)."""
    done = fill_diagnostics(done, runs, n_masks, device, progress) if done is not None else None
    kept = [(v, checkpoint_step(p), p) for v, r in runs.items() for p in list_checkpoints(r, missing_ok=False)]
    todo = [(v, s, p) for v, s, p in kept if done is None or not ((done["variant"] == v) & (done["step"] == s)).any()]
    rows = [] if done is None else done.to_dict("records")
    if not todo:
        return pd.DataFrame(rows)
    first = load_model(todo[0][2], device)
    object_factor = object_factor_of(first)        # the test data the runs trained on (TrainConfig)
    test, indices = ev.test_set("synthscenes", "", "test", first.preset.image_size, n_masks, 0, object_factor)
    metric = LPIPS(lpips, device=device)
    fd_real = ev.real_frechet(test, indices, fd, device, progress=False)
    seg = load_segmenter_for("synthscenes", segmenter, device)
    cols = ev.Columns(metric.name)
    options = ev.PriorOptions(k=k, seed=seed, per_class=False, factors=True, keep=0)
    image, label = ev.load_pairs(test, indices, device)                 # the masks every checkpoint is scored on
    for variant, step, path in tqdm(todo, desc="checkpoints", disable=not progress):
        nets = load_model(path, device)
        if object_factor_of(nets) != object_factor:
            raise ValueError(f"{path} trained on other SynthScenes data (synth_object_factor) than {todo[0][2]}. "
                             "Fix: score runs with and without the object-scale factor in separate calls.")
        r = ev.evaluate_prior(nets, test, indices, metric, options, fd_real, seg, progress=False)
        f = r.factors
        kl = {}
        if nets.E is not None and nets.spec.has_class_codes:          # is each latent layer used (Sec. 4.4.3)?
            kl = layer_diagnostics(nets, image, label).columns()      # KL, active units, classes visible per layer
        rows.append({"variant": variant, "step": step, "diversity": float(r.per_image[cols.diversity].mean()),
                     "top-1 GT-similarity": float(r.per_image[cols.top1].mean()), "FD": r.fd,
                     COLOUR_IN: 100 * float(f["colour_in"].mean()), TEXTURE_IN: 100 * float(f["texture_in"].mean()),
                     MIOU: miou_columns(r.confusion)[MIOU] if seg is not None else float("nan"),
                     "lpips": metric.name, "fd_name": r.fd_name, "masks": len(indices), "k": r.k, **kl})
    return pd.DataFrame(rows).sort_values(["variant", "step"], kind="stable").reset_index(drop=True)


@torch.no_grad()
def fill_diagnostics(rows: pd.DataFrame,                  # checkpoint_scores rows, some scored before the diagnostics
                     runs: Mapping[str, str | Path],      # variant name -> run folder (as for checkpoint_scores)
                     n_masks: int = 64,                   # the rows' SynthScenes test masks
                     device: str | torch.device = "cpu",
                     progress: bool = True) -> pd.DataFrame:
    """`rows` with the latent-layer diagnostics (`LayerDiagnostics.columns`) filled in for the class-code rows
    that lack them (a KL but no active units) and whose checkpoint the run still holds; the others as they were
    (NaN). The KL already scored is kept as it is (the numbers quoted from it stay). Cheap: the encoder on the
    masks' photos only, no sampling."""
    paths = {(v, checkpoint_step(p)): p for v, r in runs.items() for p in list_checkpoints(r)}
    has = lambda row, col: np.isfinite(row.get(col, np.nan))
    out = rows.to_dict("records")
    todo = [i for i, row in enumerate(out) if (row["variant"], row["step"]) in paths
            and has(row, "KL layer 0") and not has(row, "active units layer 0")]
    if not todo:
        return rows
    first = load_model(paths[out[todo[0]]["variant"], out[todo[0]]["step"]], device)
    test, indices = ev.test_set("synthscenes", "", "test", first.preset.image_size, n_masks, 0,
                                object_factor_of(first))
    image, label = ev.load_pairs(test, indices, device)                 # the masks the rows were scored on
    for i in tqdm(todo, desc="diagnostics of scored rows", disable=not progress):
        nets = load_model(paths[out[i]["variant"], out[i]["step"]], device)
        fresh = layer_diagnostics(nets, image, label).columns()
        out[i] = {**out[i], **{k: v for k, v in fresh.items() if not k.startswith("KL layer ")}}   # scored KL kept
    return pd.DataFrame(out)


@torch.no_grad()
def real_scores(n_masks: int = 64, size=(64, 64), segmenter: str = "auto",
                object_factor: bool = False,      # SynthScenes with its object-scale factor (as the runs trained)
                ) -> dict[str, float]:
    """The same scores' values on the real test images of those masks: the ceiling lines of the curves
    (colour / texture rates of real images, the segmenter's mIoU on them)."""
    test, indices = ev.test_set("synthscenes", "", "test", size, n_masks, 0, object_factor)
    image, label = ev.load_pairs(test, indices)
    f = factor_rows(to_uint8(image), label.numpy(), object_factor=object_factor)
    out = {COLOUR_IN: 100 * float(f["colour_in"].mean()), TEXTURE_IN: 100 * float(f["texture_in"].mean())}
    seg = load_segmenter_for("synthscenes", segmenter)
    if seg is not None:
        out[MIOU] = miou_columns(ev.real_mask_fidelity(seg, test, indices, progress=False))[MIOU]
    return out


def plateau_table(rows: pd.DataFrame,       # checkpoint_scores rows
                  changes: bool = True,     # False: leave out the signed "last-quarter change" columns
                  ) -> pd.DataFrame:
    """Per variant and score: the value at the last checkpoint, its change over the last quarter of the
    steps (last minus the checkpoint nearest 3/4 of the run) and that change as a share of the whole
    run's range. Small shares mean the score has flattened (`flattened`)."""
    out = {}
    for v, g in rows.groupby("variant", sort=False):
        g = g.sort_values("step")
        last = g.iloc[-1]
        q = g.iloc[int(np.argmin(np.abs(g["step"].to_numpy() - 0.75 * last["step"])))]
        row = {"steps": int(last["step"]), "checkpoints": len(g), "from step": int(q["step"])}
        for s in SCORES:
            span = float(g[s].max() - g[s].min())
            row[f"{s}"] = float(last[s])
            if changes:
                row[f"{s}: last-quarter change"] = float(last[s] - q[s])
            row[f"{s}: share of range"] = float(abs(last[s] - q[s]) / span) if span > 0 else 0.0
        out[v] = row
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("variant")


def flattened(plateau: pd.DataFrame,      # plateau_table(rows)
              share: float = FLAT_SHARE,    # largest last-quarter change, as a share of the run's range
              ) -> dict[str, list[str]]:
    """Per variant: the SCORES that have flattened (last-quarter change <= `share` of the run's range)."""
    return {v: [s for s in SCORES if r[f"{s}: share of range"] <= share] for v, r in plateau.iterrows()}


def plateau_findings(plateau: pd.DataFrame,   # plateau_table(rows)
                     share: float = FLAT_SHARE,
                     ) -> list[str]:
    """One Markdown bullet per variant: its steps and checkpoints, the scores that flattened and those
    still moving over the last quarter."""
    flat = flattened(plateau, share)
    lines = []
    for v, r in plateau.iterrows():
        moving = [s for s in SCORES if s not in flat[v]]
        lines.append(f"- `{v}` ({int(r['steps'])} steps, {int(r['checkpoints'])} checkpoints): "
                     + (f"flattened on {', '.join(flat[v])}" if flat[v] else "nothing flattened")
                     + (f"; still moving over the last quarter: {', '.join(moving)}" if moving else "") + ".")
    return lines


def layer_kl_finding(layer_kl: pd.DataFrame,            # layer_kl_table(rows, variant): steps x latent layers
                     variant: str = "clvae",
                     collapsed: float = COLLAPSE_KL,      # KL below which a layer counts as collapsed
                     ) -> str:
    """A Markdown bullet: each latent layer's KL at the first and the last checkpoint, and whether the
    layers above the finest (layer 0) are still collapsed at the end."""
    first, last = layer_kl.iloc[0], layer_kl.iloc[-1]
    return (f"- Longer training and the collapsed layers ({variant}): KL per latent layer at step {layer_kl.index[0]}: "
            + ", ".join(f"{v:.3f}" for v in first) + f"; at step {layer_kl.index[-1]}: "
            + ", ".join(f"{v:.3f}" for v in last) + ". "
            + ("Layers above the finest stay collapsed however long it trains."
               if (last.iloc[1:] < collapsed).all() else "Coarser layers carry information by the end."))


def layer_kl_table(rows: pd.DataFrame, variant: str = "clvae") -> pd.DataFrame:
    """KL of each latent layer (Eq. 18's class term, mean over present classes) at every checkpoint of one
    variant: does a layer that has collapsed to the prior come back with longer training? Rows: steps."""
    cols = [c for c in rows.columns if c.startswith("KL layer ")]
    table = rows[rows["variant"] == variant].set_index("step")[cols].dropna(axis=1, how="all")
    if table.empty or not len(table.columns):
        raise ValueError(f"no per-layer KL for {variant!r} in these rows; score a class-code variant's run")
    return table


def layer_diagnostics_table(rows: pd.DataFrame,      # checkpoint_scores rows
                            variant: str = "clvae",
                            ) -> pd.DataFrame:
    """Each latent layer's diagnostics at every checkpoint of one variant: rows = steps, columns = (diagnostic,
    latent layer) for DIAGNOSTICS. Rows scored before the active-unit and visibility columns existed show NaN
    there (their KL is kept)."""
    cols = [c for d in DIAGNOSTICS for c in rows.columns if re.fullmatch(rf"{d} layer \d+", str(c))]
    table = rows[rows["variant"] == variant].set_index("step")[cols].dropna(axis=1, how="all")
    if table.empty or not len(table.columns):
        raise ValueError(f"no per-layer diagnostics for {variant!r} in these rows; score a class-code variant's run")
    table.columns = pd.MultiIndex.from_tuples([tuple(c.rsplit(" layer ", 1)) for c in table.columns],
                                              names=["diagnostic", "latent layer"])
    return table.rename(columns=int, level=1)


def curves_figure(rows: pd.DataFrame, path: str | Path | None = None, title: str = "",
                  real: Mapping[str, float] | None = None):
    """One panel per score (step on x), one line per variant, the real images' value (`real_scores`) as a
    dashed line; saved to `path` when given. Returns the figure."""
    import matplotlib.pyplot as plt          # optional heavy dependency: only for the figure

    fig, axes = plt.subplots(1, len(SCORES), figsize=(4.2 * len(SCORES), 3.6))
    lp, fdn = rows["lpips"].iloc[0], rows["fd_name"].iloc[0]
    names = {"diversity": f"diversity ({lp}), higher = more varied", "FD": f"FD ({fdn}), lower = closer to real",
             COLOUR_IN: "colour in class's modes (%)", TEXTURE_IN: "texture kind in class's set (%)",
             MIOU: "mask mIoU (segmenter), higher = follows mask"}
    for ax, s in zip(axes, SCORES):
        for v, g in rows.groupby("variant", sort=False):
            ax.plot(g["step"], g[s], marker="o", ms=3, label=v)
        if real and s in real:
            ax.axhline(real[s], color="k", ls="--", lw=1, label="real images")
        ax.set_xlabel("training step (batch 8)")
        ax.set_title(names[s], fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if real:
        axes[-1].legend(fontsize=8)
    fig.suptitle(title or f"SynthScenes 64x64: {int(rows['masks'].iloc[0])} test masks x {int(rows['k'].iloc[0])} "
                 "prior samples per checkpoint, same masks and seeds for every point", fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def read_curves(path: str | Path,          # scripts/eval_curves.py's JSON: {"rows": [...], "real": {...}}
                ) -> tuple[pd.DataFrame, dict | None]:
    """The rows (checkpoint_scores) and the real images' scores (None when absent) of a curves file."""
    data = json.loads(resolve(path).read_text())
    return pd.DataFrame(data["rows"]), data.get("real")


def training_curves(path: str | Path | None,         # a curves file (read_curves); "" / None / missing: none
                    figure: str | Path,              # the curves figure (curves_figure) written here
                    variant: str = "clvae",          # the variant whose latent layers are tabled
                    ) -> tuple[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None]:
    """Notebook 02's "Did the shipped models train long enough?": from the curves file, the figure (saved at
    `figure`), the plateau table without the signed changes, `variant`'s KL per latent layer (`layer_kl_table`)
    and its diagnostics at every checkpoint (`layer_diagnostics_table`). Without a file it says how to make one
    and returns (None, None, None)."""
    if not path or not resolve(path).is_file():
        print(f"no curves file at {str(path or '')!r}: score a set of runs with "
              "`python scripts/eval_curves.py --runs ...`")
        return None, None, None
    rows, real = read_curves(path)
    curves_figure(rows, figure, real=real)
    return plateau_table(rows, changes=False), layer_kl_table(rows, variant), layer_diagnostics_table(rows, variant)


def layer_diagnostics_by_run(path: str | Path,   # a curves file (read_curves) of class-code runs
                             ) -> dict[str, pd.DataFrame]:
    """Every run's latent-layer diagnostics at each checkpoint (`layer_diagnostics_table`), keyed by the line
    notebook 06 prints above it ("<run>: each latent layer at each checkpoint: ..."), in the file's order."""
    rows, _ = read_curves(path)
    return {f"{run}: each latent layer at each checkpoint: KL, active units, active share, classes visible":
            layer_diagnostics_table(rows, run) for run in rows["variant"].unique()}
