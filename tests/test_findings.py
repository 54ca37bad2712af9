"""smis.findings: each notebook's "What we learnt" bullets, on crafted results whose winner and numbers are known."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from smis import findings, tables
from smis.evaluate import PriorEval, ReconEval
from smis.study import Study
from smis.tables import CEILING, COLOUR_IN, COLOUR_MATCH, MIOU, TEXTURE_IN, Columns

METRIC, FD = "lpips_effnet", "fd_effnet"
COLS = Columns(METRIC, FD)
N = 40


def fake_study(segmenter=None, metric=METRIC, fd=FD):
    """The parts of a Study the findings read: metric names, masks, segmenter, how each model was trained."""
    models = {name: SimpleNamespace(meta={"step": 8000}) for name in ("clvae", "gaugan_vae", "a", "b")}
    return Study(models, None, list(range(N)), SimpleNamespace(name=metric), SimpleNamespace(name=fd), segmenter,
                 "cpu")


def prior(variant, diversity, top1, confusion=None, seed=0):
    noise = np.random.default_rng(seed).normal(0, 0.05, N)
    per = pd.DataFrame({COLS.diversity: diversity + noise, COLS.top1: top1 + noise}, index=range(N))
    return PriorEval(variant, METRIC, 4, per, fd=150.0, fd_name=FD, confusion=confusion)


def recon(variant, gt, seed=0, metric=METRIC):
    per = pd.DataFrame({Columns(metric).gt_similarity: gt + np.random.default_rng(seed).normal(0, 0.05, N)},
                       index=range(N))
    return ReconEval(variant, metric, per, fd=140.0, fd_name=FD)


def test_data_findings_read_the_recovery_table():
    rec = pd.DataFrame({"colour ok": [1.0, 0.98765], "texture ok": [1.0, 0.5]}, index=["box", "all"])
    text = "\n".join(findings.data_findings(rec, 16))
    assert "over the 16 test images" in text and "98.8 % of the regions' colour modes" in text
    assert "50.0 % of\n  their texture kinds" in text and "shading" not in text
    rec["shading ok"], rec["regions"] = [1.0, 0.25], [2, 321]
    assert "25.0 % of their shading directions (321 regions)" in "\n".join(findings.data_findings(rec, 16))


def test_training_findings_say_this_runs_steps_and_need_both_curve_tables():
    lines = findings.training_findings(300, "gaugan_vae")
    assert len(lines) == 2 and lines[1] == ("- This run: 300 steps of gaugan_vae; its samples are above, next to the "
                                            "shipped model's.")
    with pytest.raises(ValueError, match="layer_kl"):
        findings.training_findings(3, "clvae", plateau=pd.DataFrame())


def test_reconstruction_findings_name_the_closer_model_when_the_masks_support_it():
    results = {"clvae": recon("clvae", 3.0), "gaugan_vae": recon("gaugan_vae", 4.0, seed=1)}
    table1 = tables.reconstruction_table(results)
    lines = findings.reconstruction_findings(fake_study(), results, table1)
    d = results["clvae"].per_image.iloc[:, 0].mean() - results["gaugan_vae"].per_image.iloc[:, 0].mean()
    assert lines[0].startswith(f"- clvae (8000 steps): GT-similarity {table1.loc['clvae', COLS.gt_similarity]:.3f}")
    assert f"clvae - gaugan_vae: {d:+.3f}" in lines[2] and lines[2].endswith("the masks support the gap.")
    assert lines[-1].startswith("- These are lpips_effnet / fd_effnet numbers (EfficientNet-Lite0 stand-ins")
    same = {"a": recon("a", 3.0), "b": recon("b", 3.0, seed=1)}
    assert findings.reconstruction_findings(fake_study(), same, tables.reconstruction_table(same))[2].endswith(
        "no clear gap.")
    one = {"a": recon("a", 3.0, metric="lpips_alex")}
    alex = findings.reconstruction_findings(fake_study(metric="lpips_alex", fd="fid"), one,
                                            tables.reconstruction_table(one))
    assert len(alex) == 2 and alex[-1] == "- These are lpips_alex / fid numbers."
    table1.loc[CEILING, MIOU] = 0.9                      # with a segmenter: mIoU per model and the ceiling
    table1.loc[["clvae", "gaugan_vae"], MIOU] = [0.8, 0.7]
    seg = findings.reconstruction_findings(fake_study(segmenter=object()), results, table1)
    assert ", mask mIoU 0.800" in seg[0] and "mIoU on the real images is 0.900" in seg[3]


def test_diversity_findings_and_claim_name_the_more_diverse_model():
    conf = np.broadcast_to(np.eye(3) * 50 + 1, (N, 3, 3)).copy()        # mIoU 50 / 54 = 0.926
    results = {"clvae": prior("clvae", 3.0, 4.0, conf), "gaugan_vae": prior("gaugan_vae", 1.5, 4.6, conf, seed=1)}
    paired = tables.paired_comparison(results["clvae"], results["gaugan_vae"])
    table2 = tables.diversity_table(results)
    table2.loc[CEILING, MIOU] = 0.95
    claim = findings.diversity_claim(paired, "gaugan_vae")
    top = 100 * paired.loc[COLS.top1, "difference"] / paired.loc[COLS.top1, "gaugan_vae"]
    assert claim == f"clvae more diverse than gaugan_vae: True; top-1 GT-similarity differs by {top:+.1f} %"
    factors = pd.DataFrame({COLOUR_IN: [90.0, 80.0], TEXTURE_IN: [70.0, 60.0]}, index=["clvae", "gaugan_vae"])
    style = pd.DataFrame({COLOUR_MATCH: [55.0, 12.5]}, index=["clvae: guided", "clvae: prior (chance)"])
    statements = pd.DataFrame({"text": ["*A* holds.", ""]})
    lines = findings.diversity_findings(fake_study(object()), results, table2, "gaugan_vae", 20, paired, factors,
                                        style, statements)
    assert "(40 masks, K = 20)" in lines[1] and "**clvae is more diverse**" in lines[1]
    assert "real images 0.950" in lines[2] and lines[2].endswith("Both follow their masks close to the ceiling.")
    assert lines[3] == ("- Colour in the class's own modes: clvae 90.0 %, gaugan_vae 80.0 %; texture kind in the "
                        "class's set: clvae 70.0 %, gaugan_vae 60.0 %.")
    assert "clvae: guided 55.0 %, clvae: prior (chance) 12.5 %" in lines[4] and lines[5] == "- *A* holds."
    assert lines[-1].startswith("- Scores are lpips_effnet / fd_effnet: EfficientNet-Lite0 stand-ins")
    table2.loc[CEILING, MIOU] = 2.0                      # far above both: the gap is what the models miss
    swapped = {"clvae": results["gaugan_vae"], "gaugan_vae": results["clvae"]}
    paired = tables.paired_comparison(swapped["clvae"], swapped["gaugan_vae"])
    lines = findings.diversity_findings(fake_study(object()), swapped, table2, "gaugan_vae", 20, paired)
    assert "**not shown to be more diverse**" in lines[1] and "still miss" in lines[2] and len(lines) == 4


def test_ablation_findings_count_the_steps_that_hold_and_label_the_ablations():
    prior_ = {"clvae": prior("clvae", 3.0, 4.0), "clvae_L5": prior("clvae_L5", 2.0, 4.0, seed=1),
              "no_classwise": prior("no_classwise", 2.5, 4.0, seed=2)}
    ordering, observed = tables.diversity_ordering(prior_, ["clvae", "clvae_L5", "no_classwise"])
    versus = tables.ablations_vs_full(prior_)
    lines = findings.ablation_findings(ordering, observed, versus, COLS)
    assert lines[0].startswith("- The paper's diversity ordering: 1 of 2 neighbouring steps hold")
    assert "clvae_L5 > no_classwise: reversed" in lines[0]
    assert lines[0].endswith("Observed order: clvae > no_classwise > clvae_L5.")
    d = versus.loc["clvae_L5", f"{COLS.diversity}: difference"]
    assert lines[1].startswith(f"- L = 5 minus full: diversity {d:+.3f}, top-1 ") and "mIoU" not in lines[1]
    assert lines[2].startswith("- w/o class-wise minus full") and lines[-1].startswith("- One training seed")
    trained = findings.ablation_findings(ordering.iloc[:0], [], None, COLS, train_steps=2)
    assert trained == ["- These models were trained here for 2 steps: far from converged, one seed; the rows say the "
                       "pipeline runs, not what the ablations do."]

