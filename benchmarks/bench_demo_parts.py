"""The demo's evaluation parts, old code against new, in CPU seconds (issue 26): a measure that a shared,
loaded machine disturbs far less than wall time. One torch thread; each part runs the old tree's smis, then
this tree's, in one process (modules reloaded), and checks that both give the same numbers.

    python benchmarks/bench_demo_parts.py --old e82ef9a --photos 24 --masks 16

Parts: `editing_report` of the clvae demo model on `--photos` test photos (notebook 06's measurement);
`evaluate_prior` (K = 20, per-class diversity, factors, FD, mask fidelity) and `evaluate_reconstruction` of
clvae and gaugan_vae on `--masks` masks (notebooks 03-05's scorers). Writes benchmarks/results/NAME.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import machine_info, write_json

ROOT = Path(__file__).resolve().parents[1]


def _load(tree: Path):
    """smis imported from `tree` (every smis module of a previous tree dropped first)."""
    for k in [k for k in sys.modules if k == "smis" or k.startswith("smis.")]:
        del sys.modules[k]
    sys.path.insert(0, str(tree))
    try:
        import importlib

        import smis.editing as editing
        import smis.evaluate as ev
        # editing_report: smis.edit_measures since issue 24; a tree from before it has it in smis.editing
        measures = importlib.import_module("smis.edit_measures" if (tree / "smis" / "edit_measures.py").exists()
                                           else "smis.editing")
        import smis.models as models
        import smis.study as study
        from smis.data import make_dataset
    finally:
        sys.path.pop(0)
    assert Path(editing.__file__).is_relative_to(tree), editing.__file__
    return editing, measures, ev, models, study, make_dataset


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, round(time.process_time() - c0, 2), round(time.perf_counter() - w0, 2)


def _flat(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flat(v, f"{prefix}/{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _flat(v, f"{prefix}/{i}")
    else:
        yield prefix, x


def _max_rel(a: dict, b: dict) -> float:
    """Largest relative difference between the numbers of two nested results (0: identical)."""
    fa, fb = dict(_flat(a)), dict(_flat(b))
    assert fa.keys() == fb.keys()
    rel = [abs(x - y) / max(abs(y), 1e-300) for k in fa for x, y in [(fa[k], fb[k])]
           if isinstance(x, (int, float)) and not (np.isnan(x) and np.isnan(y))]
    return float(max(rel, default=0.0))


def run_tree(tree: Path, photos: int, masks: int) -> tuple[dict, dict]:
    editing, measures, ev, models, study_mod, make_dataset = _load(tree)
    ck = tree / "checkpoints"
    times, numbers = {}, {}
    nets = models.load_or_untrained(str(ck / "synthscenes_clvae.pt"), "clvae", seed=0)
    test = make_dataset("synthscenes", None, "test", size=nets.preset.image_size, length=photos)
    _, labels, codes = editing.encode_dataset(nets, test)
    numbers["editing_report"], *times["editing_report"] = _timed(
        lambda: measures.editing_report(nets, labels, codes, torch.Generator().manual_seed(0)))
    study = study_mod.load_study(f"clvae:{ck}/synthscenes_clvae.pt,gaugan_vae:{ck}/synthscenes_gaugan_vae.pt",
                                 "synthscenes", "", "test", masks, 0, "auto", "auto", "auto", "cpu", 64)
    opts = ev.PriorOptions(k=20, masks_per_batch=8, chunk=64, per_class=True, factors=True, keep=1)

    def prior():
        return {n: ev.evaluate_prior(m, study.dataset, study.indices, study.metric, opts, study.fd_real,
                                     study.segmenter, progress=False) for n, m in study.models.items()}

    def recon():
        return {n: ev.evaluate_reconstruction(m, study.dataset, study.indices, study.metric, study.fd_real, batch=32,
                                              progress=False, segmenter=study.segmenter)
                for n, m in study.models.items()}
    res, *times["evaluate_prior"] = _timed(prior)
    numbers["evaluate_prior"] = {n: {"per_image": r.per_image.to_numpy().tolist(), "fd": r.fd,
                                     "per_class": np.nan_to_num(r.per_class.to_numpy(), nan=-1).tolist()}
                                 for n, r in res.items()}
    res, *times["evaluate_reconstruction"] = _timed(recon)
    numbers["evaluate_reconstruction"] = {n: {"per_image": r.per_image.to_numpy().tolist(), "fd": r.fd}
                                          for n, r in res.items()}
    return times, numbers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="git revision of the old code")
    p.add_argument("--photos", type=int, default=24, help="test photos of the editing report")
    p.add_argument("--masks", type=int, default=16, help="test masks of the prior and reconstruction scores")
    p.add_argument("--name", default="demo_parts_cpu.json", help="file under benchmarks/results/")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    old_tree = Path(tempfile.mkdtemp(prefix="bench_demo_parts_"))
    archive = subprocess.run(["git", "archive", a.old], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
    result = {"benchmark": "demo evaluation parts, CPU seconds, 1 thread", "old_rev": a.old,
              "new_rev": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip(),
              "command": " ".join(["python", "benchmarks/bench_demo_parts.py", *(argv or sys.argv[1:])]),
              "photos": a.photos, "masks": a.masks, "machine": machine_info(torch.device("cpu"))}
    old_t, old_n = run_tree(old_tree, a.photos, a.masks)
    new_t, new_n = run_tree(ROOT, a.photos, a.masks)
    result["parts"] = {k: {"old_cpu_s": old_t[k][0], "new_cpu_s": new_t[k][0], "old_wall_s": old_t[k][1],
                           "new_wall_s": new_t[k][1], "cpu_speedup": round(old_t[k][0] / new_t[k][0], 2),
                           "max_rel_diff": _max_rel(new_n[k], old_n[k])} for k in old_t}
    print(f"{'part':<26}{'old cpu s':>10}{'new cpu s':>10}{'speedup':>9}{'max rel diff':>14}")
    for k, r in result["parts"].items():
        print(f"{k:<26}{r['old_cpu_s']:>10.1f}{r['new_cpu_s']:>10.1f}{r['cpu_speedup']:>9.2f}{r['max_rel_diff']:>14.2e}")
    result["numbers_new"] = json.loads(json.dumps(new_n["editing_report"]))
    write_json(result, a.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
