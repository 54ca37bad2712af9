"""The layer-wise experiment's table (issue 22, items 4 and 5): for each model, per latent layer its KL, active units,
classes visible, and the share of single-class, single-layer code resamplings that change the colour mode, the
texture kind and (object-factor data) the shading direction, each with its 95 % Wilson interval; then every model
after the first minus the first (the paper's objective), paired over the same test masks and prior seeds (notebook
04's scores: diversity, top-1 GT-similarity, FD, mask mIoU, factor rates; `smis.comparison.systems_vs_reference`),
and the verdict of item 5: all latent layers active, and no score worse with its 95 % interval off 0.

    python scripts/layer_experiment.py NAME:MODEL ... --out docs/layer_experiment.json
    python scripts/layer_experiment.py paper:outputs/pilot22/synthscenes_clvae_obj.pt \\
        freebits:outputs/pilot22/synthscenes_clvae_obj_freebits.pt --photos 48

Each model is measured on the SynthScenes test photos of the data it trained on (its TrainConfig's object-scale
factor), the same photos and edit seed for every model. Writes one JSON (the command, the machine, per model its
provenance, its layer table as records and, after the first, its paired comparison and verdict) and prints the tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smis import comparison as cmp  # noqa: E402
from smis import edit_measures  # noqa: E402
from smis import editing  # noqa: E402
from smis import evaluate as ev  # noqa: E402
from smis import tables  # noqa: E402
from smis.checkpoint import load_model, object_factor_of  # noqa: E402
from smis.diagnostics import layer_diagnostics, write_layer_factors  # noqa: E402
from smis.study import load_study  # noqa: E402
from smis.utils import atomic_write_json, cpu_model, device_name, resolve  # noqa: E402


def measure(nets, photos: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """(layer table with diagnostics, provenance) of one model on the first `photos` test photos of its data."""
    object_factor = object_factor_of(nets)
    test, _ = ev.test_set("synthscenes", "", "test", nets.preset.image_size, photos, 0, object_factor)
    images, labels, codes = editing.encode_dataset(nets, test, n=photos)
    report = edit_measures.editing_report(nets, labels, codes, torch.Generator().manual_seed(seed),
                                    object_factor=object_factor)
    diag = layer_diagnostics(nets, images, labels)
    table = edit_measures.layer_table(nets, report)
    table = table.join(diag.table()[["KL", "active units", "units", "classes visible"]])
    return table, {"object_factor": bool(object_factor), "photos": photos, "edits": report["cases"],
                   "inactive_layers": [int(x) for x in diag.inactive]}


def compare(sources: dict[str, str], n_test: int, k: int, seed: int, lpips: str = "auto") -> pd.DataFrame:
    """Every model minus the first, paired over the first `n_test` test masks of their (shared) data with K = `k`
    prior samples each, the same seeds: `systems_vs_reference` rows (index (system, score))."""
    study = load_study(sources, "synthscenes", "", "test", n_test, 0, lpips, {"alex": "inception"}.get(lpips, lpips),
                       "auto", "cpu")
    options = ev.PriorOptions(k=k, seed=seed, factors=True, keep=0)
    results = {name: dataclasses.replace(ev.evaluate_prior(nets, study.dataset, study.indices, study.metric, options,
                                                           study.fd_real, study.segmenter), variant=name)
               for name, nets in study.models.items()}                 # named rows: every model is a clvae
    return cmp.systems_vs_reference(results, reference=next(iter(sources)), seed=seed, fd_real=study.fd_real)


def worse(versus: pd.DataFrame) -> list[str]:
    """The scores on which a system is worse than the reference with its 95 % interval off 0: lower diversity, a
    higher (farther) top-1 GT-similarity, a lower mask mIoU (item 5's "without losing")."""
    found = []
    for score, row in versus.iterrows():
        if score.startswith("diversity") and row["CI high"] < 0 or score == tables.MIOU and row["CI high"] < 0 \
                or score.startswith("top-1") and row["CI low"] > 0:
            found.append(score)
    return found


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="NAME:MODEL (an exported model or a training checkpoint)")
    p.add_argument("--photos", type=int, default=64, help="SynthScenes test photos per model")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampled codes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compare-masks", type=int, default=100, help="test masks of the paired comparison (0: none)")
    p.add_argument("--k", type=int, default=20, help="prior samples per mask in the paired comparison")
    p.add_argument("--lpips", default="auto", help="LPIPS / FD backbone: auto, alex (inception), effnet")
    p.add_argument("--out", default="docs/layer_experiment.json")
    p.add_argument("--write-factors", action="store_true",
                   help="also write each model's <stem>.layers.json beside it (what the editor shows per layer)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    pairs = [m.split(":", 1) for m in a.models]
    if any(len(x) != 2 or not x[0] for x in pairs):
        raise SystemExit(f"models must be NAME:MODEL, got {a.models}. Fix: e.g. paper:outputs/pilot22/"
                         "synthscenes_clvae_obj.pt")
    out, t0 = {}, time.time()
    for name, path in pairs:
        nets = load_model(resolve(path))
        table, info = measure(nets, a.photos, a.seed)
        meta = nets.meta.get("provenance") or {}
        out[name] = {"model": path, "step": nets.meta.get("step"), "options": meta.get("options"), **info,
                     "layers": json.loads(table.reset_index().to_json(orient="records"))}
        if a.write_factors:
            print("wrote", write_layer_factors(resolve(path), edit_measures.layer_factor_summary(table),
                                               command="python scripts/layer_experiment.py " + " ".join(argv),
                                               photos=a.photos, edits=info["edits"], seed=a.seed))
        with pd.option_context("display.width", 200, "display.max_columns", 40):
            print(f"\n== {name} ({path}, step {nets.meta.get('step')}; inactive layers {info['inactive_layers']})")
            print(table.round(3).to_string())
    if a.compare_masks and len(pairs) > 1:
        versus = compare(dict(pairs), a.compare_masks, a.k, a.seed, a.lpips)
        reference = pairs[0][0]
        for name, _ in pairs[1:]:
            v = versus.xs(name, level="system")
            lost = worse(v)
            ok = not out[name]["inactive_layers"] and not lost
            out[name]["versus"] = {"reference": reference, "masks": a.compare_masks, "k": a.k,
                                   "rows": json.loads(v.reset_index().to_json(orient="records"))}
            out[name]["verdict"] = {"all_layers_active": not out[name]["inactive_layers"], "worse_on": lost,
                                    "ship": ok}
            with pd.option_context("display.width", 200, "display.max_columns", 40):
                print(f"\n== {name} minus {reference}, paired over {a.compare_masks} masks, K = {a.k}")
                print(v.round(4).to_string())
            print(f"verdict: inactive layers {out[name]['inactive_layers'] or 'none'}; worse on {lost or 'nothing'} "
                  f"-> {'ship it (issue 22, item 5)' if ok else 'do not ship'}")
    cpu = cpu_model()
    atomic_write_json({"command": "python scripts/layer_experiment.py " + " ".join(argv),
                       "device": device_name(torch.device("cpu")), "cpu": cpu, "torch": str(torch.__version__),
                       "seconds": round(time.time() - t0, 1), "models": out}, resolve(a.out))
    print(f"\nwrote {resolve(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
