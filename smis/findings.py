"""The "What we learnt" bullets of notebooks 01-05, built from one run's tables and results (never pasted):
one function per notebook, each returning Markdown bullets that the notebook joins and shows.

    data_findings(synthetic.factor_recovery(data_dir, "test"), len(test))   # 01: the factors read back
    training_findings(trainer.step, "clvae", plateau, layer_kl)              # 02: this run, the shipped curves
    reconstruction_findings(study, results, table1)                          # 03: Table 1, paired over the pairs
    diversity_claim(paired, "gaugan_vae")                                    # 04: the one-line answer to RQ2
    diversity_findings(study, results, table2, "gaugan_vae", k=20, paired=paired, ...)   # 04: Tables 2-4 and more
    ablation_findings(ordering, observed, versus, study.columns, train_steps=0)         # 05: Table 5's pairs

Notebook 06's findings are `smis.edit_measures.findings` (the editing stack). Every number is formatted here as the
notebooks printed it, so a run's findings read the same whichever notebook version wrote them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd

from smis import comparison as cmp
from smis import curves
from smis.tables import (ABLATION_LABELS, CEILING, COLOUR_IN, COLOUR_MATCH, MIOU, TEXTURE_IN, Columns,
                         paired_comparison)

if TYPE_CHECKING:                      # annotations only
    from smis.evaluate import PriorEval, ReconEval
    from smis.study import Study

MIOU_CLOSE = 0.1     # notebook 04: both models "follow their masks close to the ceiling" within this much mIoU of it


def _scores_are(study: Study, words: str, stand_ins: str) -> str:
    """The last bullet: which metrics these are (`words` after their names), and for the EfficientNet-Lite0
    stand-ins what they compare with (`stand_ins`, else a full stop)."""
    return f"{study.metric.name} / {study.fd_real.name}{words}" + (stand_ins if study.stand_ins else ".")


def data_findings(recovery: pd.DataFrame,   # smis.data.synthetic.factor_recovery: per class and "all", shares
                  n_images: int,              # test images it was measured on
                  ) -> list[str]:
    """Notebook 01: SynthScenes' factors, and the share of them `estimate_factors` reads back from the pixels
    (colour mode, texture kind and, with the object-scale factor, shading direction)."""
    r = recovery.loc["all"]
    shading = (f", and {100 * r['shading ok']:.1f} % of their shading directions ({int(r['regions'])} regions)"
               if "shading ok" in recovery else "")
    return ["- SynthScenes gives every mask many correct images, with colour and texture as separate, recorded "
            "factors.",
            f"- The factors can be recovered from the pixels: over the {n_images} test images, `estimate_factors` "
            f"reads back\n  {100 * r['colour ok']:.1f} % of the regions' colour modes and {100 * r['texture ok']:.1f} "
            f"% of\n  their texture kinds (table above){shading}, so the diversity and editing notebooks can check "
            "*which* factor a generated\n  image or an edit changed, not only *how much* it changed.",
            "- The data on disk is in the generic `folder` layout that `smis.data.make_dataset` reads; the paper's\n"
            "  datasets have loaders of their own with the paper's preprocessing, and a checker to run before "
            "training."]


def training_findings(step: int,                             # the steps this notebook's run has trained
                      variant: str,                          # its variant
                      plateau: pd.DataFrame | None = None,   # curves.plateau_table of the shipped models (None: none)
                      layer_kl: pd.DataFrame | None = None,  # curves.layer_kl_table of `reference` (with plateau)
                      reference: str = "clvae",              # the variant layer_kl is of
                      ) -> list[str]:
    """Notebook 02: what one trainer gives, this run's steps and, with the shipped models' curves, which scores
    flattened per variant and whether `reference`'s collapsed latent layers came back (`smis.curves`)."""
    lines = ["- One trainer serves the notebook, the shell and `torchrun`; its runs are plain folders (checkpoints, "
             "`losses.csv`, TensorBoard logs, `config.json`) that `--resume` continues exactly.",
             f"- This run: {step} steps of {variant}; its samples are above, next to the shipped model's."]
    if plateau is not None:
        if layer_kl is None:
            raise ValueError("training_findings: plateau given without layer_kl. Fix: pass "
                             f"layer_kl=curves.layer_kl_table(rows, {reference!r}) from the same curve rows")
        lines += curves.plateau_findings(plateau) + [curves.layer_kl_finding(layer_kl, reference)]
    return lines


def reconstruction_findings(study: Study,                         # the study the results were scored in
                            results: Mapping[str, ReconEval],     # name -> reconstructions, same pairs
                            table1: pd.DataFrame,                 # study.add_ceiling(reconstruction_table(results))
                            ) -> list[str]:
    """Notebook 03: each model's GT-similarity (FD, mask mIoU) from Table 1; the first two models paired over the
    same pairs (`tables.paired_comparison`: does the interval exclude 0?); the segmenter's ceiling; the metrics."""
    col, fd = study.columns.gt_similarity, study.columns.fd
    lines = [f"- {k} ({study.trained(k)}): GT-similarity {table1.loc[k, col]:.3f} "
             f"± {table1.loc[k, Columns.ci(col)]:.3f}"
             + (f", FD {table1.loc[k, fd]:.1f}" if fd in table1 else "")
             + (f", mask mIoU {table1.loc[k, MIOU]:.3f}" if study.segmenter is not None else "") for k in results]
    if len(results) >= 2:
        a, b = list(results)[:2]
        p = paired_comparison(results[a], results[b]).loc[col]
        d, lo, hi = p["difference"], p["CI low"], p["CI high"]
        lines.append(f"- Paired over the same {len(study.indices)} pairs, {a} - {b}: {d:+.3f} (95 % CI [{lo:.3f}, "
                     f"{hi:.3f}]; negative: {a} reconstructs closer)"
                     + (": the masks support the gap." if lo > 0 or hi < 0 else ": no clear gap."))
    if study.segmenter is not None:
        lines.append(f"- The segmenter's mIoU on the real images is {table1.loc[CEILING, MIOU]:.3f}: "
                     "the ceiling a perfect reconstruction would reach.")
    lines.append("- These are " + _scores_are(study, " numbers", " (EfficientNet-Lite0 stand-ins: compare "
                                                                 "across variants here, never with the paper's LPIPS "
                                                                 "or FID)."))
    return lines


def diversity_claim(paired: pd.DataFrame,     # tables.paired_comparison(clvae, baseline)
                    baseline: str,            # the baseline's name (the paired table's second column)
                    ) -> str:
    """Notebook 04's one-line answer: is clvae more diverse (the paired interval above 0), and by how much (%)
    its top-1 GT-similarity differs from the baseline's."""
    cols = Columns.of(paired)
    top_diff = paired.loc[cols.top1, "difference"] / paired.loc[cols.top1, baseline]
    return (f"clvae more diverse than {baseline}: {paired.loc[cols.diversity, 'CI low'] > 0}; top-1 GT-similarity "
            f"differs by {100 * top_diff:+.1f} %")


def diversity_findings(study: Study,                                  # the study the results were scored in
                       results: Mapping[str, PriorEval],              # name -> prior samples, same masks and seeds
                       table2: pd.DataFrame,                          # study.add_ceiling(diversity_table(results))
                       baseline: str,                                 # the system clvae is compared with
                       k: int,                                        # prior samples per mask (the notebook's K)
                       paired: pd.DataFrame | None = None,            # paired_comparison(clvae, baseline); None: none
                       factors: pd.DataFrame | None = None,           # tables.factor_table (SynthScenes)
                       style: pd.DataFrame | None = None,             # tables.style_table (with factors)
                       statements: pd.DataFrame | None = None,        # comparison.statements (with factors)
                       versus: pd.DataFrame | None = None,            # comparison.systems_vs_reference
                       ) -> list[str]:
    """Notebook 04: clvae against the baseline on diversity and top-1 (paired), mask fidelity against the
    ceiling, the factor rates and style guidance (SynthScenes), the paper's statements about the comparison
    systems (`smis.comparison`) and every system's diversity minus clvae's."""
    cols = Columns(study.metric.name)
    lines = ["- Diversity and Top-1 GT-similarity pull in opposite directions (a model can be diverse by being wrong), "
             "so the paired comparison reads both on the same masks and seeds."]
    if paired is not None:
        d, t = paired.loc[cols.diversity], paired.loc[cols.top1]
        lines.append(f"- `clvae` vs `{baseline}` ({len(study.indices)} masks, K = {k}): "
                     f"diversity {d['clvae']:.3f} vs {d[baseline]:.3f} "
                     f"(paired difference {d['difference']:+.3f}, 95 % CI [{d['CI low']:.3f}, {d['CI high']:.3f}]): "
                     + ("**clvae is more diverse**" if d["CI low"] > 0 else "**not shown to be more diverse**")
                     + f"; top-1 GT-similarity {t['clvae']:.3f} vs {t[baseline]:.3f} (difference "
                     f"{t['difference']:+.3f}, CI [{t['CI low']:.3f}, {t['CI high']:.3f}]; lower is closer).")
        if MIOU in paired.index:
            m = paired.loc[MIOU]
            ceiling = table2.loc[CEILING, MIOU]
            lines.append(f"- Mask fidelity: mIoU {m['clvae']:.3f} (`clvae`) vs {m[baseline]:.3f} (`{baseline}`), "
                         f"paired difference {m['difference']:+.3f} (CI [{m['CI low']:.3f}, {m['CI high']:.3f}]); "
                         f"real images {ceiling:.3f}. "
                         + ("Both follow their masks close to the ceiling."
                            if min(m["clvae"], m[baseline]) > ceiling - MIOU_CLOSE
                            else "The gap to the real images is what the models still miss."))
    if factors is not None:
        lines.append("- Colour in the class's own modes: "
                     + ", ".join(f"{n} {v:.1f} %" for n, v in factors[COLOUR_IN].items())
                     + "; texture kind in the class's set: "
                     + ", ".join(f"{n} {v:.1f} %" for n, v in factors[TEXTURE_IN].items()) + ".")
    if style is not None:
        lines.append("- Style guidance, share of shared classes taking the reference's colour mode: "
                     + ", ".join(f"{n} {v:.1f} %" for n, v in style[COLOUR_MATCH].items()) + ".")
    if statements is not None:
        lines += ["- " + t for t in cmp.findings(statements)]
    if versus is not None:
        dv = versus.xs(cols.diversity, level="score")
        lines.append("- Diversity minus clvae's (paired, 95 % CI): " + ", ".join(
            f"{n} {dv.loc[n, 'difference']:+.3f} [{dv.loc[n, 'CI low']:.3f}, {dv.loc[n, 'CI high']:.3f}]"
            for n in results if n != cmp.REFERENCE) + ".")
    lines.append("- Scores are " + _scores_are(study, "", ": EfficientNet-Lite0 stand-ins, comparable across "
                                                          "variants here, never with the paper's LPIPS or FID."))
    return lines


def ablation_findings(ordering: pd.DataFrame,         # tables.diversity_ordering's table (may be empty)
                      observed: Sequence[str],        # tables.diversity_ordering's observed order
                      versus: pd.DataFrame | None,    # tables.ablations_vs_full (None: no full model)
                      cols: Columns,                  # the study's score columns
                      train_steps: int = 0,           # > 0: the models were trained in the notebook for these steps
                      labels: Mapping[str, str] | None = None,   # variant -> label (tables.ABLATION_LABELS)
                      ) -> list[str]:
    """Notebook 05: how many steps of the paper's diversity ordering hold, each ablation minus the full model
    (diversity, top-1, mIoU, colour in class modes, with intervals), and what one training seed can tell."""
    labels = ABLATION_LABELS if labels is None else labels
    lines = []
    if len(ordering):
        held = (ordering["verdict"] == "holds").sum()
        lines.append(f"- The paper's diversity ordering: {held} of {len(ordering)} neighbouring steps hold with 95 % "
                     "intervals above 0 ("
                     + "; ".join(f"{n}: {r['verdict']} ({r['difference']:+.3f}, CI [{r['CI low']:.3f}, "
                                 f"{r['CI high']:.3f}])" for n, r in ordering.iterrows())
                     + f"). Observed order: {' > '.join(observed)}.")
    top, div = cols.top1, cols.diversity
    for v, row in (versus.iterrows() if versus is not None else ()):
        parts = [f"diversity {row[f'{div}: difference']:+.3f}",
                 f"top-1 {row[f'{top}: difference']:+.3f} [{row[f'{top}: CI low']:.3f}, {row[f'{top}: CI high']:.3f}]"]
        if f"{MIOU}: difference" in row:
            parts.append(f"mIoU {row[f'{MIOU}: difference']:+.3f} [{row[f'{MIOU}: CI low']:.3f}, "
                         f"{row[f'{MIOU}: CI high']:.3f}]")
        if f"{COLOUR_IN}: difference" in row:
            parts.append(f"colour in class modes {row[f'{COLOUR_IN}: difference']:+.1f} points")
        lines.append(f"- {labels.get(v, v)} minus full: " + ", ".join(parts) + ".")
    if train_steps > 0:
        lines.append(f"- These models were trained here for {train_steps} steps: far from converged, one seed; the "
                     "rows say the pipeline runs, not what the ablations do.")
    else:
        lines.append("- One training seed per variant: differences within the intervals above are differences of "
                     "these test masks, not of training runs; a second seed would tell training noise apart.")
    return lines
